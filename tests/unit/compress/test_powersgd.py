"""The PowerSGD codec (METHODS.md 6.8): shared checks, sizes, orthonormality, low-rank exactness."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.compress.powersgd import (
    Layout,
    PowerSGD,
    PowerSGDState,
    near_square,
    orthonormalize,
)
from fedsqueeze.errors import WireFormatError
from tests import naive

from .common import (
    check_config_json,
    check_deterministic,
    check_golden_frames,
    check_nbytes,
    check_repr,
    check_roundtrip,
    check_truncation,
    sample_vector,
)

DIGITS_MLP = [[64, 64], [64], [10, 64], [10]]  # D = 4,810 (METHODS.md 6.12)

CASES = [
    ({}, 1), ({}, 7), ({}, 1000), ({"rank": 1}, 1000),
    ({"rank": 1, "shapes": [[10, 20], [5], [4, 2, 3]]}, 229),
    ({"shapes": DIGITS_MLP, "init_seed": 2**50}, 4810),
    ({"rank": 3, "shapes": [[2], [3, 3]], "error_feedback": False}, 11),  # nothing compressed
]


def ids(case):
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("cfg,n", CASES, ids=[ids(c) for c in CASES])
@pytest.mark.parametrize("kind", ["normal", "zeros"])
def test_shared_checks(cfg, n, kind):
    codec = PowerSGD(**cfg)
    x = sample_vector(n, n, kind)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


def test_golden_frames():
    check_golden_frames("powersgd")


@pytest.mark.parametrize("phase,frame_bytes,floats", [(0, 920, 148 + 74), (1, 1352, 256 + 74)])
def test_worked_sizes_digits_mlp(phase, frame_bytes, floats):
    """METHODS.md 6.12: P-phase 920 bytes, Q-phase 1,352 bytes, header and u32 n_i included."""
    codec = PowerSGD(shapes=DIGITS_MLP)
    state = codec.initial_state(4810, phase=phase)
    enc, _ = codec.encode(sample_vector(4810, 3), seed=0, state=state)
    assert enc.meta == {"phase": phase, "rank": 2}
    assert len(wire.pack_frame(4, [b"\0" * 4] + list(enc.sections))) == frame_bytes
    assert codec.theoretical_bits(enc) == 32 * floats
    assert enc.nbytes <= codec.max_nbytes(4810) == 4 + 4 * (256 + 74)


@pytest.mark.parametrize("shape,rank,compressed", [
    ((64, 64), 2, True), ((10, 64), 2, True), ((4, 4), 2, False), ((4, 4), 1, False),
    ((5, 5), 1, True), ((10, 3, 3), 2, True), ((64,), 2, False), ((), 1, False),
    ((3, 1000), 2, False), ((5, 1000), 2, True),
])
def test_layout_compresses_only_when_rate_at_least_two(shape, rank, compressed):
    blk = Layout([shape], rank).blocks[0]
    assert blk.compressed is compressed
    n = shape[0] if shape else 1
    assert (blk.n, blk.numel) == (n, int(np.prod(shape)))


@pytest.mark.parametrize("n,expected", [(1, (1, 1)), (7, (1, 7)), (1000, (25, 40)),
                                        (4810, (65, 74)), (64, (8, 8))])
def test_near_square(n, expected):
    assert near_square(n) == expected


@pytest.mark.parametrize("d,r,seed", [(8, 2, 0), (100, 3, 1), (500, 2, 2)])
def test_orthonormalize_matches_gram_schmidt(d, r, seed):
    a = np.random.default_rng(seed).standard_normal((d, r)).astype(np.float32)
    q = orthonormalize(a)
    assert q.dtype == np.float32
    np.testing.assert_allclose(q.T.astype(np.float64) @ q, np.eye(r), atol=1e-5)
    np.testing.assert_allclose(q, naive.gram_schmidt(a), atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_orthonormalize_refills_degenerate_columns(seed):
    g = np.random.default_rng(seed)
    u = g.standard_normal(50).astype(np.float32)
    a = np.stack([u, 3 * u, np.zeros(50, np.float32)], axis=1)  # rank 1
    q = orthonormalize(a)
    assert np.all(q[:, 1:] == 0)  # without a fill: zero columns
    q = orthonormalize(a, g.standard_normal((50, 3)).astype(np.float32))
    np.testing.assert_allclose(q.T.astype(np.float64) @ q, np.eye(3), atol=1e-5)


@pytest.mark.parametrize("n,m,rank,true_rank", [(30, 20, 1, 1), (30, 20, 2, 2), (40, 17, 3, 2)])
@pytest.mark.parametrize("seed", [0, 1])
def test_low_rank_matrix_is_exact_after_two_phases(n, m, rank, true_rank, seed):
    """P = M Q0 then Q = M^T orth(P): a matrix of rank <= r is rebuilt exactly, and both phases
    agree with the float64 NumPy reference."""
    g = np.random.default_rng(seed)
    mat = (g.standard_normal((n, true_rank)) @ g.standard_normal((true_rank, m))).astype(np.float32)
    codec = PowerSGD(rank=rank, shapes=[[n, m]], init_seed=seed)
    s0 = codec.initial_state(n * m)
    enc0, s1 = codec.encode(mat.ravel(), seed=seed, state=s0)
    enc1, _ = codec.encode(mat.ravel(), seed=seed, state=s1)
    ref0, ref1, p_hat = naive.powersgd_two_phases(mat, s0.factors.reshape(m, rank))
    scale = np.abs(mat).max()
    np.testing.assert_allclose(codec.decode(enc0, state=s0).reshape(n, m), ref0, atol=1e-5 * scale)
    p = s1.factors.reshape(n, rank).astype(np.float64)
    np.testing.assert_allclose(p.T @ p, np.eye(rank), atol=1e-5)  # orthonormal, refilled if needed
    if rank == true_rank:  # then the broadcast factor spans the same space as the reference's
        np.testing.assert_allclose(p @ p.T, p_hat @ p_hat.T, atol=1e-5)
    out = codec.decode(enc1, state=s1).reshape(n, m)
    np.testing.assert_allclose(out, ref1, atol=1e-5 * scale)
    np.testing.assert_allclose(out, mat, atol=1e-5 * scale)


def test_phase_one_state_round_trips_through_the_wire():
    codec = PowerSGD(shapes=[[12, 9], [4]])
    x = sample_vector(112, 4)
    state = codec.initial_state(112, phase=1, seed=5, round=3)
    enc, nxt = codec.encode(x, seed=1, state=state)
    assert nxt.phase == 0 and nxt.factors.shape == (9 * 2,)
    parsed = codec.parse(enc.payload(), 112)
    np.testing.assert_array_equal(codec.decode(parsed, state=state), codec.decode(enc, state=state))
    np.testing.assert_array_equal(codec.decode(parsed, state=state)[108:], x[108:])  # dense part


def test_state_mismatches_are_errors():
    codec = PowerSGD(shapes=[[12, 9]])
    enc, nxt = codec.encode(sample_vector(108, 0), seed=0)
    with pytest.raises(ValueError, match="phase"):
        codec.decode(enc, state=nxt)  # phase 1 state for a phase 0 message
    with pytest.raises(ValueError, match="expected phase 0 or 1"):
        codec.encode(sample_vector(108, 0), seed=0, state=PowerSGDState(0, np.zeros(5, np.float32)))
    with pytest.raises(ValueError, match="108"):
        codec.encode(sample_vector(100, 0), seed=0)


def _payload(phase: int, rank: int, zero: int, floats: int) -> bytes:
    return bytes([phase, rank]) + zero.to_bytes(2, "little") + bytes(4 * floats)


@pytest.mark.parametrize("payload,match", [
    (_payload(2, 2, 0, 24), "phase = 2"),
    (_payload(0, 1, 0, 24), "rank = 1"),
    (_payload(0, 2, 7, 24), "reserved = 7"),
    (_payload(0, 2, 0, 23), "factors|dense"),
    (_payload(1, 2, 0, 24), "trailing"),  # phase 1 uploads 9 * 2 floats, not 12 * 2
    (_payload(0, 2, 0, 24 + 1), "trailing"),
])
def test_parse_rejects_malformed_payloads(payload, match):
    with pytest.raises(WireFormatError, match=match):
        PowerSGD(shapes=[[12, 9]]).parse(payload, 108)


def test_parse_rejects_a_vector_size_that_disagrees_with_shapes():
    with pytest.raises(WireFormatError, match="108"):
        PowerSGD(shapes=[[12, 9]]).parse(_payload(0, 2, 0, 24), 107)


@pytest.mark.parametrize("kwargs,match", [
    ({"rank": 0}, "rank"), ({"rank": 256}, "rank"), ({"rank": 2.0}, "rank"),
    ({"shapes": []}, "shapes"), ({"shapes": [[3, 0]]}, "shapes"), ({"shapes": [3, 4]}, "shapes"),
    ({"shapes": [[3, 4.0]]}, "shapes"), ({"init_seed": -1}, "init_seed"),
    ({"error_feedback": 1}, "error_feedback"),
])
def test_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PowerSGD(**kwargs)

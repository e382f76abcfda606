"""The count sketch codec (METHODS.md 6.9): shared checks, sizes, oracle equality, linearity."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.compress.countsketch import CountSketch
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

CONFIGS = [{}, {"rows": 3, "cols": 17}, {"rows": 4, "ratio": 10.0, "hash_seed": 2**40 + 3}]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("kind", ["normal", "heavy", "zeros"])
def test_shared_checks(cfg, n, kind):
    codec = CountSketch(**cfg)
    x = sample_vector(n, n, kind)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


def test_golden_frames():
    check_golden_frames("countsketch")


@pytest.mark.parametrize("d,cols", [(4810, 97), (1000, 20), (49, 1), (51, 2)])
def test_default_columns_and_worked_size(d, cols):
    """c = ceil(D / 50); DigitsMLP (D = 4,810): 1,976 bytes with header and n_i (METHODS 6.12)."""
    codec = CountSketch()
    enc, state = codec.encode(sample_vector(d, 1), seed=0)
    assert state is None
    assert enc.meta == {"rows": 5, "cols": cols}
    assert codec.theoretical_bits(enc) == 32 * 5 * cols
    assert enc.nbytes == codec.max_nbytes(d) == 8 + 4 * 5 * cols
    frame = wire.pack_frame(4, [b"\0" * 4] + list(enc.sections))
    if d == 4810:
        assert len(frame) == 1976


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("n", [7, 500])
def test_encode_decode_match_oracle(cfg, n):
    codec = CountSketch(**cfg)
    x = sample_vector(n, 7)
    enc, _ = codec.encode(x, seed=0)
    table = naive.count_sketch(x, codec.rows, codec.cols_for(n), codec.hash_seed)
    np.testing.assert_array_equal(codec.table(enc), table)
    np.testing.assert_array_equal(codec.decode(enc),
                                  naive.count_sketch_query(table, n, codec.hash_seed))


@pytest.mark.parametrize("hash_seed", [0, 1, 2**63 + 1])
def test_sparse_update_decodes_exactly(hash_seed):
    codec = CountSketch(rows=5, ratio=5.0, hash_seed=hash_seed)
    x = np.zeros(2000, np.float32)
    x[[3, 999, 1500]] = [4.0, -2.5, 1.0]
    np.testing.assert_array_equal(codec.decode(codec.encode(x, seed=0)[0])[[3, 999, 1500]],
                                  x[[3, 999, 1500]])


def test_hash_seed_changes_the_hashes():
    a, b = CountSketch(hash_seed=0), CountSketch(hash_seed=1)
    assert not np.array_equal(a.hashes(np.arange(100), 100)[0], b.hashes(np.arange(100), 100)[0])


@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5], [0.2, 0.3, 0.5]])
def test_aggregate_encoded_is_the_weighted_sum(weights):
    codec = CountSketch(cols=31)
    xs = [sample_vector(300, s) for s in range(3)]
    encs = [codec.encode(x, seed=0)[0] for x in xs]
    agg = codec.aggregate_encoded(encs, weights)
    w = [1.0] * 3 if weights is None else weights
    expected = sum(np.float64(wi) * codec.table(e).astype(np.float64)
                   for wi, e in zip(w, encs, strict=True))
    np.testing.assert_array_equal(codec.table(agg), expected.astype(np.float32))
    # linear: the sum of sketches is the sketch of the weighted sum, up to float32 rounding
    mixed = sum(wi * x for wi, x in zip(w, xs, strict=True)).astype(np.float32)
    direct = codec.table(codec.encode(mixed, seed=0)[0])
    np.testing.assert_allclose(codec.table(agg), direct, rtol=1e-5, atol=1e-5)
    # and the aggregate is a valid message of the same size
    assert codec.parse(agg.payload(), 300).nbytes == encs[0].nbytes


def test_aggregate_encoded_edge_cases():
    codec = CountSketch(cols=4)
    assert codec.aggregate_encoded([]) is None
    e1 = codec.encode(np.ones(10, np.float32), seed=0)[0]
    e2 = codec.encode(np.ones(12, np.float32), seed=0)[0]
    with pytest.raises(ValueError, match="weights"):
        codec.aggregate_encoded([e1], [1.0, 2.0])
    with pytest.raises(ValueError, match="12 elements"):
        codec.aggregate_encoded([e1, e2])


def _payload(r: int, zero: int, c: int, floats: int) -> bytes:
    return np.array([r | (zero << 16), c], "<u4").tobytes() + bytes(4 * floats)


@pytest.mark.parametrize("payload,match", [
    (_payload(4, 0, 20, 100), "rows = 4"),
    (_payload(5, 1, 20, 100), "reserved = 1"),
    (_payload(5, 0, 21, 105), "cols = 21"),
    (_payload(5, 0, 20, 99), "table"),
    (_payload(5, 0, 20, 101), "trailing"),
])
def test_parse_rejects_malformed_payloads(payload, match):
    with pytest.raises(WireFormatError, match=match):
        CountSketch().parse(payload, 1000)


@pytest.mark.parametrize("kwargs", [
    {"rows": 0}, {"rows": 33}, {"rows": 2.0}, {"rows": True}, {"cols": 0}, {"cols": 2**32},
    {"cols": 3.5}, {"ratio": 0.5}, {"ratio": float("inf")}, {"ratio": "50"}, {"hash_seed": -1},
    {"hash_seed": 2**64}, {"hash_seed": 1.0},
])
def test_constructor_rejects(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CountSketch(**kwargs)


@pytest.mark.parametrize("cfg", CONFIGS)
def test_cached_and_uncached_hashing_agree(cfg, monkeypatch):
    """Hashes are cached per size up to a limit; beyond it they are computed on the fly."""
    from fedsqueeze.compress import countsketch

    x = sample_vector(700, 2)
    cached = CountSketch(**cfg)
    enc, _ = cached.encode(x, seed=0)
    assert 700 in cached._cache
    monkeypatch.setattr(countsketch, "_CACHE_ENTRIES", 0)
    fresh = CountSketch(**cfg)
    enc2, _ = fresh.encode(x, seed=0)
    assert fresh._cache == {}
    assert enc.payload() == enc2.payload()
    np.testing.assert_array_equal(cached.decode(enc), fresh.decode(enc2))


def test_helpers_validate_their_arguments():
    codec = CountSketch(cols=8)
    with pytest.raises(ValueError, match="idx"):
        codec.hashes(np.array([10]), 10)
    with pytest.raises(ValueError, match="shape"):
        codec.query(np.zeros((5, 9), np.float32), 10)
    with pytest.raises(ValueError, match="out"):
        codec.sketch(np.ones(10, np.float32), out=np.zeros((5, 9), np.float32))
    out = np.ones((5, 8), np.float32)
    codec.sketch(np.zeros(10, np.float32), out=out)  # adds into out
    np.testing.assert_array_equal(out, 1.0)

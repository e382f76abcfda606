"""QSGD codec (METHODS.md 4.1, 4.4, 6.4): shared checks, worked sizes, oracle bytes, unbiasedness,
validation of configs and payloads."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch

from fedsqueeze import rng
from fedsqueeze.comm import wire
from fedsqueeze.compress.qsgd import QSGD
from fedsqueeze.errors import WireFormatError
from fedsqueeze.fl.strategy import UP_PRE
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

CONFIGS = [{}, {"s": 1}, {"s": 7, "bucket": 100}, {"s": 255, "bucket": 8}, {"s": 32767},
           {"coding": "elias"}, {"s": 7, "bucket": 100, "coding": "elias"},
           {"s": 32767, "bucket": 3, "coding": "elias"}]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("kind", ["normal", "heavy", "zeros"])
def test_shared_checks(cfg, n, kind):
    codec = QSGD(**cfg)
    x = sample_vector(n, n, kind)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


def test_golden_frames():
    check_golden_frames("qsgd")


@pytest.mark.parametrize("s,expected", [(1, 1280), (2, 1880), (4, 2484), (16, 3684), (255, 5488)])
def test_worked_sizes(s, expected):
    """METHODS.md 4.4 / 6.12: D = 4,810, b = 512; 24-byte header + u32 n_i included."""
    codec = QSGD(s=s)
    enc, _ = codec.encode(sample_vector(4810, 1), seed=5)
    frame = wire.pack_frame(4, [UP_PRE.pack(30)] + list(enc.sections))
    assert len(frame) == expected == 24 + 4 + codec.max_nbytes(4810)


@pytest.mark.parametrize("s,bucket,n", [(2, 512, 1000), (7, 100, 5003), (255, 8, 61)])
def test_payload_equals_oracle(s, bucket, n):
    x = sample_vector(n, s)
    seed = 2**63 + 12345
    enc, state = QSGD(s=s, bucket=bucket).encode(x, seed=seed)
    assert state is None
    k0, k1 = rng.key_of(seed)
    norms, packed = naive.qsgd_encode(x, s, bucket, (int(k0), int(k1)))
    w = naive.qsgd_width(s)
    expected = b"".join(bytes(p) for p in wire.join_sections(
        [struct.pack("<HBBI", s, w, 0, bucket), norms.astype("<f4"), packed]))
    assert enc.payload() == expected
    assert enc.meta == {"s": s, "w": w, "bucket": bucket, "coding": "fixed"}


def test_torch_tensor_input_gives_the_same_bytes():
    x = sample_vector(700, 2)
    codec = QSGD(s=4)
    a, _ = codec.encode(x, seed=9)
    b, _ = codec.encode(torch.from_numpy(x.copy()).reshape(7, 100), seed=9)
    assert a.payload() == b.payload()


def test_seed_changes_the_codes():
    x = sample_vector(1000, 3)
    a, _ = QSGD().encode(x, seed=1)
    b, _ = QSGD().encode(x, seed=2)
    assert bytes(a.sections[1]) == bytes(b.sections[1]) and a.payload() != b.payload()


def assert_unbiased(mean: np.ndarray, x: np.ndarray, sd: np.ndarray, draws: int) -> None:
    """``|mean - x| <= 5 sd / sqrt(draws)`` elementwise (``sd`` bounds one draw's deviation)."""
    bound = 5.0 * sd / math.sqrt(draws) + 1e-7
    worst = float(np.max(np.abs(mean - x) / bound))
    assert worst <= 1.0, f"bias: worst |mean - x| is {worst:.2f} x the bound"


def _mean_of_draws(codec, x: np.ndarray, draws: int) -> np.ndarray:
    acc = np.zeros(x.shape[0], np.float64)
    for seed in range(draws):  # the draws are one estimate, not separate cases
        acc += codec.decode(codec.encode(x, seed=seed)[0])
    return (acc / draws).astype(np.float32)


@pytest.mark.parametrize("s,bucket", [(1, 64), (2, 512), (7, 100)])
def test_unbiased(s, bucket):
    x = sample_vector(300, 11, "heavy")
    draws = 1500
    mean = _mean_of_draws(QSGD(s=s, bucket=bucket), x, draws)
    norms = naive.qsgd_norms(x, bucket)
    sd = np.repeat(norms / s, bucket)[:300] / 2  # level spacing N/s; one draw's sd <= half of it
    assert_unbiased(mean, x, sd, draws)


def test_unbiasedness_check_can_fail():
    # deterministic rounding to the nearest level is biased: the same check must reject it
    s, bucket = 2, 512
    x = sample_vector(300, 11, "heavy")
    norms = np.repeat(naive.qsgd_norms(x, bucket) / s, bucket)[:300]
    nearest = (np.round(x / norms) * norms).astype(np.float32)
    with pytest.raises(AssertionError, match="bias"):
        assert_unbiased(nearest, x, norms / 2, 1500)


def test_variance_bound():
    """E||Q(v) - v||^2 <= min(b/s^2, sqrt(b)/s) ||v||^2 per bucket (METHODS.md 4.1)."""
    s, b = 2, 512
    x = sample_vector(512, 4)
    codec = QSGD(s=s, bucket=b)
    err = np.mean([np.sum((codec.decode(codec.encode(x, seed=k)[0]) - x) ** 2.0)
                   for k in range(200)])
    assert err <= min(b / s**2, math.sqrt(b) / s) * float(np.sum(x.astype(np.float64) ** 2))


@pytest.mark.parametrize("kw,error", [
    ({"s": 0}, ValueError), ({"s": 32768}, ValueError), ({"s": 2.0}, TypeError),
    ({"s": True}, TypeError), ({"bucket": 0}, ValueError), ({"coding": "huffman"}, ValueError),
    ({"levels": 3}, TypeError),
])
def test_constructor_validates(kw, error):
    with pytest.raises(error):
        QSGD(**kw)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(bad):
    x = sample_vector(100, 1)
    x[50] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        QSGD().encode(x, seed=0)


def test_float64_input_is_rejected():
    with pytest.raises(TypeError, match="float32"):
        QSGD().encode(np.zeros(3), seed=0)


def _payload(s=2, w=3, coding=0, b=512, norms=(1.0, 2.0), codes=b"\0" * 375):
    # a valid payload for n = 999: 2997 code bits in 375 bytes, the last 3 bits are padding
    return wire.join_sections([struct.pack("<HBBI", s, w, coding, b),
                               np.array(norms, "<f4"), codes])


@pytest.mark.parametrize("fields,match", [
    ({"s": 3, "w": 3}, "s = 3"), ({"w": 4}, "w = 4"), ({"coding": 1}, "coding"),
    ({"b": 256, "norms": (1, 1, 1, 1)}, "bucket"), ({"norms": (1.0, np.nan)}, "finite"),
    ({"norms": (1.0, -2.0)}, ">= 0"), ({"codes": b"\0" * 374 + b"\x20"}, "padding bits"),
    ({"codes": b"\0" * 375 + b"\x01"}, "non-zero padding"), ({"codes": b"\0" * 380}, "trailing"),
])
def test_parse_rejects(fields, match):
    codec = QSGD()
    assert codec.parse(b"".join(bytes(p) for p in _payload()), 999).n == 999
    payload = b"".join(bytes(p) for p in _payload(**fields))
    with pytest.raises(WireFormatError, match=match):
        codec.parse(payload, 999)


def test_decode_rejects_levels_above_s():
    codes = naive.pack_bits(np.array([3 << 1] * 8, np.uint16), 3)  # level 3 > s = 2
    payload = b"".join(bytes(p) for p in _payload(norms=(1.0,), codes=codes.tobytes()))
    codec = QSGD()
    with pytest.raises(WireFormatError, match="level above s"):
        codec.decode(codec.parse(payload, 8))


def test_theoretical_bits_and_diagnostics():
    codec = QSGD(s=4)
    enc, _ = codec.encode(sample_vector(4810, 1), seed=0)
    assert codec.theoretical_bits(enc) == pytest.approx(32 * 10 + 4810 * (1 + math.log2(5)))
    d = codec.diagnostics(enc)
    assert d["s"] == 4 and d["code_bits"] == 4
    assert d["bits_per_coord"] == pytest.approx(8 * enc.nbytes / 4810)


# -- Elias coding (METHODS.md 4.1) ------------------------------------------------------------
@pytest.mark.parametrize("s", [1, 2, 16, 255])
@pytest.mark.parametrize("kind", ["normal", "heavy", "zeros"])
def test_elias_decodes_to_the_fixed_coding_values(s, kind):
    x = sample_vector(3000, 4, kind)
    fixed, el = QSGD(s=s), QSGD(s=s, coding="elias")
    a, _ = fixed.encode(x, seed=9)
    b, _ = el.encode(x, seed=9)
    ya = fixed.decode(fixed.parse(a.payload(), 3000))
    yb = el.decode(el.parse(b.payload(), 3000))
    np.testing.assert_array_equal(ya, yb)  # -0.0 (level 0, sign set) comes back as +0.0
    # bytes: preamble, norms, counts, the stream padded to 4; bits: norms + stream
    nb = -(-3000 // 512)
    stream_bits = b.meta["stream_bits"]
    assert b.nbytes == 8 + 4 * nb + 4 * nb + wire.pad4((stream_bits + 7) // 8)
    assert el.theoretical_bits(b) == 32 * nb + stream_bits
    if s <= 2 and kind != "heavy":
        assert b.nbytes < a.nbytes / 3  # most levels are 0 at small s


def test_elias_stream_bits_follow_the_omega_lengths():
    from fedsqueeze.kernels.cpu.elias import omega_len

    codec = QSGD(s=4, bucket=64, coding="elias")
    x = sample_vector(640, 2)
    enc, _ = codec.encode(x, seed=1)
    levels = np.asarray(naive.unpack_bits(np.frombuffer(QSGD(s=4, bucket=64).encode(
        x, seed=1)[0].sections[2], np.uint8), 4, 640), np.int64) >> 1
    bits = 0
    for lo in range(0, 640, 64):
        nz = np.flatnonzero(levels[lo:lo + 64])
        gaps = np.diff(np.concatenate([[-1], nz]))
        bits += sum(omega_len(int(g)) + 1 + omega_len(int(v)) for g, v in
                    zip(gaps, levels[lo:lo + 64][nz], strict=True))
    assert enc.meta["stream_bits"] == bits


def _elias_payload(counts=(0, 0), stream=b"", norms=(1.0, 1.0)):
    return b"".join(bytes(p) for p in wire.join_sections([
        struct.pack("<HBBI", 2, 3, 1, 512), np.array(norms, "<f4"), np.array(counts, "<u4"),
        stream]))


@pytest.mark.parametrize("kw,match", [
    ({"counts": (513, 0)}, "Elias stream"), ({"counts": (600, 600)}, "add up to"),
    ({"counts": (1, 0)}, "Elias stream"), ({"counts": (0, 0), "stream": b"\1\0\0\0"}, "holds 0"),
    ({"counts": (1, 0), "stream": b"\x00\x01\x00\x00"}, "padding bits"),
    ({"counts": (0, 0), "stream": bytes(400_000)}, "at most"),
    ({"norms": (1.0, np.inf)}, "finite"),
])
def test_elias_parse_rejects(kw, match):
    codec = QSGD(coding="elias")
    assert codec.parse(_elias_payload(), 999).n == 999
    with pytest.raises(WireFormatError, match=match):
        codec.parse(_elias_payload(**kw), 999)

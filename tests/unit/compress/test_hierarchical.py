"""HDQ codec (seed 000, METHODS.md 1.1-1.3): shared checks, oracle, tiers, byte and bit formulas,
stochastic rounding, error feedback and hostile payloads."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.compress.base import ErrorFeedback
from fedsqueeze.compress.hierarchical import HDQ, tier_bounds
from fedsqueeze.errors import WireFormatError
from tests import naive

from .common import (
    check_config_json,
    check_deterministic,
    check_nbytes,
    check_repr,
    check_roundtrip,
    check_truncation,
    sample_vector,
)

CODECS = [HDQ(), HDQ(rho=0.05, rounding="stochastic"), HDQ(rho=0.2, tiers=1, bits=(4,)),
          HDQ(rho=0.5, tiers=4, bits=(16, 6, 3, 1), error_feedback=False)]


def _ids(c):
    return repr(c)


@pytest.mark.parametrize("codec", CODECS, ids=_ids)
@pytest.mark.parametrize("n,kind", [(1, "normal"), (13, "normal"), (4810, "heavy"),
                                    (300, "zeros")])
def test_shared_checks(codec, n, kind):
    x = sample_vector(n, seed=n, kind=kind)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x, max_cuts=16)


@pytest.mark.parametrize("rho,bits,n,seed", [(0.01, (8, 4, 2), 4810, 0), (0.1, (6, 3, 1), 999, 1),
                                             (0.3, (4, 4, 4), 64, 2), (0.05, (2, 1), 3000, 3)])
def test_decode_equals_oracle(rho, bits, n, seed):
    x = sample_vector(n, seed=seed, kind="heavy")
    codec = HDQ(rho=rho, tiers=len(bits), bits=bits)
    enc, _ = codec.encode(x, seed=0)
    expected = naive.hdq_values(x, enc.meta["k"], bits)
    np.testing.assert_array_equal(codec.decode(enc), expected)


@pytest.mark.parametrize("k,H", [(49, 3), (2, 3), (0, 3), (10, 4), (7, 1)])
def test_tiers_have_equal_counts(k, H):
    b = tier_bounds(k, H)
    sizes = [z - a for a, z in b]
    assert sum(sizes) == k and b[0][0] == 0 and b[-1][1] == k
    assert max(sizes) - min(sizes) <= 1
    assert all(b[i][1] == b[i + 1][0] for i in range(H - 1))


def _expected_nbytes(x, codec, k):
    """METHODS.md 1.3, from the oracle: 8 + sum_h (20 + pad4(pos) + pad4(signs) + pad4(levels))."""
    n = x.shape[0]
    ranked = np.lexsort((np.arange(n), -np.abs(x.astype(np.float64))))[:k]
    total = 8
    for (a, z), b in zip(tier_bounds(k, codec.tiers), codec.bits, strict=True):
        idx = np.sort(ranked[a:z])
        pos = min(len(naive.varint_encode(idx)), (n + 7) // 8)
        kh = z - a
        total += 20 + wire.pad4(pos) + wire.pad4((kh + 7) // 8) + wire.pad4((kh * b + 7) // 8)
    return total


@pytest.mark.parametrize("codec", CODECS, ids=_ids)
@pytest.mark.parametrize("n,seed", [(4810, 0), (2, 1), (777, 2)])
def test_bytes_and_bits_follow_the_documented_formula(codec, n, seed):
    x = sample_vector(n, seed=seed)
    enc, _ = codec.encode(x, seed=0)
    k = max(1, int(np.ceil(codec.rho * n)))
    assert enc.nbytes == _expected_nbytes(x, codec, k)
    frame = wire.pack_frame(4, (struct.pack("<I", 5),) + enc.sections)
    assert len(frame) == 24 + 12 + (enc.nbytes - 8)  # "24 + 12 + sum_h(...)" of METHODS 1.3
    sizes = [z - a for a, z in tier_bounds(k, codec.tiers)]
    ib = (n - 1).bit_length()
    assert codec.theoretical_bits(enc) == sum(
        s * (ib + 1 + b) for s, b in zip(sizes, codec.bits, strict=True)) + 64 * codec.tiers
    assert enc.nbytes <= codec.max_nbytes(n)
    d = codec.diagnostics(enc)
    assert [d[f"k_{h + 1}"] for h in range(codec.tiers)] == sizes
    assert d["kept_fraction"] == k / n


@pytest.mark.parametrize("rho,modes", [(0.01, [0, 0, 0]), (0.6, [1, 1, 1])])
def test_each_tier_picks_its_smaller_position_coding(rho, modes):
    codec = HDQ(rho=rho)
    d = codec.diagnostics(codec.encode(sample_vector(4810, seed=3), seed=0)[0])
    assert [d[f"pos_mode_{h}"] for h in (1, 2, 3)] == modes


@pytest.mark.parametrize("n,draws", [(60, 800)])
def test_stochastic_rounding_is_unbiased_on_the_selection(n, draws):
    codec = HDQ(rho=0.5, tiers=2, bits=(2, 1), rounding="stochastic")
    x = sample_vector(n, seed=8)
    first = codec.encode(x, seed=0)[0]
    sel = np.flatnonzero(codec.decode(first))
    mean = np.zeros(n)
    for s in range(draws):
        mean += codec.decode(codec.encode(x, seed=s)[0])
    mean /= draws
    assert first.meta["flags"] == 1
    # per tier the rounding error is at most one level: (hi - lo) / 3, std <= half of that
    tol = 5 * (np.abs(x[sel]).max() / 3 / 2) / np.sqrt(draws)
    np.testing.assert_allclose(mean[sel], x[sel], atol=tol)
    assert codec.encode(x, seed=1)[0].payload() != codec.encode(x, seed=2)[0].payload()


@pytest.mark.parametrize("codec", [HDQ(rho=0.05), HDQ(rho=0.2, rounding="stochastic")], ids=_ids)
def test_error_feedback_conservation(codec):
    ef, key = ErrorFeedback(), ("c", 0)
    for t in range(3):
        v = ef.compensate(key, sample_vector(900, seed=t))
        x_hat = codec.decode(codec.encode(v, seed=t)[0])
        ef.update(key, v, x_hat)
        np.testing.assert_allclose(x_hat + ef.store[key], v, rtol=1e-6, atol=1e-7)


def _tier(k_h, lo=0.5, hi=1.0, b=8, mode=0, zero=0, pos=b"", signs=None, levels=None):
    signs = bytes((k_h + 7) // 8) if signs is None else signs
    levels = bytes((k_h * b + 7) // 8) if levels is None else levels
    out = struct.pack("<IffBBHI", k_h, lo, hi, b, mode, zero, len(pos))
    for s in (pos, signs, levels):
        out += s + bytes(-len(s) % 4)
    return out


def _payload(t1=None, t2=None, t3=None, k=10, H=3, flags=0):
    t1 = _tier(3, pos=b"\x00\x00\x00") if t1 is None else t1
    t2 = _tier(3, b=4, pos=b"\x03\x00\x00") if t2 is None else t2
    t3 = _tier(4, b=2, pos=b"\x06\x00\x00\x00") if t3 is None else t3
    return struct.pack("<IBBH", k, H, flags, 0) + t1 + t2 + t3


def test_valid_handmade_payload_parses():
    out = HDQ().decode(HDQ().parse(_payload(), 1000))
    np.testing.assert_array_equal(np.flatnonzero(out), np.arange(10))


@pytest.mark.parametrize("payload,match", [
    (_payload(k=11), "k = 11"),
    (_payload(H=2), "H = 2"),
    (_payload(flags=2), "flags"),
    (_payload(t1=_tier(2, pos=b"\x00\x00")), "k_h = 2"),
    (_payload(t2=_tier(3, b=5, pos=b"\x03\x00\x00")), "b_h = 5"),
    (_payload(t1=_tier(3, lo=2.0, hi=1.0, pos=b"\x00\x00\x00")), "lo = 2.0"),
    (_payload(t1=_tier(3, hi=float("inf"), pos=b"\x00\x00\x00")), "finite"),
    (_payload(t1=_tier(3, mode=3, pos=b"\x00\x00\x00")), "pos_mode"),
    (_payload(t1=_tier(3, zero=1, pos=b"\x00\x00\x00")), "reserved"),
    (_payload(t1=_tier(3, pos=b"\x00\x00\x00", signs=b"\x08")), "padding"),
    (_payload(t2=_tier(3, b=4, pos=b"\x00\x00\x00")), "share positions"),
    (_payload(t3=_tier(4, b=2, pos=b"\x06\x00\x00\xe7\x07")), "index out of range"),
    (_payload() + bytes(4), "trailing"),
])
def test_parse_rejects_hostile_payloads(payload, match):
    with pytest.raises(WireFormatError, match=match):
        HDQ().parse(payload, 1000)


@pytest.mark.parametrize("kwargs,exc", [
    ({"tiers": 0}, ValueError), ({"tiers": 2}, ValueError), ({"bits": (8, 4, 17)}, ValueError),
    ({"bits": (8, 4, 0)}, ValueError), ({"bits": "842"}, TypeError),
    ({"rounding": "up"}, ValueError), ({"scope": "per_tensor"}, ValueError),
    ({"error_feedback": 0}, TypeError), ({"rho": 2}, ValueError),
])
def test_constructor_validates(kwargs, exc):
    with pytest.raises(exc):
        HDQ(**kwargs)


def test_defaults_match_methods():
    c = HDQ()
    assert (c.rho, c.tiers, c.bits, c.rounding, c.error_feedback) == (0.01, 3, (8, 4, 2),
                                                                      "nearest", True)
    assert c.get_config()["bits"] == [8, 4, 2]


@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_encode_rejects_non_finite(bad):
    x = sample_vector(100)
    x[7] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        HDQ().encode(x, seed=0)

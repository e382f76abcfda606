"""STC codec (METHODS.md 6.10): shared checks, oracle, Rice parameter, byte formula, EF, hostile
input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.compress.base import ErrorFeedback
from fedsqueeze.compress.stc import STC, rice_parameter
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

CODECS = [STC(), STC(rho=0.001, error_feedback=False), STC(rho=0.3), STC(rho=1.0)]


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


@pytest.mark.parametrize("rho,n,seed", [(0.01, 4810, 0), (0.1, 999, 1), (0.5, 64, 2)])
def test_decode_equals_oracle(rho, n, seed):
    x = sample_vector(n, seed=seed, kind="heavy")
    codec = STC(rho=rho)
    enc, _ = codec.encode(x, seed=0)
    np.testing.assert_array_equal(codec.decode(enc), naive.stc_values(x, enc.meta["k"]))


@pytest.mark.parametrize("p,b", [(0.01, 6), (0.001, 9), (0.1, 3), (0.25, 1), (0.5, 0), (0.9, 0),
                                 (1.0, 0)])
def test_rice_parameter(p, b):
    assert rice_parameter(p) == b


@pytest.mark.parametrize("rho,n,seed", [(0.01, 4810, 0), (0.05, 4810, 1), (0.9, 100, 2)])
def test_bytes_and_bits_follow_the_documented_formula(rho, n, seed):
    x = sample_vector(n, seed=seed)
    codec = STC(rho=rho)
    enc, _ = codec.encode(x, seed=0)
    k = max(1, int(np.ceil(rho * n)))
    _, nbits = naive.rice_encode(naive.topk_indices(x, k), codec.b_star)
    assert enc.nbytes == 16 + wire.pad4((nbits + 7) // 8) + wire.pad4((k + 7) // 8)
    frame = wire.pack_frame(4, (struct.pack("<I", 1),) + enc.sections)
    assert len(frame) == 24 + 4 + enc.nbytes
    b = codec.b_star
    b_pos = b + 1 / (1 - (1 - rho) ** (2**b))
    assert codec.theoretical_bits(enc) == pytest.approx(k * (b_pos + 1) + 32)
    assert enc.nbytes <= codec.max_nbytes(n)


def test_mean_position_bits_for_p_001():
    assert STC(rho=0.01).mean_position_bits() == pytest.approx(8.11, abs=0.005)


@pytest.mark.parametrize("rho", [0.01, 0.2])
def test_error_feedback_conservation(rho):
    codec, ef, key = STC(rho=rho), ErrorFeedback(), 11
    for t in range(3):
        v = ef.compensate(key, sample_vector(700, seed=t))
        x_hat = codec.decode(codec.encode(v, seed=t)[0])
        ef.update(key, v, x_hat)
        np.testing.assert_allclose(x_hat + ef.store[key], v, rtol=1e-6, atol=1e-7)


def _payload(k=10, mu=1.0, b=6, nbits=70, stream=None, signs=b"\x00\x00") -> bytes:
    stream = bytes((nbits + 7) // 8) if stream is None else stream
    body = struct.pack("<IfB3xI", k, mu, b, nbits) + stream + bytes(-len(stream) % 4)
    return body + signs + bytes(-len(signs) % 4)


@pytest.mark.parametrize("payload,match", [
    (_payload(k=9), "k = 9"),
    (_payload(mu=float("nan")), "mu"),
    (_payload(mu=-1.0), "mu"),
    (_payload(b=5), "b\\* = 5"),
    (_payload(nbits=69), "pos_bits = 69"),
    (_payload(nbits=2**31), "pos_bits"),
    (_payload(signs=b"\x00\x04"), "sign padding"),
    (_payload(stream=b"\x7f" + bytes(8)), "index out of range|count|truncated"),
])
def test_parse_rejects_hostile_payloads(payload, match):
    with pytest.raises(WireFormatError, match=match):
        STC().parse(payload, 1000)


def test_parse_accepts_the_all_zero_gap_stream():
    codec = STC()
    enc = codec.parse(_payload(), 1000)  # ten gaps of 0: indices 0..9, all positive
    out = codec.decode(enc)
    np.testing.assert_array_equal(np.flatnonzero(out), np.arange(10))
    assert np.all(out[:10] == 1.0)


@pytest.mark.parametrize("kwargs,exc", [({"rho": 0.0}, ValueError), ({"rho": None}, TypeError),
                                        ({"error_feedback": "no"}, TypeError)])
def test_constructor_validates(kwargs, exc):
    with pytest.raises(exc):
        STC(**kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_encode_rejects_non_finite(bad):
    x = sample_vector(100)
    x[3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        STC().encode(x, seed=0)

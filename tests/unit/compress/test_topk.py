"""Top-k codec (METHODS.md 6.2): shared checks, oracle, byte formula, error feedback, hostile
input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.compress.base import ErrorFeedback
from fedsqueeze.compress.topk import TopK
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

CODECS = [TopK(), TopK(rho=0.05, error_feedback=False), TopK(rho=0.5), TopK(rho=1.0)]


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


@pytest.mark.parametrize("rho,n,seed", [(0.01, 4810, 0), (0.1, 999, 1), (0.3, 64, 2)])
def test_decode_keeps_oracle_topk(rho, n, seed):
    x = sample_vector(n, seed=seed, kind="heavy")
    codec = TopK(rho=rho)
    idx = naive.topk_indices(x, int(codec.diagnostics(codec.encode(x, seed=0)[0])["k"]))
    expected = np.zeros_like(x)
    expected[idx] = x[idx]
    np.testing.assert_array_equal(codec.decode(codec.encode(x, seed=0)[0]), expected)


@pytest.mark.parametrize("rho,n,seed", [(0.01, 4810, 0), (0.2, 4810, 1), (0.9, 100, 2),
                                        (0.01, 1, 3)])
def test_bytes_follow_the_documented_formula(rho, n, seed):
    x = sample_vector(n, seed=seed)
    codec = TopK(rho=rho)
    enc, _ = codec.encode(x, seed=0)
    k = max(1, int(np.ceil(rho * n)))
    idx = naive.topk_indices(x, k)
    pos_bytes = min(len(naive.varint_encode(idx)), (n + 7) // 8)
    assert enc.nbytes == 12 + wire.pad4(pos_bytes) + 4 * k
    frame = wire.pack_frame(4, (struct.pack("<I", 7),) + enc.sections, round=1, client=2)
    assert len(frame) == 24 + 4 + enc.nbytes
    assert codec.theoretical_bits(enc) == k * (32 + (n - 1).bit_length())  # ceil(log2 D)
    assert enc.nbytes <= codec.max_nbytes(n)


@pytest.mark.parametrize("rho,mode", [(0.01, 0), (0.5, 1)])
def test_positions_use_the_smaller_coding(rho, mode):
    codec = TopK(rho=rho)
    enc, _ = codec.encode(sample_vector(4810, seed=4), seed=0)
    d = codec.diagnostics(enc)
    assert d["pos_mode"] == mode
    assert d["kept_fraction"] == pytest.approx(rho, abs=1 / 4810)


@pytest.mark.parametrize("codec", [TopK(rho=0.02), TopK(rho=0.3)], ids=_ids)
def test_error_feedback_conservation(codec):
    ef, key = ErrorFeedback(), ("client", 3)
    for t in range(3):
        x = sample_vector(500, seed=t)
        v = ef.compensate(key, x)
        x_hat = codec.decode(codec.encode(v, seed=t)[0])
        ef.update(key, v, x_hat)
        np.testing.assert_array_equal(x_hat + ef.store[key], v)


def _payload(k, mode, pos: bytes, values: int, pos_bytes=None) -> bytes:
    pre = struct.pack("<IB3xI", k, mode, len(pos) if pos_bytes is None else pos_bytes)
    pad = bytes(-len(pos) % 4)
    return pre + pos + pad + bytes(4 * values)


@pytest.mark.parametrize("payload,match", [
    (_payload(2, 0, b"\x00\x01", 2), "k = 2"),                      # k must be 10 for D = 1000
    (_payload(10, 2, bytes(10), 10), "pos_mode"),
    (_payload(10, 0, bytes(9), 10), "pos_bytes = 9"),                # < 1 byte per index
    (_payload(10, 1, bytes(10), 10), "bitmap"),                      # bitmap must be 125 bytes
    (_payload(10, 0, b"", 10, pos_bytes=2**31), "pos_bytes"),        # hostile length
    (_payload(10, 0, b"\x00" * 9 + b"\xff\x07", 10), "index out of range"),
    (_payload(10, 0, b"\x00" * 9 + b"\x80\x00", 10), "overlong"),
    (_payload(10, 0, b"\x00" * 10, 9), "values"),
])
def test_parse_rejects_hostile_payloads(payload, match):
    with pytest.raises(WireFormatError, match=match):
        TopK().parse(payload, 1000)


@pytest.mark.parametrize("kwargs,exc", [({"rho": 0}, ValueError), ({"rho": 1.5}, ValueError),
                                        ({"rho": "0.1"}, TypeError), ({"rho": True}, TypeError),
                                        ({"error_feedback": 1}, TypeError)])
def test_constructor_validates(kwargs, exc):
    with pytest.raises(exc):
        TopK(**kwargs)


@pytest.mark.parametrize("n", [10, 1000])
def test_decode_out_and_defaults(n):
    codec = TopK()
    assert codec.error_feedback is True and codec.rho == 0.01
    enc, state = codec.encode(sample_vector(n), seed=0)
    assert state is None
    with pytest.raises(ValueError):
        codec.decode(enc, out=np.empty(n, np.float64))

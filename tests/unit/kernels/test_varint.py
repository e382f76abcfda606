"""Delta varint and bitmap position kernels (kernels/cpu/varint.py): oracle equality and the
decoder's status codes on hostile streams."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.kernels.cpu import varint as V
from tests import naive


def _indices(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False)).astype(np.int64)


def _decode(buf: bytes, k: int, n: int):
    out = np.full(max(k, 1), -1, np.int64)
    status = V.varint_decode(np.frombuffer(buf, np.uint8), k, n, out)
    return status, out[:k]


@pytest.mark.parametrize("n,k,seed", [(1, 1, 0), (10, 0, 0), (10, 10, 0), (200, 3, 1),
                                      (20000, 50, 2), (2**31, 40, 3), (2**32 - 1, 5, 4)])
def test_varint_matches_oracle_and_roundtrips(n, k, seed):
    idx = _indices(min(n, 10**6), k, seed) if n <= 10**6 else np.sort(
        np.random.default_rng(seed).integers(0, n, k).astype(np.int64))
    idx = np.unique(idx)
    if n > 10**6:
        idx[-1] = n - 1  # largest possible gap region
    expected = naive.varint_encode(idx)
    assert V.varint_nbytes(idx) == len(expected)
    buf = np.zeros(len(expected) + 3, np.uint8)
    assert V.varint_encode(idx, buf) == len(expected)
    assert bytes(buf[:len(expected)]) == expected
    status, got = _decode(expected, idx.shape[0], n)
    assert status == V.OK
    np.testing.assert_array_equal(got, idx)


@pytest.mark.parametrize("buf,k,n,status", [
    (b"", 1, 10, V.ERR_TRUNCATED),
    (b"\x80", 1, 10, V.ERR_TRUNCATED),            # continuation bit, then nothing
    (b"\x01", 2, 10, V.ERR_TRUNCATED),            # fewer values than k
    (b"\x80\x00", 1, 10, V.ERR_OVERLONG),         # redundant zero group
    (b"\x81\x80\x80\x80\x80\x00", 1, 2**40, V.ERR_OVERLONG),  # six bytes
    (b"\x0a", 1, 10, V.ERR_INDEX),                # index 10 under D = 10
    (b"\x05\x04", 2, 10, V.ERR_INDEX),            # 5, then 5 + 1 + 4 = 10
    (b"\xff\xff\xff\xff\x0f", 1, 2**32 - 1, V.ERR_INDEX),
    (b"\x01\x02", 1, 10, V.ERR_COUNT),            # trailing byte after k values
    (b"\x01\x02", 0, 10, V.ERR_COUNT),
])
def test_varint_decoder_rejects(buf, k, n, status):
    assert _decode(buf, k, n)[0] == status


@pytest.mark.parametrize("n,k,seed", [(1, 1, 0), (8, 3, 1), (13, 13, 2), (1000, 500, 3),
                                      (1000, 0, 4)])
def test_bitmap_matches_oracle_and_roundtrips(n, k, seed):
    idx = _indices(n, k, seed)
    buf = np.full((n + 7) // 8, 0xAA, np.uint8)  # kernel must clear it
    V.bitmap_encode(idx, buf)
    assert bytes(buf) == naive.bitmap_encode(idx, n)
    out = np.empty(max(k, 1), np.int64)
    assert V.bitmap_decode(buf, k, n, out) == V.OK
    np.testing.assert_array_equal(out[:k], idx)


@pytest.mark.parametrize("buf,k,n,status", [
    (b"\x03", 1, 8, V.ERR_COUNT),     # two bits for k = 1
    (b"\x01", 2, 8, V.ERR_COUNT),     # one bit for k = 2
    (b"\x80", 1, 7, V.ERR_INDEX),     # padding bit 7 set under D = 7
    (b"\x00\x02", 1, 9, V.ERR_INDEX),
])
def test_bitmap_decoder_rejects(buf, k, n, status):
    out = np.empty(max(k, 1), np.int64)
    assert V.bitmap_decode(np.frombuffer(buf, np.uint8), k, n, out) == status

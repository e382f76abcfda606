"""Golomb-Rice gap coding (kernels/cpu/golomb.py): oracle equality, round trips, hostile streams."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.kernels.cpu import golomb as G
from fedsqueeze.kernels.cpu import varint as V
from tests import naive


def _indices(n: int, k: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False)).astype(np.int64)


def _decode(buf: bytes, nbits: int, b: int, k: int, n: int):
    out = np.full(max(k, 1), -1, np.int64)
    return G.rice_decode(np.frombuffer(buf, np.uint8), nbits, b, k, n, out), out[:k]


@pytest.mark.parametrize("b", [0, 1, 6, 13])
@pytest.mark.parametrize("n,k,seed", [(1, 1, 0), (10, 0, 1), (10, 10, 2), (4810, 49, 3),
                                      (5000, 7, 4)])
def test_rice_matches_oracle_and_roundtrips(b, n, k, seed):
    idx = _indices(n, k, seed)
    expected, nbits = naive.rice_encode(idx, b)
    assert G.rice_nbits(idx, b) == nbits
    buf = np.full(len(expected), 0xFF, np.uint8)  # kernel must clear it
    assert G.rice_encode(idx, b, buf) == nbits
    assert bytes(buf) == expected
    status, got = _decode(expected, nbits, b, k, n)
    assert status == V.OK
    np.testing.assert_array_equal(got, idx)


@pytest.mark.parametrize("buf,nbits,b,k,n,status", [
    (b"", 0, 2, 1, 10, V.ERR_TRUNCATED),
    (b"\x01", 1, 2, 1, 10, V.ERR_TRUNCATED),        # unary 1 and no terminator within nbits
    (b"\x00", 2, 2, 1, 10, V.ERR_TRUNCATED),        # remainder cut short
    (b"\x00", 3, 2, 2, 10, V.ERR_TRUNCATED),        # one value for k = 2
    (b"\x07", 3, 0, 1, 3, V.ERR_INDEX),             # unary run reaches D
    (b"\x05", 3, 1, 1, 3, V.ERR_INDEX),             # q = 1, r = 1: gap 3 under D = 3
    (b"\x00", 4, 1, 1, 10, V.ERR_COUNT),            # 2 bits used, 4 declared
    (b"\x10", 3, 2, 1, 10, V.ERR_PADDING),          # bit 4 set beyond nbits = 3
])
def test_rice_decoder_rejects(buf, nbits, b, k, n, status):
    assert _decode(buf, nbits, b, k, n)[0] == status

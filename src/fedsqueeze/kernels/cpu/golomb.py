"""Golomb-Rice coding of index gaps (STC, METHODS.md 0.5 and 6.10). CPU only.

Gap ``g`` (``g_0 = i_0``, ``g_j = i_j - i_{j-1} - 1``) with parameter ``b`` is ``g >> b`` one-bits,
a zero-bit, then the ``b`` low bits of ``g``, least significant first. Stream bit ``p`` is bit
``p % 8`` (LSB = 0) of byte ``p // 8``; unused trailing bits are 0.

The decoder returns a status code from :mod:`.varint` (``OK``, ``ERR_TRUNCATED``, ``ERR_INDEX``,
``ERR_COUNT``, ``ERR_PADDING``) instead of raising, and never reads past ``nbits``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT
from .varint import ERR_COUNT, ERR_INDEX, ERR_PADDING, ERR_TRUNCATED, OK

__all__ = ["rice_nbits", "rice_encode", "rice_decode"]


@nb.njit(**NJIT)
def rice_nbits(idx, b):  # pragma: no cover - compiled
    """Bits of the Rice stream of the sorted int64 indices ``idx`` with parameter ``b``."""
    total = 0
    prev = -1
    for j in range(idx.shape[0]):
        total += ((idx[j] - prev - 1) >> b) + 1 + b
        prev = idx[j]
    return total


@nb.njit(**NJIT)
def rice_encode(idx, b, out):  # pragma: no cover - compiled
    """Zero ``out`` (uint8, ``ceil(rice_nbits / 8)`` bytes) and write the Rice stream of ``idx``.

    Returns the number of bits written.
    """
    for i in range(out.shape[0]):
        out[i] = 0
    p = 0
    prev = -1
    for j in range(idx.shape[0]):
        g = idx[j] - prev - 1
        prev = idx[j]
        for _ in range(g >> b):
            out[p >> 3] |= np.uint8(1 << (p & 7))
            p += 1
        p += 1  # the terminating zero bit
        for t in range(b):
            if (g >> t) & 1:
                out[p >> 3] |= np.uint8(1 << (p & 7))
            p += 1
    return p


@nb.njit(**NJIT)
def _bit(buf, p):  # pragma: no cover - compiled
    return (np.int64(buf[p >> 3]) >> (p & 7)) & 1


@nb.njit(**NJIT)
def rice_decode(buf, nbits, b, k, n, out):  # pragma: no cover - compiled
    """Read exactly ``k`` indices ``< n`` from the first ``nbits`` bits of ``buf`` into ``out``.

    ``buf`` must be ``ceil(nbits / 8)`` bytes (the caller checks); every bit of the stream must be
    consumed and the trailing bits of the last byte must be zero. Returns a status code.
    """
    p = 0
    prev = -1
    for j in range(k):
        q = 0
        while True:
            if p >= nbits:
                return ERR_TRUNCATED
            bit = _bit(buf, p)
            p += 1
            if bit == 0:
                break
            q += 1
            if prev + 1 + (q << b) >= n:
                return ERR_INDEX
        if p + b > nbits:
            return ERR_TRUNCATED
        r = 0
        for t in range(b):
            r |= _bit(buf, p) << t
            p += 1
        cur = prev + 1 + ((q << b) | r)
        if cur >= n:
            return ERR_INDEX
        out[j] = cur
        prev = cur
    if p != nbits:
        return ERR_COUNT
    for t in range(nbits, buf.shape[0] * 8):
        if _bit(buf, t):
            return ERR_PADDING
    return OK

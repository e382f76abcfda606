"""Index streams: delta + unsigned LEB128 varint, and the ``D``-bit bitmap (METHODS.md 0.5).

CPU only. Sorted indices ``i_0 < i_1 < ...`` become gaps ``g_0 = i_0``,
``g_j = i_j - i_{j-1} - 1``; each gap is LEB128 (7 bits per byte, least significant group first,
high bit = more bytes follow). The bitmap has
``ceil(D / 8)`` bytes, bit ``i % 8`` (LSB = 0) of byte ``i // 8`` set iff ``i`` is present.

Decoders trust nothing: they return a status code instead of raising (the codec turns a non-zero
code into a ``WireFormatError`` naming the field) and write at most ``k`` indices into ``out``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = [
    "OK", "ERR_TRUNCATED", "ERR_OVERLONG", "ERR_INDEX", "ERR_COUNT", "ERR_PADDING", "STATUS_TEXT",
    "MAX_VARINT_BYTES", "varint_nbytes", "varint_encode", "varint_decode",
    "bitmap_encode", "bitmap_decode",
]

OK = 0
ERR_TRUNCATED = 1
"""The stream ended inside a value, or before ``k`` values were read."""
ERR_OVERLONG = 2
"""A varint has a redundant zero final group or more than ``MAX_VARINT_BYTES`` bytes."""
ERR_INDEX = 3
"""A decoded index is ``>= D`` (for bitmaps: a padding bit beyond ``D`` is set)."""
ERR_COUNT = 4
"""The stream holds more than ``k`` values (trailing bytes, or extra bitmap bits), or fewer."""
ERR_PADDING = 5
"""Unused trailing bits of a bit stream are not zero."""

STATUS_TEXT = {
    ERR_TRUNCATED: "truncated",
    ERR_OVERLONG: "overlong varint",
    ERR_INDEX: "index out of range",
    ERR_COUNT: "count mismatch",
    ERR_PADDING: "non-zero padding bits",
}

MAX_VARINT_BYTES = 5
"""Gaps are below ``2**32`` (``D`` is a u32), so no canonical varint needs more than 5 bytes."""


@nb.njit(**NJIT)
def _len7(g):  # pragma: no cover - compiled
    n = 1
    while g >= 128:
        g >>= 7
        n += 1
    return n


@nb.njit(**NJIT)
def varint_nbytes(idx):  # pragma: no cover - compiled
    """Bytes of the delta-varint stream of the sorted int64 indices ``idx``."""
    total = 0
    prev = -1
    for j in range(idx.shape[0]):
        total += _len7(idx[j] - prev - 1)
        prev = idx[j]
    return total


@nb.njit(**NJIT)
def varint_encode(idx, out):  # pragma: no cover - compiled
    """Write the delta-varint stream of sorted ``idx`` into ``out`` (uint8, at least
    ``varint_nbytes(idx)`` long). Returns the number of bytes written."""
    pos = 0
    prev = -1
    for j in range(idx.shape[0]):
        g = idx[j] - prev - 1
        prev = idx[j]
        while g >= 128:
            out[pos] = np.uint8((g & 127) | 128)
            g >>= 7
            pos += 1
        out[pos] = np.uint8(g)
        pos += 1
    return pos


@nb.njit(**NJIT)
def varint_decode(buf, k, n, out):  # pragma: no cover - compiled
    """Read exactly ``k`` indices ``< n`` from the whole of ``buf`` (uint8) into ``out`` (int64).

    Returns ``OK`` or an ``ERR_*`` code; on error ``out`` holds garbage.
    """
    size = buf.shape[0]
    pos = 0
    prev = -1
    for j in range(k):
        val = 0
        shift = 0
        nb_ = 0
        while True:
            if pos >= size:
                return ERR_TRUNCATED
            if nb_ == MAX_VARINT_BYTES:
                return ERR_OVERLONG
            b = np.int64(buf[pos])
            pos += 1
            nb_ += 1
            val |= (b & 127) << shift
            if b < 128:
                if b == 0 and nb_ > 1:
                    return ERR_OVERLONG
                break
            shift += 7
        cur = prev + 1 + val
        if cur >= n:
            return ERR_INDEX
        out[j] = cur
        prev = cur
    if pos != size:
        return ERR_COUNT
    return OK


@nb.njit(**NJIT)
def bitmap_encode(idx, out):  # pragma: no cover - compiled
    """Zero ``out`` (uint8, ``ceil(D / 8)`` bytes) and set bit ``i`` for each ``i`` in ``idx``."""
    for b in range(out.shape[0]):
        out[b] = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        out[i >> 3] |= np.uint8(1 << (i & 7))


@nb.njit(**NJIT)
def bitmap_decode(buf, k, n, out):  # pragma: no cover - compiled
    """Read the set bits of ``buf`` (``ceil(n / 8)`` bytes) into ``out`` (int64, room for ``k``) in
    increasing order. Exactly ``k`` bits must be set, none at or beyond ``n``. Returns a status
    code."""
    count = 0
    for byte in range(buf.shape[0]):
        b = np.int64(buf[byte])
        bit = 0
        while b != 0:
            if b & 1:
                i = byte * 8 + bit
                if i >= n:
                    return ERR_INDEX
                if count >= k:
                    return ERR_COUNT
                out[count] = i
                count += 1
            b >>= 1
            bit += 1
    if count != k:
        return ERR_COUNT
    return OK

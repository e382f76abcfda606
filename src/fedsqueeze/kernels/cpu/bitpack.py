"""Fixed-width bit packing, LSB first (METHODS.md section 0.5).

Value ``i`` of width ``w`` occupies stream bits ``[i*w, (i+1)*w)``; stream bit ``p`` is bit
``p % 8`` of byte ``p // 8``; within a value its least significant bit comes first. A section of
``n`` values takes ``ceil(n*w/8)`` bytes and unused trailing bits are 0.

Widths 1, 2, 4, 8 and 16 have straight per-byte loops that LLVM vectorises. Every other width
works on groups of 8 values, which always fill exactly ``w`` bytes, assembled in a 128-bit
accumulator held as two ``uint64`` words. The CPU assembles each half-group of four values with
constant shifts; the generic per-value helpers (:func:`group_put` / :func:`group_store`,
:func:`group_load` / :func:`group_get`) handle the tail and are compiled from the same source
as CUDA device functions (one thread per group of 8). Both give the same bytes (tested).

The codes' bits above ``w`` are ignored (masked), so a bad code can never spill into its
neighbours. Kernels write into caller-provided arrays and allocate nothing.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["pack_bits", "unpack_bits", "packed_nbytes", "group_put", "group_store",
           "group_load", "group_get"]

_U64_0 = np.uint64(0)
_U64_FF = np.uint64(0xFF)


def packed_nbytes(n: int, width: int) -> int:
    """Bytes of ``n`` values of ``width`` bits: ``ceil(n * width / 8)``."""
    return (n * width + 7) // 8


# -- leaf helpers shared with the CUDA twin (no calls inside: they compile for either target) ----
@nb.njit(inline="always", **NJIT)
def group_put(lo, hi, code, j, w):  # pragma: no cover - compiled
    """Place value ``j`` (0..7) of a group of width-``w`` values into the 128-bit ``(lo, hi)``."""
    c = np.uint64(code) & ((np.uint64(1) << np.uint64(w)) - np.uint64(1))
    sh = j * w
    if sh < 64:
        lo = lo | (c << np.uint64(sh))
        if sh + w > 64:
            hi = hi | (c >> np.uint64(64 - sh))
    else:
        hi = hi | (c << np.uint64(sh - 64))
    return lo, hi


@nb.njit(inline="always", **NJIT)
def group_store(lo, hi, out, pos, nbytes):  # pragma: no cover - compiled
    """Write the low ``nbytes`` bytes of the 128-bit ``(lo, hi)`` to ``out[pos:pos+nbytes]``."""
    for k in range(nbytes):
        if k < 8:
            out[pos + k] = np.uint8((lo >> np.uint64(8 * k)) & _U64_FF)
        else:
            out[pos + k] = np.uint8((hi >> np.uint64(8 * (k - 8))) & _U64_FF)


@nb.njit(inline="always", **NJIT)
def group_load(packed, pos, nbytes):  # pragma: no cover - compiled
    """Read ``nbytes`` (<= 16) bytes from ``packed[pos:]`` into a 128-bit ``(lo, hi)``."""
    lo = _U64_0
    hi = _U64_0
    for k in range(nbytes):
        b = np.uint64(packed[pos + k])
        if k < 8:
            lo = lo | (b << np.uint64(8 * k))
        else:
            hi = hi | (b << np.uint64(8 * (k - 8)))
    return lo, hi


@nb.njit(inline="always", **NJIT)
def group_get(lo, hi, j, w):  # pragma: no cover - compiled
    """Value ``j`` (0..7) of width ``w`` from the 128-bit ``(lo, hi)``, as ``uint64``."""
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    sh = j * w
    if sh >= 64:
        return (hi >> np.uint64(sh - 64)) & mask
    v = lo >> np.uint64(sh)
    if sh + w > 64:
        v = v | (hi << np.uint64(64 - sh))
    return v & mask


# -- packing ----------------------------------------------------------------------------------
@nb.njit(**NJIT)
def _pack_groups(codes, n, w, out):  # pragma: no cover - compiled
    # groups of 8 values fill w bytes: low half (values 0-3, 4w bits) and high half (4-7)
    # assembled in 64-bit words, the high half shifted in above bit 4w
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    w1 = np.uint64(w)
    w2 = np.uint64(2 * w)
    w3 = np.uint64(3 * w)
    h = np.uint64(4 * w)
    nlo = min(w, 8)
    for g in range(n // 8):
        i = 8 * g
        a = ((np.uint64(codes[i]) & mask) | ((np.uint64(codes[i + 1]) & mask) << w1)
             | ((np.uint64(codes[i + 2]) & mask) << w2) | ((np.uint64(codes[i + 3]) & mask) << w3))
        b = ((np.uint64(codes[i + 4]) & mask) | ((np.uint64(codes[i + 5]) & mask) << w1)
             | ((np.uint64(codes[i + 6]) & mask) << w2) | ((np.uint64(codes[i + 7]) & mask) << w3))
        lo = a | (b << h)
        p = g * w
        for k in range(nlo):  # no per-byte branch: measured 2x faster than group_store
            out[p + k] = np.uint8((lo >> np.uint64(8 * k)) & _U64_FF)
        if w > 8:
            hi = b >> (np.uint64(64) - h)
            for k in range(w - 8):
                out[p + 8 + k] = np.uint8((hi >> np.uint64(8 * k)) & _U64_FF)
    g = n // 8
    m = n - 8 * g
    if m:
        lo = _U64_0
        hi = _U64_0
        for j in range(m):
            lo, hi = group_put(lo, hi, codes[8 * g + j], j, w)
        group_store(lo, hi, out, g * w, (m * w + 7) // 8)


@nb.njit(**NJIT)
def pack_bits(codes, width, out):  # pragma: no cover - compiled
    """Pack ``codes[:n]`` (unsigned, ``n = codes.shape[0]``) at ``width`` bits into ``out``.

    Writes exactly ``ceil(n*width/8)`` bytes of ``out`` (which may be longer); 1 <= width <= 16.
    """
    n = codes.shape[0]
    w = width
    if w == 8:
        for i in range(n):
            out[i] = np.uint8(codes[i] & 0xFF)
    elif w == 16:
        for i in range(n):
            c = np.uint32(codes[i])
            out[2 * i] = np.uint8(c & np.uint32(0xFF))
            out[2 * i + 1] = np.uint8((c >> np.uint32(8)) & np.uint32(0xFF))
    elif w == 4:
        nf = n // 2
        for k in range(nf):
            out[k] = np.uint8((codes[2 * k] & 15) | ((codes[2 * k + 1] & 15) << 4))
        if n > 2 * nf:
            out[nf] = np.uint8(codes[n - 1] & 15)
    elif w == 2:
        nf = n // 4
        for k in range(nf):
            i = 4 * k
            out[k] = np.uint8((codes[i] & 3) | ((codes[i + 1] & 3) << 2)
                              | ((codes[i + 2] & 3) << 4) | ((codes[i + 3] & 3) << 6))
        if n > 4 * nf:
            acc = 0
            for j in range(n - 4 * nf):
                acc |= (np.int64(codes[4 * nf + j]) & 3) << (2 * j)
            out[nf] = np.uint8(acc)
    elif w == 1:
        nf = n // 8
        for k in range(nf):
            i = 8 * k
            out[k] = np.uint8((codes[i] & 1) | ((codes[i + 1] & 1) << 1)
                              | ((codes[i + 2] & 1) << 2) | ((codes[i + 3] & 1) << 3)
                              | ((codes[i + 4] & 1) << 4) | ((codes[i + 5] & 1) << 5)
                              | ((codes[i + 6] & 1) << 6) | ((codes[i + 7] & 1) << 7))
        if n > 8 * nf:
            acc = 0
            for j in range(n - 8 * nf):
                acc |= (np.int64(codes[8 * nf + j]) & 1) << j
            out[nf] = np.uint8(acc)
    else:
        _pack_groups(codes, n, w, out)


# -- unpacking --------------------------------------------------------------------------------
@nb.njit(**NJIT)
def _unpack_groups(packed, w, n, out):  # pragma: no cover - compiled
    mask = (np.uint64(1) << np.uint64(w)) - np.uint64(1)
    w1 = np.uint64(w)
    w2 = np.uint64(2 * w)
    w3 = np.uint64(3 * w)
    h = np.uint64(4 * w)
    nlo = min(w, 8)
    for g in range(n // 8):
        p = g * w
        lo = _U64_0
        for k in range(nlo):
            lo = lo | (np.uint64(packed[p + k]) << np.uint64(8 * k))
        b = lo >> h
        if w > 8:
            hi = _U64_0
            for k in range(w - 8):
                hi = hi | (np.uint64(packed[p + 8 + k]) << np.uint64(8 * k))
            b = b | (hi << (np.uint64(64) - h))
        i = 8 * g
        out[i] = lo & mask
        out[i + 1] = (lo >> w1) & mask
        out[i + 2] = (lo >> w2) & mask
        out[i + 3] = (lo >> w3) & mask
        out[i + 4] = b & mask
        out[i + 5] = (b >> w1) & mask
        out[i + 6] = (b >> w2) & mask
        out[i + 7] = (b >> w3) & mask
    g = n // 8
    m = n - 8 * g
    if m:
        lo, hi = group_load(packed, g * w, (m * w + 7) // 8)
        for j in range(m):
            out[8 * g + j] = group_get(lo, hi, j, w)


@nb.njit(**NJIT)
def unpack_bits(packed, width, n, out):  # pragma: no cover - compiled
    """Inverse of :func:`pack_bits`: read ``ceil(n*width/8)`` bytes, write ``out[:n]``."""
    w = width
    if w == 8:
        for i in range(n):
            out[i] = packed[i]
    elif w == 16:
        for i in range(n):
            out[i] = np.uint16(packed[2 * i]) | (np.uint16(packed[2 * i + 1]) << np.uint16(8))
    elif w == 4:
        nf = n // 2
        for k in range(nf):
            b = packed[k]
            out[2 * k] = b & np.uint8(15)
            out[2 * k + 1] = b >> np.uint8(4)
        if n > 2 * nf:
            out[n - 1] = packed[nf] & np.uint8(15)
    elif w == 2:
        for i in range(n):
            out[i] = (packed[i >> 2] >> np.uint8(2 * (i & 3))) & np.uint8(3)
    elif w == 1:
        for i in range(n):
            out[i] = (packed[i >> 3] >> np.uint8(i & 7)) & np.uint8(1)
    else:
        _unpack_groups(packed, w, n, out)

"""Elias-omega coding of QSGD codes (METHODS.md 4.1, ``qsgd.coding = "elias"``).

The fixed-length codes (``w`` bits each, ``(level << 1) | sign``, LSB first) are transcoded into
one bit stream: bucket by bucket, for each coordinate with ``level > 0`` in increasing order,
``omega(gap)``, the sign bit and ``omega(level)``, where ``gap = j - j_prev`` and ``j_prev = -1``
at each bucket start. Bits go into the stream in order, bit ``i`` at byte ``i >> 3``, position
``i & 7`` (LSB first, like every packed section); an omega code's groups go most significant bit
first. The per-bucket nonzero counts travel apart (``u32[nb]``).

``omega(1) = 0``; for ``v > 1`` the groups are ``bin(v)`` preceded by the groups of
``bitlen(v) - 1`` down to a group of length 2, then a ``0``: ``omega(2) = 10 0``,
``omega(5) = 10 101 0``, ``omega(16) = 10 100 10000 0``.

Decoding back to fixed codes and then running the fixed decoder gives exactly the values of the
fixed coding, except that a zero level decodes to ``+0.0`` whatever its sign bit (the stream
carries only nonzero levels). The decoder validates as it reads: every read is bounds-checked
against the stream, an omega group longer than 31 bits, a gap past the bucket end, a level of 0
or above ``s`` and a count above the bucket length are errors (negative return values, see
:data:`ERRORS`), never an out-of-bounds access.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["omega_len", "elias_size", "fixed_to_elias", "elias_to_fixed", "ERRORS"]

ERRORS = {
    -1: "the stream ends inside a code",
    -2: "an Elias-omega group longer than 31 bits",
    -3: "a gap that passes the end of its bucket",
    -4: "a level of 0 or above s",
    -5: "a nonzero count above the bucket length",
}


@nb.njit(**NJIT)
def _bitlen(v):
    n = 0
    while v > 0:
        n += 1
        v >>= 1
    return n


@nb.njit(**NJIT)
def omega_len(v):
    """Bits of ``omega(v)``, ``v >= 1``."""
    bits = 1
    while v > 1:
        b = _bitlen(v)
        bits += b
        v = b - 1
    return bits


@nb.njit(**NJIT)
def _get_code(codes, j, w):
    """Fixed code ``j`` (``w <= 16`` bits, LSB first)."""
    pos = j * w
    byte = pos >> 3
    shift = pos & 7
    word = np.uint32(0)
    for k in range(3):  # shift + w <= 7 + 16 < 24
        if byte + k < codes.shape[0]:
            word |= np.uint32(codes[byte + k]) << np.uint32(8 * k)
    return np.int64((word >> np.uint32(shift)) & np.uint32((1 << w) - 1))


@nb.njit(**NJIT)
def _put_bits(stream, pos, value, nbits):
    """Write ``nbits`` of ``value``, most significant first, at bit ``pos``; return the new pos."""
    for k in range(nbits - 1, -1, -1):
        if (value >> k) & 1:
            stream[pos >> 3] |= np.uint8(1 << (pos & 7))
        pos += 1
    return pos


@nb.njit(**NJIT)
def _put_omega(stream, pos, v, groups):
    m = 0
    while v > 1:  # groups from the last (v itself) to the first
        groups[m] = v
        m += 1
        v = _bitlen(v) - 1
    for i in range(m - 1, -1, -1):
        pos = _put_bits(stream, pos, groups[i], _bitlen(groups[i]))
    return pos + 1  # the terminating 0 (the stream is zeroed)


@nb.njit(**NJIT)
def elias_size(codes, n, b, w, counts):
    """Fill ``counts[nb]`` (nonzero levels per bucket) and return the stream's length in bits."""
    bits = 0
    nb_ = counts.shape[0]
    for q in range(nb_):
        lo = q * b
        hi = min(n, lo + b)
        prev = lo - 1
        c = 0
        for j in range(lo, hi):
            code = _get_code(codes, j, w)
            level = code >> 1
            if level:
                bits += omega_len(np.int64(j - prev)) + 1 + omega_len(level)
                prev = j
                c += 1
        counts[q] = c
    return bits


@nb.njit(**NJIT)
def fixed_to_elias(codes, n, b, w, stream):
    """Write the stream (``stream`` zeroed, of :func:`elias_size` bits); return the bits."""
    groups = np.empty(8, dtype=np.int64)
    pos = 0
    nb_ = (n + b - 1) // b
    for q in range(nb_):
        lo = q * b
        hi = min(n, lo + b)
        prev = lo - 1
        for j in range(lo, hi):
            code = _get_code(codes, j, w)
            level = code >> 1
            if level:
                pos = _put_omega(stream, pos, np.int64(j - prev), groups)
                pos = _put_bits(stream, pos, code & 1, 1)
                pos = _put_omega(stream, pos, level, groups)
                prev = j
    return pos


@nb.njit(**NJIT)
def _get_omega(stream, pos, nbits):
    """``(value, pos)``; ``value < 0`` is an error code."""
    v = np.int64(1)
    while True:
        if pos >= nbits:
            return np.int64(-1), pos
        bit = (stream[pos >> 3] >> (pos & 7)) & 1
        pos += 1
        if bit == 0:
            return v, pos
        if v > 30:
            return np.int64(-2), pos
        if pos + v > nbits:
            return np.int64(-1), pos
        x = np.int64(1)
        for _ in range(v):
            x = (x << 1) | np.int64((stream[pos >> 3] >> (pos & 7)) & 1)
            pos += 1
        v = x


@nb.njit(**NJIT)
def elias_to_fixed(stream, nbits, counts, n, b, w, s, codes):
    """Decode the stream into fixed codes (``codes`` zeroed, ``ceil(n w / 8)`` bytes).

    Returns the bits read, or a negative error code (:data:`ERRORS`)."""
    pos = 0
    nb_ = counts.shape[0]
    for q in range(nb_):
        lo = q * b
        hi = min(n, lo + b)
        if np.int64(counts[q]) > hi - lo:
            return -5
        j = lo - 1
        for _ in range(np.int64(counts[q])):
            gap, pos = _get_omega(stream, pos, nbits)
            if gap < 0:
                return gap
            j += gap
            if j >= hi:
                return -3
            if pos >= nbits:
                return -1
            sign = np.int64((stream[pos >> 3] >> (pos & 7)) & 1)
            pos += 1
            level, pos = _get_omega(stream, pos, nbits)
            if level < 0:
                return level
            if level > s:
                return -4
            code = (level << 1) | sign
            bit = j * w
            for k in range(w):
                if (code >> k) & 1:
                    codes[(bit + k) >> 3] |= np.uint8(1 << ((bit + k) & 7))
    return pos

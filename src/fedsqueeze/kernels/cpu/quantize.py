"""QSGD with buckets (METHODS.md 4.1): fused norms, stochastic rounding and bit packing.

Element rule (the same source runs on CUDA, see ``kernels.cuda.quantize``)::

    N32   = float32(sqrt(sum of squares))     (float64 sum in a fixed order, see below)
    S     = (float32(s) / N32) * 2^24         (float32, per bucket; 0 if N32 == 0 or S overflows)
    q     = int64(min(|v| * S, s * 2^24))     (float32 product: the only rounding step)
    level = (q >> 24) + [u < (q & 0xFFFFFF)]  (u = word >> 8, word = Philox QSGD_ROUND)
    code  = (level << 1) | [v < 0]

i.e. ``r = s|v|/N`` with 24 fraction bits, ``l = floor(r)`` and ``P(level = l + 1) =
floor(frac * 2^24) / 2^24``: unbiased to within ``2^-24`` of one level. Scaling by ``2^24`` is
exact, the comparison is in the integer domain and no product feeds an addition, so a CUDA
compiler has nothing to contract into an FMA: codes are bit-identical on CPU and GPU. (A bucket
whose norm is below about ``2^-88`` overflows ``S`` and is coded as zeros.)
Element ``i`` uses word ``i % 4`` of the Philox block ``c0 = i // 4`` (c1 = c2 = 0, c3 =
``QSGD_ROUND << 24``, key = the message seed).

Bucket sums of squares use a fixed order (:func:`sumsq8`): eight float64 lanes (element ``j``
of the range goes to lane ``j % 8``) combined as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``. The
order vectorises on the CPU and is reproduced exactly by one CUDA thread per bucket (squares of
float32 values are exact in float64, so a fused multiply-add changes nothing).

Decode: ``v = float32(level) * (N32 / float32(s))``, negated when the sign bit is set.

CPU loop shape (measured on a loaded 2-core AVX-512 node, CPU time; ``benchmarks/codecs.py``):

* When ``bucket % 8 == 0`` (the default 512) and ``w <= 8`` (``s <= 127``), each bucket starts
  on a Philox block and a byte. Buckets go two at a time: both norms in one vectorised pass
  (:func:`fedsqueeze.kernels.cpu.lanes.sumsq8_pair`, the :func:`sumsq8` order bit for bit),
  a prefetch of the buckets two steps ahead, then per bucket one fused loop that draws the
  Philox words, computes the codes (:func:`qsgd_code_fused`) and writes the packed bytes
  directly (``w`` = 2, 3, 4, 8 have their own loops; 5, 6, 7 assemble groups of eight codes).
  No code scratch, no second packing pass.
* ``w = 4`` (``s`` = 4..7, the 4-bit case of the speed target) has its own driver
  (:func:`_encode_w4`): per bucket pair the norms, then the pair's Philox words in one vector
  loop into a small scratch, then the codes of each bucket eight at a time by
  :func:`fedsqueeze.kernels.cpu.lanes.qsgd_pack4` (LLVM vector IR on 32-bit lanes; Numba widens
  integers to 64 bits and left that loop scalar). Same bytes as the fused loop (tested against
  the oracle); ~15 % faster on 25M elements (0.44-0.46x memcpy instead of 0.36-0.40x).
* ``w > 8`` keeps codes in a ``uint16`` scratch packed by :func:`pack_bits`; a bucket that is
  not a multiple of 8 goes by chunks of :data:`CHUNK` elements with per-element scales.
* Philox (:func:`fedsqueeze.kernels.cpu.philox.philox4x32`, one block per four elements) runs
  in loops over zero-based indices of slices: LLVM vectorises the ten rounds across eight
  blocks. Offset indices such as ``x[c + j]`` defeat the vectoriser (negative-index
  wraparound), hence the slices.
* ``parallel=True`` (``prange`` over buckets) was no faster on the shared 2-core node.

Scratch buffers come from the caller (``kernels.dispatch``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..config import NJIT
from .bitpack import pack_bits, unpack_bits
from .lanes import prefetch, qsgd_pack4, sumsq8_lanes, sumsq8_pair
from .philox import philox4x32

__all__ = ["CHUNK", "philox4x32_unrolled", "sumsq8", "qsgd_code", "qsgd_code_fused",
           "qsgd_scale24", "qsgd_value", "bucket_norms", "qsgd_encode", "qsgd_decode",
           "code_width"]

CHUNK = 4096
"""Elements per CPU chunk (a multiple of 8, so each chunk starts on a byte boundary)."""

_TWO24 = np.float32(16777216.0)
_F32_MAX = np.float32(np.finfo(np.float32).max)
_ONES = np.uint32(0xFFFFFFFF)
_S8 = np.uint32(8)


def code_width(s: int) -> int:
    """Bits per QSGD code: ``1 + ceil(log2(s + 1))`` (sign plus level)."""
    return 1 + int(s).bit_length()


philox4x32_unrolled = philox4x32
"""The Philox of :mod:`fedsqueeze.kernels.cpu.philox` (kept under its former name: it was
first written here, in the vectorisable form that module now uses)."""


@nb.njit(inline="always", **NJIT)
def qsgd_code(v, scale24, sf24, word):  # pragma: no cover - compiled
    """Code ``(level << 1) | sign`` of one float32 ``v`` (module docstring for the rule)."""
    r = abs(v) * scale24
    if r > sf24:
        r = sf24
    q = np.int64(r)
    up = np.int64((word >> np.uint32(8)) < np.uint32(q & 0xFFFFFF))
    return np.uint16((((q >> 24) + up) << 1) | np.int64(v < 0))


@nb.njit(inline="always", **NJIT)
def qsgd_code_fused(v, scale24, sf24, word):  # pragma: no cover - compiled
    """:func:`qsgd_code` as an int64, with the rounding comparison folded into an addition.

    With ``q = L 2^24 + f`` (``0 <= f < 2^24``) and ``u = word >> 8``:
    ``(q >> 24) + [u < f] == (q + (2^24 - 1 - u)) >> 24``, and ``2^24 - 1 - u == ~word >> 8``.
    Same codes for every input whose bucket norm is finite (tested against :func:`qsgd_code`);
    fewer vector instructions in the fused CPU loops.
    """
    r = abs(v) * scale24
    if r > sf24:
        r = sf24
    base = ((np.int64(r) + np.int64((word ^ _ONES) >> _S8)) >> 24) << 1
    return base | 1 if v < 0 else base


@nb.njit(inline="always", **NJIT)
def qsgd_scale24(norm, sf):  # pragma: no cover - compiled
    """``(s / N32) * 2^24`` in float32; 0 for an all-zero bucket or when it overflows."""
    if norm > 0:
        sc = (sf / norm) * _TWO24
        if sc <= _F32_MAX:
            return sc
    return np.float32(0.0)


@nb.njit(inline="always", **NJIT)
def qsgd_value(code, unit):  # pragma: no cover - compiled
    """Decoded float32 of one code: ``+-float32(level) * unit``."""
    c = np.int64(code)
    val = np.float32(c >> 1) * unit
    if c & 1:
        val = -val
    return val


@nb.njit(**NJIT)
def sumsq8(x):  # pragma: no cover - compiled
    """Sum of ``float64(x[i])**2`` over ``x`` in the fixed eight-lane order (module docstring)."""
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    a4 = 0.0
    a5 = 0.0
    a6 = 0.0
    a7 = 0.0
    n = x.shape[0]
    m = n // 8
    for k in range(m):
        v0 = np.float64(x[8 * k])
        v1 = np.float64(x[8 * k + 1])
        v2 = np.float64(x[8 * k + 2])
        v3 = np.float64(x[8 * k + 3])
        v4 = np.float64(x[8 * k + 4])
        v5 = np.float64(x[8 * k + 5])
        v6 = np.float64(x[8 * k + 6])
        v7 = np.float64(x[8 * k + 7])
        a0 += v0 * v0
        a1 += v1 * v1
        a2 += v2 * v2
        a3 += v3 * v3
        a4 += v4 * v4
        a5 += v5 * v5
        a6 += v6 * v6
        a7 += v7 * v7
    i = 8 * m
    if i < n:
        v = np.float64(x[i])
        a0 += v * v
    if i + 1 < n:
        v = np.float64(x[i + 1])
        a1 += v * v
    if i + 2 < n:
        v = np.float64(x[i + 2])
        a2 += v * v
    if i + 3 < n:
        v = np.float64(x[i + 3])
        a3 += v * v
    if i + 4 < n:
        v = np.float64(x[i + 4])
        a4 += v * v
    if i + 5 < n:
        v = np.float64(x[i + 5])
        a5 += v * v
    if i + 6 < n:
        v = np.float64(x[i + 6])
        a6 += v * v
    return ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))


@nb.njit(**NJIT)
def bucket_norms(x, bucket, norms):  # pragma: no cover - compiled
    """``norms[k] = float32(sqrt(sum of squares of bucket k))`` in the :func:`sumsq8` order."""
    n = x.shape[0]
    acc = np.empty(8, dtype=np.float64)  # scratch, not an output
    for k in range(norms.shape[0]):
        lo = k * bucket
        norms[k] = np.float32(math.sqrt(sumsq8_lanes(x[lo:min(n, lo + bucket)], acc)))


@nb.njit(**NJIT)
def _codes_scalar(x, blk0, scale, sf24, k0, k1, c3, codes):  # pragma: no cover - compiled
    # codes[j] of the slice x (one scale) whose first element is Philox block blk0, word 0.
    # Indices stay zero-based on slices: an offset index defeats LLVM's vectoriser.
    z = np.uint32(0)
    m = x.shape[0]
    for b in range(m // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        codes[j] = qsgd_code(x[j], scale, sf24, w0)
        codes[j + 1] = qsgd_code(x[j + 1], scale, sf24, w1)
        codes[j + 2] = qsgd_code(x[j + 2], scale, sf24, w2)
        codes[j + 3] = qsgd_code(x[j + 3], scale, sf24, w3)
    j = 4 * (m // 4)
    if j < m:
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + m // 4), z, z, c3, k0, k1)
        codes[j] = qsgd_code(x[j], scale, sf24, w0)
        if j + 1 < m:
            codes[j + 1] = qsgd_code(x[j + 1], scale, sf24, w1)
        if j + 2 < m:
            codes[j + 2] = qsgd_code(x[j + 2], scale, sf24, w2)


@nb.njit(**NJIT)
def _codes_array(x, blk0, scale, sf24, k0, k1, c3, codes):  # pragma: no cover - compiled
    # as _codes_scalar with one scale per element (scale[j] for x[j])
    z = np.uint32(0)
    m = x.shape[0]
    for b in range(m // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        codes[j] = qsgd_code(x[j], scale[j], sf24, w0)
        codes[j + 1] = qsgd_code(x[j + 1], scale[j + 1], sf24, w1)
        codes[j + 2] = qsgd_code(x[j + 2], scale[j + 2], sf24, w2)
        codes[j + 3] = qsgd_code(x[j + 3], scale[j + 3], sf24, w3)
    j = 4 * (m // 4)
    if j < m:
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + m // 4), z, z, c3, k0, k1)
        codes[j] = qsgd_code(x[j], scale[j], sf24, w0)
        if j + 1 < m:
            codes[j + 1] = qsgd_code(x[j + 1], scale[j + 1], sf24, w1)
        if j + 2 < m:
            codes[j + 2] = qsgd_code(x[j + 2], scale[j + 2], sf24, w2)


# -- fused codes + packing for w <= 8: x is a slice of 8 g elements starting on Philox block
#    blk0 and on byte 0 of out; element 4b + k uses word k of block blk0 + b -----------------
@nb.njit(**NJIT)
def _packed_w2(x, blk0, sc, sf24, k0, k1, c3, out):  # pragma: no cover - compiled
    z = np.uint32(0)
    for b in range(x.shape[0] // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        out[b] = np.uint8(qsgd_code_fused(x[j], sc, sf24, w0)
                          | (qsgd_code_fused(x[j + 1], sc, sf24, w1) << 2)
                          | (qsgd_code_fused(x[j + 2], sc, sf24, w2) << 4)
                          | (qsgd_code_fused(x[j + 3], sc, sf24, w3) << 6))


@nb.njit(**NJIT)
def _packed_w4(x, blk0, sc, sf24, k0, k1, c3, out):  # pragma: no cover - compiled
    z = np.uint32(0)
    for b in range(x.shape[0] // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        out[2 * b] = np.uint8(qsgd_code_fused(x[j], sc, sf24, w0)
                              | (qsgd_code_fused(x[j + 1], sc, sf24, w1) << 4))
        out[2 * b + 1] = np.uint8(qsgd_code_fused(x[j + 2], sc, sf24, w2)
                                  | (qsgd_code_fused(x[j + 3], sc, sf24, w3) << 4))


@nb.njit(**NJIT)
def _packed_w8(x, blk0, sc, sf24, k0, k1, c3, out):  # pragma: no cover - compiled
    z = np.uint32(0)
    for b in range(x.shape[0] // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        out[j] = np.uint8(qsgd_code_fused(x[j], sc, sf24, w0))
        out[j + 1] = np.uint8(qsgd_code_fused(x[j + 1], sc, sf24, w1))
        out[j + 2] = np.uint8(qsgd_code_fused(x[j + 2], sc, sf24, w2))
        out[j + 3] = np.uint8(qsgd_code_fused(x[j + 3], sc, sf24, w3))


@nb.njit(inline="always", **NJIT)
def _group8(x, j, sc, sf24, w, a0, a1, a2, a3, b0, b1, b2, b3):  # pragma: no cover - compiled
    # codes of x[j:j+8] (words a* then b*) packed LSB first into the low 8w bits of an int64
    return (qsgd_code_fused(x[j], sc, sf24, a0)
            | (qsgd_code_fused(x[j + 1], sc, sf24, a1) << w)
            | (qsgd_code_fused(x[j + 2], sc, sf24, a2) << (2 * w))
            | (qsgd_code_fused(x[j + 3], sc, sf24, a3) << (3 * w))
            | (qsgd_code_fused(x[j + 4], sc, sf24, b0) << (4 * w))
            | (qsgd_code_fused(x[j + 5], sc, sf24, b1) << (5 * w))
            | (qsgd_code_fused(x[j + 6], sc, sf24, b2) << (6 * w))
            | (qsgd_code_fused(x[j + 7], sc, sf24, b3) << (7 * w)))


@nb.njit(**NJIT)
def _packed_w3(x, blk0, sc, sf24, k0, k1, c3, out):  # pragma: no cover - compiled
    z = np.uint32(0)
    for g in range(x.shape[0] // 8):
        a0, a1, a2, a3 = philox4x32(np.uint32(blk0 + 2 * g), z, z, c3, k0, k1)
        b0, b1, b2, b3 = philox4x32(np.uint32(blk0 + 2 * g + 1), z, z, c3, k0, k1)
        acc = _group8(x, 8 * g, sc, sf24, 3, a0, a1, a2, a3, b0, b1, b2, b3)
        out[3 * g] = np.uint8(acc & 0xFF)
        out[3 * g + 1] = np.uint8((acc >> 8) & 0xFF)
        out[3 * g + 2] = np.uint8((acc >> 16) & 0xFF)


@nb.njit(**NJIT)
def _packed_wide(x, blk0, sc, sf24, k0, k1, c3, w, out):  # pragma: no cover - compiled
    # w in 5..8: eight codes fill exactly w bytes
    z = np.uint32(0)
    for g in range(x.shape[0] // 8):
        a0, a1, a2, a3 = philox4x32(np.uint32(blk0 + 2 * g), z, z, c3, k0, k1)
        b0, b1, b2, b3 = philox4x32(np.uint32(blk0 + 2 * g + 1), z, z, c3, k0, k1)
        acc = _group8(x, 8 * g, sc, sf24, w, a0, a1, a2, a3, b0, b1, b2, b3)
        for t in range(w):
            out[w * g + t] = np.uint8((acc >> (8 * t)) & 0xFF)


@nb.njit(inline="always", **NJIT)
def _packed_codes(x, blk0, sc, sf24, k0, k1, c3, w, out, code_scr):  # pragma: no cover
    # codes of the slice x (first element: word 0 of block blk0, bit 0 of out[0]), w <= 8
    m = x.shape[0]
    m8 = m - m % 8
    xm = x[:m8]
    if w == 4:
        _packed_w4(xm, blk0, sc, sf24, k0, k1, c3, out)
    elif w == 3:
        _packed_w3(xm, blk0, sc, sf24, k0, k1, c3, out)
    elif w == 2:
        _packed_w2(xm, blk0, sc, sf24, k0, k1, c3, out)
    elif w == 8:
        _packed_w8(xm, blk0, sc, sf24, k0, k1, c3, out)
    else:
        _packed_wide(xm, blk0, sc, sf24, k0, k1, c3, w, out)
    if m8 < m:  # at most 7 codes left (the end of the vector): via the scratch
        _codes_scalar(x[m8:], blk0 + m8 // 4, sc, sf24, k0, k1, c3, code_scr)
        pack_bits(code_scr[:m - m8], w, out[(m8 * w) // 8:])


@nb.njit(**NJIT)
def _words(words, blk0, c3, k0, k1):  # pragma: no cover - compiled
    # words[4b + k] = word k of Philox block blk0 + b (c1 = c2 = 0); the tail of a partial block
    z = np.uint32(0)
    m = words.shape[0]
    for b in range(m // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        words[4 * b] = w0
        words[4 * b + 1] = w1
        words[4 * b + 2] = w2
        words[4 * b + 3] = w3
    j = 4 * (m // 4)
    if j < m:
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + m // 4), z, z, c3, k0, k1)
        words[j] = w0
        if j + 1 < m:
            words[j + 1] = w1
        if j + 2 < m:
            words[j + 2] = w2


@nb.njit(inline="always", **NJIT)
def _pair_norms(x, k, full, bucket, norms, ax, ay):  # pragma: no cover - compiled
    # norms of buckets k and k + 1 (one pass, two chains) or of the last bucket k alone, then a
    # prefetch of the next pair's 64-byte lines while this pair is coded; returns 2 or 1
    n = x.shape[0]
    lo = k * bucket
    if k + 1 < full:
        s0, s1 = sumsq8_pair(x[lo:lo + bucket], x[lo + bucket:lo + 2 * bucket], ax, ay)
        norms[k] = np.float32(math.sqrt(s0))
        norms[k + 1] = np.float32(math.sqrt(s1))
        cnt = 2
    else:
        norms[k] = np.float32(math.sqrt(sumsq8_lanes(x[lo:min(n, lo + bucket)], ax)))
        cnt = 1
    for p in range(lo + 2 * bucket, min(n, lo + (2 + cnt) * bucket), 16):
        prefetch(x, p)
    return cnt


@nb.njit(**NJIT)
def _encode_fused(x, bucket, w, sf, k0, k1, c3, norms, out, code_scr
                  ):  # pragma: no cover - compiled
    # bucket % 8 == 0 and w <= 8: buckets in pairs (norms), each coded and packed in one loop
    n = x.shape[0]
    nb_ = norms.shape[0]
    full = n // bucket
    sf24 = sf * _TWO24
    acc = np.empty(16, dtype=np.float64)  # scratch, not an output
    ax = acc[:8]
    ay = acc[8:]
    k = 0
    while k < nb_:
        cnt = _pair_norms(x, k, full, bucket, norms, ax, ay)
        for kk in range(k, k + cnt):
            a = kk * bucket
            e = min(n, a + bucket)
            _packed_codes(x[a:e], a // 4, qsgd_scale24(norms[kk], sf), sf24, k0, k1, c3, w,
                          out[(a * w) // 8:], code_scr)
        k += cnt


@nb.njit(**NJIT)
def _encode_w4(x, bucket, sf, k0, k1, c3, norms, out, code_scr):  # pragma: no cover - compiled
    # _encode_fused for w = 4: per bucket pair the norms, then the pair's Philox words in one
    # vector loop, then the codes of each bucket by the vector kernel lanes.qsgd_pack4
    n = x.shape[0]
    nb_ = norms.shape[0]
    full = n // bucket
    sf24 = sf * _TWO24
    acc = np.empty(16, dtype=np.float64)  # scratch, not an output
    ax = acc[:8]
    ay = acc[8:]
    words = np.empty(2 * bucket, dtype=np.uint32)  # scratch, not an output
    k = 0
    while k < nb_:
        lo = k * bucket
        cnt = _pair_norms(x, k, full, bucket, norms, ax, ay)
        hi = min(n, lo + cnt * bucket)
        _words(words[:hi - lo], lo // 4, c3, k0, k1)
        for kk in range(k, k + cnt):
            a = kk * bucket
            e = min(n, a + bucket)
            sc = qsgd_scale24(norms[kk], sf)
            m8 = (e - a) - (e - a) % 8
            qsgd_pack4(x[a:a + m8], words[a - lo:a - lo + m8], m8 // 8, sc, sf24,
                       out[a // 2:(a + m8) // 2])
            if a + m8 < e:  # at most 7 codes left (the end of the vector): via the scratch
                _codes_scalar(x[a + m8:e], (a + m8) // 4, sc, sf24, k0, k1, c3, code_scr)
                pack_bits(code_scr[:e - a - m8], 4, out[(a + m8) // 2:])
        k += cnt


@nb.njit(**NJIT)
def _encode_by_bucket(x, bucket, w, sf, k0, k1, c3, norms, out, code_scr
                      ):  # pragma: no cover - compiled
    # bucket % 8 == 0, w > 8: every bucket starts on a Philox block and a byte; one scalar scale
    n = x.shape[0]
    ch = code_scr.shape[0]
    sf24 = sf * _TWO24
    acc = np.empty(8, dtype=np.float64)  # scratch, not an output
    for k in range(norms.shape[0]):
        lo = k * bucket
        hi = min(n, lo + bucket)
        nk = np.float32(math.sqrt(sumsq8_lanes(x[lo:hi], acc)))
        norms[k] = nk
        sc = qsgd_scale24(nk, sf)
        for c in range(lo, hi, ch):
            m = min(ch, hi - c)
            _codes_scalar(x[c:c + m], c // 4, sc, sf24, k0, k1, c3, code_scr)
            pack_bits(code_scr[:m], w, out[(c * w) // 8:])


@nb.njit(**NJIT)
def _encode_by_chunk(x, bucket, w, sf, k0, k1, c3, norms, out, scale_scr, code_scr
                     ):  # pragma: no cover - compiled
    # any bucket: chunks of the input, per-element scales from scale_scr
    n = x.shape[0]
    ch = code_scr.shape[0]
    sf24 = sf * _TWO24
    acc = np.empty(8, dtype=np.float64)  # scratch, not an output
    done = 0  # buckets whose norm is known
    for c in range(0, n, ch):
        m = min(ch, n - c)
        last = (c + m - 1) // bucket
        while done <= last:
            lo = done * bucket
            norms[done] = np.float32(math.sqrt(sumsq8_lanes(x[lo:min(n, lo + bucket)], acc)))
            done += 1
        for k in range(c // bucket, last + 1):
            sc = qsgd_scale24(norms[k], sf)
            for j in range(max(k * bucket, c) - c, min((k + 1) * bucket, c + m) - c):
                scale_scr[j] = sc
        _codes_array(x[c:c + m], c // 4, scale_scr, sf24, k0, k1, c3, code_scr)
        pack_bits(code_scr[:m], w, out[(c * w) // 8:])


@nb.njit(**NJIT)
def qsgd_encode(x, params, norms, out, scale_scr, code_scr):  # pragma: no cover - compiled
    """Bucket norms into ``norms`` (f32) and packed codes into ``out`` (u8).

    ``params = (s, bucket, width, k0, k1, c3)``; scratch: ``scale_scr`` f32 and ``code_scr``
    u16 of the same length, a multiple of 8 (:data:`CHUNK`). Writes every byte of
    ``ceil(n * width / 8)`` (padding bits 0). When ``bucket % 8 == 0`` every bucket starts on a
    Philox block and a byte boundary and is coded with one scalar scale (fused with the
    packing when ``width <= 8``); otherwise chunks of the input get a per-element scale from
    ``scale_scr``.
    """
    s, bucket, w, k0, k1, c3 = params
    sf = np.float32(s)
    if bucket % 8 == 0 and w == 4:
        _encode_w4(x, bucket, sf, np.uint32(k0), np.uint32(k1), np.uint32(c3), norms, out,
                   code_scr)
    elif bucket % 8 == 0 and w <= 8:
        _encode_fused(x, bucket, w, sf, np.uint32(k0), np.uint32(k1), np.uint32(c3), norms,
                      out, code_scr)
    elif bucket % 8 == 0:
        _encode_by_bucket(x, bucket, w, sf, np.uint32(k0), np.uint32(k1), np.uint32(c3), norms,
                          out, code_scr)
    else:
        _encode_by_chunk(x, bucket, w, sf, np.uint32(k0), np.uint32(k1), np.uint32(c3), norms,
                         out, scale_scr, code_scr)


@nb.njit(**NJIT)
def qsgd_decode(packed, norms, params, out, unit_scr, code_scr):  # pragma: no cover - compiled
    """Dequantise into ``out`` (f32); returns the number of codes whose level exceeds ``s``.

    ``params = (s, bucket, width)``; scratch as for :func:`qsgd_encode` (``unit_scr`` f32).
    """
    s, bucket, w = params
    sf = np.float32(s)
    n = out.shape[0]
    ch = code_scr.shape[0]
    bad = 0
    for c in range(0, n, ch):
        m = min(ch, n - c)
        unpack_bits(packed[(c * w) // 8:], w, m, code_scr)
        last = (c + m - 1) // bucket
        for k in range(c // bucket, last + 1):
            u = norms[k] / sf
            for j in range(max(k * bucket, c) - c, min((k + 1) * bucket, c + m) - c):
                unit_scr[j] = u
        bad += _dequant(code_scr, unit_scr, s, out[c:c + m])
    return bad


@nb.njit(**NJIT)
def _dequant(codes, units, s, out):  # pragma: no cover - compiled
    bad = 0
    for j in range(out.shape[0]):
        code = codes[j]
        bad += np.int64((code >> 1) > s)
        out[j] = qsgd_value(code, units[j])
    return bad

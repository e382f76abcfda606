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

CPU loop shape (measured on a 2-core AVX-512 node; see ``benchmarks/codecs.py``):

* When ``bucket % 8 == 0`` (the default 512) each bucket starts on a Philox block and a byte:
  its norm is computed (the bucket is then in L1), its codes are produced with one scalar scale
  into a ``uint16`` scratch and packed into the output. Otherwise chunks of :data:`CHUNK`
  elements get a per-element scale from a scratch array (about 20 % slower).
* Codes come from :func:`philox4x32_unrolled`, one block per four elements, in a loop over
  zero-based indices of a slice: LLVM vectorises the ten Philox rounds across eight blocks.
  (The reference ``kernels.cpu.philox.philox4x32`` with its ``if r > 0`` key bump inside the
  round loop does not vectorise: about 6x slower per word in such loops.) Offset indices such
  as ``x[c + j]`` defeat the vectoriser (negative-index wraparound), hence the slices.
* The two paths are separate functions: one driver holding both compiled measurably worse.
* ``parallel=True`` (``prange`` over buckets) was no faster on the shared 2-core node.

Scratch buffers come from the caller (``kernels.dispatch``).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..config import NJIT
from .bitpack import pack_bits, unpack_bits
from .philox import philox4x32

__all__ = ["CHUNK", "philox4x32_unrolled", "sumsq8", "qsgd_code", "qsgd_scale24", "qsgd_value",
           "bucket_norms", "qsgd_encode", "qsgd_decode", "code_width"]

CHUNK = 4096
"""Elements per CPU chunk (a multiple of 8, so each chunk starts on a byte boundary)."""

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)
_TWO24 = np.float32(16777216.0)
_F32_MAX = np.float32(np.finfo(np.float32).max)


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
    for k in range(norms.shape[0]):
        lo = k * bucket
        norms[k] = np.float32(math.sqrt(sumsq8(x[lo:min(n, lo + bucket)])))


@nb.njit(**NJIT)
def _codes_scalar(x, blk0, scale, sf24, k0, k1, c3, codes):  # pragma: no cover - compiled
    # codes[j] of the slice x (one scale) whose first element is Philox block blk0, word 0.
    # Indices stay zero-based on slices: an offset index defeats LLVM's vectoriser.
    z = np.uint32(0)
    m = x.shape[0]
    for b in range(m // 4):
        w0, w1, w2, w3 = philox4x32_unrolled(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        codes[j] = qsgd_code(x[j], scale, sf24, w0)
        codes[j + 1] = qsgd_code(x[j + 1], scale, sf24, w1)
        codes[j + 2] = qsgd_code(x[j + 2], scale, sf24, w2)
        codes[j + 3] = qsgd_code(x[j + 3], scale, sf24, w3)
    j = 4 * (m // 4)
    if j < m:
        w0, w1, w2, w3 = philox4x32_unrolled(np.uint32(blk0 + m // 4), z, z, c3, k0, k1)
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
        w0, w1, w2, w3 = philox4x32_unrolled(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        codes[j] = qsgd_code(x[j], scale[j], sf24, w0)
        codes[j + 1] = qsgd_code(x[j + 1], scale[j + 1], sf24, w1)
        codes[j + 2] = qsgd_code(x[j + 2], scale[j + 2], sf24, w2)
        codes[j + 3] = qsgd_code(x[j + 3], scale[j + 3], sf24, w3)
    j = 4 * (m // 4)
    if j < m:
        w0, w1, w2, w3 = philox4x32_unrolled(np.uint32(blk0 + m // 4), z, z, c3, k0, k1)
        codes[j] = qsgd_code(x[j], scale[j], sf24, w0)
        if j + 1 < m:
            codes[j + 1] = qsgd_code(x[j + 1], scale[j + 1], sf24, w1)
        if j + 2 < m:
            codes[j + 2] = qsgd_code(x[j + 2], scale[j + 2], sf24, w2)


@nb.njit(**NJIT)
def _encode_by_bucket(x, bucket, w, sf, k0, k1, c3, norms, out, code_scr
                      ):  # pragma: no cover - compiled
    # bucket % 8 == 0: every bucket starts on a Philox block and a byte; one scalar scale each
    n = x.shape[0]
    ch = code_scr.shape[0]
    sf24 = sf * _TWO24
    for k in range(norms.shape[0]):
        lo = k * bucket
        hi = min(n, lo + bucket)
        nk = np.float32(math.sqrt(sumsq8(x[lo:hi])))
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
    done = 0  # buckets whose norm is known
    for c in range(0, n, ch):
        m = min(ch, n - c)
        last = (c + m - 1) // bucket
        while done <= last:
            lo = done * bucket
            norms[done] = np.float32(math.sqrt(sumsq8(x[lo:min(n, lo + bucket)])))
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
    u16 of the same length, a multiple of 8 (:data:`CHUNK`). When ``bucket % 8 == 0`` every
    bucket starts on a Philox block and a byte boundary and is coded piece by piece with one
    scalar scale; otherwise chunks of the input get a per-element scale from ``scale_scr``.
    """
    s, bucket, w, k0, k1, c3 = params
    sf = np.float32(s)
    if bucket % 8 == 0:
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

"""Sign (1-bit) and ternary (2-bit, TernGrad) codes, and fixed-order segment statistics.

Signs (METHODS.md 6.6, 6.7): bit ``i`` of the LSB-first stream is 1 iff ``x[i] < 0``, so
``sign(0) = sign(-0.0) = +1`` (and NaN codes as +1). Decoding writes ``+a`` or ``-a`` with ``a``
the scale of the element's segment.

Ternary (METHODS.md 6.5), per segment with clip bound ``cv`` and scale ``s = min(max|x|, cv)``::

    g     = min(|x|, cv)                            (float32)
    f24   = uint32((g / s) * 2^24), 0 if s == 0     (IEEE division, exact scaling, truncation)
    keep  = (word >> 8) < f24                        (word i % 4 of Philox TERNGRAD block i // 4)
    code  = 0 if not keep else (2 if x < 0 else 1)   (two bits, four codes per byte)

``P(keep) = floor(|g|/s * 2^24) / 2^24``, so ``s * t`` is unbiased for the clipped vector to
within ``2^-24 s``. Decoding maps 0, 1, 2 to 0, +s, -s and counts the invalid code 3.

Segment statistics (:func:`segment_partials`) cut each segment into pieces of :data:`PIECE`
elements; each piece yields ``(sum x, sum x^2, sum |x|, max |x|)`` with eight float64 lanes
(element ``j`` of the piece in lane ``j % 8``, lanes combined ``((0+1)+(2+3))+((4+5)+(6+7))``)
and :func:`combine_partials` adds the pieces of a segment in order. The CUDA twin computes the
same pieces, one thread each, and the host combines them with the same function, so the
statistics, and hence every code, agree bit for bit across backends.

:func:`sign_abs_encode` (the EF-signSGD encoder on the host) fuses the ``sum |x|`` column of the
same pieces (:func:`piece_abs_lanes`: the same lanes and order, hence the same bits) with the
sign packing, so the input is read once.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT
from .bitpack import pack_bits
from .philox import philox4x32

__all__ = ["PIECE", "pack_signs", "unpack_signs", "ternary_code", "ternary_encode",
           "ternary_decode", "piece_moments", "piece_moments_lanes", "segment_partials",
           "combine_partials", "piece_bounds", "piece_abs_lanes", "sign_abs_encode"]

PIECE = 4096
"""Elements per partial of the segment statistics."""

_TWO24 = np.float32(16777216.0)
_U255 = np.uint64(255)


# -- signs ------------------------------------------------------------------------------------
@nb.njit(**NJIT)
def pack_signs(x, out):  # pragma: no cover - compiled
    """Bit ``i`` of ``out`` = ``x[i] < 0``; writes ``ceil(n/8)`` bytes."""
    n = x.shape[0]
    nw = n // 64
    for c in range(nw):  # 64 signs to one uint64 word, then its 8 bytes (LLVM vectorises this)
        w = np.uint64(0)
        for j in range(64):
            w |= np.uint64(x[64 * c + j] < 0) << np.uint64(j)
        for b in range(8):
            out[8 * c + b] = np.uint8((w >> np.uint64(8 * b)) & _U255)
    nf = n // 8
    for k in range(8 * nw, nf):
        i = 8 * k
        out[k] = np.uint8(np.int32(x[i] < 0) | (np.int32(x[i + 1] < 0) << 1)
                          | (np.int32(x[i + 2] < 0) << 2) | (np.int32(x[i + 3] < 0) << 3)
                          | (np.int32(x[i + 4] < 0) << 4) | (np.int32(x[i + 5] < 0) << 5)
                          | (np.int32(x[i + 6] < 0) << 6) | (np.int32(x[i + 7] < 0) << 7))
    if n > 8 * nf:
        acc = 0
        for j in range(n - 8 * nf):
            acc |= np.int32(x[8 * nf + j] < 0) << j
        out[nf] = np.uint8(acc)


@nb.njit(**NJIT)
def _unpack_sign_range(packed, scale, out):  # pragma: no cover - compiled
    # out[j] = -scale if stream bit j is set else +scale, a byte (8 values) per step
    neg = -scale
    m = out.shape[0]
    for k in range(m // 8):
        b = packed[k]
        o = 8 * k
        out[o] = neg if b & 1 else scale
        out[o + 1] = neg if b & 2 else scale
        out[o + 2] = neg if b & 4 else scale
        out[o + 3] = neg if b & 8 else scale
        out[o + 4] = neg if b & 16 else scale
        out[o + 5] = neg if b & 32 else scale
        out[o + 6] = neg if b & 64 else scale
        out[o + 7] = neg if b & 128 else scale
    for j in range(8 * (m // 8), m):
        out[j] = neg if (packed[j >> 3] >> (j & 7)) & 1 else scale


@nb.njit(**NJIT)
def unpack_signs(packed, bounds, scales, out):  # pragma: no cover - compiled
    """``out[i] = -scales[t]`` if bit ``i`` is set else ``+scales[t]``, ``t`` the segment of ``i``.

    ``bounds`` holds ``T + 1`` increasing offsets (``bounds[0] = 0``, ``bounds[T] = n``).
    """
    for t in range(bounds.shape[0] - 1):
        lo = bounds[t]
        hi = bounds[t + 1]
        head = min(hi, (lo + 7) // 8 * 8)
        for i in range(lo, head):
            out[i] = -scales[t] if (packed[i >> 3] >> (i & 7)) & 1 else scales[t]
        if head < hi:
            _unpack_sign_range(packed[head >> 3:], scales[t], out[head:hi])


# -- ternary ----------------------------------------------------------------------------------
@nb.njit(inline="always", **NJIT)
def ternary_code(v, cv, s, word):  # pragma: no cover - compiled
    """Two-bit TernGrad code of one float32 (module docstring for the rule)."""
    g = abs(v)
    if g > cv:
        g = cv
    f24 = np.uint32(0)
    if s > 0:
        f24 = np.uint32((g / s) * _TWO24)
    keep = np.uint8((word >> np.uint32(8)) < f24)
    return keep + keep * np.uint8(v < 0)


@nb.njit(**NJIT)
def _ternary_chunk(x, blk0, cvs, ss, k0, k1, c3, codes):  # pragma: no cover - compiled
    # codes of the slice x whose first element is word 0 of Philox block blk0 (zero-based
    # indices and an unguarded main loop, so LLVM vectorises it)
    z = np.uint32(0)
    m = x.shape[0]
    for b in range(m // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + b), z, z, c3, k0, k1)
        j = 4 * b
        codes[j] = ternary_code(x[j], cvs[j], ss[j], w0)
        codes[j + 1] = ternary_code(x[j + 1], cvs[j + 1], ss[j + 1], w1)
        codes[j + 2] = ternary_code(x[j + 2], cvs[j + 2], ss[j + 2], w2)
        codes[j + 3] = ternary_code(x[j + 3], cvs[j + 3], ss[j + 3], w3)
    j = 4 * (m // 4)
    if j < m:
        w0, w1, w2, w3 = philox4x32(np.uint32(blk0 + m // 4), z, z, c3, k0, k1)
        codes[j] = ternary_code(x[j], cvs[j], ss[j], w0)
        if j + 1 < m:
            codes[j + 1] = ternary_code(x[j + 1], cvs[j + 1], ss[j + 1], w1)
        if j + 2 < m:
            codes[j + 2] = ternary_code(x[j + 2], cvs[j + 2], ss[j + 2], w2)


@nb.njit(**NJIT)
def ternary_encode(x, bounds, clips, scales, params, out, clip_scr, scale_scr, code_scr
                   ):  # pragma: no cover - compiled
    """Two-bit codes of ``x`` into ``out`` (``ceil(n/4)`` bytes).

    ``clips``/``scales`` are the per-segment ``cv`` and ``s`` (float32); ``params = (k0, k1,
    c3)``; scratch arrays (f32, f32, u8) share one length, a multiple of 8.
    """
    k0i, k1i, c3i = params
    k0 = np.uint32(k0i)
    k1 = np.uint32(k1i)
    c3 = np.uint32(c3i)
    n = x.shape[0]
    ch = code_scr.shape[0]
    t = 0
    for c in range(0, n, ch):
        m = min(ch, n - c)
        j = 0
        while j < m:
            while bounds[t + 1] <= c + j:
                t += 1
            hi = min(bounds[t + 1] - c, m)
            for jj in range(j, hi):
                clip_scr[jj] = clips[t]
                scale_scr[jj] = scales[t]
            j = hi
        _ternary_chunk(x[c:c + m], c // 4, clip_scr, scale_scr, k0, k1, c3, code_scr)
        pack_bits(code_scr[:m], 2, out[c // 4:])


@nb.njit(inline="always", **NJIT)
def _ternary_value(code, s):  # pragma: no cover - compiled
    if code == 1:
        return s
    if code == 2:
        return -s
    return np.float32(0.0)


@nb.njit(**NJIT)
def _ternary_bytes(packed, s, out):  # pragma: no cover - compiled
    # out[j] from code j of packed (the slice starts on a byte boundary)
    bad = 0
    m = out.shape[0]
    for k in range(m // 4):
        b = packed[k]
        c0 = b & 3
        c1 = (b >> 2) & 3
        c2 = (b >> 4) & 3
        c3 = b >> 6
        bad += (c0 == 3) + (c1 == 3) + (c2 == 3) + (c3 == 3)
        out[4 * k] = _ternary_value(c0, s)
        out[4 * k + 1] = _ternary_value(c1, s)
        out[4 * k + 2] = _ternary_value(c2, s)
        out[4 * k + 3] = _ternary_value(c3, s)
    for j in range(4 * (m // 4), m):
        c = (packed[j >> 2] >> (2 * (j & 3))) & 3
        bad += c == 3
        out[j] = _ternary_value(c, s)
    return bad


@nb.njit(**NJIT)
def ternary_decode(packed, bounds, scales, out):  # pragma: no cover - compiled
    """Codes 0, 1, 2 to 0, +s, -s per segment; returns the number of (invalid) 3 codes."""
    bad = 0
    for t in range(bounds.shape[0] - 1):
        lo = bounds[t]
        hi = bounds[t + 1]
        head = min(hi, (lo + 3) // 4 * 4)
        for i in range(lo, head):
            c = (packed[i >> 2] >> (2 * (i & 3))) & 3
            bad += c == 3
            out[i] = _ternary_value(c, scales[t])
        if head < hi:
            bad += _ternary_bytes(packed[head >> 2:], scales[t], out[head:hi])
    return bad


# -- fixed-order statistics -------------------------------------------------------------------
@nb.njit(**NJIT)
def piece_moments(x):  # pragma: no cover - compiled
    """``(sum x, sum x^2, sum |x|, max |x|)`` of ``x`` in float64, eight lanes (module doc)."""
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = 0.0
    n = x.shape[0]
    for k in range(n // 8):
        v0 = np.float64(x[8 * k])
        v1 = np.float64(x[8 * k + 1])
        v2 = np.float64(x[8 * k + 2])
        v3 = np.float64(x[8 * k + 3])
        v4 = np.float64(x[8 * k + 4])
        v5 = np.float64(x[8 * k + 5])
        v6 = np.float64(x[8 * k + 6])
        v7 = np.float64(x[8 * k + 7])
        s0 += v0
        s1 += v1
        s2 += v2
        s3 += v3
        s4 += v4
        s5 += v5
        s6 += v6
        s7 += v7
        q0 += v0 * v0
        q1 += v1 * v1
        q2 += v2 * v2
        q3 += v3 * v3
        q4 += v4 * v4
        q5 += v5 * v5
        q6 += v6 * v6
        q7 += v7 * v7
        b0 = abs(v0)
        b1 = abs(v1)
        b2 = abs(v2)
        b3 = abs(v3)
        b4 = abs(v4)
        b5 = abs(v5)
        b6 = abs(v6)
        b7 = abs(v7)
        a0 += b0
        a1 += b1
        a2 += b2
        a3 += b3
        a4 += b4
        a5 += b5
        a6 += b6
        a7 += b7
        if b0 > m0:
            m0 = b0
        if b1 > m1:
            m1 = b1
        if b2 > m2:
            m2 = b2
        if b3 > m3:
            m3 = b3
        if b4 > m4:
            m4 = b4
        if b5 > m5:
            m5 = b5
        if b6 > m6:
            m6 = b6
        if b7 > m7:
            m7 = b7
    t = 8 * (n // 8)
    if t + 0 < n:
        v = np.float64(x[t + 0])
        s0 += v
        q0 += v * v
        a0 += abs(v)
        if abs(v) > m0:
            m0 = abs(v)
    if t + 1 < n:
        v = np.float64(x[t + 1])
        s1 += v
        q1 += v * v
        a1 += abs(v)
        if abs(v) > m1:
            m1 = abs(v)
    if t + 2 < n:
        v = np.float64(x[t + 2])
        s2 += v
        q2 += v * v
        a2 += abs(v)
        if abs(v) > m2:
            m2 = abs(v)
    if t + 3 < n:
        v = np.float64(x[t + 3])
        s3 += v
        q3 += v * v
        a3 += abs(v)
        if abs(v) > m3:
            m3 = abs(v)
    if t + 4 < n:
        v = np.float64(x[t + 4])
        s4 += v
        q4 += v * v
        a4 += abs(v)
        if abs(v) > m4:
            m4 = abs(v)
    if t + 5 < n:
        v = np.float64(x[t + 5])
        s5 += v
        q5 += v * v
        a5 += abs(v)
        if abs(v) > m5:
            m5 = abs(v)
    if t + 6 < n:
        v = np.float64(x[t + 6])
        s6 += v
        q6 += v * v
        a6 += abs(v)
        if abs(v) > m6:
            m6 = abs(v)
    m01 = m0 if m0 >= m1 else m1
    m23 = m2 if m2 >= m3 else m3
    m45 = m4 if m4 >= m5 else m5
    m67 = m6 if m6 >= m7 else m7
    m03 = m01 if m01 >= m23 else m23
    m47 = m45 if m45 >= m67 else m67
    mx = m03 if m03 >= m47 else m47
    return (((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)),
            ((q0 + q1) + (q2 + q3)) + ((q4 + q5) + (q6 + q7)),
            ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)), mx)


@nb.njit(inline="always", **NJIT)
def _moment_rows64(r, sa, qa, aa, ma, nl):  # pragma: no cover - compiled
    # lane ln takes r[8 t + ln] for t = 0..7 (r holds 64 elements), rows in order
    for ln in range(nl):
        s = sa[ln]
        q = qa[ln]
        a = aa[ln]
        m = ma[ln]
        v = np.float64(r[0 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[8 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[16 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[24 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[32 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[40 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[48 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        v = np.float64(r[56 + ln])
        b = abs(v)
        s += v
        q += v * v
        a += b
        m = b if b > m else m
        sa[ln] = s
        qa[ln] = q
        aa[ln] = a
        ma[ln] = m


@nb.njit(**NJIT)
def piece_moments_lanes(x, sa, qa, aa, ma):  # pragma: no cover - compiled
    """:func:`piece_moments` bit for bit, vectorised: the eight lanes are float64 scratch arrays
    of 8 (``sa`` sums, ``qa`` squares, ``aa`` magnitudes, ``ma`` maxima) and the lane index is
    the inner loop, with eight rows unrolled inside it (as in :mod:`.lanes`), so LLVM turns
    each row into vector operations; every lane sees the same operations in the same order."""
    nl = sa.shape[0]
    for ln in range(nl):
        sa[ln] = 0.0
        qa[ln] = 0.0
        aa[ln] = 0.0
        ma[ln] = 0.0
    n = x.shape[0]
    nc = n // 64
    for c in range(nc):
        _moment_rows64(x[64 * c:64 * c + 64], sa, qa, aa, ma, nl)
    for j in range(64 * nc, n):
        ln = j % 8
        v = np.float64(x[j])
        b = abs(v)
        sa[ln] += v
        qa[ln] += v * v
        aa[ln] += b
        if b > ma[ln]:
            ma[ln] = b
    m01 = ma[0] if ma[0] >= ma[1] else ma[1]
    m23 = ma[2] if ma[2] >= ma[3] else ma[3]
    m45 = ma[4] if ma[4] >= ma[5] else ma[5]
    m67 = ma[6] if ma[6] >= ma[7] else ma[7]
    m03 = m01 if m01 >= m23 else m23
    m47 = m45 if m45 >= m67 else m67
    mx = m03 if m03 >= m47 else m47
    return (((sa[0] + sa[1]) + (sa[2] + sa[3])) + ((sa[4] + sa[5]) + (sa[6] + sa[7])),
            ((qa[0] + qa[1]) + (qa[2] + qa[3])) + ((qa[4] + qa[5]) + (qa[6] + qa[7])),
            ((aa[0] + aa[1]) + (aa[2] + aa[3])) + ((aa[4] + aa[5]) + (aa[6] + aa[7])), mx)


def piece_bounds(bounds: np.ndarray) -> np.ndarray:
    """``(P, 3)`` int64 rows ``(segment, lo, hi)``: each segment cut into :data:`PIECE` pieces."""
    b = np.asarray(bounds, dtype=np.int64)
    lo, hi = b[:-1], b[1:]
    counts = np.maximum(hi - lo + (PIECE - 1), 0) // PIECE
    seg = np.repeat(np.arange(lo.shape[0], dtype=np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)  # row of each segment's first piece
    start = lo[seg] + (np.arange(seg.shape[0], dtype=np.int64) - first) * PIECE
    return np.stack([seg, start, np.minimum(hi[seg], start + PIECE)], axis=1)


@nb.njit(**NJIT)
def segment_partials(x, pieces, partials):  # pragma: no cover - compiled
    """``partials[p] = piece_moments(x[lo:hi])`` for each row ``(t, lo, hi)`` of ``pieces``
    (computed by :func:`piece_moments_lanes`, the same bits)."""
    sa = np.empty(8)  # lane scratch of piece_moments_lanes, not outputs
    qa = np.empty(8)
    aa = np.empty(8)
    ma = np.empty(8)
    for p in range(pieces.shape[0]):
        s, q, a, m = piece_moments_lanes(x[pieces[p, 1]:pieces[p, 2]], sa, qa, aa, ma)
        partials[p, 0] = s
        partials[p, 1] = q
        partials[p, 2] = a
        partials[p, 3] = m


@nb.njit(**NJIT)
def combine_partials(pieces, partials, stats):  # pragma: no cover - compiled
    """``stats[t] = (sum, sumsq, sumabs, maxabs)`` of segment ``t``: its pieces added in order."""
    for t in range(stats.shape[0]):
        for c in range(4):
            stats[t, c] = 0.0
    for p in range(pieces.shape[0]):
        t = pieces[p, 0]
        stats[t, 0] += partials[p, 0]
        stats[t, 1] += partials[p, 1]
        stats[t, 2] += partials[p, 2]
        if partials[p, 3] > stats[t, 3]:
            stats[t, 3] = partials[p, 3]


@nb.njit(inline="always", **NJIT)
def _abs_rows64(r, aa, nl):  # pragma: no cover - compiled
    # the sum |x| column of _moment_rows64: lane ln adds |r[8 t + ln]| for t = 0..7, in order
    for ln in range(nl):
        a = aa[ln]
        a += abs(np.float64(r[0 + ln]))
        a += abs(np.float64(r[8 + ln]))
        a += abs(np.float64(r[16 + ln]))
        a += abs(np.float64(r[24 + ln]))
        a += abs(np.float64(r[32 + ln]))
        a += abs(np.float64(r[40 + ln]))
        a += abs(np.float64(r[48 + ln]))
        a += abs(np.float64(r[56 + ln]))
        aa[ln] = a


@nb.njit(**NJIT)
def piece_abs_lanes(x, aa):  # pragma: no cover - compiled
    """``piece_moments(x)[2]`` (``sum |x|``) bit for bit: the same eight float64 lanes, each
    adding its elements in the same order, combined the same way; ``aa`` is scratch of 8."""
    nl = aa.shape[0]
    for ln in range(nl):
        aa[ln] = 0.0
    n = x.shape[0]
    nc = n // 64
    for c in range(nc):
        _abs_rows64(x[64 * c:64 * c + 64], aa, nl)
    for j in range(64 * nc, n):
        aa[j % 8] += abs(np.float64(x[j]))
    return ((aa[0] + aa[1]) + (aa[2] + aa[3])) + ((aa[4] + aa[5]) + (aa[6] + aa[7]))


@nb.njit(**NJIT)
def sign_abs_encode(x, pieces, sums, out):  # pragma: no cover - compiled
    """Sign bits of ``x`` into ``out`` (``ceil(n/8)`` bytes, as :func:`pack_signs`) and
    ``sums[t]`` = the ``sum |x|`` of segment ``t`` (``stats[t, 2]`` of :func:`combine_partials`
    over :func:`segment_partials`, the same bits), in one pass: each piece's signs are packed
    right after its sum, while the piece is in L1. ``pieces`` as from :func:`piece_bounds`."""
    aa = np.empty(8)  # lane scratch of piece_abs_lanes, not an output
    for t in range(sums.shape[0]):
        sums[t] = 0.0
    done = 0
    for p in range(pieces.shape[0]):
        sums[pieces[p, 0]] += piece_abs_lanes(x[pieces[p, 1]:pieces[p, 2]], aa)
        upto = pieces[p, 2] // 8 * 8
        if upto > done:
            pack_signs(x[done:upto], out[done // 8:])
            done = upto
    if done < x.shape[0]:
        pack_signs(x[done:], out[done // 8:])

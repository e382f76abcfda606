"""1-D k-means, codebook gather and LUT convolution (FedCompress, METHODS.md 3).

Hot loops only: callers validate shapes and dtypes and allocate every output and scratch buffer.
The ``kernels.cuda.kmeans`` twin has the same names for the element-wise kernels (``assign_1d``,
``gather``). Cluster ids are bit-packed by :mod:`fedsqueeze.kernels.cpu.bitpack`;
:func:`lut_conv2d` reads that packed stream directly.

Conventions shared with ``tests/naive.py`` (the NumPy oracle):

* assignment: ``idx[i] = argmin_j |x[i] - c[j]|`` in float32, ties to the lowest ``j``;
* k-means++ seeding from ``k`` uniforms ``u`` (float64): first centre
  ``x[min(floor(u0 n), n-1)]``; centre ``s`` is the first ``i`` whose running sum of ``d2``
  (float64, in index order) exceeds ``u_s * sum(d2)`` and with ``d2[i] > 0``; when every ``d2``
  is 0 the pick is uniform like centre 0;
* Lloyd: float64 sums in index order, ``c_j = float32(sum_j / count_j)``, empty clusters keep
  their centre; stops early once an assignment pass changes nothing;
* packed ids (METHODS.md 0.5): value ``i`` occupies stream bits ``[i w, (i+1) w)``, LSB first.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["assign_1d", "kmeanspp_init", "lloyd_1d", "gather", "lut_conv2d", "dense_conv2d"]


@nb.njit(**NJIT)
def assign_1d(x, centroids, out):  # pragma: no cover - compiled
    """``out[i] = argmin_j |x[i] - centroids[j]|`` (first minimum); returns how many changed."""
    k = centroids.shape[0]
    changed = 0
    for i in range(x.shape[0]):
        v = x[i]
        best = 0
        bd = abs(v - centroids[0])
        for j in range(1, k):
            d = abs(v - centroids[j])
            if d < bd:
                bd = d
                best = j
        if out[i] != best:
            changed += 1
            out[i] = best
    return changed


@nb.njit(**NJIT)
def _pick_uniform(u, n):  # pragma: no cover - compiled
    j = int(u * n)
    return n - 1 if j > n - 1 else j


@nb.njit(**NJIT)
def kmeanspp_init(x, u, d2, out):  # pragma: no cover - compiled
    """k-means++ seeds ``out`` (f32[k]) from uniforms ``u`` (f64[k]); ``d2``: f64[n] scratch."""
    n = x.shape[0]
    k = out.shape[0]
    c = np.float64(x[_pick_uniform(u[0], n)])
    out[0] = x[_pick_uniform(u[0], n)]
    for i in range(n):
        d = np.float64(x[i]) - c
        d2[i] = d * d
    for s in range(1, k):
        total = 0.0
        for i in range(n):
            total += d2[i]
        if total > 0.0:
            target = u[s] * total
            acc = 0.0
            pick = -1
            last = 0
            for i in range(n):
                if d2[i] > 0.0:
                    last = i
                acc += d2[i]
                if acc > target and d2[i] > 0.0:
                    pick = i
                    break
            if pick < 0:
                pick = last
        else:
            pick = _pick_uniform(u[s], n)
        out[s] = x[pick]
        c = np.float64(x[pick])
        for i in range(n):
            d = np.float64(x[i]) - c
            dd = d * d
            if dd < d2[i]:
                d2[i] = dd
    return k


@nb.njit(**NJIT)
def lloyd_1d(x, centroids, idx, sums, counts, iters):  # pragma: no cover - compiled
    """Up to ``iters`` Lloyd steps in place, then a final assignment; returns the steps run.

    ``idx`` must hold a valid assignment on entry or be filled with a value ``>= k`` (the first
    pass then counts every element as changed). Scratch: ``sums`` f64[k], ``counts`` i64[k].
    """
    k = centroids.shape[0]
    changed = assign_1d(x, centroids, idx)
    steps = 0
    while steps < iters and changed > 0:
        for j in range(k):
            sums[j] = 0.0
            counts[j] = 0
        for i in range(x.shape[0]):
            sums[idx[i]] += np.float64(x[i])
            counts[idx[i]] += 1
        for j in range(k):
            if counts[j] > 0:
                centroids[j] = np.float32(sums[j] / counts[j])
        steps += 1
        changed = assign_1d(x, centroids, idx)
    return steps


@nb.njit(**NJIT)
def gather(codebook, idx, out):  # pragma: no cover - compiled
    """``out[i] = codebook[idx[i]]`` (decode of a clustered tensor)."""
    for i in range(idx.shape[0]):
        out[i] = codebook[idx[i]]


@nb.njit(**NJIT)
def _unpack_tile(packed, width, start, codebook, tile):  # pragma: no cover - compiled
    """``tile[j] = codebook[value start + j]`` straight from the packed stream."""
    mask = (1 << width) - 1
    for j in range(tile.shape[0]):
        p = (start + j) * width
        b = p >> 3
        sh = p & 7
        v = np.int64(packed[b]) >> sh
        if sh + width > 8:
            v |= np.int64(packed[b + 1]) << (8 - sh)
        tile[j] = codebook[v & mask]


@nb.njit(**NJIT)
def _im2col(xp, cols, kh, kw, oh, ow):  # pragma: no cover - compiled
    """``cols[bi, (c kh + a) kw + b, r ow + s] = xp[bi, c, r + a, s + b]``."""
    for bi in range(xp.shape[0]):
        for c in range(xp.shape[1]):
            for a in range(kh):
                for b in range(kw):
                    p = (c * kh + a) * kw + b
                    for r in range(oh):
                        for s in range(ow):
                            cols[bi, p, r * ow + s] = xp[bi, c, r + a, s + b]


@nb.njit(**NJIT)
def _conv_channel(cols, tile, bias_o, out2, o):  # pragma: no cover - compiled
    """``out2[bi, o, :] = bias_o + sum_p tile[p] cols[bi, p, :]`` (contiguous inner loop)."""
    hw = out2.shape[2]
    for bi in range(cols.shape[0]):
        for q in range(hw):
            out2[bi, o, q] = bias_o
        for p in range(cols.shape[1]):
            wv = tile[p]
            for q in range(hw):
                out2[bi, o, q] += wv * cols[bi, p, q]


@nb.njit(**NJIT)
def lut_conv2d(xp, packed, codebook, bias, tile, cols, out, geom):  # pragma: no cover - compiled
    """Stride-1 2-D convolution whose weights stay bit-packed cluster ids + codebook.

    ``xp`` f32[B, C, H + 2 pad, W + 2 pad] is the zero-padded input; ``out`` f32[B, O, H', W']
    (C-contiguous); scratch: ``tile`` f32[C kh kw] receives one output channel's weights,
    gathered from the packed stream (ids of weight ``o, c, a, b`` in C order, width ``<= 8``),
    ``cols`` f32[B, C kh kw, H' W'] the unrolled input patches; ``geom = (width, kh, kw)``.
    """
    width, kh, kw = geom
    oh, ow = out.shape[2], out.shape[3]
    _im2col(xp, cols, kh, kw, oh, ow)
    out2 = out.reshape((out.shape[0], out.shape[1], oh * ow))
    per = tile.shape[0]
    for o in range(out.shape[1]):
        _unpack_tile(packed, width, o * per, codebook, tile)
        _conv_channel(cols, tile, bias[o], out2, o)


@nb.njit(**NJIT)
def dense_conv2d(xp, weight, bias, cols, out, geom):  # pragma: no cover - compiled
    """The same loops as :func:`lut_conv2d` on a dense f32[O, C kh kw] weight (the baseline);
    ``geom = (kh, kw)``."""
    kh, kw = geom
    oh, ow = out.shape[2], out.shape[3]
    _im2col(xp, cols, kh, kw, oh, ow)
    out2 = out.reshape((out.shape[0], out.shape[1], oh * ow))
    for o in range(out.shape[1]):
        _conv_channel(cols, weight[o], bias[o], out2, o)

"""Grouped product quantisation of cut-layer activations (FedLite, METHODS.md 5.2).

Hot loops only: callers validate shapes and dtypes and allocate every output and scratch buffer.
The ``kernels.cuda.pq`` twin has the same names and the same results (``lloyd`` there is a host
driver of device kernels; k-means++ seeding stays on the host).

Layout. An activation batch ``Z`` (``B x q*m`` float32, zero-padded to ``q*m`` columns by the
caller) is viewed as ``N = B*q`` points of length ``m``: point ``p = b*q + j`` is the sub-vector
``Z[b, j*m:(j+1)*m]``. ``geom = (q, R, mode)`` says which of the ``R`` groups a point belongs to
(:func:`group_of`): ``mode 0`` ("position") ``r = (p mod q) // (q/R)``; ``mode 1`` ("sample", the
3P reshape) ``r = p // (N/R)``. ``R`` divides ``q``. Member ``k`` of group ``r`` is its ``k``-th
point in increasing ``p`` (:func:`member`). The k-means kernels read the points transposed and in
member order, ``pts_t[d, r*(N/R) + k]`` (:func:`transpose_points`, once per batch), so that their
inner loops run over contiguous members and vectorise without reordering any floating-point sum.
Centroids are ``f32[R, L, m]``; codes ``u16[N]`` indexed by ``p``, and ``mcodes`` the same codes
in member order.

Conventions shared with ``tests/naive.py`` (the NumPy oracle):

* distance: ``sum_d (x_d - c_d)^2`` accumulated in float32 in increasing ``d``; the code is the
  first minimum over centroids (ties to the lowest id);
* k-means++ per group over its members with float64 ``d2`` (also summed in increasing ``d``) and
  the rule of ``kernels.cpu.kmeans.kmeanspp_init``, ``L`` uniforms per group;
* Lloyd: float64 sums in increasing ``p``, ``c = float32(sum / count)``, empty clusters keep their
  centre; at most ``iters`` updates, stopping once an assignment pass changes nothing; the last
  pass is an assignment, so the codes always index the centroids that are sent.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["CHUNK", "group_of", "member", "transpose_points", "member_codes", "assign",
           "accumulate", "finalize", "lloyd", "kmeanspp", "gather"]

CHUNK = 1024
"""Members per block of the assignment kernel (the length of its float scratch rows)."""


# -- leaf helpers shared with the CUDA twin (no calls inside: they compile for either target) ----
@nb.njit(inline="always", **NJIT)
def group_of(p, q, R, mode, npts):  # pragma: no cover - compiled
    """Group of point ``p`` among ``npts`` points (see the module docstring)."""
    if mode == 0:
        return (p % q) // (q // R)
    return p // (npts // R)


@nb.njit(inline="always", **NJIT)
def member(r, k, q, R, mode, npts):  # pragma: no cover - compiled
    """The ``k``-th point (in increasing ``p``) of group ``r``."""
    if mode == 0:
        qr = q // R
        return (k // qr) * q + r * qr + k % qr
    return r * (npts // R) + k


# -- kernels ----------------------------------------------------------------------------------
@nb.njit(**NJIT)
def transpose_points(points, geom, pts_t):  # pragma: no cover - compiled
    """``pts_t[d, r*n + k] = points[member(r, k), d]`` with ``n = N / R``."""
    q, R, mode = geom
    npts, m = points.shape
    n = npts // R
    for r in range(R):
        for k in range(n):
            p = member(r, k, q, R, mode, npts)
            for d in range(m):
                pts_t[d, r * n + k] = points[p, d]


@nb.njit(**NJIT)
def assign(pts_t, centroids, geom, codes, mcodes, fscr, iscr):  # pragma: no cover - compiled
    """``codes[p] = argmin_l |x_p - c[group(p), l]|^2`` (first minimum) and the same codes in
    member order in ``mcodes``; returns how many codes changed.

    ``fscr`` is f32[2, CHUNK] and ``iscr`` i64[CHUNK] scratch: members are taken in blocks of
    ``CHUNK``, all centroids per block.
    """
    q, R, mode = geom
    m, npts = pts_t.shape
    n = npts // R
    L = centroids.shape[1]
    ch = iscr.shape[0]
    acc = fscr[0]
    best = fscr[1]
    changed = 0
    for r in range(R):
        for k0 in range(0, n, ch):
            w = min(n - k0, ch)
            base = r * n + k0
            for cl in range(L):
                for i in range(w):
                    acc[i] = np.float32(0.0)
                for d in range(m):
                    c = centroids[r, cl, d]
                    row = pts_t[d, base:base + w]
                    for i in range(w):
                        t = row[i] - c
                        acc[i] += t * t
                if cl == 0:
                    for i in range(w):
                        best[i] = acc[i]
                        iscr[i] = 0
                else:
                    for i in range(w):
                        if acc[i] < best[i]:
                            best[i] = acc[i]
                            iscr[i] = cl
            for i in range(w):
                p = member(r, k0 + i, q, R, mode, npts)
                mcodes[base + i] = iscr[i]
                if codes[p] != iscr[i]:
                    changed += 1
                    codes[p] = iscr[i]
    return changed


@nb.njit(**NJIT)
def member_codes(codes, geom, mcodes):  # pragma: no cover - compiled
    """``mcodes[r*n + k] = codes[member(r, k)]``: the codes in the member order of ``pts_t``."""
    q, R, mode = geom
    npts = codes.shape[0]
    n = npts // R
    for r in range(R):
        for k in range(n):
            mcodes[r * n + k] = codes[member(r, k, q, R, mode, npts)]


@nb.njit(**NJIT)
def accumulate(pts_t, mcodes, sums, counts):  # pragma: no cover - compiled
    """``sums[r, l] = sum of the members of group r with code l`` (float64, in increasing ``p``),
    ``counts[r, l]`` their number; ``mcodes`` in member order (:func:`member_codes`). Also the
    per-centroid gradient sums of the codebook backward."""
    R, L = counts.shape
    m, npts = pts_t.shape
    n = npts // R
    for r in range(R):
        for cl in range(L):
            counts[r, cl] = 0
            for d in range(m):
                sums[r, cl, d] = 0.0
        codes = mcodes[r * n:(r + 1) * n]
        for k in range(n):
            counts[r, codes[k]] += 1
        for d in range(m):
            row = pts_t[d, r * n:(r + 1) * n]
            for k in range(n):
                sums[r, codes[k], d] += np.float64(row[k])


@nb.njit(**NJIT)
def finalize(sums, counts, centroids):  # pragma: no cover - compiled
    """``centroids[r, l] = float32(sums[r, l] / counts[r, l])`` where ``counts > 0``."""
    for r in range(sums.shape[0]):
        for cl in range(sums.shape[1]):
            n = counts[r, cl]
            if n > 0:
                for d in range(sums.shape[2]):
                    centroids[r, cl, d] = np.float32(sums[r, cl, d] / n)


@nb.njit(**NJIT)
def lloyd(pts_t, centroids, codes, mcodes, sums, counts, scratch, params):  # pragma: no cover
    """Up to ``iters`` Lloyd updates of ``centroids`` in place, then the final codes.

    ``params = (q, R, mode, iters)``. ``codes`` must be valid or filled with a value ``>= L``
    (then the first pass counts every point as changed). ``mcodes`` (u16[N]), ``sums``
    (f64[R, L, m]), ``counts`` (i64[R, L]) and ``scratch = (fscr, iscr)`` (see :func:`assign`)
    are scratch. Returns the updates run.
    """
    q, R, mode, iters = params
    geom = (q, R, mode)
    fscr, iscr = scratch
    changed = assign(pts_t, centroids, geom, codes, mcodes, fscr, iscr)
    steps = 0
    while steps < iters and changed > 0:
        accumulate(pts_t, mcodes, sums, counts)
        finalize(sums, counts, centroids)
        steps += 1
        changed = assign(pts_t, centroids, geom, codes, mcodes, fscr, iscr)
    return steps


@nb.njit(**NJIT)
def _pick(u, n):  # pragma: no cover - compiled
    j = int(u * n)
    return n - 1 if j > n - 1 else j


@nb.njit(**NJIT)
def _seed_d2(pts_t, base, n, centroids, r, s, d2, first):  # pragma: no cover - compiled
    """``d2[k] = min(d2[k], |x_k - c[r, s]|^2)`` in float64 (``first``: assign, not min)."""
    m = pts_t.shape[0]
    acc = d2[n:2 * n]
    for k in range(n):
        acc[k] = 0.0
    for d in range(m):
        c = np.float64(centroids[r, s, d])
        row = pts_t[d, base:base + n]
        for k in range(n):
            t = np.float64(row[k]) - c
            acc[k] += t * t
    for k in range(n):
        if first or acc[k] < d2[k]:
            d2[k] = acc[k]


@nb.njit(**NJIT)
def kmeanspp(pts_t, geom, u, d2, centroids):  # pragma: no cover - compiled
    """k-means++ seeding of every group from uniforms ``u`` (f64[R, L]); ``d2`` is f64[2 N/R].

    Centre 0 of group ``r`` is member ``min(floor(u[r, 0] n), n - 1)``; centre ``s`` is the first
    member whose running float64 sum of ``d2`` exceeds ``u[r, s] * sum(d2)`` with ``d2 > 0`` (the
    last member with ``d2 > 0`` if rounding leaves none); uniform like centre 0 if all ``d2 = 0``.
    """
    q, R, mode = geom
    m, npts = pts_t.shape
    n = npts // R
    L = centroids.shape[1]
    for r in range(R):
        base = r * n
        pick = _pick(u[r, 0], n)
        for s in range(L):
            if s > 0:
                total = 0.0
                for k in range(n):
                    total += d2[k]
                if total > 0.0:
                    target = u[r, s] * total
                    acc = 0.0
                    pick = -1
                    last = 0
                    for k in range(n):
                        if d2[k] > 0.0:
                            last = k
                        acc += d2[k]
                        if acc > target and d2[k] > 0.0:
                            pick = k
                            break
                    if pick < 0:
                        pick = last
                else:
                    pick = _pick(u[r, s], n)
            for d in range(m):
                centroids[r, s, d] = pts_t[d, base + pick]
            _seed_d2(pts_t, base, n, centroids, r, s, d2, s == 0)


@nb.njit(**NJIT)
def gather(centroids, codes, geom, out):  # pragma: no cover - compiled
    """Decode: ``out[p] = centroids[group(p), codes[p]]`` (``out`` is f32[N, m])."""
    q, R, mode = geom
    npts, m = out.shape
    for p in range(npts):
        r = group_of(p, q, R, mode, npts)
        cl = codes[p]
        for d in range(m):
            out[p, d] = centroids[r, cl, d]

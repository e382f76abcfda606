"""Grouped product quantisation of cut-layer activations (FedLite, METHODS.md 5.2).

Hot loops only: callers validate shapes and dtypes and allocate every output and scratch buffer.
The ``kernels.cuda.pq`` twin has the same names for the parallel kernels (``assign``,
``accumulate``, ``finalize``, ``gather``) and a host-side ``lloyd`` driver.

Layout. An activation batch ``Z`` (``B x q*m`` float32, zero-padded to ``q*m`` columns by the
caller) is viewed as ``N = B*q`` points of length ``m``: point ``p = b*q + j`` is the sub-vector
``Z[b, j*m:(j+1)*m]``. ``geom = (q, R, mode)`` says which of the ``R`` groups a point belongs to
(:func:`group_of`): ``mode 0`` ("position") ``r = (p mod q) // (q/R)``; ``mode 1`` ("sample", the
3P reshape) ``r = p // (N/R)``. ``R`` divides ``q``. Centroids are ``f32[R, L, m]``; the assign
kernel also takes their transpose ``ct = f32[R, m, L]`` so its inner loop runs over centroids,
which vectorises without reordering any floating-point sum.

Conventions shared with ``tests/naive.py`` (the NumPy oracle):

* distance: ``sum_d (x_d - c_d)^2`` accumulated in float32 in increasing ``d``; the code is the
  first minimum (ties to the lowest centroid id);
* k-means++ per group over its members in increasing ``p`` with float64 ``d2`` (the rule of
  ``kernels.cpu.kmeans.kmeanspp_init``), ``L`` uniforms per group;
* Lloyd: float64 sums in increasing ``p``, ``c = float32(sum / count)``, empty clusters keep their
  centre; at most ``iters`` updates, stopping once an assignment pass changes nothing; the last
  pass is an assignment, so the codes always match the centroids that are sent.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["group_of", "member", "assign", "accumulate", "finalize", "lloyd", "kmeanspp",
           "gather", "transpose_centroids"]


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
def transpose_centroids(centroids, ct):  # pragma: no cover - compiled
    """``ct[r, d, l] = centroids[r, l, d]``."""
    for r in range(centroids.shape[0]):
        for l in range(centroids.shape[1]):
            for d in range(centroids.shape[2]):
                ct[r, d, l] = centroids[r, l, d]


@nb.njit(**NJIT)
def assign(points, ct, geom, codes, dist):  # pragma: no cover - compiled
    """``codes[p] = argmin_l |points[p] - c[group(p), l]|^2``; returns how many codes changed.

    ``ct`` is ``f32[R, m, L]``; ``dist`` is ``f32[L]`` scratch; ``geom = (q, R, mode)``.
    """
    q, R, mode = geom
    npts, m = points.shape
    L = ct.shape[2]
    changed = 0
    for p in range(npts):
        r = group_of(p, q, R, mode, npts)
        for l in range(L):
            dist[l] = np.float32(0.0)
        for d in range(m):
            x = points[p, d]
            for l in range(L):
                t = x - ct[r, d, l]
                dist[l] += t * t
        best = 0
        bd = dist[0]
        for l in range(1, L):
            if dist[l] < bd:
                bd = dist[l]
                best = l
        if codes[p] != best:
            changed += 1
            codes[p] = best
    return changed


@nb.njit(**NJIT)
def accumulate(points, codes, geom, sums, counts):  # pragma: no cover - compiled
    """``sums[r, l] = sum of points with group r and code l`` (float64, increasing ``p``);
    ``counts[r, l]`` their number. Also the per-centroid gradient sums of the codebook backward."""
    q, R, mode = geom
    npts, m = points.shape
    for r in range(sums.shape[0]):
        for l in range(sums.shape[1]):
            counts[r, l] = 0
            for d in range(m):
                sums[r, l, d] = 0.0
    for p in range(npts):
        r = group_of(p, q, R, mode, npts)
        l = codes[p]
        counts[r, l] += 1
        for d in range(m):
            sums[r, l, d] += np.float64(points[p, d])


@nb.njit(**NJIT)
def finalize(sums, counts, centroids):  # pragma: no cover - compiled
    """``centroids[r, l] = float32(sums[r, l] / counts[r, l])`` where ``counts > 0``."""
    for r in range(sums.shape[0]):
        for l in range(sums.shape[1]):
            n = counts[r, l]
            if n > 0:
                for d in range(sums.shape[2]):
                    centroids[r, l, d] = np.float32(sums[r, l, d] / n)


@nb.njit(**NJIT)
def lloyd(points, centroids, ct, codes, sums, counts, dist, params):  # pragma: no cover
    """Up to ``iters`` Lloyd updates of ``centroids`` in place, then the final codes.

    ``params = (q, R, mode, iters)``. ``codes`` must be valid or filled with a value ``>= L``
    (then the first pass counts every point as changed). ``ct``, ``sums`` (f64[R, L, m]),
    ``counts`` (i64[R, L]) and ``dist`` (f32[L]) are scratch. Returns the updates run.
    """
    q, R, mode, iters = params
    geom = (q, R, mode)
    transpose_centroids(centroids, ct)
    changed = assign(points, ct, geom, codes, dist)
    steps = 0
    while steps < iters and changed > 0:
        accumulate(points, codes, geom, sums, counts)
        finalize(sums, counts, centroids)
        transpose_centroids(centroids, ct)
        steps += 1
        changed = assign(points, ct, geom, codes, dist)
    return steps


@nb.njit(**NJIT)
def _pick(u, n):  # pragma: no cover - compiled
    j = int(u * n)
    return n - 1 if j > n - 1 else j


@nb.njit(**NJIT)
def _d2(points, p, centroids, r, s):  # pragma: no cover - compiled
    acc = 0.0
    for d in range(points.shape[1]):
        t = np.float64(points[p, d]) - np.float64(centroids[r, s, d])
        acc += t * t
    return acc


@nb.njit(**NJIT)
def kmeanspp(points, geom, u, d2, centroids):  # pragma: no cover - compiled
    """k-means++ seeding of every group from uniforms ``u`` (f64[R, L]); ``d2`` is f64[N/R].

    Centre 0 of group ``r`` is member ``min(floor(u[r, 0] n), n - 1)``; centre ``s`` is the first
    member whose running float64 sum of ``d2`` exceeds ``u[r, s] * sum(d2)`` with ``d2 > 0`` (the
    last member with ``d2 > 0`` if rounding leaves none); uniform like centre 0 if all ``d2 = 0``.
    """
    q, R, mode = geom
    npts, m = points.shape
    n = npts // R
    L = centroids.shape[1]
    for r in range(R):
        p = member(r, _pick(u[r, 0], n), q, R, mode, npts)
        for d in range(m):
            centroids[r, 0, d] = points[p, d]
        for k in range(n):
            d2[k] = _d2(points, member(r, k, q, R, mode, npts), centroids, r, 0)
        for s in range(1, L):
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
            p = member(r, pick, q, R, mode, npts)
            for d in range(m):
                centroids[r, s, d] = points[p, d]
            for k in range(n):
                dd = _d2(points, member(r, k, q, R, mode, npts), centroids, r, s)
                if dd < d2[k]:
                    d2[k] = dd


@nb.njit(**NJIT)
def gather(centroids, codes, geom, out):  # pragma: no cover - compiled
    """Decode: ``out[p] = centroids[group(p), codes[p]]`` (``out`` is f32[N, m])."""
    q, R, mode = geom
    npts, m = out.shape
    for p in range(npts):
        r = group_of(p, q, R, mode, npts)
        l = codes[p]
        for d in range(m):
            out[p, d] = centroids[r, l, d]

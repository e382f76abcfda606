"""CUDA twins of :mod:`fedsqueeze.kernels.cpu.pq` (grid-stride loops, launch shape from
:mod:`fedsqueeze.kernels.config`).

Kernels read the same member-ordered transpose ``pts_t`` as the CPU. ``assign`` runs one thread
per point (coalesced reads of ``pts_t``) and loops over centroids with the CPU kernel's float32,
increasing-``d`` sum, so without FMA contraction its codes equal the CPU codes bit for bit; a real
GPU may contract ``t*t + acc`` into an FMA and break near-ties differently (METHODS.md 0.5 allows
last-bit differences in reductions; tests compare on well-separated data). ``accumulate`` runs one
thread per ``(group, dimension)`` and adds the group's members in increasing ``p``, the CPU order,
so the float64 sums are identical; the other kernels are element-wise. The group helpers
are compiled from the CPU module's source. k-means++ seeding stays on the host (it is sequential
and runs once per client, before warm starts take over).

Public functions take device arrays (or host arrays, which Numba copies) and launch kernels.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..cpu import pq as _p

__all__ = ["launch_grid", "transpose_points", "assign", "member_codes", "accumulate", "finalize",
           "gather", "lloyd", "group_of", "member"]

group_of = cuda.jit(device=True)(_p.group_of.py_func)
member = cuda.jit(device=True)(_p.member.py_func)


def launch_grid(nwork: int) -> tuple[int, int]:
    """``(blocks, threads)`` for ``nwork`` grid-stride work items, within ``kernels.config``."""
    threads = config.threads_per_block()
    blocks = max(1, min(config.max_blocks(), (max(nwork, 1) + threads - 1) // threads))
    return blocks, threads


@cuda.jit
def _transpose(points, q, R, mode, pts_t):  # pragma: no cover - device code
    npts = points.shape[0]
    m = points.shape[1]
    n = npts // R
    for w in range(cuda.grid(1), npts * m, cuda.gridsize(1)):
        col = w // m
        d = w % m
        p = member(col // n, col % n, q, R, mode, npts)
        pts_t[d, col] = points[p, d]


@cuda.jit
def _assign(pts_t, centroids, q, R, mode, codes, mcodes, changed):  # pragma: no cover
    m = pts_t.shape[0]
    npts = pts_t.shape[1]
    n = npts // R
    L = centroids.shape[1]
    for col in range(cuda.grid(1), npts, cuda.gridsize(1)):
        r = col // n
        best = 0
        bd = np.float32(0.0)
        for cl in range(L):
            acc = np.float32(0.0)
            for d in range(m):
                t = pts_t[d, col] - centroids[r, cl, d]
                acc += t * t
            if cl == 0 or acc < bd:
                bd = acc
                best = cl
        mcodes[col] = best
        p = member(r, col % n, q, R, mode, npts)
        if codes[p] != best:
            codes[p] = best
            cuda.atomic.add(changed, 0, 1)


@cuda.jit
def _member_codes(codes, q, R, mode, mcodes):  # pragma: no cover - device code
    npts = codes.shape[0]
    n = npts // R
    for col in range(cuda.grid(1), npts, cuda.gridsize(1)):
        mcodes[col] = codes[member(col // n, col % n, q, R, mode, npts)]


@cuda.jit
def _accumulate(pts_t, mcodes, sums, counts):  # pragma: no cover - device code
    R = counts.shape[0]
    L = counts.shape[1]
    m = pts_t.shape[0]
    n = pts_t.shape[1] // R
    for w in range(cuda.grid(1), R * m, cuda.gridsize(1)):
        r = w // m
        d = w % m
        for cl in range(L):
            sums[r, cl, d] = 0.0
            if d == 0:
                counts[r, cl] = 0
        for k in range(n):
            cl = mcodes[r * n + k]
            sums[r, cl, d] += np.float64(pts_t[d, r * n + k])
            if d == 0:
                counts[r, cl] += 1


@cuda.jit
def _finalize(sums, counts, centroids):  # pragma: no cover - device code
    L = sums.shape[1]
    m = sums.shape[2]
    for w in range(cuda.grid(1), sums.shape[0] * L * m, cuda.gridsize(1)):
        r = w // (L * m)
        cl = (w // m) % L
        d = w % m
        if counts[r, cl] > 0:
            centroids[r, cl, d] = np.float32(sums[r, cl, d] / counts[r, cl])


@cuda.jit
def _gather(centroids, codes, q, R, mode, out):  # pragma: no cover - device code
    npts = out.shape[0]
    m = out.shape[1]
    for w in range(cuda.grid(1), npts * m, cuda.gridsize(1)):
        p = w // m
        d = w % m
        r = group_of(p, q, R, mode, npts)
        out[p, d] = centroids[r, codes[p], d]


def _g(geom) -> tuple[int, int, int]:
    q, R, mode = (int(v) for v in geom)
    return q, R, mode


def transpose_points(points, geom, pts_t) -> None:
    """Device twin of the CPU ``transpose_points``."""
    _transpose[launch_grid(points.shape[0] * points.shape[1])](points, *_g(geom), pts_t)


def assign(pts_t, centroids, geom, codes, mcodes) -> int:
    """Device twin of the CPU ``assign`` (one thread per point, no scratch); returns how many
    codes changed."""
    changed = cuda.to_device(np.zeros(1, np.int64))
    _assign[launch_grid(pts_t.shape[1])](pts_t, centroids, *_g(geom), codes, mcodes, changed)
    return int(changed.copy_to_host()[0])


def member_codes(codes, geom, mcodes) -> None:
    """Device twin of the CPU ``member_codes``."""
    _member_codes[launch_grid(codes.shape[0])](codes, *_g(geom), mcodes)


def accumulate(pts_t, mcodes, sums, counts) -> None:
    """Device twin of the CPU ``accumulate`` (float64 sums in the CPU order)."""
    _accumulate[launch_grid(counts.shape[0] * pts_t.shape[0])](pts_t, mcodes, sums, counts)


def finalize(sums, counts, centroids) -> None:
    """Device twin of the CPU ``finalize``."""
    _finalize[launch_grid(sums.shape[0] * sums.shape[1] * sums.shape[2])](sums, counts, centroids)


def gather(centroids, codes, geom, out) -> None:
    """Device twin of the CPU ``gather`` (``out`` f32[N, m])."""
    _gather[launch_grid(out.shape[0] * out.shape[1])](centroids, codes, *_g(geom), out)


def lloyd(pts_t, centroids, codes, mcodes, sums, counts, params) -> int:
    """Host driver with the CPU ``lloyd`` loop; all arrays on the device. Returns updates run."""
    q, R, mode, iters = (int(v) for v in params)
    geom = (q, R, mode)
    changed = assign(pts_t, centroids, geom, codes, mcodes)
    steps = 0
    while steps < iters and changed > 0:
        accumulate(pts_t, mcodes, sums, counts)
        finalize(sums, counts, centroids)
        steps += 1
        changed = assign(pts_t, centroids, geom, codes, mcodes)
    return steps

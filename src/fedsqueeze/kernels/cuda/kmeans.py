"""CUDA twins of :mod:`fedsqueeze.kernels.cpu.kmeans` (grid-stride loops, launch shape from
:mod:`fedsqueeze.kernels.config`).

Each public function takes device arrays (or host arrays, which Numba copies) and launches one
kernel. Both produce exactly the CPU results: the only float work is one float32 subtraction and
``abs`` per comparison (fastmath off), and ``gather`` copies.
"""

from __future__ import annotations

import math

from numba import cuda

from .. import config

__all__ = ["assign_1d", "gather"]


def _grid(n: int) -> tuple[int, int]:
    tpb = config.threads_per_block()
    return max(1, min(config.max_blocks(), math.ceil(max(n, 1) / tpb))), tpb


@cuda.jit
def _assign_kernel(x, centroids, out):  # pragma: no cover - compiled
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    k = centroids.shape[0]
    for i in range(start, x.shape[0], stride):
        v = x[i]
        best = 0
        bd = abs(v - centroids[0])
        for j in range(1, k):
            d = abs(v - centroids[j])
            if d < bd:
                bd = d
                best = j
        out[i] = best


@cuda.jit
def _gather_kernel(codebook, idx, out):  # pragma: no cover - compiled
    start = cuda.grid(1)
    stride = cuda.gridsize(1)
    for i in range(start, idx.shape[0], stride):
        out[i] = codebook[idx[i]]


def assign_1d(x, centroids, out) -> None:
    """``out[i] = argmin_j |x[i] - centroids[j]|`` (first minimum), like the CPU kernel."""
    g, b = _grid(x.shape[0])
    _assign_kernel[g, b](x, centroids, out)


def gather(codebook, idx, out) -> None:
    """``out[i] = codebook[idx[i]]``."""
    g, b = _grid(idx.shape[0])
    _gather_kernel[g, b](codebook, idx, out)

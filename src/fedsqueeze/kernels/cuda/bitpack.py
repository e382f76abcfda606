"""CUDA twin of ``kernels.cpu.bitpack``: one thread per group of 8 values (``w`` bytes).

The group helpers are compiled from the CPU module's source, so both backends assemble each
group with the same instructions; the CPU's per-width fast loops produce the same bytes (tested).
Launchers take the CPU functions' arguments; shapes come from ``kernels.config``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from .. import config
from ..cpu import bitpack as _b

__all__ = ["launch_grid", "pack_bits", "unpack_bits", "group_put", "group_store",
           "group_load", "group_get"]

group_put = cuda.jit(device=True)(_b.group_put.py_func)
group_store = cuda.jit(device=True)(_b.group_store.py_func)
group_load = cuda.jit(device=True)(_b.group_load.py_func)
group_get = cuda.jit(device=True)(_b.group_get.py_func)


def launch_grid(nwork: int) -> tuple[int, int]:
    """``(blocks, threads)`` for ``nwork`` grid-stride work items, within ``kernels.config``."""
    threads = config.threads_per_block()
    blocks = max(1, min(config.max_blocks(), (nwork + threads - 1) // threads))
    return blocks, threads


@cuda.jit
def _pack(codes, w, out):  # pragma: no cover - device code
    n = codes.shape[0]
    for g in range(cuda.grid(1), (n + 7) // 8, cuda.gridsize(1)):
        i0 = 8 * g
        m = min(8, n - i0)
        lo = np.uint64(0)
        hi = np.uint64(0)
        for j in range(m):
            lo, hi = group_put(lo, hi, codes[i0 + j], j, w)
        group_store(lo, hi, out, g * w, (m * w + 7) // 8)


@cuda.jit
def _unpack(packed, w, n, out):  # pragma: no cover - device code
    for g in range(cuda.grid(1), (n + 7) // 8, cuda.gridsize(1)):
        i0 = 8 * g
        m = min(8, n - i0)
        lo, hi = group_load(packed, g * w, (m * w + 7) // 8)
        for j in range(m):
            out[i0 + j] = group_get(lo, hi, j, w)


def pack_bits(codes, width, out) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.bitpack.pack_bits`."""
    _pack[launch_grid((codes.shape[0] + 7) // 8)](codes, int(width), out)


def unpack_bits(packed, width, n, out) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.bitpack.unpack_bits`."""
    _unpack[launch_grid((int(n) + 7) // 8)](packed, int(width), int(n), out)

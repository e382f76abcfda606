"""CUDA twins of :mod:`fedsqueeze.kernels.cpu.topk` (same names, same arguments, same index set).

The radix select runs as on the CPU: one grid-stride histogram kernel per key byte (block-local
shared-memory histograms merged with atomics), the bucket choice on the host with the very same
``_bucket`` rule, stopping at the same pass. The selected indices are then written in increasing
order without sorting: every block counts the selected keys of its tiles (a tile is ``blockDim``
consecutive elements), the host turns the counts into offsets, and a second kernel ranks each
element inside its tile with a shared-memory scan. Keys and counts are integers, so the result is
identical to the CPU kernel.

>>> from fedsqueeze.kernels.config import launch_limits
>>> with launch_limits(32, 4):
...     launch_shape(1000)
(4, 32)
"""

from __future__ import annotations

import numpy as np
from numba import cuda, int64

from .. import config as _config
from ..cpu import topk as _cpu

__all__ = ["launch_shape", "magnitude_keys", "smallest_k", "topk_indices"]

_MAX_THREADS = 1024
_ABS = np.uint32(0x7FFFFFFF)


def launch_shape(work: int) -> tuple[int, int]:
    """``(blocks, threads)`` for ``work`` grid-stride items within ``kernels.config`` limits."""
    threads = _config.threads_per_block()
    if not 1 <= threads <= _MAX_THREADS:
        raise ValueError(f"threads per block = {threads}, expected 1..{_MAX_THREADS}")
    blocks = max(1, min(_config.max_blocks(), (work + threads - 1) // threads))
    return blocks, threads


@cuda.jit
def _magnitude_keys(bits, out):  # pragma: no cover - compiled
    for i in range(cuda.grid(1), bits.shape[0], cuda.gridsize(1)):
        out[i] = _ABS - (bits[i] & _ABS)


@cuda.jit
def _iota(out):  # pragma: no cover - compiled
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = i


@cuda.jit
def _histogram(keys, first, sh, sh_hi, prefix, hist):  # pragma: no cover - compiled
    """``hist[(key >> sh) & 255] += 1`` for keys whose higher bytes equal ``prefix`` (or all)."""
    sm = cuda.shared.array(256, int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    for d in range(tid, 256, nt):
        sm[d] = 0
    cuda.syncthreads()
    for i in range(cuda.grid(1), keys.shape[0], cuda.gridsize(1)):
        key = np.uint64(keys[i])
        if first != 0 or (key >> sh_hi) == prefix:
            cuda.atomic.add(sm, np.intp(key >> sh) & 255, 1)
    cuda.syncthreads()
    for d in range(tid, 256, nt):
        if sm[d] != 0:
            cuda.atomic.add(hist, d, sm[d])


@cuda.jit
def _tile_counts(keys, sh, prefix, lt, eq):  # pragma: no cover - compiled
    """Per tile: how many keys fall below the threshold prefix (``lt``) and on it (``eq``)."""
    sm = cuda.shared.array(2, int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = keys.shape[0]
    for tile in range(cuda.blockIdx.x, (n + nt - 1) // nt, cuda.gridDim.x):
        if tid == 0:
            sm[0] = 0
            sm[1] = 0
        cuda.syncthreads()
        i = tile * nt + tid
        if i < n:
            p = np.uint64(keys[i]) >> sh
            if p < prefix:
                cuda.atomic.add(sm, 0, 1)
            elif p == prefix:
                cuda.atomic.add(sm, 1, 1)
        cuda.syncthreads()
        if tid == 0:
            lt[tile] = sm[0]
            eq[tile] = sm[1]
        cuda.syncthreads()


@cuda.jit
def _tile_scatter(keys, sh, prefix, need, lt_off, eq_off, out):  # pragma: no cover - compiled
    """Write selected indices at ``#lt before i + min(#eq before i, need)`` (Hillis-Steele)."""
    a = cuda.shared.array(_MAX_THREADS, int64)
    b = cuda.shared.array(_MAX_THREADS, int64)
    tid = cuda.threadIdx.x
    nt = cuda.blockDim.x
    n = keys.shape[0]
    for tile in range(cuda.blockIdx.x, (n + nt - 1) // nt, cuda.gridDim.x):
        i = tile * nt + tid
        flt = 0
        feq = 0
        if i < n:
            p = np.uint64(keys[i]) >> sh
            if p < prefix:
                flt = 1
            elif p == prefix:
                feq = 1
        a[tid] = flt
        b[tid] = feq
        cuda.syncthreads()
        off = 1
        while off < nt:
            x = 0
            y = 0
            if tid >= off:
                x = a[tid - off]
                y = b[tid - off]
            cuda.syncthreads()
            a[tid] += x
            b[tid] += y
            cuda.syncthreads()
            off *= 2
        lt_before = lt_off[tile] + a[tid] - flt
        eq_before = eq_off[tile] + b[tid] - feq
        if flt == 1:
            out[lt_before + min(eq_before, need)] = i
        elif feq == 1 and eq_before < need:
            out[lt_before + eq_before] = i
        cuda.syncthreads()


def magnitude_keys(v, out) -> None:
    """Device twin: ``out[i] = 0x7FFFFFFF - (bits(v[i]) & 0x7FFFFFFF)``."""
    blocks, threads = launch_shape(v.shape[0])
    _magnitude_keys[blocks, threads](v.view(np.uint32), out)


def smallest_k(keys, k: int, hist, out) -> int:
    """Device twin of the CPU ``smallest_k``: indices of the ``k`` smallest keys (ties by smaller
    index) into ``out[:k]`` in increasing order; ``hist`` is an int64 device array of 256."""
    n = keys.shape[0]
    blocks, threads = launch_shape(n)
    if k >= n:
        _iota[blocks, threads](out[:n] if n else out)
        return n
    if k <= 0:
        return 0
    need, prefix, shift, first = k, np.uint64(0), keys.dtype.itemsize * 8, True
    zeros = np.zeros(_cpu.HIST_BINS, np.int64)
    while shift > 0:
        shift -= 8
        hist.copy_to_device(zeros)
        _histogram[blocks, threads](keys, int(first), np.uint64(shift), np.uint64(shift + 8),
                                    prefix, hist)
        h = hist.copy_to_host()
        d, below = _cpu._bucket(h, need)
        need -= int(below)
        prefix = (prefix << np.uint64(8)) | np.uint64(d)
        first = False
        if h[d] == need:
            break
    ntiles = (n + threads - 1) // threads
    lt = cuda.device_array(ntiles, np.int64)
    eq = cuda.device_array(ntiles, np.int64)
    tile_blocks = min(blocks, ntiles)
    _tile_counts[tile_blocks, threads](keys, np.uint64(shift), prefix, lt, eq)
    lt_h, eq_h = lt.copy_to_host(), eq.copy_to_host()
    lt_off = cuda.to_device(np.concatenate(([0], np.cumsum(lt_h)[:-1])).astype(np.int64))
    eq_off = cuda.to_device(np.concatenate(([0], np.cumsum(eq_h)[:-1])).astype(np.int64))
    _tile_scatter[tile_blocks, threads](keys, np.uint64(shift), prefix, np.int64(need), lt_off,
                                        eq_off, out)
    return k


def topk_indices(v, k: int, keys, hist, out) -> int:
    """Device twin: sorted indices of the ``k`` largest ``|v|`` (ties: smaller index) in ``out``."""
    magnitude_keys(v, keys)
    return smallest_k(keys, k, hist, out)

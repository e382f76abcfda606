"""CUDA twins of :mod:`fedsqueeze.kernels.cpu.sketch` (same names, same arguments).

The integer hashing (:func:`~fedsqueeze.kernels.cpu.sketch.bucket_sign_of` on Philox words) and
the median are the very same Python functions as on the CPU, compiled here as device functions,
so buckets and signs are byte-identical and queries bit-identical to the CPU kernels. Insertion
uses float32 atomics, so its sums may differ from the CPU's in the last bits (the order of the
additions is not fixed); sums of integers that float32 represents exactly are identical.

The public functions take the CPU kernels' arguments (device arrays) and launch grid-stride
kernels, so any launch shape covers any input; :func:`launch_shape` takes the threads per block
and the block limit from :mod:`fedsqueeze.kernels.config`. Launches are asynchronous: synchronise
before the host reads a result.

>>> from fedsqueeze.kernels.config import launch_limits
>>> with launch_limits(32, 4):
...     launch_shape(1000)
(4, 32)
"""

from __future__ import annotations

import numpy as np
from numba import cuda, float32

from .. import config as _config
from ..cpu import sketch as _cpu
from .philox import philox4x32 as _philox

__all__ = ["launch_shape", "sketch_hashes", "sketch_insert", "sketch_query", "sketch_insert_hashed",
           "sketch_query_hashed"]

_bucket_sign = cuda.jit(device=True)(_cpu.bucket_sign_of)
_median_insert = cuda.jit(device=True)(_cpu.median_insert)
_median_of = cuda.jit(device=True)(_cpu.median_of)
_MAX_ROWS = _cpu.MAX_ROWS
_MAX_THREADS = 1024


def launch_shape(work: int) -> tuple[int, int]:
    """``(blocks, threads)`` for ``work`` grid-stride items within ``kernels.config`` limits."""
    threads = _config.threads_per_block()
    if not 1 <= threads <= _MAX_THREADS:
        raise ValueError(f"threads per block = {threads}, expected 1..{_MAX_THREADS}")
    blocks = max(1, min(_config.max_blocks(), (work + threads - 1) // threads))
    return blocks, threads


@cuda.jit(device=True)
def _hash(i, j, params):  # pragma: no cover - compiled
    w0, w1, w2, w3 = _philox(np.uint32(i), np.uint32(j), np.uint32(0), params[3], params[1],
                             params[2])
    return _bucket_sign(w0, w1, params[0])


@cuda.jit
def _hashes_kernel(idx, buckets, signs, params):  # pragma: no cover - compiled
    """``buckets[j, t] = h_j(idx[t])``, ``signs[j, t] = s_j(idx[t])``; one item per (j, t)."""
    k = idx.shape[0]
    total = buckets.shape[0] * k
    for u in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = u // k
        t = u - j * k
        b, s = _hash(idx[t], j, params)
        buckets[j, t] = b
        signs[j, t] = s


@cuda.jit
def _insert_kernel(x, table, params):  # pragma: no cover - compiled
    """``table[j, h_j(i)] += s_j(i) * x[i]`` with float32 atomics; one item per (j, i)."""
    n = x.shape[0]
    total = table.shape[0] * n
    for u in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = u // n
        i = u - j * n
        v = x[i]
        if v != 0:
            b, s = _hash(i, j, params)
            cuda.atomic.add(table, (j, b), s * v)


@cuda.jit
def _query_kernel(table, out, params):  # pragma: no cover - compiled
    """``out[i] = median_j s_j(i) * table[j, h_j(i)]``; one coordinate per item."""
    r = table.shape[0]
    vals = cuda.local.array(_MAX_ROWS, float32)
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        for j in range(r):
            b, s = _hash(i, j, params)
            _median_insert(vals, j, float32(s * table[j, b]))
        out[i] = _median_of(vals, r)


@cuda.jit
def _insert_hashed_kernel(x, buckets, signs, table):  # pragma: no cover - compiled
    n = x.shape[0]
    total = table.shape[0] * n
    for u in range(cuda.grid(1), total, cuda.gridsize(1)):
        j = u // n
        i = u - j * n
        v = x[i]
        if v != 0:
            cuda.atomic.add(table, (j, buckets[j, i]), float32(signs[j, i]) * v)


@cuda.jit
def _query_hashed_kernel(table, buckets, signs, out):  # pragma: no cover - compiled
    r = table.shape[0]
    vals = cuda.local.array(_MAX_ROWS, float32)
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        for j in range(r):
            _median_insert(vals, j, float32(float32(signs[j, i]) * table[j, buckets[j, i]]))
        out[i] = _median_of(vals, r)


def sketch_hashes(idx, buckets, signs, params) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.sketch.sketch_hashes`."""
    _hashes_kernel[launch_shape(buckets.shape[0] * idx.shape[0])](idx, buckets, signs, params)


def sketch_insert(x, table, params) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.sketch.sketch_insert` (float32 atomics)."""
    _insert_kernel[launch_shape(table.shape[0] * x.shape[0])](x, table, params)


def sketch_query(table, out, params) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.sketch.sketch_query`."""
    _query_kernel[launch_shape(out.shape[0])](table, out, params)


def sketch_insert_hashed(x, buckets, signs, table) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.sketch.sketch_insert_hashed`."""
    _insert_hashed_kernel[launch_shape(table.shape[0] * x.shape[0])](x, buckets, signs, table)


def sketch_query_hashed(table, buckets, signs, out) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.sketch.sketch_query_hashed`."""
    _query_hashed_kernel[launch_shape(out.shape[0])](table, buckets, signs, out)

"""CUDA twin of ``kernels.cpu.quantize``: QSGD bucket norms, encode and decode on the device.

* :func:`bucket_norms` / the first step of :func:`qsgd_encode`: one thread per bucket sums the
  squares in the CPU's fixed eight-lane order (the same source), so ``N32`` is bit-identical.
* encode: one thread per group of 8 elements (two Philox blocks, ``w`` output bytes).
* decode: one thread per group of 8 codes; invalid levels are counted with an atomic add.

Element functions (``qsgd_code``, ``qsgd_value``, ``qsgd_scale24``) and the group packers are
compiled from the CPU sources, so codes and decoded floats match the CPU bit for bit. The
launchers take the CPU functions' arguments; scratch arguments the device does not need are
accepted and ignored.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

from ..cpu import quantize as _q
from .bitpack import group_get, group_load, group_put, group_store, launch_grid
from .philox import philox4x32

__all__ = ["bucket_norms", "qsgd_encode", "qsgd_decode"]

_code = cuda.jit(device=True)(_q.qsgd_code.py_func)
_value = cuda.jit(device=True)(_q.qsgd_value.py_func)
_scale24 = cuda.jit(device=True)(_q.qsgd_scale24.py_func)
_sumsq8 = cuda.jit(device=True)(_q.sumsq8.py_func)
_TWO24 = np.float32(16777216.0)


@cuda.jit
def _norms(x, bucket, sf, norms, scales):  # pragma: no cover - device code
    n = x.shape[0]
    for k in range(cuda.grid(1), norms.shape[0], cuda.gridsize(1)):
        lo = k * bucket
        nk = np.float32(math.sqrt(_sumsq8(x[lo:min(n, lo + bucket)])))
        norms[k] = nk
        scales[k] = _scale24(nk, sf)


@cuda.jit(device=True)
def _pick(j, a0, a1, a2, a3):  # pragma: no cover - device code
    if j == 0:
        return a0
    if j == 1:
        return a1
    if j == 2:
        return a2
    return a3


@cuda.jit
def _encode(x, scales, bucket, w, sf24, k0, k1, c3, out):  # pragma: no cover - device code
    n = x.shape[0]
    z = np.uint32(0)
    for g in range(cuda.grid(1), (n + 7) // 8, cuda.gridsize(1)):
        i0 = 8 * g
        m = min(8, n - i0)
        lo = np.uint64(0)
        hi = np.uint64(0)
        a0, a1, a2, a3 = philox4x32(np.uint32(2 * g), z, z, c3, k0, k1)
        for j in range(min(m, 4)):
            i = i0 + j
            code = _code(x[i], scales[i // bucket], sf24, _pick(j, a0, a1, a2, a3))
            lo, hi = group_put(lo, hi, code, j, w)
        if m > 4:
            b0, b1, b2, b3 = philox4x32(np.uint32(2 * g + 1), z, z, c3, k0, k1)
            for j in range(4, m):
                i = i0 + j
                code = _code(x[i], scales[i // bucket], sf24, _pick(j - 4, b0, b1, b2, b3))
                lo, hi = group_put(lo, hi, code, j, w)
        group_store(lo, hi, out, g * w, (m * w + 7) // 8)


@cuda.jit
def _decode(packed, norms, s, bucket, w, out, bad):  # pragma: no cover - device code
    n = out.shape[0]
    sf = np.float32(s)
    for g in range(cuda.grid(1), (n + 7) // 8, cuda.gridsize(1)):
        i0 = 8 * g
        m = min(8, n - i0)
        lo, hi = group_load(packed, g * w, (m * w + 7) // 8)
        for j in range(m):
            i = i0 + j
            code = group_get(lo, hi, j, w)
            if np.int64(code >> np.uint64(1)) > s:
                cuda.atomic.add(bad, 0, 1)
            out[i] = _value(code, norms[i // bucket] / sf)


def bucket_norms(x, bucket, norms) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.quantize.bucket_norms`."""
    scales = cuda.device_array(norms.shape[0], dtype=np.float32)
    _norms[launch_grid(norms.shape[0])](x, int(bucket), np.float32(1.0), norms, scales)


def qsgd_encode(x, params, norms, out, scale_scr, code_scr=None) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.quantize.qsgd_encode`.

    ``scale_scr`` is a device float32 array of at least ``len(norms)`` entries (the per-bucket
    scales); ``code_scr`` is not needed.
    """
    s, bucket, w, k0, k1, c3 = (int(v) for v in params)
    nb = norms.shape[0]
    _norms[launch_grid(nb)](x, bucket, np.float32(s), norms, scale_scr)
    _encode[launch_grid((x.shape[0] + 7) // 8)](
        x, scale_scr, bucket, w, np.float32(s) * _TWO24, np.uint32(k0), np.uint32(k1),
        np.uint32(c3), out)


def qsgd_decode(packed, norms, params, out, unit_scr=None, code_scr=None) -> int:
    """Device twin of :func:`fedsqueeze.kernels.cpu.quantize.qsgd_decode` (returns the count
    of invalid levels; ``packed`` and ``norms`` are device arrays)."""
    s, bucket, w = (int(v) for v in params)
    bad = cuda.to_device(np.zeros(1, dtype=np.int64))
    _decode[launch_grid((out.shape[0] + 7) // 8)](packed, norms, s, bucket, w, out, bad)
    return int(bad.copy_to_host()[0])

"""CUDA twin of ``kernels.cpu.signs``: sign and ternary codes, fixed-order segment statistics.

One thread per output byte (8 signs, or 4 ternary codes from one Philox block), one thread per
decoded element and one thread per statistics piece. Element functions and
``piece_moments`` are compiled from the CPU sources; :func:`segment_partials` yields the CPU's
partials bit for bit and the host combines them with the CPU's ``combine_partials``.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..cpu import signs as _s
from .bitpack import launch_grid
from .philox import philox4x32

__all__ = ["pack_signs", "unpack_signs", "ternary_encode", "ternary_decode",
           "segment_partials"]

_tern = cuda.jit(device=True)(_s.ternary_code.py_func)
_moments = cuda.jit(device=True)(_s.piece_moments.py_func)


@cuda.jit(device=True)
def _segment(bounds, i):  # pragma: no cover - device code
    # the t with bounds[t] <= i < bounds[t + 1] (binary search; empty segments are skipped)
    lo = 0
    hi = bounds.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if bounds[mid] <= i:
            lo = mid
        else:
            hi = mid
    return lo


@cuda.jit
def _pack_signs(x, out):  # pragma: no cover - device code
    n = x.shape[0]
    for k in range(cuda.grid(1), (n + 7) // 8, cuda.gridsize(1)):
        acc = 0
        for j in range(min(8, n - 8 * k)):
            if x[8 * k + j] < 0:
                acc |= 1 << j
        out[k] = np.uint8(acc)


@cuda.jit
def _unpack_signs(packed, bounds, scales, out):  # pragma: no cover - device code
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        a = scales[_segment(bounds, i)]
        out[i] = -a if (packed[i >> 3] >> (i & 7)) & 1 else a


@cuda.jit
def _ternary_encode(x, bounds, clips, scales, k0, k1, c3, out):  # pragma: no cover
    n = x.shape[0]
    z = np.uint32(0)
    for b in range(cuda.grid(1), (n + 3) // 4, cuda.gridsize(1)):
        w0, w1, w2, w3 = philox4x32(np.uint32(b), z, z, c3, k0, k1)
        acc = 0
        for j in range(min(4, n - 4 * b)):
            i = 4 * b + j
            t = _segment(bounds, i)
            word = w0 if j == 0 else (w1 if j == 1 else (w2 if j == 2 else w3))
            acc |= np.int32(_tern(x[i], clips[t], scales[t], word)) << (2 * j)
        out[b] = np.uint8(acc)


@cuda.jit
def _ternary_decode(packed, bounds, scales, out, bad):  # pragma: no cover - device code
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        s = scales[_segment(bounds, i)]
        code = (packed[i >> 2] >> (2 * (i & 3))) & 3
        if code == 3:
            cuda.atomic.add(bad, 0, 1)
        out[i] = s if code == 1 else (-s if code == 2 else np.float32(0.0))


@cuda.jit
def _partials(x, pieces, partials):  # pragma: no cover - device code
    for p in range(cuda.grid(1), pieces.shape[0], cuda.gridsize(1)):
        s, q, a, m = _moments(x[pieces[p, 1]:pieces[p, 2]])
        partials[p, 0] = s
        partials[p, 1] = q
        partials[p, 2] = a
        partials[p, 3] = m


def pack_signs(x, out) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.signs.pack_signs`."""
    _pack_signs[launch_grid((x.shape[0] + 7) // 8)](x, out)


def unpack_signs(packed, bounds, scales, out) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.signs.unpack_signs`."""
    _unpack_signs[launch_grid(out.shape[0])](packed, bounds, scales, out)


def ternary_encode(x, bounds, clips, scales, params, out, *scratch) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.signs.ternary_encode` (no scratch needed)."""
    k0, k1, c3 = (np.uint32(v) for v in params)
    _ternary_encode[launch_grid((x.shape[0] + 3) // 4)](x, bounds, clips, scales, k0, k1, c3, out)


def ternary_decode(packed, bounds, scales, out) -> int:
    """Device twin of :func:`fedsqueeze.kernels.cpu.signs.ternary_decode`."""
    bad = cuda.to_device(np.zeros(1, dtype=np.int64))
    _ternary_decode[launch_grid(out.shape[0])](packed, bounds, scales, out, bad)
    return int(bad.copy_to_host()[0])


def segment_partials(x, pieces, partials) -> None:
    """Device twin of :func:`fedsqueeze.kernels.cpu.signs.segment_partials`."""
    _partials[launch_grid(pieces.shape[0])](x, pieces, partials)

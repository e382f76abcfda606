"""CUDA twin of ``kernels.cpu.philox``: Philox4x32-10 on the device (METHODS.md section 0.7).

``philox4x32`` is the device function; :func:`fill_u32` and :func:`fill_uniform53` launch
grid-stride kernels with the call signatures of their CPU namesakes and write exactly the same
words and doubles. The device function is compiled from the source of
:func:`fedsqueeze.kernels.cpu.philox.philox4x32` (tested against the NumPy oracle and the
Random123 known answers), so there is one definition of the round function for both targets.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from ..cpu import philox as _p
from .bitpack import launch_grid

__all__ = ["philox4x32", "fill_u32", "fill_uniform53"]

_MASK32 = np.uint64(0xFFFFFFFF)

philox4x32 = cuda.jit(device=True)(_p.philox4x32.py_func)
_u53_from = cuda.jit(device=True)(_p.u53_from.py_func)


@cuda.jit
def _fill_u32(out, c0_start, c1, c2, c3, k0, k1):  # pragma: no cover - device code
    n = out.shape[0]
    for b in range(cuda.grid(1), (n + 3) // 4, cuda.gridsize(1)):
        c0 = np.uint32((np.uint64(c0_start) + np.uint64(b)) & _MASK32)
        w0, w1, w2, w3 = philox4x32(c0, c1, c2, c3, k0, k1)
        i = 4 * b
        out[i] = w0
        if i + 1 < n:
            out[i + 1] = w1
        if i + 2 < n:
            out[i + 2] = w2
        if i + 3 < n:
            out[i + 3] = w3


@cuda.jit
def _fill_uniform53(out, c1, c2, c3, k0, k1):  # pragma: no cover - device code
    n = out.shape[0]
    for b in range(cuda.grid(1), (n + 1) // 2, cuda.gridsize(1)):
        w0, w1, w2, w3 = philox4x32(np.uint32(b), c1, c2, c3, k0, k1)
        out[2 * b] = _u53_from(w0, w1)
        if 2 * b + 1 < n:
            out[2 * b + 1] = _u53_from(w2, w3)


def fill_u32(out, c0_start, c1, c2, c3, k0, k1) -> None:
    """Words of blocks ``c0_start, c0_start + 1, ...`` into the device array ``out`` (u32)."""
    args = [np.uint32(v) for v in (c0_start, c1, c2, c3, k0, k1)]
    _fill_u32[launch_grid((out.shape[0] + 3) // 4)](out, *args)


def fill_uniform53(out, c1, c2, c3, k0, k1) -> None:
    """Doubles in [0, 1): value ``i`` from block ``i // 2`` (as the CPU kernel)."""
    args = [np.uint32(v) for v in (c1, c2, c3, k0, k1)]
    _fill_uniform53[launch_grid((out.shape[0] + 1) // 2)](out, *args)

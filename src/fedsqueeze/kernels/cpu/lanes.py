"""Eight-lane float64 sums of squares that LLVM vectorises, and a cache prefetch hint. CPU only.

The QSGD norms (:func:`fedsqueeze.kernels.cpu.quantize.sumsq8`) add ``float64(x[j])**2`` into
eight lanes (element ``j`` of the range into lane ``j % 8``, in increasing ``j``) and combine
them as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``. Written with eight scalar accumulators, that
order needs LLVM's SLP vectoriser, which Numba leaves off (``NUMBA_SLP_VECTORIZE=0``), so it runs
scalar. Here the lanes are an 8-entry float64 scratch ``acc`` and the lane index is the inner
loop, with eight rows (64 elements) unrolled inside it: the loop vectoriser turns that inner
loop into vector adds, one per row, and every lane still sees the very same additions in the
very same order. The trip count is read from ``acc.shape[0]`` (always 8): with a constant 8 the
loop vectoriser judges the loop too short and leaves it scalar. Results equal ``sumsq8``
bit for bit (tested); the pair version runs two ranges in one loop for twice the
instruction-level parallelism (each lane is a dependent chain of additions).

:func:`prefetch` asks the CPU to start loading the cache line of ``a[i]`` (``llvm.prefetch``;
never faults, even past the end of ``a``). Under ``NUMBA_DISABLE_JIT`` it is a no-op Python
function.

>>> import numpy as np
>>> from fedsqueeze.kernels.cpu.quantize import sumsq8
>>> x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
>>> bool(sumsq8_lanes(x, np.empty(8)) == sumsq8(x))
True
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.core import config as _nbconfig

from ..config import NJIT

__all__ = ["LANES", "sumsq8_lanes", "sumsq8_pair", "prefetch"]

LANES = 8
"""Length of each float64 scratch of :func:`sumsq8_lanes` and :func:`sumsq8_pair`."""


@nb.njit(inline="always", **NJIT)
def _rows64(r, acc, nl):  # pragma: no cover - compiled
    # acc[l] += r[8 t + l]^2 for t = 0..7 (r holds 64 elements), rows in order
    for l in range(nl):
        a = acc[l]
        v = np.float64(r[l])
        a += v * v
        v = np.float64(r[8 + l])
        a += v * v
        v = np.float64(r[16 + l])
        a += v * v
        v = np.float64(r[24 + l])
        a += v * v
        v = np.float64(r[32 + l])
        a += v * v
        v = np.float64(r[40 + l])
        a += v * v
        v = np.float64(r[48 + l])
        a += v * v
        v = np.float64(r[56 + l])
        a += v * v
        acc[l] = a


@nb.njit(inline="always", **NJIT)
def _rows64_pair(r, s, acc, acd, nl):  # pragma: no cover - compiled
    # _rows64 on two ranges at once (two independent chains per lane)
    for l in range(nl):
        a = acc[l]
        d = acd[l]
        v = np.float64(r[l])
        u = np.float64(s[l])
        a += v * v
        d += u * u
        v = np.float64(r[8 + l])
        u = np.float64(s[8 + l])
        a += v * v
        d += u * u
        v = np.float64(r[16 + l])
        u = np.float64(s[16 + l])
        a += v * v
        d += u * u
        v = np.float64(r[24 + l])
        u = np.float64(s[24 + l])
        a += v * v
        d += u * u
        v = np.float64(r[32 + l])
        u = np.float64(s[32 + l])
        a += v * v
        d += u * u
        v = np.float64(r[40 + l])
        u = np.float64(s[40 + l])
        a += v * v
        d += u * u
        v = np.float64(r[48 + l])
        u = np.float64(s[48 + l])
        a += v * v
        d += u * u
        v = np.float64(r[56 + l])
        u = np.float64(s[56 + l])
        a += v * v
        d += u * u
        acc[l] = a
        acd[l] = d


@nb.njit(inline="always", **NJIT)
def _finish(x, i, acc):  # pragma: no cover - compiled
    # rows of 8 from element i on, then the last n % 8 elements into lanes 0..; combine
    n = x.shape[0]
    while i + 8 <= n:
        for l in range(8):
            v = np.float64(x[i + l])
            acc[l] += v * v
        i += 8
    for l in range(n - i):
        v = np.float64(x[i + l])
        acc[l] += v * v
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


@nb.njit(**NJIT)
def sumsq8_lanes(x, acc):  # pragma: no cover - compiled
    """``quantize.sumsq8(x)`` (float32 ``x``), vectorised; ``acc`` is float64 scratch of 8."""
    nl = acc.shape[0]
    for l in range(nl):
        acc[l] = 0.0
    nc = x.shape[0] // 64
    for c in range(nc):
        _rows64(x[64 * c:64 * c + 64], acc, nl)
    return _finish(x, 64 * nc, acc)


@nb.njit(**NJIT)
def sumsq8_pair(x, y, ax, ay):  # pragma: no cover - compiled
    """``(sumsq8(x), sumsq8(y))`` for two ranges of equal length; ``ax`` and ``ay`` are
    float64 scratch of 8 each (two arrays: a lane count LLVM could bound at compile time,
    such as that of a slice ``acc[:8]`` taken in here, keeps the lane loop scalar)."""
    nl = ax.shape[0]
    for l in range(nl):
        ax[l] = 0.0
        ay[l] = 0.0
    nc = x.shape[0] // 64
    for c in range(nc):
        _rows64_pair(x[64 * c:64 * c + 64], y[64 * c:64 * c + 64], ax, ay, nl)
    return _finish(x, 64 * nc, ax), _finish(y, 64 * nc, ay)


def _prefetch_py(a, i):  # pragma: no cover - NUMBA_DISABLE_JIT only
    """No-op stand-in for :func:`prefetch` when Numba does not compile."""
    return None


if _nbconfig.DISABLE_JIT:
    prefetch = _prefetch_py
else:
    from llvmlite import ir as _ir
    from numba.core import cgutils as _cgutils
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def prefetch(typingctx, a, i):  # pragma: no cover - compiled
        """Hint: load the cache line holding ``a[i]`` (1-D array, no bounds check, no fault)."""
        if not isinstance(a, _types.Array) or not isinstance(i, _types.Integer):
            return None

        def codegen(context, builder, sig, args):
            ary = context.make_array(sig.args[0])(context, builder, args[0])
            idx = context.cast(builder, args[1], sig.args[1], _types.intp)
            i8p = _ir.IntType(8).as_pointer()
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            ptr = builder.bitcast(builder.gep(ary.data, [idx]), i8p)
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, high locality, data
            return context.get_dummy_value()

        return _types.void(a, i), codegen

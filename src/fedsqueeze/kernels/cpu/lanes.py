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

:func:`qsgd_pack4` computes eight 4-bit QSGD codes per step in LLVM vector IR; under
``NUMBA_DISABLE_JIT`` a plain-Python loop with the element rule of ``quantize`` stands in.

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

__all__ = ["LANES", "sumsq8_lanes", "sumsq8_pair", "prefetch", "qsgd_pack4"]

LANES = 8
"""Length of each float64 scratch of :func:`sumsq8_lanes` and :func:`sumsq8_pair`."""


@nb.njit(inline="always", **NJIT)
def _rows64(r, acc, nl):  # pragma: no cover - compiled
    # acc[ln] += r[8 t + ln]^2 for t = 0..7 (r holds 64 elements), rows in order
    for ln in range(nl):
        a = acc[ln]
        v = np.float64(r[ln])
        a += v * v
        v = np.float64(r[8 + ln])
        a += v * v
        v = np.float64(r[16 + ln])
        a += v * v
        v = np.float64(r[24 + ln])
        a += v * v
        v = np.float64(r[32 + ln])
        a += v * v
        v = np.float64(r[40 + ln])
        a += v * v
        v = np.float64(r[48 + ln])
        a += v * v
        v = np.float64(r[56 + ln])
        a += v * v
        acc[ln] = a


@nb.njit(inline="always", **NJIT)
def _rows64_pair(r, s, acc, acd, nl):  # pragma: no cover - compiled
    # _rows64 on two ranges at once (two independent chains per lane)
    for ln in range(nl):
        a = acc[ln]
        d = acd[ln]
        v = np.float64(r[ln])
        u = np.float64(s[ln])
        a += v * v
        d += u * u
        v = np.float64(r[8 + ln])
        u = np.float64(s[8 + ln])
        a += v * v
        d += u * u
        v = np.float64(r[16 + ln])
        u = np.float64(s[16 + ln])
        a += v * v
        d += u * u
        v = np.float64(r[24 + ln])
        u = np.float64(s[24 + ln])
        a += v * v
        d += u * u
        v = np.float64(r[32 + ln])
        u = np.float64(s[32 + ln])
        a += v * v
        d += u * u
        v = np.float64(r[40 + ln])
        u = np.float64(s[40 + ln])
        a += v * v
        d += u * u
        v = np.float64(r[48 + ln])
        u = np.float64(s[48 + ln])
        a += v * v
        d += u * u
        v = np.float64(r[56 + ln])
        u = np.float64(s[56 + ln])
        a += v * v
        d += u * u
        acc[ln] = a
        acd[ln] = d


@nb.njit(inline="always", **NJIT)
def _finish(x, i, acc):  # pragma: no cover - compiled
    # rows of 8 from element i on, then the last n % 8 elements into lanes 0..; combine
    n = x.shape[0]
    while i + 8 <= n:
        for ln in range(8):
            v = np.float64(x[i + ln])
            acc[ln] += v * v
        i += 8
    for ln in range(n - i):
        v = np.float64(x[i + ln])
        acc[ln] += v * v
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


@nb.njit(**NJIT)
def sumsq8_lanes(x, acc):  # pragma: no cover - compiled
    """``quantize.sumsq8(x)`` (float32 ``x``), vectorised; ``acc`` is float64 scratch of 8."""
    nl = acc.shape[0]
    for ln in range(nl):
        acc[ln] = 0.0
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
    for ln in range(nl):
        ax[ln] = 0.0
        ay[ln] = 0.0
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


# -- QSGD codes of eight elements at a time, packed four bits each (w = 4) ---------------------
def _pack4_py(x, words, groups, sc, sf24, out):  # pragma: no cover - NUMBA_DISABLE_JIT only
    """Plain-Python :func:`qsgd_pack4` (the element rule of ``quantize.qsgd_code_fused``)."""
    from .quantize import qsgd_code_fused

    for b in range(4 * groups):
        j = 2 * b
        out[b] = np.uint8(qsgd_code_fused(x[j], sc, sf24, words[j])
                          | (qsgd_code_fused(x[j + 1], sc, sf24, words[j + 1]) << 4))


if _nbconfig.DISABLE_JIT:
    qsgd_pack4 = _pack4_py
else:

    @_intrinsic
    def qsgd_pack4(typingctx, x, words, groups, sc, sf24, out):  # pragma: no cover - compiled
        """QSGD codes of ``x[:8 groups]`` (float32, C-contiguous) with the Philox words
        ``words[j]`` (uint32, one per element), packed four bits each into ``out[:4 groups]``.

        The rule of ``quantize.qsgd_code_fused`` on eight 32-bit lanes (``s <= 7``, so every
        intermediate fits in an int32: ``q + u <= 8 * 2^24 - 1``): ``r = min(|v| sc, sf24)``,
        ``q = int(r)``, ``level = (q + (~word >> 8)) >> 24``, ``code = level << 1 | [v < 0]``;
        byte ``t`` = ``code[2t] | code[2t + 1] << 4``. Written as LLVM vector IR because Numba
        widens every integer operation to 64 bits (half the lanes) and leaves this loop scalar.
        """
        ok = all(isinstance(a, _types.Array) and a.ndim == 1 and a.layout == "C"
                 for a in (x, words, out))
        if not ok or not isinstance(groups, _types.Integer):
            return None

        def codegen(context, builder, sig, args):
            xa = context.make_array(sig.args[0])(context, builder, args[0])
            wa = context.make_array(sig.args[1])(context, builder, args[1])
            oa = context.make_array(sig.args[5])(context, builder, args[5])
            ng = context.cast(builder, args[2], sig.args[2], _types.intp)
            scf = context.cast(builder, args[3], sig.args[3], _types.float32)
            sff = context.cast(builder, args[4], sig.args[4], _types.float32)
            f32, i32, i8 = _ir.FloatType(), _ir.IntType(32), _ir.IntType(8)
            v8f, v8i, v4i = _ir.VectorType(f32, 8), _ir.VectorType(i32, 8), _ir.VectorType(i32, 4)
            v4b = _ir.VectorType(i8, 4)

            def splat(val):
                one = builder.insert_element(_ir.Constant(v8f, None), val, i32(0))
                return builder.shuffle_vector(one, _ir.Constant(v8f, None),
                                              _ir.Constant(v8i, [0] * 8))

            def const8(v):
                return _ir.Constant(v8i, [v] * 8)

            vsc, vsf = splat(scf), splat(sff)
            zero = _ir.Constant(v8f, [0.0] * 8)
            with _cgutils.for_range(builder, ng) as loop:
                g = loop.index
                off = builder.mul(g, g.type(8))
                v = builder.load(builder.bitcast(builder.gep(xa.data, [off]), v8f.as_pointer()),
                                 align=4)
                wd = builder.load(builder.bitcast(builder.gep(wa.data, [off]), v8i.as_pointer()),
                                  align=4)
                mag = builder.bitcast(builder.and_(builder.bitcast(v, v8i), const8(0x7FFFFFFF)),
                                      v8f)
                r = builder.fmul(mag, vsc)
                r = builder.select(builder.fcmp_ordered(">", r, vsf), vsf, r)
                up = builder.lshr(builder.xor(wd, const8(-1)), const8(8))
                level = builder.lshr(builder.add(builder.fptosi(r, v8i), up), const8(24))
                neg = builder.zext(builder.fcmp_ordered("<", v, zero), v8i)
                code = builder.or_(builder.shl(level, const8(1)), neg)
                lo = builder.shuffle_vector(code, code, _ir.Constant(v4i, [0, 2, 4, 6]))
                hi = builder.shuffle_vector(code, code, _ir.Constant(v4i, [1, 3, 5, 7]))
                byte = builder.trunc(builder.or_(lo, builder.shl(hi, _ir.Constant(v4i, [4] * 4))),
                                     v4b)
                dst = builder.gep(oa.data, [builder.mul(g, g.type(4))])
                builder.store(byte, builder.bitcast(dst, v4b.as_pointer()), align=1)
            return context.get_dummy_value()

        return _types.void(x, words, groups, sc, sf24, out), codegen

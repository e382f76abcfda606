"""float32 to and from IEEE binary16 and bfloat16 bit patterns (METHODS.md 6.11). CPU only.

Integer-only element rules (branch-free after if-conversion, so LLVM vectorises the loops),
equal bit for bit to the NumPy casts the codecs used before (tests/unit/kernels/test_cast.py:
every 2^16 upper half with the low halves at each rounding boundary plus 1M random float32
patterns, and all 2^16 half and bfloat16 patterns for the decoders):

* :func:`f32_to_f16` = ``np.clip(v, -65504, 65504).astype("<f2")``: round to nearest even;
  finite values beyond +-65504 and +-inf clamp to +-65504 (``0x7BFF``); NaN keeps its sign and
  the top ten payload bits, and becomes ``0x7C01`` when those are all zero (NumPy's rule).
* :func:`f16_to_f32` = ``.astype(np.float32)`` of binary16: exact, NaN payload kept.
* :func:`f32_to_bf16` = the upper 16 bits rounded to nearest even; NaN keeps its upper 16 bits
  with the quiet bit (``0x0040``) set.
* :func:`bf16_to_f32`: the 16 bits shifted up.

Kernels take and write the bit patterns (``uint32`` views of float32, ``uint16`` codes).

:func:`f32_to_f16_fast` and :func:`f16_to_f32_fast` give the same bits as :func:`f32_to_f16` and
:func:`f16_to_f32` with the CPU's conversion instructions (F16C ``vcvtps2ph`` / ``vcvtph2ps``,
through LLVM's ``fptrunc``/``fpext`` to ``half``), 2048 elements at a time; IEEE round to nearest
even already equals the rules above for every finite value, subnormals included. Only the
elements whose 16-bit pattern has the all-ones exponent (float32 NaN, Inf and values that round
beyond 65504, which the hardware turns into Inf or a quieted NaN) are then recomputed with the
integer rule, after a vectorised check of the block. They assume the default floating-point
environment (round to nearest even, no denormals-are-zero), as all of fedsqueeze does. Without
F16C, or under ``NUMBA_DISABLE_JIT``, they are the integer kernels themselves. The integer
kernels stay the reference (and the twin of any GPU version); tests compare the two on every
pattern of ``tests/unit/kernels/test_cast.py``.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba.core import config as _nbconfig

from ..config import NJIT

__all__ = ["f32_to_f16", "f16_to_f32", "f32_to_bf16", "bf16_to_f32", "count_all_ones",
           "f32_to_f16_fast", "f16_to_f32_fast", "HARDWARE_F16"]

_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_H_MAX_F32 = np.uint32(0x477FE000)  # 65504.0f
_H_MIN_NORMAL_F32 = np.uint32(0x38800000)  # 2^-14
_REBIAS = np.uint32(0x38000000)  # (127 - 15) << 23


@nb.njit(inline="always", **NJIT)
def _half_of(u):  # pragma: no cover - compiled
    # binary16 pattern (in a uint32) of the float32 pattern u, NumPy's clip-then-cast semantics
    # no step wraps around (the clamps below are selects), so the same source also runs as
    # Python on NumPy scalars (NUMBA_DISABLE_JIT) without overflow warnings
    sign = (u >> np.uint32(16)) & np.uint32(0x8000)
    a = u & _ABS
    # normal half range: round to nearest even at bit 13, rebias the exponent
    an = a
    if an < _H_MIN_NORMAL_F32:  # result unused below 2^-14; clamped so nothing wraps
        an = _H_MIN_NORMAL_F32
    lsb = (an >> np.uint32(13)) & np.uint32(1)
    normal = (an + np.uint32(0xFFF) + lsb - _REBIAS) >> np.uint32(13)
    # subnormal half range (|v| < 2^-14): m * 2^(e - 126) half units, rounded to nearest even
    e = a >> np.uint32(23)
    m = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
    if e > np.uint32(125):  # result unused from e = 113 on; clamped so nothing wraps
        e = np.uint32(125)
    sh = np.uint32(126) - e  # 14..126 for 1 <= e <= 112 (e = 0 gives 0 below anyway)
    if sh > np.uint32(25):
        sh = np.uint32(25)
    r = m >> sh
    rem = m & ((np.uint32(1) << sh) - np.uint32(1))
    half = np.uint32(1) << (sh - np.uint32(1))
    sub = r + np.uint32((rem > half) | ((rem == half) & ((r & np.uint32(1)) == np.uint32(1))))
    if e == np.uint32(0):
        sub = np.uint32(0)
    # NaN: top ten payload bits, never 0 (0x7C00 would be inf)
    pay = (a & np.uint32(0x7FFFFF)) >> np.uint32(13)
    if pay == np.uint32(0):
        pay = np.uint32(1)
    h = sub
    if a >= _H_MIN_NORMAL_F32:
        h = normal
    if a >= _H_MAX_F32:
        h = np.uint32(0x7BFF)
    if a > _INF:
        h = np.uint32(0x7C00) | pay
    return sign | h


@nb.njit(**NJIT)
def f32_to_f16(u, out):  # pragma: no cover - compiled
    """``out[i]`` (uint16) = binary16 pattern of the float32 pattern ``u[i]`` (uint32)."""
    for i in range(u.shape[0]):
        out[i] = np.uint16(_half_of(u[i]))


_SUBNORMAL = (np.arange(1024, dtype=np.float32) * np.float32(2.0**-24)).view(np.uint32)
"""float32 patterns of the binary16 subnormals ``m * 2^-24`` (``m`` = 0..1023), exact."""


@nb.njit(**NJIT)
def f16_to_f32(h, out):  # pragma: no cover - compiled
    """``out[i]`` (uint32) = float32 pattern of the binary16 pattern ``h[i]`` (uint16), exact."""
    for i in range(h.shape[0]):
        v = np.uint32(h[i])
        sign = (v & np.uint32(0x8000)) << np.uint32(16)
        mag = v & np.uint32(0x7FFF)
        bits = (mag << np.uint32(13)) + _REBIAS  # normal numbers
        if mag >= np.uint32(0x7C00):  # inf and NaN: all-ones exponent, payload kept
            bits = _INF | ((mag & np.uint32(0x3FF)) << np.uint32(13))
        if mag < np.uint32(0x400):  # zero and subnormals
            bits = _SUBNORMAL[mag & np.uint32(0x3FF)]
        out[i] = sign | bits


@nb.njit(**NJIT)
def f32_to_bf16(u, out):  # pragma: no cover - compiled
    """``out[i]`` (uint16) = bfloat16 pattern of the float32 pattern ``u[i]`` (uint32)."""
    for i in range(u.shape[0]):
        x = u[i]
        r = (np.uint64(x) + np.uint64(0x7FFF) + np.uint64((x >> np.uint32(16)) & np.uint32(1))
             ) >> np.uint64(16)
        if (x & _ABS) > _INF:
            r = np.uint64((x >> np.uint32(16)) | np.uint32(0x0040))
        out[i] = np.uint16(r & np.uint64(0xFFFF))


@nb.njit(**NJIT)
def bf16_to_f32(h, out):  # pragma: no cover - compiled
    """``out[i]`` (uint32) = ``h[i] << 16`` (bfloat16 pattern to float32 pattern)."""
    for i in range(h.shape[0]):
        out[i] = np.uint32(h[i]) << np.uint32(16)


@nb.njit(**NJIT)
def count_all_ones(h, mask):  # pragma: no cover - compiled
    """Number of ``h[i]`` (uint16) with every bit of ``mask`` set: the NaN and Inf patterns when
    ``mask`` is the exponent field (``0x7C00`` binary16, ``0x7F80`` bfloat16). One pass, no
    temporaries."""
    m = np.uint16(mask)
    bad = 0
    for i in range(h.shape[0]):
        bad += np.int64((h[i] & m) == m)
    return bad


# -- the same float16 conversions with the CPU's F16C instructions ------------------------------
_BLOCK = 2048
_EXP16 = np.uint16(0x7C00)


def _host_has_f16c() -> bool:
    if _nbconfig.DISABLE_JIT:
        return False
    try:
        from llvmlite import binding as _llvm

        return bool(_llvm.get_host_cpu_features().get("f16c", False))
    except Exception:  # pragma: no cover - feature query unavailable
        return False


HARDWARE_F16 = _host_has_f16c()
"""Whether :func:`f32_to_f16_fast` / :func:`f16_to_f32_fast` use F16C (else the integer kernels)."""


def _f32_to_f16_fast_py(x, u, out):  # pragma: no cover - no F16C or NUMBA_DISABLE_JIT
    """:func:`f32_to_f16` (``x`` is unused)."""
    f32_to_f16(u, out)


def _f16_to_f32_fast_py(h, out, out_u):  # pragma: no cover - no F16C or NUMBA_DISABLE_JIT
    """:func:`f16_to_f32` (``out`` is unused)."""
    f16_to_f32(h, out_u)


if not HARDWARE_F16:
    f32_to_f16_fast = _f32_to_f16_fast_py
    f16_to_f32_fast = _f16_to_f32_fast_py
else:
    from llvmlite import ir as _ir
    from numba.core import types as _types
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def _to_half_bits(typingctx, x):  # pragma: no cover - compiled
        """binary16 pattern (uint16) of a float32, by the CPU's rounding (``fptrunc``)."""
        if x != _types.float32:
            return None

        def codegen(context, builder, sig, args):
            return builder.bitcast(builder.fptrunc(args[0], _ir.HalfType()), _ir.IntType(16))

        return _types.uint16(_types.float32), codegen

    @_intrinsic
    def _from_half_bits(typingctx, h):  # pragma: no cover - compiled
        """float32 of a binary16 pattern (uint16), exact (``fpext``)."""
        if h != _types.uint16:
            return None

        def codegen(context, builder, sig, args):
            return builder.fpext(builder.bitcast(args[0], _ir.HalfType()), _ir.FloatType())

        return _types.float32(_types.uint16), codegen

    @nb.njit(**NJIT)
    def _to_half_block(x, out):  # pragma: no cover - compiled
        # a plain loop of its own, so that LLVM vectorises it (vcvtps2ph on 8 lanes)
        for i in range(x.shape[0]):
            out[i] = _to_half_bits(x[i])

    @nb.njit(**NJIT)
    def _from_half_block(h, out):  # pragma: no cover - compiled
        for i in range(h.shape[0]):
            out[i] = _from_half_bits(h[i])

    @nb.njit(**NJIT)
    def _any_all_ones(h):  # pragma: no cover - compiled
        # non-zero iff some h[i] has the all-ones exponent: (h & 0x7C00) + 0x400 carries into
        # bit 15 exactly then; an OR reduction of uint16, vectorised
        c = np.uint16(0)
        for i in range(h.shape[0]):
            c |= np.uint16((h[i] & _EXP16) + np.uint16(0x0400))
        return c & np.uint16(0x8000)

    @nb.njit(**NJIT)
    def f32_to_f16_fast(x, u, out):  # pragma: no cover - compiled
        """:func:`f32_to_f16` bit for bit: ``x`` float32 and ``u`` its uint32 view, ``out``
        uint16."""
        n = x.shape[0]
        for i0 in range(0, n, _BLOCK):
            i1 = min(n, i0 + _BLOCK)
            o = out[i0:i1]
            _to_half_block(x[i0:i1], o)
            if _any_all_ones(o):
                for i in range(i0, i1):
                    if (out[i] & _EXP16) == _EXP16:
                        out[i] = np.uint16(_half_of(u[i]))

    @nb.njit(**NJIT)
    def f16_to_f32_fast(h, out, out_u):  # pragma: no cover - compiled
        """:func:`f16_to_f32` bit for bit: ``h`` uint16, ``out`` float32 and ``out_u`` its
        uint32 view (NaN payloads are kept, which the hardware would quiet)."""
        n = h.shape[0]
        for i0 in range(0, n, _BLOCK):
            i1 = min(n, i0 + _BLOCK)
            b = h[i0:i1]
            _from_half_block(b, out[i0:i1])
            if _any_all_ones(b):
                for i in range(i0, i1):
                    v = np.uint32(h[i])
                    if (v & np.uint32(0x7C00)) == np.uint32(0x7C00):
                        out_u[i] = ((v & np.uint32(0x8000)) << np.uint32(16)) | _INF | (
                            (v & np.uint32(0x3FF)) << np.uint32(13))

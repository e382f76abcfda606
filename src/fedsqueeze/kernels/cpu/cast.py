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
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["f32_to_f16", "f16_to_f32", "f32_to_bf16", "bf16_to_f32", "count_all_ones"]

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

"""Philox4x32-10 counter-based generator (Salmon et al., SC 2011), METHODS.md section 0.7.

Counter ``(c0, c1, c2, c3)``, key ``(k0, k1)``. ``c0`` is the element block, ``c1`` the stream,
``c2`` the round or subspace id and ``c3 = (purpose << 24) | sub_id``. Each call yields four u32 words.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint32(0x9E3779B9)
W1 = np.uint32(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)


@nb.njit(**NJIT)
def philox4x32(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Ten Philox rounds on one counter; all arguments and results are ``np.uint32``."""
    c0 = np.uint32(c0)
    c1 = np.uint32(c1)
    c2 = np.uint32(c2)
    c3 = np.uint32(c3)
    k0 = np.uint32(k0)
    k1 = np.uint32(k1)
    for r in range(10):
        if r > 0:  # key bump mod 2^32, computed in 64 bits so no overflow is ever raised
            k0 = np.uint32((np.uint64(k0) + np.uint64(W0)) & MASK32)
            k1 = np.uint32((np.uint64(k1) + np.uint64(W1)) & MASK32)
        p0 = M0 * np.uint64(c0)
        p1 = M1 * np.uint64(c2)
        hi0 = np.uint32(p0 >> SHIFT32)
        lo0 = np.uint32(p0 & MASK32)
        hi1 = np.uint32(p1 >> SHIFT32)
        lo1 = np.uint32(p1 & MASK32)
        c0, c1, c2, c3 = (
            np.uint32(hi1 ^ c1 ^ k0),
            lo1,
            np.uint32(hi0 ^ c3 ^ k1),
            lo0,
        )
    return c0, c1, c2, c3


@nb.njit(**NJIT)
def fill_u32(out, c0_start, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Write words of consecutive blocks ``c0 = c0_start, c0_start + 1, ...`` into ``out`` (u32)."""
    n = out.shape[0]
    nblocks = (n + 3) // 4
    for b in range(nblocks):
        w0, w1, w2, w3 = philox4x32(np.uint32(c0_start + b), c1, c2, c3, k0, k1)
        i = 4 * b
        out[i] = w0
        if i + 1 < n:
            out[i + 1] = w1
        if i + 2 < n:
            out[i + 2] = w2
        if i + 3 < n:
            out[i + 3] = w3


@nb.njit(**NJIT)
def u53_from(xa, xb):  # pragma: no cover - compiled
    """Uniform double in [0, 1) from two u32 words (exact)."""
    return (np.float64(xa >> np.uint32(5)) * 67108864.0 + np.float64(xb >> np.uint32(6))) * (
        1.0 / 9007199254740992.0
    )


@nb.njit(**NJIT)
def u24_from(x):  # pragma: no cover - compiled
    """Uniform float32 in [0, 1) from one u32 word (exact in float32)."""
    return np.float32(np.float64(x >> np.uint32(8)) * (1.0 / 16777216.0))


@nb.njit(**NJIT)
def fill_uniform53(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Value ``i`` uses block ``c0 = i // 2``, words ``(0, 1)`` for even ``i`` and ``(2, 3)`` for odd."""
    n = out.shape[0]
    for b in range((n + 1) // 2):
        w0, w1, w2, w3 = philox4x32(np.uint32(b), c1, c2, c3, k0, k1)
        out[2 * b] = u53_from(w0, w1)
        if 2 * b + 1 < n:
            out[2 * b + 1] = u53_from(w2, w3)


@nb.njit(**NJIT)
def fill_normal(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Box-Muller in float64, rounded to float32: pair ``j`` (values 2j, 2j+1) uses block ``c0 = j``."""
    n = out.shape[0]
    for b in range((n + 1) // 2):
        w0, w1, w2, w3 = philox4x32(np.uint32(b), c1, c2, c3, k0, k1)
        u1 = 1.0 - u53_from(w0, w1)
        u2 = u53_from(w2, w3)
        rad = np.sqrt(-2.0 * np.log(u1))
        ang = 2.0 * np.pi * u2
        out[2 * b] = np.float32(rad * np.cos(ang))
        if 2 * b + 1 < n:
            out[2 * b + 1] = np.float32(rad * np.sin(ang))


@nb.njit(**NJIT)
def permutation_into(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Fisher-Yates from ``i = n-1`` down to 1 with ``j = floor(u53 * (i + 1))``; step ``i`` uses block ``c0 = i``."""
    n = out.shape[0]
    for i in range(n):
        out[i] = i
    for i in range(n - 1, 0, -1):
        w0, w1, w2, w3 = philox4x32(np.uint32(i), c1, c2, c3, k0, k1)
        j = int(u53_from(w0, w1) * (i + 1))
        if j > i:
            j = i
        tmp = out[i]
        out[i] = out[j]
        out[j] = tmp

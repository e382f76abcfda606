"""Philox4x32-10 counter-based generator (Salmon et al., SC 2011), METHODS.md section 0.7.

Counter ``(c0, c1, c2, c3)``, key ``(k0, k1)``. ``c0`` is the element block, ``c1`` the stream,
``c2`` the round or subspace id and ``c3 = (purpose << 24) | sub_id``. Each call yields four
u32 words.

:func:`philox4x32` is written so that LLVM unrolls the ten rounds and vectorises a loop of calls
across blocks: no branch in the round loop (the key is bumped after every round; the bump after
the tenth is dead and folded away), the key carried in 64 bits and masked, so the same source
also runs as plain Python (``NUMBA_DISABLE_JIT``, the CUDA simulator) without overflow
warnings. It is inlined into its callers. The CUDA twin compiles this very source as a device
function. The fill kernels keep their main loops free of bounds checks (tails are handled after
the loop), so those loops vectorise too.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["philox4x32", "fill_u32", "u53_from", "u24_from", "fill_uniform53", "fill_normal",
           "permutation_into", "PERM_CHUNK"]

M0 = np.uint64(0xD2511F53)
M1 = np.uint64(0xCD9E8D57)
W0 = np.uint64(0x9E3779B9)
W1 = np.uint64(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)
SHIFT32 = np.uint64(32)
PERM_CHUNK = 256
"""Fisher-Yates steps whose random indices :func:`permutation_into` draws in one vector loop."""


@nb.njit(inline="always", **NJIT)
def philox4x32(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Ten Philox rounds on one counter; all arguments and results are ``np.uint32``."""
    x0 = np.uint32(c0)
    x1 = np.uint32(c1)
    x2 = np.uint32(c2)
    x3 = np.uint32(c3)
    a0 = np.uint64(k0)
    a1 = np.uint64(k1)
    for _ in range(10):
        p0 = M0 * np.uint64(x0)
        p1 = M1 * np.uint64(x2)
        y0 = np.uint32(p1 >> SHIFT32) ^ x1 ^ np.uint32(a0)
        y2 = np.uint32(p0 >> SHIFT32) ^ x3 ^ np.uint32(a1)
        x1 = np.uint32(p1 & MASK32)
        x3 = np.uint32(p0 & MASK32)
        x0 = y0
        x2 = y2
        a0 = (a0 + W0) & MASK32  # key bump mod 2^32 in 64 bits: never an overflow
        a1 = (a1 + W1) & MASK32
    return x0, x1, x2, x3


@nb.njit(inline="always", **NJIT)
def _block(c0_start, b):  # pragma: no cover - compiled
    # counter word c0 of block b: (c0_start + b) mod 2^32, without an overflowing addition
    return np.uint32((np.uint64(c0_start) + np.uint64(b)) & MASK32)


@nb.njit(**NJIT)
def fill_u32(out, c0_start, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Words of consecutive blocks ``c0 = c0_start, c0_start + 1, ...`` into ``out`` (u32)."""
    n = out.shape[0]
    nf = n // 4
    for b in range(nf):
        w0, w1, w2, w3 = philox4x32(_block(c0_start, b), c1, c2, c3, k0, k1)
        out[4 * b] = w0
        out[4 * b + 1] = w1
        out[4 * b + 2] = w2
        out[4 * b + 3] = w3
    i = 4 * nf
    if i < n:
        w0, w1, w2, w3 = philox4x32(_block(c0_start, nf), c1, c2, c3, k0, k1)
        out[i] = w0
        if i + 1 < n:
            out[i + 1] = w1
        if i + 2 < n:
            out[i + 2] = w2


@nb.njit(inline="always", **NJIT)
def u53_from(xa, xb):  # pragma: no cover - compiled
    """Uniform double in [0, 1) from two u32 words (exact)."""
    return (np.float64(xa >> np.uint32(5)) * 67108864.0 + np.float64(xb >> np.uint32(6))) * (
        1.0 / 9007199254740992.0
    )


@nb.njit(inline="always", **NJIT)
def u24_from(x):  # pragma: no cover - compiled
    """Uniform float32 in [0, 1) from one u32 word (exact in float32)."""
    return np.float32(np.float64(x >> np.uint32(8)) * (1.0 / 16777216.0))


@nb.njit(**NJIT)
def fill_uniform53(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Doubles in [0, 1): value ``i`` uses block ``c0 = i // 2``, words ``(0, 1)`` for even ``i``
    and ``(2, 3)`` for odd ``i``."""
    n = out.shape[0]
    nf = n // 2
    for b in range(nf):
        w0, w1, w2, w3 = philox4x32(np.uint32(b), c1, c2, c3, k0, k1)
        out[2 * b] = u53_from(w0, w1)
        out[2 * b + 1] = u53_from(w2, w3)
    if 2 * nf < n:
        w0, w1, w2, w3 = philox4x32(np.uint32(nf), c1, c2, c3, k0, k1)
        out[2 * nf] = u53_from(w0, w1)


@nb.njit(**NJIT)
def fill_normal(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Box-Muller in float64, rounded to float32: pair ``j`` (values 2j, 2j+1) uses block
    ``c0 = j``."""
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
def _swap_targets(js, top, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    # js[t] = j of Fisher-Yates step i = top - t: floor(u53 * (i + 1)), clamped to i
    for t in range(js.shape[0]):
        i = top - t
        w0, w1, w2, w3 = philox4x32(np.uint32(i), c1, c2, c3, k0, k1)
        j = np.int64(u53_from(w0, w1) * (i + 1))
        js[t] = min(j, i)


@nb.njit(**NJIT)
def permutation_into(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Fisher-Yates from ``i = n-1`` down to 1 with ``j = floor(u53 * (i + 1))``; step ``i`` uses
    block ``c0 = i``.

    The ``j`` of :data:`PERM_CHUNK` consecutive steps are drawn in one (vectorised) loop into a
    small scratch, then the swaps run in order; the result is that of the step-by-step loop.
    """
    n = out.shape[0]
    for i in range(n):
        out[i] = i
    js = np.empty(PERM_CHUNK, dtype=np.int64)  # scratch, not an output
    top = n - 1
    while top >= 1:
        m = min(PERM_CHUNK, top)  # steps top, top - 1, ..., top - m + 1 (all >= 1)
        _swap_targets(js[:m], top, c1, c2, c3, k0, k1)
        for t in range(m):
            i = top - t
            j = js[t]
            tmp = out[i]
            out[i] = out[j]
            out[j] = tmp
        top -= m

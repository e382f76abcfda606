"""Fastfood projection ``A`` (D x d) and its transpose, block by block (METHODS.md section 2.4).

Block ``b`` of size ``L = 2^m`` produces rows ``[bL, min((b+1)L, D))``::

    forward:    y_b = H( G_b * Pi_b( H( B_b * pad_L(x) ) ) ) * c_b      (x in R^d, d <= L)
    transpose:  r  += c_b * B_b * H( Pi_b^T( G_b * H( pad_L(g_b) ) ) ),  return r[0:d]
    c_b = 1 / sqrt(D * ||G_b||^2)    (||G_b||^2 summed in float64, in index order)

``(Pi x)_i = x[perm[i]]`` (gather), ``(Pi^T y)[perm[i]] = y_i`` (scatter). ``B_b`` is stored as
packed bits (bit ``i % 8`` of byte ``i // 8``; 1 means -1). Forward rows are
``float32(float64(y_i) * c_b)``; the transpose accumulates ``float64(y_j) * (+-c_b)`` into a
float64 vector in increasing block order. The CUDA twin repeats these operations exactly.

Randomness of block ``b`` (Philox4x32-10, key ``(k0, k1)`` = run seed, counter
``(c0, c1 = b, c2 = subspace id, c3 = purpose << 24 | tensor)``): sign ``i`` is the lowest bit of
word ``i % 4`` of block ``c0 = i // 4``; ``Pi_b`` is the Fisher-Yates permutation of
:func:`~fedsqueeze.kernels.cpu.philox.permutation_into`; ``G_b`` the Box-Muller normals of
:func:`~fedsqueeze.kernels.cpu.philox.fill_normal`. The scalar tuple ``p`` of the drivers is
``(c2, c3_sign, c3_perm, c3_gauss, k0, k1, add)`` as int64; ``add = 1`` makes the forward add
into ``out`` instead of overwriting it.

Two driver families: ``*_cached`` read pre-generated ``(bits, perm, gauss, scales)`` arrays of
shape ``(nb, .)`` (:func:`fill_cache`); ``*_regen`` regenerate each block into O(L) workspaces.
Both give bit-identical results.

>>> import numpy as np
>>> D, d, L = 6, 2, 4
>>> p = (0, 6 << 24, 7 << 24, 8 << 24, 1, 0, 0)
>>> bits, perm = np.empty(1, np.uint8), np.empty(4, np.int64)
>>> gauss, work, work2 = (np.empty(4, np.float32) for _ in range(3))
>>> x, out = np.array([1.0, -2.0], np.float32), np.empty(D, np.float32)
>>> forward_regen(x, bits, perm, gauss, work, work2, out, p)
>>> acc = np.zeros(d)
>>> transpose_regen(out, bits, perm, gauss, work, work2, acc, p)
>>> y = np.ones(D, np.float32); r = np.zeros(d)
>>> transpose_regen(y, bits, perm, gauss, work, work2, r, p)
>>> bool(abs(float(out @ y) - float(x @ r)) < 1e-5)   # <Ax, y> == <x, A^T y>
True
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT
from .fwht import fwht
from .philox import fill_normal, permutation_into, philox4x32

__all__ = ["gen_block", "fill_cache", "forward_cached", "transpose_cached", "forward_regen",
           "transpose_regen"]


@nb.njit(**NJIT)
def _sign_bit(bits, i):  # pragma: no cover - compiled
    return (bits[i >> 3] >> (i & 7)) & 1


@nb.njit(**NJIT)
def gen_block(b, p, bits, perm, gauss):  # pragma: no cover - compiled
    """Generate ``B_b`` (packed bits), ``Pi_b`` and ``G_b`` of block ``b``; return ``||G_b||^2``."""
    n = gauss.shape[0]
    c1 = np.uint32(b)
    c2 = np.uint32(p[0])
    k0 = np.uint32(p[4])
    k1 = np.uint32(p[5])
    for q in range(bits.shape[0]):
        bits[q] = 0
    for q in range((n + 3) // 4):
        w0, w1, w2, w3 = philox4x32(np.uint32(q), c1, c2, np.uint32(p[1]), k0, k1)
        i = 4 * q
        for k in range(4):
            if i + k < n:
                w = w0 if k == 0 else (w1 if k == 1 else (w2 if k == 2 else w3))
                if w & 1:
                    bits[(i + k) >> 3] |= np.uint8(1 << ((i + k) & 7))
    permutation_into(perm, c1, c2, np.uint32(p[2]), k0, k1)
    fill_normal(gauss, c1, c2, np.uint32(p[3]), k0, k1)
    s = 0.0
    for i in range(n):
        g = np.float64(gauss[i])
        s += g * g
    return s


@nb.njit(**NJIT)
def _scale(D, norm2):  # pragma: no cover - compiled
    return 1.0 / np.sqrt(np.float64(D) * norm2)


@nb.njit(**NJIT)
def _forward_block(x, bits, perm, gauss, work, work2, out, row0, m, scale, add):  # pragma: no cover
    d = x.shape[0]
    n = work.shape[0]
    for i in range(n):
        if i < d:
            v = x[i]
            work[i] = -v if _sign_bit(bits, i) else v
        else:
            work[i] = 0.0
    fwht(work)
    for i in range(n):
        work2[i] = gauss[i] * work[perm[i]]
    fwht(work2)
    for i in range(m):
        v = np.float32(np.float64(work2[i]) * scale)
        if add:
            out[row0 + i] = out[row0 + i] + v
        else:
            out[row0 + i] = v


@nb.njit(**NJIT)
def _transpose_block(g, bits, perm, gauss, work, work2, acc, row0, m, scale):  # pragma: no cover
    n = work.shape[0]
    for i in range(m):
        work[i] = g[row0 + i]
    for i in range(m, n):
        work[i] = 0.0
    fwht(work)
    for i in range(n):
        work2[perm[i]] = gauss[i] * work[i]
    fwht(work2)
    for j in range(acc.shape[0]):
        s = -scale if _sign_bit(bits, j) else scale
        acc[j] += np.float64(work2[j]) * s


@nb.njit(**NJIT)
def fill_cache(bits, perm, gauss, scales, D, p):  # pragma: no cover - compiled
    """Generate every block into ``bits (nb, ceil(L/8)) u8``, ``perm (nb, L)``, ``gauss (nb, L)
    f32`` and ``scales (nb,) f64`` for a projection with ``D`` rows."""
    for b in range(scales.shape[0]):
        scales[b] = _scale(D, gen_block(b, p, bits[b], perm[b], gauss[b]))


@nb.njit(**NJIT)
def forward_cached(x, bits, perm, gauss, scales, work, work2, out, p):  # pragma: no cover
    """``out = A x`` (or ``out += A x`` when ``p[6]``) from a filled cache; ``work*`` f32[L]."""
    n = work.shape[0]
    D = out.shape[0]
    for b in range(scales.shape[0]):
        row0 = b * n
        _forward_block(x, bits[b], perm[b], gauss[b], work, work2, out, row0,
                       min(n, D - row0), scales[b], p[6])


@nb.njit(**NJIT)
def transpose_cached(g, bits, perm, gauss, scales, work, work2, acc):  # pragma: no cover
    """``acc += A^T g`` (float64 ``acc`` of length d) from a filled cache."""
    n = work.shape[0]
    D = g.shape[0]
    for b in range(scales.shape[0]):
        row0 = b * n
        _transpose_block(g, bits[b], perm[b], gauss[b], work, work2, acc, row0,
                         min(n, D - row0), scales[b])


@nb.njit(**NJIT)
def forward_regen(x, bits, perm, gauss, work, work2, out, p):  # pragma: no cover - compiled
    """``out = A x`` (``+=`` when ``p[6]``), regenerating each block into the O(L) workspaces."""
    n = work.shape[0]
    D = out.shape[0]
    for b in range((D + n - 1) // n):
        scale = _scale(D, gen_block(b, p, bits, perm, gauss))
        row0 = b * n
        _forward_block(x, bits, perm, gauss, work, work2, out, row0, min(n, D - row0), scale,
                       p[6])


@nb.njit(**NJIT)
def transpose_regen(g, bits, perm, gauss, work, work2, acc, p):  # pragma: no cover - compiled
    """``acc += A^T g``, regenerating each block into the O(L) workspaces."""
    n = work.shape[0]
    D = g.shape[0]
    for b in range((D + n - 1) // n):
        scale = _scale(D, gen_block(b, p, bits, perm, gauss))
        row0 = b * n
        _transpose_block(g, bits, perm, gauss, work, work2, acc, row0, min(n, D - row0), scale)

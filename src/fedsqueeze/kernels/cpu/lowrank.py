"""PowerSGD products (METHODS.md section 6.8): float32 in, float64 accumulation, float32 out. CPU.

The codec multiplies a float32 matrix ``M`` (``n x m``, row-major) by a thin float32 factor with
``r`` columns, and rebuilds ``P Q^T`` from two factors. Products of two float32 numbers are exact
in float64, so every output is a float64 sum of exact products rounded once to float32. The sums
below have a fixed order that depends only on the shapes, never on a BLAS build, the CPU's vector
width or the number of threads (the kernels are serial):

* :func:`mat_factor` (``P = M Q``): row ``i``, column ``k`` is summed in the eight-lane order of
  :mod:`fedsqueeze.kernels.cpu.lanes` (``quantize.sumsq8``) with the product ``M[i, j] Q[j, k]``
  in place of the square: element ``j`` into lane ``j % 8`` in increasing ``j`` (the last
  ``m % 8`` elements into lanes ``0..``), lanes combined as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``.
  The lane index is the innermost loop, with eight rows of lanes unrolled inside it, so LLVM
  turns it into vector adds without reordering anything (fastmath stays off).
* :func:`mat_t_factor` (``Q = M^T P``): column ``j`` of the output adds ``M[i, j] P[i, k]`` in
  increasing ``i``; the loop over ``j`` vectorises as it is.
* :func:`outer` (``P Q^T``): element ``(i, j)`` is ``((P[i,0] Q[j,0]) + P[i,1] Q[j,1]) + ...``,
  columns in order. For ``r <= 2`` that is the correctly rounded float64 sum, whatever the order.

:func:`mat_factor` and :func:`outer` take the ``m``-side factor transposed and in float64 (``ft`` /
``qt``, ``r x m``; tiny next to ``M``) so that their inner loops read contiguous memory.
Kernels allocate nothing: ``acc`` / ``row`` are caller scratch.

>>> import numpy as np
>>> mat = np.arange(12, dtype=np.float32).reshape(3, 4)
>>> q = np.ones((4, 1), np.float32)
>>> p = np.empty((3, 1), np.float32)
>>> mat_factor(mat, np.ascontiguousarray(q.T, np.float64), p, np.empty((1, LANES)))
>>> p.ravel().tolist()
[6.0, 22.0, 38.0]
>>> out = np.empty(12, np.float32)
>>> outer(p, np.ascontiguousarray(q.T, np.float64), out, np.empty(4))
>>> out[:5].tolist()
[6.0, 6.0, 6.0, 6.0, 22.0]
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT

__all__ = ["LANES", "mat_factor", "mat_t_factor", "outer"]

LANES = 8
"""Lanes per factor column of :func:`mat_factor` (the second dimension of its ``acc``)."""


@nb.njit(inline="always", **NJIT)
def _dot64(x, f, acc, nl):  # pragma: no cover - compiled
    # acc[ln] += x[8 t + ln] f[8 t + ln] for t = 0..7 (64 elements), in order of t
    for ln in range(nl):
        a = acc[ln]
        a += np.float64(x[ln]) * f[ln]
        a += np.float64(x[8 + ln]) * f[8 + ln]
        a += np.float64(x[16 + ln]) * f[16 + ln]
        a += np.float64(x[24 + ln]) * f[24 + ln]
        a += np.float64(x[32 + ln]) * f[32 + ln]
        a += np.float64(x[40 + ln]) * f[40 + ln]
        a += np.float64(x[48 + ln]) * f[48 + ln]
        a += np.float64(x[56 + ln]) * f[56 + ln]
        acc[ln] = a


@nb.njit(**NJIT)
def mat_factor(mat, ft, out, acc):  # pragma: no cover - compiled
    """``out[i, k] = f32(sum_j f64(mat[i, j]) ft[k, j])`` in the lane order of the module doc.

    ``mat`` (n, m) float32 C-contiguous, ``ft`` (r, m) float64, ``out`` (n, r) float32,
    ``acc`` (r, 8) float64 scratch.
    """
    n, m = mat.shape
    r = ft.shape[0]
    nc = m // 64
    for i in range(n):
        row = mat[i]
        for k in range(r):
            a = acc[k]
            nl = a.shape[0]  # 8, read at run time so that the lane loop is vectorised
            for ln in range(nl):
                a[ln] = 0.0
            fk = ft[k]
            for c in range(nc):
                _dot64(row[64 * c:64 * c + 64], fk[64 * c:64 * c + 64], a, nl)
            j = 64 * nc
            while j + 8 <= m:
                for ln in range(8):
                    a[ln] += np.float64(row[j + ln]) * fk[j + ln]
                j += 8
            for ln in range(m - j):
                a[ln] += np.float64(row[j + ln]) * fk[j + ln]
            out[i, k] = np.float32(((a[0] + a[1]) + (a[2] + a[3]))
                                   + ((a[4] + a[5]) + (a[6] + a[7])))


@nb.njit(**NJIT)
def mat_t_factor(mat, f, out, acc):  # pragma: no cover - compiled
    """``out[j, k] = f32(sum_i f64(mat[i, j]) f64(f[i, k]))``, ``i`` increasing.

    ``mat`` (n, m) float32 C-contiguous, ``f`` (n, r) float32, ``out`` (m, r) float32,
    ``acc`` (r, m) float64 scratch.
    """
    n, m = mat.shape
    r = f.shape[1]
    for k in range(r):
        for j in range(m):
            acc[k, j] = 0.0
    for i in range(n):
        row = mat[i]
        for k in range(r):
            a = acc[k]
            p = np.float64(f[i, k])
            for j in range(m):
                a[j] += np.float64(row[j]) * p
    for j in range(m):
        for k in range(r):
            out[j, k] = np.float32(acc[k, j])


@nb.njit(**NJIT)
def outer(p, qt, out, row):  # pragma: no cover - compiled
    """``out[i m + j] = f32(sum_k f64(p[i, k]) qt[k, j])``, ``k`` increasing.

    ``p`` (n, r) float32, ``qt`` (r, m) float64, ``out`` (n m,) float32, ``row`` (m,) float64
    scratch.
    """
    n, r = p.shape
    m = qt.shape[1]
    if r == 2:  # the default rank: no scratch round trip, the same two operations per element
        q0 = qt[0]
        q1 = qt[1]
        for i in range(n):
            a0 = np.float64(p[i, 0])
            a1 = np.float64(p[i, 1])
            o = out[i * m:(i + 1) * m]
            for j in range(m):
                o[j] = np.float32(a0 * q0[j] + a1 * q1[j])
        return
    for i in range(n):
        a = np.float64(p[i, 0])
        q0 = qt[0]
        for j in range(m):
            row[j] = a * q0[j]
        for k in range(1, r):
            a = np.float64(p[i, k])
            qk = qt[k]
            for j in range(m):
                row[j] += a * qk[j]
        base = i * m
        for j in range(m):
            out[base + j] = np.float32(row[j])

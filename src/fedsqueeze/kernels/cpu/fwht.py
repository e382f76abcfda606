"""Unnormalised fast Walsh-Hadamard transform (FWHT), in place (METHODS.md section 2.4).

The butterfly order is fixed so that the CUDA twin (:mod:`fedsqueeze.kernels.cuda.fwht`) gives
bit-identical float32 results::

    for h = 1, 2, 4, ..., L/2:
        for i in steps of 2h:
            for j in [i, i + h):
                (x_j, x_{j+h}) <- (x_j + x_{j+h}, x_j - x_{j+h})

Every output element is a fixed sequence of float additions whatever the loop order inside one
stage, so any parallel schedule of a stage reproduces these bits. ``H`` is symmetric and
``H H = L I``. Kernels validate nothing: the length must be a power of two (the caller checks).

>>> import numpy as np
>>> x = np.array([1, 0, 0, 0], np.float32)
>>> fwht(x); x.tolist()
[1.0, 1.0, 1.0, 1.0]
>>> y = np.arange(8, dtype=np.float32).reshape(2, 4)
>>> fwht_batch(y); y.tolist()
[[6.0, -2.0, -4.0, 0.0], [22.0, -2.0, -4.0, 0.0]]
"""

from __future__ import annotations

import numba as nb

from ..config import NJIT

__all__ = ["fwht", "fwht_batch"]


@nb.njit(**NJIT)
def fwht(x):  # pragma: no cover - compiled
    """In-place unnormalised FWHT of a 1-D array whose length is a power of two."""
    n = x.shape[0]
    h = 1
    while h < n:
        for i in range(0, n, 2 * h):
            for j in range(i, i + h):
                a = x[j]
                b = x[j + h]
                x[j] = a + b
                x[j + h] = a - b
        h *= 2


@nb.njit(**NJIT)
def fwht_batch(x):  # pragma: no cover - compiled
    """In-place FWHT of every row of a C-contiguous 2-D array (row length a power of two)."""
    for r in range(x.shape[0]):
        fwht(x[r])

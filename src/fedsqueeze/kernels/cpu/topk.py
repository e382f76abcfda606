"""Exact top-k selection by radix select on integer keys: O(n) per pass, one pass per key byte.

The selection never sorts the input. ``smallest_k`` finds the ``k`` smallest unsigned keys (ties:
the smaller index first) with 256-bin histograms of successive key bytes, most significant first;
it stops as soon as the bucket holding the k-th key is taken whole. A final scan in index order
writes the selected indices, so they come out sorted.

``topk_indices`` selects by magnitude: the key of ``v[i]`` is
``0x7FFFFFFF - (bits(v[i]) & 0x7FFFFFFF)``. The float32 bit pattern of ``|v|`` orders like ``|v|``
itself, so the smallest keys are the largest magnitudes, and ties go to the smaller index
(METHODS.md 1.1). ``-0.0`` ties with ``0.0``; NaN ranks above every finite value and ``inf``
(callers reject non-finite input where it matters).

Random-k uses ``smallest_k`` on 64-bit Philox keys (``randk_keys``). The ``kernels.cuda.topk`` twin
computes the same thresholds and returns the same index set.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT
from .philox import philox4x32

__all__ = ["magnitude_keys", "randk_keys", "smallest_k", "topk_indices", "HIST_BINS"]

HIST_BINS = 256
_ABS = np.uint32(0x7FFFFFFF)
_U8 = np.uint64(255)
_S8 = np.uint64(8)
_S32 = np.uint64(32)


@nb.njit(**NJIT)
def magnitude_keys(v, out):  # pragma: no cover - compiled
    """``out[i] = 0x7FFFFFFF - (bits(v[i]) & 0x7FFFFFFF)`` (uint32): keys ascend as |v| descends."""
    bits = v.view(np.uint32)
    for i in range(bits.shape[0]):
        out[i] = _ABS - (bits[i] & _ABS)


@nb.njit(**NJIT)
def randk_keys(out, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """64-bit Philox keys ``(w1 << 32) | w0`` of block ``c0 = i`` for ``i < len(out)`` (uint64)."""
    for i in range(out.shape[0]):
        w0, w1, w2, w3 = philox4x32(np.uint32(i), c1, c2, c3, k0, k1)
        out[i] = (np.uint64(w1) << _S32) | np.uint64(w0)


@nb.njit(**NJIT)
def _bucket(hist, need):  # pragma: no cover - compiled
    """First bucket ``d`` whose cumulative count reaches ``need``: ``(d, count below d)``."""
    below = 0
    d = 0
    while d < HIST_BINS - 1 and below + hist[d] < need:
        below += hist[d]
        d += 1
    return d, below


@nb.njit(**NJIT)
def _threshold(keys, k, hist):  # pragma: no cover - compiled
    """Radix passes: ``(prefix, shift, need)`` such that every key with ``key >> shift < prefix``
    is selected, plus the first ``need`` keys (by index) with ``key >> shift == prefix``."""
    n = keys.shape[0]
    nbits = keys.itemsize * 8
    need = k
    prefix = np.uint64(0)
    shift = nbits
    first = True
    while shift > 0:
        shift -= 8
        sh = np.uint64(shift)
        sh_hi = np.uint64(shift + 8)
        for d in range(HIST_BINS):
            hist[d] = 0
        for i in range(n):
            key = np.uint64(keys[i])
            if first or (key >> sh_hi) == prefix:
                hist[np.intp(key >> sh) & 255] += 1
        d, below = _bucket(hist, need)
        need -= below
        prefix = (prefix << _S8) | np.uint64(d)
        first = False
        if hist[d] == need:
            break
    return prefix, shift, need


@nb.njit(**NJIT)
def smallest_k(keys, k, hist, out):  # pragma: no cover - compiled
    """Indices of the ``k`` smallest ``keys`` (uint32 or uint64), ties by smaller index, written to
    ``out[:k]`` in increasing order. ``hist`` is int64 scratch of 256 entries. Returns the count."""
    n = keys.shape[0]
    if k >= n:
        for i in range(n):
            out[i] = i
        return n
    if k <= 0:
        return 0
    prefix, shift, need = _threshold(keys, k, hist)
    sh = np.uint64(shift)
    j = 0
    eq = 0
    for i in range(n):
        p = np.uint64(keys[i]) >> sh
        if p < prefix:
            out[j] = i
            j += 1
        elif p == prefix and eq < need:
            out[j] = i
            j += 1
            eq += 1
    return j


@nb.njit(**NJIT)
def topk_indices(v, k, keys, hist, out):  # pragma: no cover - compiled
    """Indices of the ``k`` largest ``|v|`` (float32), ties by smaller index, sorted, into ``out``.

    ``keys`` is uint32 scratch of ``len(v)``, ``hist`` int64 scratch of 256. Returns the count.
    """
    magnitude_keys(v, keys)
    return smallest_k(keys, k, hist, out)

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

``topk_select`` is the CPU path of the codecs: two passes over ``v`` instead of the key array and
one radix pass per key byte. Pass one histograms the top 16 bits of the magnitude keys (32,768
bins, four interleaved sub-histograms so that equal neighbouring keys do not serialise on one
counter); the bin holding the k-th key is found, pass two writes the indices below it (sorted)
and collects the indices in that bin, whose ``need`` smallest full keys (ties by index) are
chosen by ``smallest_k`` and merged in. Same index set as ``topk_indices``.

Random-k uses ``smallest_k`` on 64-bit Philox keys (``randk_keys``), or for large ``n``
``randk_select``: one vectorised Philox pass stores the top 16 key bits (``uint16`` scratch) and
histograms them in 65,536 bins; the bin holding the k-th key is found, one scan writes the
indices below it, the few keys in that bin are completed from Philox, ordered by (key, index),
and the needed ones merged in. Same index set as ``smallest_k`` on the full keys, without
materialising the 64-bit keys (25M indices: 50 MB scratch instead of 200 MB and eight passes).
The ``kernels.cuda.topk`` twin computes the same thresholds and returns the same index set.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT
from .philox import philox4x32

__all__ = ["magnitude_keys", "randk_keys", "randk_select", "smallest_k", "topk_indices",
           "topk_select", "HIST_BINS", "RANDK_BINS", "TOPK_BINS"]

HIST_BINS = 256
RANDK_BINS = 65536
"""Bins of the top-16-bit histogram of :func:`randk_select` (size of its ``hist`` scratch)."""
TOPK_BINS = 32768
"""Bins of the top-16-bit key histogram of :func:`topk_select` (size of its ``hist`` scratch)."""
_RANDK_CHUNK = 4096
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
def _randk_hi16(c0, c1, c2, c3, k0, k1, hi):  # pragma: no cover - compiled
    # hi[t] = top 16 bits of the key of index c0 + t (word 1 of its Philox block)
    for t in range(hi.shape[0]):
        w0, w1, w2, w3 = philox4x32(np.uint32(c0 + t), c1, c2, c3, k0, k1)
        hi[t] = np.uint16(w1 >> np.uint32(16))


@nb.njit(**NJIT)
def randk_select(k, c1, c2, c3, k0, k1, hi, hist, out):  # pragma: no cover - compiled
    """Indices of the ``k`` smallest 64-bit Philox keys ``(w1 << 32) | w0`` of blocks
    ``c0 = i`` for ``i < len(hi)``, ties by smaller index, sorted, into ``out[:k]``.

    ``hi`` is uint16 scratch of ``n`` entries, ``hist`` int64 scratch of :data:`RANDK_BINS`.
    Returns the count (``min(k, n)``); same set as :func:`randk_keys` + :func:`smallest_k`.
    """
    n = hi.shape[0]
    if k >= n:
        for i in range(n):
            out[i] = i
        return n
    if k <= 0:
        return 0
    for d in range(RANDK_BINS):
        hist[d] = 0
    for c in range(0, n, _RANDK_CHUNK):
        part = hi[c:min(n, c + _RANDK_CHUNK)]
        _randk_hi16(c, c1, c2, c3, k0, k1, part)  # vectorised
        for t in range(part.shape[0]):
            hist[np.intp(part[t])] += 1
    below = 0
    top = 0
    while below + hist[top] < k:
        below += hist[top]
        top += 1
    need = k - below
    cnt = hist[top]
    t16 = np.uint16(top)
    cand = np.empty(cnt, dtype=np.int64)  # scratch: the indices in the threshold bin
    j = 0
    q = 0
    for i in range(n):
        h = hi[i]
        if h < t16:
            out[j] = i
            j += 1
        elif h == t16:
            cand[q] = i
            q += 1
    keys = np.empty(cnt, dtype=np.uint64)  # scratch
    for t in range(cnt):
        w0, w1, w2, w3 = philox4x32(np.uint32(cand[t]), c1, c2, c3, k0, k1)
        keys[t] = (np.uint64(w1) << _S32) | np.uint64(w0)
    chosen = np.sort(cand[np.argsort(keys, kind="mergesort")[:need]])  # stable: ties by index
    a = j - 1  # merge the chosen ones into out[:k] from the back
    b = need - 1
    w = k - 1
    while b >= 0:
        if a >= 0 and out[a] > chosen[b]:
            out[w] = out[a]
            a -= 1
        else:
            out[w] = chosen[b]
            b -= 1
        w -= 1
    return k


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


@nb.njit(**NJIT)
def _key_hist16(bits, hist):  # pragma: no cover - compiled
    # hist[4 b + lane] += 1 for bin b = key >> 16 of element 4 t + lane (hist: 4 * TOPK_BINS)
    n = bits.shape[0]
    sh = np.uint32(16)
    for t in range(n // 4):
        i = 4 * t
        hist[4 * np.intp((_ABS - (bits[i] & _ABS)) >> sh)] += 1
        hist[4 * np.intp((_ABS - (bits[i + 1] & _ABS)) >> sh) + 1] += 1
        hist[4 * np.intp((_ABS - (bits[i + 2] & _ABS)) >> sh) + 2] += 1
        hist[4 * np.intp((_ABS - (bits[i + 3] & _ABS)) >> sh) + 3] += 1
    for i in range(4 * (n // 4), n):
        hist[4 * np.intp((_ABS - (bits[i] & _ABS)) >> sh)] += 1


@nb.njit(**NJIT)
def topk_select(v, k, hist, out):  # pragma: no cover - compiled
    """Indices of the ``k`` largest ``|v|`` (float32), ties by smaller index, sorted, into
    ``out[:k]``: the index set of :func:`topk_indices` in two passes over ``v`` (module doc).

    ``hist`` is int32 (or int64) scratch of ``4 * TOPK_BINS``. Returns the count (``min(k, n)``).
    """
    n = v.shape[0]
    if k >= n:
        for i in range(n):
            out[i] = i
        return n
    if k <= 0:
        return 0
    bits = v.view(np.uint32)
    for d in range(hist.shape[0]):
        hist[d] = 0
    _key_hist16(bits, hist)
    below = 0
    top = 0
    while True:
        c = hist[4 * top] + hist[4 * top + 1] + hist[4 * top + 2] + hist[4 * top + 3]
        if below + c >= k:
            break
        below += c
        top += 1
    need = k - below
    cnt = c
    t16 = np.uint32(top)
    sh = np.uint32(16)
    cand = np.empty(cnt, dtype=np.int64)  # scratch: the indices in the threshold bin, in order
    ckeys = np.empty(cnt, dtype=np.uint32)  # scratch: their full keys
    j = 0
    q = 0
    for i in range(n):
        key = _ABS - (bits[i] & _ABS)
        h = key >> sh
        if h < t16:
            out[j] = i
            j += 1
        elif h == t16:
            cand[q] = i
            ckeys[q] = key
            q += 1
    sel = np.empty(cnt, dtype=np.int64)  # scratch: positions in cand of the chosen ones
    small = np.empty(HIST_BINS, dtype=np.int64)
    smallest_k(ckeys, need, small, sel)
    a = j - 1  # merge cand[sel[:need]] (increasing) into out[:k] from the back
    b = need - 1
    w = k - 1
    while b >= 0:
        cb = cand[sel[b]]
        if a >= 0 and out[a] > cb:
            out[w] = out[a]
            a -= 1
        else:
            out[w] = cb
            b -= 1
        w -= 1
    return k

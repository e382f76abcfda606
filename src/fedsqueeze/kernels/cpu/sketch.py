"""Count sketch kernels (Charikar, Chen, Farach-Colton, ICALP 2002), METHODS.md section 6.9.

Row ``j`` hashes coordinate ``i`` with one Philox4x32-10 block, counter
``(c0 = i, c1 = j, c2 = 0, c3 = SKETCH_HASH << 24)`` keyed by the run-level hash seed:

* bucket ``h_j(i) = (w0 * c) >> 32`` in ``[0, c)``,
* sign ``s_j(i) = 1 - 2 (w1 & 1)``.

Every kernel takes the scalars as one tuple ``params = (c, k0, k1, c3)`` of ``np.uint32``
(:func:`fedsqueeze.compress.countsketch.CountSketch.params` builds it). The integer hashing and the
median are plain functions (:func:`bucket_sign_of`, :func:`median_insert`, :func:`median_of`)
compiled here with ``njit`` and by ``kernels/cuda/sketch.py`` as device functions, so CPU and CUDA
hash byte-identically and take medians with the same float32 operations.

Hashing costs one Philox block per (row, coordinate). The hashes are fixed for a run, so a caller
that sketches the same size again and again may compute them once with :func:`sketch_hashes`
(buckets as int32, signs as int8) and use the ``*_hashed`` kernels, which give identical results.
When that cache would be too big, the ``*_chunked`` kernels hash :data:`CHUNK` coordinates at a
time into a small scratch (a loop LLVM vectorises, unlike the hash inside the scattering loop of
:func:`sketch_insert`) and then scatter or query them; every table cell still receives its
additions in increasing coordinate order, so the results are identical too.

>>> import numpy as np
>>> from fedsqueeze import rng
>>> params = (np.uint32(16), np.uint32(0), np.uint32(0), rng.counter3(rng.Purpose.SKETCH_HASH))
>>> x = np.array([1.0, 0.0, -2.0, 0.5], np.float32)
>>> table = np.zeros((5, 16), np.float32)
>>> sketch_insert(x, table, params)
>>> out = np.empty(4, np.float32)
>>> sketch_query(table, out, params)
>>> bool((out == x).all())  # a 3-sparse vector in 5 rows of 16 buckets: the medians recover it
True
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ..config import NJIT
from .philox import philox4x32

__all__ = ["MAX_ROWS", "bucket_sign_of", "median_insert", "median_of", "sketch_hashes",
           "sketch_insert", "sketch_query", "sketch_insert_hashed", "sketch_query_hashed",
           "sketch_insert_chunked", "sketch_query_chunked", "sketch_query_hashed_gather",
           "hash_range", "CHUNK"]

CHUNK = 4096
"""Coordinates per chunk of the ``*_chunked`` kernels (the width of their hash scratch)."""

MAX_ROWS = 32
"""Largest number of sketch rows (size of the per-coordinate scratch of the median query)."""


def bucket_sign_of(w0, w1, c):  # pragma: no cover - compiled (CPU and CUDA)
    """``(bucket, sign)`` from Philox words ``w0``, ``w1`` for a row of ``c`` buckets."""
    b = np.int64((np.uint64(w0) * np.uint64(c)) >> np.uint64(32))
    s = np.float32(1.0) - np.float32(2.0) * np.float32(w1 & np.uint32(1))
    return b, s


def median_insert(vals, m, v):  # pragma: no cover - compiled (CPU and CUDA)
    """Insert ``v`` into the sorted prefix ``vals[:m]`` (insertion sort step)."""
    p = m
    while p > 0 and vals[p - 1] > v:
        vals[p] = vals[p - 1]
        p -= 1
    vals[p] = v


def median_of(vals, r):  # pragma: no cover - compiled (CPU and CUDA)
    """Median of the sorted ``vals[:r]``; for even ``r`` the float32 mean of the middle two."""
    h = r // 2
    if r % 2 == 1:
        return vals[h]
    return np.float32(np.float32(vals[h - 1] + vals[h]) * np.float32(0.5))


_bucket_sign = nb.njit(**NJIT)(bucket_sign_of)
_median_insert = nb.njit(**NJIT)(median_insert)
_median_of = nb.njit(**NJIT)(median_of)


@nb.njit(**NJIT)
def _hash(i, j, params):  # pragma: no cover - compiled
    w0, w1, w2, w3 = philox4x32(np.uint32(i), np.uint32(j), np.uint32(0), params[3], params[1],
                                params[2])
    return _bucket_sign(w0, w1, params[0])


@nb.njit(**NJIT)
def sketch_hashes(idx, buckets, signs, params):  # pragma: no cover - compiled
    """``buckets[j, t] = h_j(idx[t])`` and ``signs[j, t] = s_j(idx[t])`` (any integer / signed
    dtypes: int64 and float32, or int32 and int8 for a cache)."""
    for j in range(buckets.shape[0]):
        for t in range(idx.shape[0]):
            b, s = _hash(idx[t], j, params)
            buckets[j, t] = b
            signs[j, t] = s


@nb.njit(**NJIT)
def sketch_insert(x, table, params):  # pragma: no cover - compiled
    """``table[j, h_j(i)] += s_j(i) * x[i]`` for every row ``j`` and coordinate ``i`` (float32).

    Rows are filled one after another in increasing ``i``; zeros are skipped (they add nothing).
    """
    for j in range(table.shape[0]):
        for i in range(x.shape[0]):
            v = x[i]
            if v != 0:
                b, s = _hash(i, j, params)
                table[j, b] += s * v


@nb.njit(**NJIT)
def sketch_query(table, out, params):  # pragma: no cover - compiled
    """``out[i] = median_j s_j(i) * table[j, h_j(i)]`` for ``i`` in ``[0, len(out))``."""
    r = table.shape[0]
    vals = np.empty(MAX_ROWS, dtype=np.float32)  # scratch, not an output
    for i in range(out.shape[0]):
        for j in range(r):
            b, s = _hash(i, j, params)
            _median_insert(vals, j, np.float32(s * table[j, b]))
        out[i] = _median_of(vals, r)


@nb.njit(**NJIT)
def sketch_insert_hashed(x, buckets, signs, table):  # pragma: no cover - compiled
    """:func:`sketch_insert` with the precomputed hashes of coordinates ``0..len(x)-1``."""
    for j in range(table.shape[0]):
        for i in range(x.shape[0]):
            v = x[i]
            if v != 0:
                table[j, buckets[j, i]] += np.float32(signs[j, i]) * v


@nb.njit(**NJIT)
def sketch_query_hashed(table, buckets, signs, out):  # pragma: no cover - compiled
    """:func:`sketch_query` with the precomputed hashes of coordinates ``0..len(out)-1``."""
    r = table.shape[0]
    vals = np.empty(MAX_ROWS, dtype=np.float32)  # scratch, not an output
    for i in range(out.shape[0]):
        for j in range(r):
            _median_insert(vals, j, np.float32(np.float32(signs[j, i]) * table[j, buckets[j, i]]))
        out[i] = _median_of(vals, r)


@nb.njit(**NJIT)
def _hash_row(i0, j, bs, ss, c, k0, k1, c3):  # pragma: no cover - compiled
    # bucket_sign_of for coordinates i0 .. i0 + len(bs) - 1 of row j, into the row slices bs
    # (int32) and ss (int8); zero-based indices on slices, so LLVM vectorises the Philox rounds
    z = np.uint32(0)
    for t in range(bs.shape[0]):
        w0, w1, w2, w3 = philox4x32(np.uint32(i0 + t), np.uint32(j), z, c3, k0, k1)
        bs[t] = np.int32((np.uint64(w0) * np.uint64(c)) >> np.uint64(32))
        ss[t] = np.int8(1 - 2 * np.int32(w1 & np.uint32(1)))


@nb.njit(**NJIT)
def hash_range(i0, m, buckets, signs, params):  # pragma: no cover - compiled
    """:func:`sketch_hashes` of the coordinates ``i0 .. i0 + m - 1`` into ``buckets[:, :m]``
    (int32) and ``signs[:, :m]`` (int8), vectorised (~5 ns per hash against ~30)."""
    for j in range(buckets.shape[0]):
        _hash_row(i0, j, buckets[j, :m], signs[j, :m], params[0], params[1], params[2],
                  params[3])


@nb.njit(**NJIT)
def sketch_insert_chunked(x, table, params, buckets, signs):  # pragma: no cover - compiled
    """:func:`sketch_insert` (same table, bit for bit), hashing :data:`CHUNK` coordinates at a
    time into the scratch ``buckets`` (int32) and ``signs`` (int8), each ``(rows, width)`` (only
    their first row is used). Rows one after another, as in :func:`sketch_insert`, so the
    scattered additions stay within one row of the table."""
    n = x.shape[0]
    w = buckets.shape[1]
    c, k0, k1, c3 = params
    for j in range(table.shape[0]):
        tj = table[j]
        for i0 in range(0, n, w):
            m = min(w, n - i0)
            bs = buckets[0, :m]
            ss = signs[0, :m]
            _hash_row(i0, j, bs, ss, c, k0, k1, c3)
            xs = x[i0:i0 + m]
            for t in range(m):
                v = xs[t]
                if v != 0:
                    tj[bs[t]] += np.float32(ss[t]) * v


@nb.njit(**NJIT)
def sketch_query_chunked(table, out, params, buckets, signs, vals):  # pragma: no cover - compiled
    """:func:`sketch_query` (same output, bit for bit), hashing chunk by chunk into the scratch
    ``buckets`` (int32) and ``signs`` (int8), each ``(rows, width)``; ``vals`` is float32
    scratch of the same shape for the signed table entries, gathered row by row before the
    medians (independent loads, no branches in between)."""
    n = out.shape[0]
    w = buckets.shape[1]
    col = np.empty(MAX_ROWS, dtype=np.float32)  # scratch, not an output
    for i0 in range(0, n, w):
        m = min(w, n - i0)
        hash_range(i0, m, buckets, signs, params)
        _gather_medians(table, buckets, signs, 0, m, vals, col, out[i0:i0 + m])


@nb.njit(**NJIT)
def _gather_medians(table, buckets, signs, c0, m, vals, col, out):  # pragma: no cover - compiled
    """``out[t]`` = median over rows ``j`` of ``signs[j, c0 + t] * table[j, buckets[j, c0 + t]]``
    for ``t < m``: the signed entries gathered row by row into ``vals`` first."""
    r = table.shape[0]
    for j in range(r):
        tj = table[j]
        bj = buckets[j, c0:c0 + m]
        sj = signs[j, c0:c0 + m]
        vj = vals[j]
        for t in range(m):
            vj[t] = np.float32(np.float32(sj[t]) * tj[bj[t]])
    for t in range(m):
        for j in range(r):
            _median_insert(col, j, vals[j, t])
        out[t] = _median_of(col, r)


@nb.njit(**NJIT)
def sketch_query_hashed_gather(table, buckets, signs, out, vals):  # pragma: no cover - compiled
    """:func:`sketch_query_hashed` (same output, bit for bit), a chunk of ``vals.shape[1]``
    coordinates at a time: the signed table entries are gathered row by row into the float32
    scratch ``vals`` (``(rows, width)``) before the medians, as in :func:`sketch_query_chunked`."""
    n = out.shape[0]
    w = vals.shape[1]
    col = np.empty(MAX_ROWS, dtype=np.float32)  # scratch, not an output
    for i0 in range(0, n, w):
        m = min(w, n - i0)
        _gather_medians(table, buckets, signs, i0, m, vals, col, out[i0:i0 + m])

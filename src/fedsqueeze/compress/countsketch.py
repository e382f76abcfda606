"""Count sketch codec (METHODS.md section 6.9): ``r`` rows of ``c`` float32 buckets.

Payload (the FL layer prepends ``u32 n_i``)::

    u16 r | u16 0 | u32 c | f32[r * c] table (row-major)

Decoding is the median query of every coordinate. Sketches are linear, so a server can add them
before querying (:meth:`CountSketch.aggregate_encoded`); FetchSGD (``methods/fetchsgd.py``) keeps
its momentum and error in sketch space.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from .. import rng
from ..comm.wire import SectionReader
from ..kernels.cpu import sketch as _k
from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register

__all__ = ["CountSketch"]

_PRE = struct.Struct("<HHI")
_CACHE_ENTRIES = 1 << 24
"""Largest ``rows * n`` whose hashes are kept (int32 bucket + int8 sign: 5 bytes per entry)."""


@register
class CountSketch(Compressor):
    """Count sketch of a flat float32 vector; decode = median query (Charikar et al. 2002).

    Parameters
    ----------
    rows : int
        Number of hash rows ``r`` (1 to 32; odd values give a proper median).
    cols : int or None
        Buckets per row ``c``. ``None``: ``c = ceil(n / ratio)`` for a vector of ``n`` elements.
    ratio : float
        Elements per bucket when ``cols`` is ``None`` (default 50, METHODS.md 6.9).
    hash_seed : int
        64-bit key of the bucket and sign hashes; the FL layer sets it from the run seed. Encoder
        and decoder must agree on it (it is part of the codec config, not of the payload).

    Examples
    --------
    >>> import numpy as np
    >>> cs = CountSketch(rows=5, cols=20)
    >>> x = np.zeros(100, np.float32); x[[3, 40]] = [2.0, -1.0]
    >>> enc, _ = cs.encode(x, seed=0)
    >>> enc.nbytes, cs.theoretical_bits(enc)
    (408, 3200.0)
    >>> y = cs.decode(cs.parse(enc.payload(), 100))
    >>> float(y[3]), float(y[40]), int(np.count_nonzero(y))
    (2.0, -1.0, 2)
    """

    codec_id = "countsketch"

    def __init__(self, *, rows: int = 5, cols: int | None = None, ratio: float = 50.0,
                 hash_seed: int = 0) -> None:
        if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= _k.MAX_ROWS:
            raise ValueError(f"rows = {rows!r}, expected an int in 1..{_k.MAX_ROWS}")
        if cols is not None and (isinstance(cols, bool) or not isinstance(cols, int)
                                 or not 1 <= cols < 2**32):
            raise ValueError(f"cols = {cols!r}, expected None or an int in 1..2**32-1")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (
                math.isfinite(ratio) and ratio >= 1):
            raise ValueError(f"ratio = {ratio!r}, expected a finite number >= 1")
        if isinstance(hash_seed, bool) or not isinstance(hash_seed, int) or not (
                0 <= hash_seed < 2**64):
            raise ValueError(f"hash_seed = {hash_seed!r}, expected an int in [0, 2**64)")
        self.rows, self.cols, self.ratio, self.hash_seed = rows, cols, float(ratio), hash_seed
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # n -> (buckets, signs)

    def _params(self):
        return {"rows": self.rows, "cols": self.cols, "ratio": self.ratio,
                "hash_seed": self.hash_seed}

    # -- geometry and hashing -----------------------------------------------------------------
    def cols_for(self, n: int) -> int:
        """Buckets per row for a vector of ``n`` elements."""
        return self.cols if self.cols is not None else max(1, math.ceil(n / self.ratio))

    def params(self, n: int) -> tuple[np.uint32, np.uint32, np.uint32, np.uint32]:
        """The kernels' scalar tuple ``(c, k0, k1, c3)`` for a vector of ``n`` elements."""
        k0, k1 = rng.key_of(self.hash_seed)
        return (np.uint32(self.cols_for(n)), k0, k1, rng.counter3(rng.Purpose.SKETCH_HASH))

    def hashes(self, idx: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Buckets (int64) and signs (float32) of coordinates ``idx``, each ``(rows, len(idx))``."""
        idx = np.ascontiguousarray(idx, dtype=np.int64)
        if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= n)):
            raise ValueError(f"idx must be 1-D with values in [0, {n})")
        buckets = np.empty((self.rows, idx.shape[0]), dtype=np.int64)
        signs = np.empty((self.rows, idx.shape[0]), dtype=np.float32)
        _k.sketch_hashes(idx, buckets, signs, self.params(n))
        return buckets, signs

    def _hashes_of_all(self, n: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Hashes of coordinates ``0..n-1`` (computed once per ``n``), or ``None`` when too big."""
        hit = self._cache.get(n)
        if hit is None:
            if self.rows * n > _CACHE_ENTRIES or self.cols_for(n) >= 2**31:
                return None
            hit = (np.empty((self.rows, n), np.int32), np.empty((self.rows, n), np.int8))
            _k.hash_range(0, n, hit[0], hit[1], self.params(n))
            if len(self._cache) >= 4:
                self._cache.clear()
            self._cache[n] = hit
        return hit

    def _chunk_scratch(self) -> tuple[np.ndarray, np.ndarray]:
        """Hash scratch of the ``*_chunked`` kernels (when the hashes of all coordinates would
        not fit the cache): buckets int32 and signs int8, ``(rows, kernels.cpu.sketch.CHUNK)``."""
        return (np.empty((self.rows, _k.CHUNK), np.int32), np.empty((self.rows, _k.CHUNK), np.int8))

    def sketch(self, x, *, out: np.ndarray | None = None) -> np.ndarray:
        """The ``(rows, c)`` float32 table of ``x`` (added into ``out`` when given)."""
        v = as_flat_f32(x)
        n = v.shape[0]
        shape = (self.rows, self.cols_for(n))
        if out is None:
            out = np.zeros(shape, dtype=np.float32)
        elif out.dtype != np.float32 or out.shape != shape or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32 {shape}, "
                             f"got {out.dtype} {out.shape}")
        hashes = self._hashes_of_all(n)
        if hashes is None:
            _k.sketch_insert_chunked(v, out, self.params(n), *self._chunk_scratch())
        else:
            _k.sketch_insert_hashed(v, hashes[0], hashes[1], out)
        return out

    def query(self, table: np.ndarray, n: int, *, out: np.ndarray | None = None) -> np.ndarray:
        """Median estimates of coordinates ``0..n-1`` from a ``(rows, c)`` table."""
        shape = (self.rows, self.cols_for(n))
        if table.shape != shape:
            raise ValueError(f"table has shape {table.shape}, expected {shape} for n = {n}")
        out = check_out(out, n)
        table = np.ascontiguousarray(table, dtype=np.float32)
        hashes = self._hashes_of_all(n)
        if hashes is None:
            _k.sketch_query_chunked(table, out, self.params(n), *self._chunk_scratch(),
                                    np.empty((self.rows, _k.CHUNK), np.float32))
        else:
            _k.sketch_query_hashed_gather(table, hashes[0], hashes[1], out,
                                          np.empty((self.rows, _k.CHUNK), np.float32))
        return out

    # -- codec ----------------------------------------------------------------------------------
    def _encoded(self, table: np.ndarray, n: int) -> Encoded:
        r, c = table.shape
        pre = _PRE.pack(r, 0, c)
        return Encoded({"rows": r, "cols": c}, (pre, table.astype("<f4", copy=False).reshape(-1)),
                       n)

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        return self._encoded(self.sketch(v), v.shape[0]), None

    def table(self, enc: Encoded) -> np.ndarray:
        """The ``(rows, c)`` float32 table of an encoded message (a read-only view)."""
        return np.frombuffer(enc.sections[1], dtype="<f4").reshape(enc.meta["rows"],
                                                                   enc.meta["cols"])

    def parse(self, payload, n: int) -> Encoded:
        rd = SectionReader(payload, "countsketch")
        r, zero, c = rd.struct(_PRE, "preamble")
        c_exp = self.cols_for(n)
        self._require(r == self.rows, f"countsketch: rows = {r}, expected {self.rows}")
        self._require(zero == 0, f"countsketch: reserved = {zero}, expected 0")
        self._require(c == c_exp, f"countsketch: cols = {c}, expected {c_exp} for n = {n}")
        tab = rd.array("<f4", r * c, "table")
        rd.finish()
        require_finite(tab, "countsketch: table")
        return Encoded({"rows": r, "cols": c}, (_PRE.pack(r, 0, c), tab), n)

    def decode(self, enc: Encoded, *, out=None):
        out = check_out(out, enc.n)
        return self.query(self.table(enc), enc.n, out=out)

    def aggregate_encoded(self, encs: Sequence[Encoded],
                          weights: Sequence[float] | None = None) -> Encoded | None:
        """``sum_i w_i S_i`` in the sketch domain (float64 accumulation, float32 result).

        Returns ``None`` for an empty list. ``weights=None`` sums with weight 1.
        """
        if not encs:
            return None
        if weights is not None and len(weights) != len(encs):
            raise ValueError(f"{len(encs)} sketches but {len(weights)} weights")
        n = encs[0].n
        acc = np.zeros((self.rows, self.cols_for(n)), dtype=np.float64)
        for i, enc in enumerate(encs):
            if enc.n != n:
                raise ValueError(f"sketch {i} is of a vector of {enc.n} elements, expected {n}")
            w = 1.0 if weights is None else float(weights[i])
            acc += w * self.table(enc).astype(np.float64)
        return self._encoded(acc.astype(np.float32), n)

    def max_nbytes(self, n: int) -> int:
        return _PRE.size + 4 * self.rows * self.cols_for(n)

    def theoretical_bits(self, enc: Encoded) -> float:
        return 32.0 * enc.meta["rows"] * enc.meta["cols"]

"""Intrinsic Gradient Compression (IGC): random subspace projections and three codecs.

METHODS.md section 2. With ``theta = theta_0 + A theta'`` (``A`` in R^{D x d}) a gradient step on
``theta'`` sends ``A^T g``; so ``encode(x) = A^T x`` (``d`` float32) and ``decode(z) = A z``.
``A`` is never sent: every rank rebuilds it from the run seed (``hash_seed``), the subspace id
and the tensor index with Philox (section 2.5).

Projections
    :class:`Fastfood` (default; O(D log d) time, O(L) memory without cache), :class:`DenseGaussian`
    (oracle, O(D d) time, chunks of 4096 rows), :class:`PerLayer` (one projection per tensor,
    ``d`` split by :func:`layer_dims`), all built by :func:`make_projection`.
Codecs (payload ``f32[d]``; the FL layer prepends ``u32 n_i``)
    ``igc_static`` (subspace 0), ``igc_ksub`` (``K`` subspaces, round ``t`` uses ``t mod K`` or a
    Philox draw), ``igc_timevarying`` (subspace ``t``). The subspace comes from ``state``
    (``{"round": t}`` or ``{"subspace": k}``) at encode time and from ``parse(..., round=t)`` or
    ``subspace=k`` at decode time; without them subspace 0 is used.

>>> import numpy as np
>>> codec = IGCStatic(d=64)
>>> x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
>>> enc, _ = codec.encode(x, seed=0)
>>> enc.nbytes, codec.theoretical_bits(enc)
(256, 2048.0)
>>> codec.decode(codec.parse(enc.payload(), 1000)).shape
(1000,)
"""

from __future__ import annotations

import abc
import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .. import rng
from ..comm.wire import SectionReader
from ..kernels.cpu import project as _k
from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register

__all__ = ["Projection", "Fastfood", "DenseGaussian", "PerLayer", "layer_dims", "make_projection",
           "IGCStatic", "IGCKSub", "IGCTimeVarying", "DEFAULT_CACHE_BUDGET"]

DEFAULT_CACHE_BUDGET = 256 << 20
"""Bytes a :class:`Fastfood` may spend on its cached blocks under ``cache="auto"``."""
DENSE_CHUNK = 4096
"""Rows per Philox stream of :class:`DenseGaussian` (METHODS.md section 2.4)."""


def _vec(x, n: int, what: str) -> np.ndarray:
    v = as_flat_f32(x)
    if v.shape[0] != n:
        raise ValueError(f"{what} has {v.shape[0]} elements, expected {n}")
    return v


def _out(out: np.ndarray | None, n: int) -> np.ndarray:
    out = check_out(out, n)
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    return out


class Projection(abc.ABC):
    """A linear map ``A`` in R^{rows x dim}; subclasses implement ``_forward``/``_transpose``."""

    rows: int
    dim: int

    def forward(self, theta, out: np.ndarray | None = None, *, add: bool = False) -> np.ndarray:
        """``A theta`` as float32[rows]; written into ``out``, or added to it when ``add``."""
        v = _vec(theta, self.dim, "theta")
        if add and out is None:
            raise ValueError("add=True needs out")
        out = _out(out, self.rows)
        self._forward(v, out, add)
        return out

    def transpose(self, g, out: np.ndarray | None = None) -> np.ndarray:
        """``A^T g`` as float32[dim] (accumulated in float64, rounded once)."""
        v = _vec(g, self.rows, "g")
        acc = np.zeros(self.dim, dtype=np.float64)
        self._transpose(v, acc)
        out = _out(out, self.dim)
        out[:] = acc
        return out

    @abc.abstractmethod
    def _forward(self, x: np.ndarray, out: np.ndarray, add: bool) -> None: ...

    @abc.abstractmethod
    def _transpose(self, g: np.ndarray, acc: np.ndarray) -> None: ...


class Fastfood(Projection):
    """Stacked Fastfood blocks ``c_b H G_b Pi_b H B_b`` of size ``L = 2**block_log2``.

    Parameters
    ----------
    rows, dim : ``D`` and ``d`` (``d <= L``).
    seed : run seed (Philox key). subspace : counter word c2. tensor : tensor index (in c3).
    block_log2 : ``m`` with ``L = 2^m``; default ``ceil(log2 d)``.
    cache : ``"auto"`` keeps the generated blocks (about ``8.1 D`` bytes) when they fit
        ``cache_budget``; ``"on"``/``"off"`` force it. Results are identical either way.

    Examples
    --------
    >>> import numpy as np
    >>> A = Fastfood(4096, 16, seed=1, subspace=3)
    >>> z = A.transpose(np.ones(4096, np.float32)); A.forward(z).shape
    (4096,)
    """

    def __init__(self, rows: int, dim: int, *, seed: int, subspace: int = 0, tensor: int = 0,
                 block_log2: int | None = None, cache: str = "auto",
                 cache_budget: int = DEFAULT_CACHE_BUDGET) -> None:
        if rows < 1 or dim < 1:
            raise ValueError(f"rows = {rows}, dim = {dim}: both must be >= 1")
        m = max(0, math.ceil(math.log2(dim))) if block_log2 is None else int(block_log2)
        if not 0 <= m <= 30 or (1 << m) < dim:
            raise ValueError(f"block_log2 = {block_log2}: need 2**block_log2 >= d = {dim} "
                             "and block_log2 <= 30")
        if cache not in ("auto", "on", "off"):
            raise ValueError(f"cache = {cache!r}, expected 'auto', 'on' or 'off'")
        if not 0 <= subspace < 2**32:
            raise ValueError(f"subspace = {subspace}, expected a u32")
        self.rows, self.dim, self.L = int(rows), int(dim), 1 << m
        self.nb = -(-self.rows // self.L)
        k0, k1 = rng.key_of(seed)
        P = rng.Purpose
        self.params = (int(subspace), int(rng.counter3(P.FF_SIGN, tensor)),
                       int(rng.counter3(P.FF_PERM, tensor)),
                       int(rng.counter3(P.FF_GAUSS, tensor)), int(k0), int(k1), 0)
        self.use_cache = cache == "on" or (cache == "auto" and self.cache_nbytes <= cache_budget)
        self._cache: tuple[np.ndarray, ...] | None = None
        self._dev: tuple | None = None

    @property
    def cache_nbytes(self) -> int:
        """Bytes of the cached blocks: packed signs, u32 permutation, f32 Gaussians, f64 scale."""
        return self.nb * ((self.L + 7) // 8 + 8 * self.L + 8)

    def blocks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(bits, perm, gauss, scales)`` of every block (generated once when cached)."""
        if self._cache is not None:
            return self._cache  # type: ignore[return-value]
        c = (np.empty((self.nb, (self.L + 7) // 8), np.uint8),
             np.empty((self.nb, self.L), np.uint32), np.empty((self.nb, self.L), np.float32),
             np.empty(self.nb, np.float64))
        _k.fill_cache(*c, self.rows, self.params)
        if self.use_cache:
            self._cache = c
        return c

    def forward_device(self, x, out, *, add: bool = False, chunk: int = 8) -> None:
        """``out = A x`` (``+=`` when ``add``) on CUDA device arrays: the blocks are generated on
        the CPU once, copied to the device and kept; ``chunk`` blocks are transformed per pass."""
        from ..kernels.cuda import project as _g

        _g.forward_cached(x, *self._device_blocks(), *self._device_work(chunk), out,
                          self.params[:6] + (int(add),))

    def transpose_device(self, g, acc, *, chunk: int = 8) -> None:
        """``acc += A^T g`` on CUDA device arrays (``acc`` float64 of length d)."""
        from ..kernels.cuda import project as _g

        _g.transpose_cached(g, *self._device_blocks(), *self._device_work(chunk), acc)

    def _device_blocks(self) -> tuple:
        if self._dev is None:
            from numba import cuda

            self._dev = tuple(cuda.to_device(a) for a in self.blocks())
        return self._dev

    def _device_work(self, chunk: int) -> tuple:
        from numba import cuda

        shape = (max(1, min(chunk, self.nb)), self.L)
        return cuda.device_array(shape, np.float32), cuda.device_array(shape, np.float32)

    def _work(self) -> tuple[np.ndarray, np.ndarray]:
        return np.empty(self.L, np.float32), np.empty(self.L, np.float32)

    def _forward(self, x, out, add):
        p = self.params[:6] + (int(add),)
        if self.use_cache:
            _k.forward_cached(x, *self.blocks(), *self._work(), out, p)
        else:
            _k.forward_regen(x, np.empty((self.L + 7) // 8, np.uint8),
                             np.empty(self.L, np.int64), np.empty(self.L, np.float32),
                             *self._work(), out, p)

    def _transpose(self, g, acc):
        if self.use_cache:
            _k.transpose_cached(g, *self.blocks(), *self._work(), acc)
        else:
            _k.transpose_regen(g, np.empty((self.L + 7) // 8, np.uint8),
                               np.empty(self.L, np.int64), np.empty(self.L, np.float32),
                               *self._work(), acc, self.params)


class DenseGaussian(Projection):
    """``A[r, j] = z[r, j] / sqrt(D)``, ``z`` Philox normals (DENSE_PROJ, stream = row chunk of
    4096 rows, c2 = subspace, c3 sub id = tensor), generated chunk by chunk; needs ``D d <= 2^31``.

    >>> import numpy as np
    >>> A = DenseGaussian(100, 4, seed=0)
    >>> float(np.round(np.linalg.norm(A.matrix(), axis=0).mean(), 1))
    1.0
    """

    def __init__(self, rows: int, dim: int, *, seed: int, subspace: int = 0,
                 tensor: int = 0) -> None:
        if rows < 1 or dim < 1 or rows * dim > 2**31:
            raise ValueError(f"dense projection needs rows, dim >= 1 and rows * dim <= 2**31, "
                             f"got {rows} x {dim}")
        self.rows, self.dim = int(rows), int(dim)
        self.seed, self.subspace, self.tensor = seed, subspace, tensor

    def chunk(self, k: int) -> np.ndarray:
        """Rows ``[4096 k, 4096 (k+1))`` of ``z`` (float32, unscaled)."""
        r = min(DENSE_CHUNK, self.rows - k * DENSE_CHUNK)
        return rng.normal(self.seed, purpose=rng.Purpose.DENSE_PROJ, stream=k,
                          round=self.subspace, sub_id=self.tensor,
                          n=r * self.dim).reshape(r, self.dim)

    def matrix(self) -> np.ndarray:
        """The whole ``A`` (float64); for tests on small sizes."""
        z = [self.chunk(k) for k in range(-(-self.rows // DENSE_CHUNK))]
        return np.vstack(z).astype(np.float64) / math.sqrt(self.rows)

    def _forward(self, x, out, add):
        x64, s = x.astype(np.float64), 1.0 / math.sqrt(self.rows)
        for k in range(-(-self.rows // DENSE_CHUNK)):
            y = ((self.chunk(k).astype(np.float64) @ x64) * s).astype(np.float32)
            sl = slice(k * DENSE_CHUNK, k * DENSE_CHUNK + y.shape[0])
            if add:
                out[sl] += y
            else:
                out[sl] = y

    def _transpose(self, g, acc):
        s = 1.0 / math.sqrt(self.rows)
        for k in range(-(-self.rows // DENSE_CHUNK)):
            z = self.chunk(k).astype(np.float64)
            acc += (z.T @ g[k * DENSE_CHUNK:k * DENSE_CHUNK + z.shape[0]].astype(np.float64)) * s


class PerLayer(Projection):
    """Block-diagonal ``A``: part ``l`` maps ``theta'[cols_l]`` to ``theta[rows_l]``."""

    def __init__(self, parts: Sequence[Projection]) -> None:
        if not parts:
            raise ValueError("PerLayer needs at least one part")
        self.parts = list(parts)
        self.row_off = np.cumsum([0] + [p.rows for p in self.parts])
        self.col_off = np.cumsum([0] + [p.dim for p in self.parts])
        self.rows, self.dim = int(self.row_off[-1]), int(self.col_off[-1])

    def _forward(self, x, out, add):
        for i, p in enumerate(self.parts):
            p.forward(x[self.col_off[i]:self.col_off[i + 1]],
                      out[self.row_off[i]:self.row_off[i + 1]], add=add)

    def _transpose(self, g, acc):
        for i, p in enumerate(self.parts):
            sub = np.zeros(p.dim, np.float64)
            p._transpose(g[self.row_off[i]:self.row_off[i + 1]], sub)
            acc[self.col_off[i]:self.col_off[i + 1]] = sub


def layer_dims(d: int, sizes: Sequence[int]) -> list[int]:
    """Split ``d`` over tensors: ``d_l = max(1, floor(d n_l / D))``, the remainder +1 each to the
    largest tensors (ties by index). When the ``max(1, .)`` floors overshoot ``d``, the largest
    tensors with ``d_l > 1`` give one back each (same order).

    >>> layer_dims(10, [100, 50, 30])
    [6, 3, 1]
    """
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"layout = {sizes}: needs at least one tensor, each with >= 1 element")
    if d < len(sizes):
        raise ValueError(f"d = {d} is smaller than the number of tensors {len(sizes)}")
    D = sum(sizes)
    dims = [max(1, d * n // D) for n in sizes]
    order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
    i = 0
    while sum(dims) != d:
        j = order[i % len(order)]
        if sum(dims) < d:
            dims[j] += 1
        elif dims[j] > 1:
            dims[j] -= 1
        i += 1
    return dims


def make_projection(kind: str, rows: int, dim: int, *, seed: int, subspace: int = 0,
                    block_log2: int | None = None, layout: Sequence[int] | None = None,
                    cache: str = "auto", cache_budget: int = DEFAULT_CACHE_BUDGET) -> Projection:
    """``fastfood`` or ``dense`` over the whole vector (``layout=None``) or per tensor."""
    def one(n: int, m: int, tensor: int) -> Projection:
        if kind == "fastfood":
            bl = block_log2 if block_log2 is None or m <= (1 << block_log2) else None
            return Fastfood(n, m, seed=seed, subspace=subspace, tensor=tensor, block_log2=bl,
                            cache=cache, cache_budget=cache_budget)
        if kind == "dense":
            return DenseGaussian(n, m, seed=seed, subspace=subspace, tensor=tensor)
        raise ValueError(f"projection = {kind!r}, expected 'fastfood' or 'dense'")

    if layout is None:
        return one(rows, dim, 0)
    if sum(layout) != rows:
        raise ValueError(f"layout sums to {sum(layout)}, the vector has {rows} elements")
    return PerLayer([one(n, m, t) for t, (n, m) in enumerate(zip(layout, layer_dims(dim, layout),
                                                               strict=True))])


class _IGC(Compressor):
    """Shared codec body; subclasses define the subspace schedule :meth:`subspace_for`."""

    variant: ClassVar[str] = ""

    def __init__(self, *, d: int = 1024, projection: str = "fastfood",
                 block_log2: int | None = None, scope: str = "global",
                 layout: Sequence[int] | None = None, hash_seed: int = 0) -> None:
        if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d < 2**28:
            raise ValueError(f"d = {d!r}, expected an int in 1..2**28-1")
        if projection not in ("fastfood", "dense"):
            raise ValueError(f"projection = {projection!r}, expected 'fastfood' or 'dense'")
        if block_log2 is not None and (not isinstance(block_log2, int) or
                                       not 0 <= block_log2 <= 30 or (1 << block_log2) < d):
            raise ValueError(f"block_log2 = {block_log2!r}, expected None or an int with "
                             f"ceil(log2 d) <= block_log2 <= 30")
        if scope not in ("global", "per_layer"):
            raise ValueError(f"scope = {scope!r}, expected 'global' or 'per_layer'")
        if (scope == "per_layer") != (layout is not None):
            raise ValueError(f"layout = {layout!r}: give tensor sizes exactly when "
                             "scope = 'per_layer'")
        if layout is not None:
            layout = [int(n) for n in layout]
            layer_dims(d, layout)  # validates
        if isinstance(hash_seed, bool) or not isinstance(hash_seed, int) or not (
                0 <= hash_seed < 2**64):
            raise ValueError(f"hash_seed = {hash_seed!r}, expected an int in [0, 2**64)")
        self.d, self.projection_kind, self.block_log2 = d, projection, block_log2
        self.scope, self.layout, self.hash_seed = scope, layout, hash_seed
        self._lru: collections.OrderedDict = collections.OrderedDict()
        self.lru_size = 4
        self.cache_budget = DEFAULT_CACHE_BUDGET
        """Fastfood cache budget per projection (runtime setting, not part of the config)."""

    def _params(self) -> dict[str, Any]:
        return {"d": self.d, "projection": self.projection_kind, "block_log2": self.block_log2,
                "scope": self.scope, "layout": self.layout, "hash_seed": self.hash_seed}

    def subspace_for(self, round: int) -> int:
        """The subspace id that round ``round`` trains in."""
        return 0

    def projection(self, n: int, subspace: int) -> Projection:
        """``A`` for a vector of ``n`` elements in ``subspace`` (the last few are kept)."""
        key = (n, subspace)
        if key in self._lru:
            self._lru.move_to_end(key)
            return self._lru[key]
        A = make_projection(self.projection_kind, n, self.d, seed=self.hash_seed,
                            subspace=subspace, block_log2=self.block_log2, layout=self.layout,
                            cache_budget=self.cache_budget)
        self._lru[key] = A
        while len(self._lru) > self.lru_size:
            self._lru.popitem(last=False)
        return A

    def _subspace(self, state: Any, subspace: int | None = None, round: int | None = None) -> int:
        if isinstance(state, Mapping):
            subspace, round = state.get("subspace", subspace), state.get("round", round)
        elif state is not None:
            raise TypeError(f"state = {state!r}: expected None or {{'round': t}} / "
                            "{'subspace': k}")
        if subspace is not None:
            return int(subspace)
        return self.subspace_for(int(round)) if round is not None else 0

    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, None]:
        v = as_flat_f32(x)
        k = self._subspace(state)
        z = self.projection(v.shape[0], k).transpose(v)
        return Encoded({"subspace": k, "d": self.d}, (z.astype("<f4", copy=False),),
                       v.shape[0]), None

    def parse(self, payload, n: int, *, subspace: int | None = None,
              round: int | None = None) -> Encoded:
        self._require(n >= 1 and (self.layout is None or sum(self.layout) == n),
                      f"{self.codec_id}: vector size {n} does not match layout {self.layout}")
        r = SectionReader(payload, self.codec_id)
        z = r.array("<f4", self.d, "theta'")
        r.finish()
        require_finite(z, f"{self.codec_id}: theta'")
        k = self._subspace(None, subspace, round)
        return Encoded({"subspace": k, "d": self.d}, (z,), n)

    def decode(self, enc: Encoded, *, out: np.ndarray | None = None) -> np.ndarray:
        out = _out(out, enc.n)
        z = np.frombuffer(enc.sections[0], dtype="<f4", count=self.d)
        return self.projection(enc.n, int(enc.meta.get("subspace", 0))).forward(z, out)

    def max_nbytes(self, n: int) -> int:
        return 4 * self.d

    def theoretical_bits(self, enc: Encoded) -> float:
        return 32.0 * self.d

    def aggregate_encoded(self, encs: Sequence[Encoded],
                          weights: Sequence[float] | None = None) -> Encoded | None:
        """Weighted mean in subspace coordinates (float64, rounded once); ``None`` when the
        messages use different subspaces or sizes. ``A`` is linear, so decoding the result
        equals the weighted mean of the decoded messages up to float rounding."""
        if not encs or len({(e.n, e.meta.get("subspace", 0)) for e in encs}) != 1:
            return None
        w = np.ones(len(encs)) if weights is None else np.asarray(weights, dtype=np.float64)
        acc = np.zeros(self.d, np.float64)
        for e, wi in zip(encs, w, strict=True):
            acc += wi * np.frombuffer(e.sections[0], dtype="<f4", count=self.d)
        z = (acc / w.sum()).astype("<f4")
        return Encoded(dict(encs[0].meta), (z,), encs[0].n)


@register
class IGCStatic(_IGC):
    """IGC with one subspace for the whole run (``igc.variant = static``): payload ``f32[d]``."""

    codec_id = "igc_static"
    variant = "static"


@register
class IGCKSub(_IGC):
    """IGC with ``K`` fixed subspaces; round ``t`` uses ``t mod K`` (``select="mod"``) or
    ``min(floor(u53 K), K-1)`` from Philox KSUB_SELECT (``select="philox"``).

    >>> IGCKSub(d=8, K=3).subspace_for(7)
    1
    """

    codec_id = "igc_ksub"
    variant = "ksub"

    def __init__(self, *, d: int = 1024, K: int = 4, select: str = "mod",
                 projection: str = "fastfood", block_log2: int | None = None,
                 scope: str = "global", layout: Sequence[int] | None = None,
                 hash_seed: int = 0) -> None:
        super().__init__(d=d, projection=projection, block_log2=block_log2, scope=scope,
                         layout=layout, hash_seed=hash_seed)
        if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K <= 65535:
            raise ValueError(f"K = {K!r}, expected an int in 1..65535")
        if select not in ("mod", "philox"):
            raise ValueError(f"select = {select!r}, expected 'mod' or 'philox'")
        self.K, self.select = K, select
        self.lru_size = K + 1

    def _params(self) -> dict[str, Any]:
        return {**super()._params(), "K": self.K, "select": self.select}

    def subspace_for(self, round: int) -> int:
        if self.select == "mod":
            return round % self.K
        u = rng.uniform53(self.hash_seed, purpose=rng.Purpose.KSUB_SELECT, round=round, n=1)[0]
        return min(int(u * self.K), self.K - 1)


@register
class IGCTimeVarying(_IGC):
    """IGC with a fresh subspace every round (subspace id = round)."""

    codec_id = "igc_timevarying"
    variant = "timevarying"

    def subspace_for(self, round: int) -> int:
        return round

"""Grouped product quantisation (GPQ) of cut-layer activations and their gradients (FedLite,
METHODS.md 5.2-5.4).

A batch ``Z`` (``B x d_a`` float32) is zero-padded to ``q*m`` columns (``m = ceil(d_a / q)``; the
padding is quantised and sent like data) and cut into ``B*q`` sub-vectors of length ``m``; each
of ``R`` groups (``grouping="position"``: by sub-vector position, ``"sample"``: the 3P reshape of
consecutive sub-vectors) gets ``L_eff = min(L, B*q/R)`` centroids by k-means. What travels is
``f32[R*L_eff*m]`` centroids and ``B*q`` codes of ``ceil(log2 L_eff)`` bits, LSB first (the
SPLIT_ACT preamble and the labels are added by :mod:`fedsqueeze.split.payloads`).

k-means starts from the client's centroids of its previous batch when their shape matches (the
``state`` returned by :meth:`GPQ.encode`), else from k-means++ with Philox ``KMEANS_INIT`` uniforms
keyed by ``(run seed, client, round, group)``; then at most ``iters`` Lloyd updates and a final
assignment, so the codes always index the centroids that are sent. Hot loops are the Numba kernels
of :mod:`fedsqueeze.kernels.cpu.pq` (``kernels.cuda.pq`` for device arrays).

The class is not a registry codec: it quantises a ``B x d_a`` matrix together with its batch
geometry, which the flat-vector :class:`~fedsqueeze.compress.base.Compressor` contract does not
describe.

>>> import numpy as np
>>> gpq = GPQ(q=4, R=1, L=2, iters=10)
>>> z = np.array([[0, 0, 1, 1, 5, 5, 6, 6]], np.float32)    # B = 1, d_a = 8: four (m = 2) points
>>> code, state = gpq.encode(z, seed=0, client=3, round=0)
>>> gpq.decode(code).tolist()
[[0.5, 0.5, 0.5, 0.5, 5.5, 5.5, 5.5, 5.5]]
>>> code.codes.tolist(), code.theoretical_bits          # 32 R L m + B q ceil(log2 L)
([0, 0, 1, 1], 132.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .. import rng
from ..comm.wire import SectionReader
from ..errors import WireFormatError
from ..kernels import dispatch as _dispatch
from ..kernels.cpu import bitpack as _bp
from ..kernels.cpu import pq as _pq

__all__ = ["GPQ", "Geometry", "ActCode", "GROUPINGS", "code_width", "codebook_grad_sums",
           "codebook_grad_means", "to_fp16", "MAX_L"]

GROUPINGS = {"position": 0, "sample": 1}
"""Grouping name -> the ``grouping`` byte of SPLIT_ACT and the kernels' ``mode``."""

MAX_L = 65535
"""Largest ``L`` (the ``L_eff`` field of SPLIT_ACT is a u16; codes are at most 16 bits)."""


def code_width(L_eff: int) -> int:
    """``ceil(log2 L_eff)``: bits per code (0 when there is a single centroid)."""
    return (int(L_eff) - 1).bit_length()


@dataclass(frozen=True)
class Geometry:
    """Sizes of one quantised batch (everything a receiver needs to check a payload)."""

    B: int
    d_a: int
    q: int
    R: int
    L_eff: int
    grouping: int  # GROUPINGS value

    @property
    def m(self) -> int:
        """Sub-vector length ``ceil(d_a / q)``."""
        return -(-self.d_a // self.q)

    @property
    def points(self) -> int:
        """``B * q`` sub-vectors."""
        return self.B * self.q

    @property
    def width(self) -> int:
        return code_width(self.L_eff)

    @property
    def centroid_nbytes(self) -> int:
        return 4 * self.R * self.L_eff * self.m

    @property
    def code_nbytes(self) -> int:
        """``ceil(B q ceil(log2 L_eff) / 8)`` (before the pad to 4)."""
        return _bp.packed_nbytes(self.points, self.width)

    @property
    def theoretical_bits(self) -> float:
        """``32 R L_eff m + B q ceil(log2 L_eff)`` (METHODS.md 5.2; no header, labels, padding)."""
        return 32.0 * self.R * self.L_eff * self.m + float(self.points * self.width)

    @property
    def geom(self) -> tuple[int, int, int]:
        """The kernels' ``(q, R, mode)``."""
        return (self.q, self.R, self.grouping)


@dataclass(frozen=True, eq=False)
class ActCode:
    """One quantised batch: centroids ``f32[R, L_eff, m]``, codes ``u16[B*q]`` (in ``(b, j)``
    row-major order) and the same codes bit-packed for the wire."""

    geometry: Geometry
    centroids: np.ndarray
    codes: np.ndarray
    packed: np.ndarray
    kmeans_steps: int = 0

    @property
    def sections(self) -> tuple[np.ndarray, ...]:
        """Wire sections after the SPLIT_ACT preamble: centroids, packed codes."""
        return (self.centroids.reshape(-1), self.packed)

    @property
    def theoretical_bits(self) -> float:
        return self.geometry.theoretical_bits


def _pad_points(z: np.ndarray, g: Geometry) -> np.ndarray:
    """``z`` (B x d_a) as f32[B*q, m], zero-padded when ``q`` does not divide ``d_a``."""
    width = g.q * g.m
    if width == g.d_a:
        return np.ascontiguousarray(z, dtype=np.float32).reshape(g.points, g.m)
    buf = np.zeros((g.B, width), np.float32)
    buf[:, :g.d_a] = z
    return buf.reshape(g.points, g.m)


def _transposed(points: np.ndarray, g: Geometry) -> np.ndarray:
    """The kernels' member-ordered transpose ``f32[m, B*q]`` of the points."""
    pts_t = np.empty((g.m, g.points), np.float32)
    _pq.transpose_points(points, g.geom, pts_t)
    return pts_t


def _unpad(points: np.ndarray, g: Geometry, out: np.ndarray | None) -> np.ndarray:
    full = points.reshape(g.B, g.q * g.m)
    if out is None:
        return np.ascontiguousarray(full[:, :g.d_a])
    if out.dtype != np.float32 or out.shape != (g.B, g.d_a):
        raise ValueError(f"out must be float32 of shape {(g.B, g.d_a)}, got {out.dtype} "
                         f"{out.shape}")
    out[...] = full[:, :g.d_a]
    return out


class GPQ:
    """Grouped product quantiser with knobs ``(q, R, L)``, ``iters`` Lloyd updates and a grouping.

    Parameters
    ----------
    q : int
        Sub-vectors per sample (``1 <= q <= 65535``).
    R : int
        Groups, each with its own codebook; must divide ``q``.
    L : int
        Centroids per group (``1 <= L <= 65535``); ``L_eff = min(L, B q / R)``.
    iters : int
        Maximum Lloyd updates per batch (``I`` of METHODS.md 5.2).
    grouping : {"position", "sample"}
        ``position``: group ``floor(j R / q)`` of sub-vector position ``j``; ``sample``: ``R``
        runs of ``B q / R`` consecutive sub-vectors (the 3P reshape).
    """

    def __init__(self, *, q: int = 64, R: int = 1, L: int = 16, iters: int = 10,
                 grouping: Literal["position", "sample"] = "position") -> None:
        for name, v, lo, hi in (("q", q, 1, 65535), ("R", R, 1, 65535), ("L", L, 1, MAX_L),
                                ("iters", iters, 0, 10_000)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"{name} = {v!r}, expected an integer in [{lo}, {hi}]")
        if q % R:
            raise ValueError(f"R = {R} must divide q = {q}")
        if grouping not in GROUPINGS:
            raise ValueError(f"grouping = {grouping!r}, expected one of {sorted(GROUPINGS)}")
        self.q, self.R, self.L, self.iters = int(q), int(R), int(L), int(iters)
        self.grouping = grouping

    def get_config(self) -> dict[str, Any]:
        return {"q": self.q, "R": self.R, "L": self.L, "iters": self.iters,
                "grouping": self.grouping}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.get_config().items())))

    def __repr__(self) -> str:
        return "GPQ(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"

    # -- geometry -------------------------------------------------------------------------
    def geometry(self, B: int, d_a: int) -> Geometry:
        """The :class:`Geometry` of a ``B x d_a`` batch."""
        if not 1 <= B <= 65535 or d_a < 1:
            raise ValueError(f"batch {B} x {d_a}: expected 1 <= B <= 65535 and d_a >= 1")
        return Geometry(int(B), int(d_a), self.q, self.R, min(self.L, B * self.q // self.R),
                        GROUPINGS[self.grouping])

    # -- encode / decode ------------------------------------------------------------------
    def encode(self, z, *, seed: int, client: int, round: int,  # noqa: A002
               state: np.ndarray | None = None) -> tuple[ActCode, np.ndarray]:
        """Quantise ``z`` (``B x d_a`` float32: NumPy, CPU torch, or a device array).

        Returns the code and the next warm-start state (the centroids, ``f32[R, L_eff, m]``).
        k-means++ seeding uses ``uniform53(seed, KMEANS_INIT, stream=client, round=round,
        sub_id=group)``; a ``state`` of the right shape replaces it.
        """
        if _dispatch.is_device(z):
            return self._encode_device(z, seed=seed, client=client, round=round, state=state)
        if hasattr(z, "detach"):
            z = z.detach().numpy()
        z = np.asarray(z)
        if z.dtype != np.float32 or z.ndim != 2:
            raise TypeError(f"expected a float32 B x d_a matrix, got {z.dtype} {z.shape}")
        g = self.geometry(*z.shape)
        pts_t = _transposed(_pad_points(z, g), g)
        centroids = self._initial(pts_t, g, seed, client, round, state)
        codes = np.full(g.points, MAX_L, np.uint16)
        steps = _pq.lloyd(pts_t, centroids, codes, np.empty(g.points, np.uint16),
                          np.empty((g.R, g.L_eff, g.m), np.float64),
                          np.empty((g.R, g.L_eff), np.int64),
                          (np.empty((2, _pq.CHUNK), np.float32), np.empty(_pq.CHUNK, np.int64)),
                          (*g.geom, self.iters))
        return self._finish(g, centroids, codes, int(steps))

    def _initial(self, pts_t, g: Geometry, seed, client, round, state):  # noqa: A002
        shape = (g.R, g.L_eff, g.m)
        if state is not None and np.shape(state) == shape:
            return np.array(state, dtype=np.float32, copy=True)
        u = np.stack([rng.uniform53(seed, purpose=rng.Purpose.KMEANS_INIT, stream=client,
                                    round=round, sub_id=r, n=g.L_eff) for r in range(g.R)])
        centroids = np.empty(shape, np.float32)
        _pq.kmeanspp(pts_t, g.geom, u, np.empty(2 * (g.points // g.R), np.float64), centroids)
        return centroids

    def _finish(self, g: Geometry, centroids, codes, steps) -> tuple[ActCode, np.ndarray]:
        packed = np.empty(g.code_nbytes, np.uint8)
        if g.width:
            _bp.pack_bits(codes, g.width, packed)
        code = ActCode(g, centroids, codes, packed, steps)
        return code, centroids.copy()

    def _encode_device(self, z, *, seed, client, round, state):  # noqa: A002
        from numba import cuda

        cpq = _dispatch.cuda_module("pq")
        zd = cuda.as_cuda_array(z.detach()) if hasattr(z, "detach") else z
        if np.dtype(zd.dtype) != np.float32 or len(zd.shape) != 2:
            raise TypeError(f"expected a float32 B x d_a matrix, got {zd.dtype} {zd.shape}")
        g = self.geometry(*zd.shape)
        if g.q * g.m != g.d_a:  # zero padding happens on the host (small models only)
            points = cuda.to_device(_pad_points(zd.copy_to_host(), g))
        else:
            points = zd.reshape(g.points, g.m)
        pts_t = cuda.device_array((g.m, g.points), np.float32)
        cpq.transpose_points(points, g.geom, pts_t)
        if state is not None and np.shape(state) == (g.R, g.L_eff, g.m):
            init = np.array(state, np.float32, copy=True)
        else:
            init = self._initial(pts_t.copy_to_host(), g, seed, client, round, None)
        d_cent = cuda.to_device(init)
        d_codes = cuda.to_device(np.full(g.points, MAX_L, np.uint16))
        steps = cpq.lloyd(pts_t, d_cent, d_codes, cuda.device_array(g.points, np.uint16),
                          cuda.device_array((g.R, g.L_eff, g.m), np.float64),
                          cuda.device_array((g.R, g.L_eff), np.int64), (*g.geom, self.iters))
        return self._finish(g, d_cent.copy_to_host(), d_codes.copy_to_host(), int(steps))

    def decode(self, code: ActCode, *, out: np.ndarray | None = None) -> np.ndarray:
        """``z_tilde`` (``B x d_a`` float32), into ``out`` when given (exact shape, else
        ValueError)."""
        g = code.geometry
        points = np.empty((g.points, g.m), np.float32)
        _pq.gather(code.centroids, code.codes, g.geom, points)
        return _unpad(points, g, out)

    # -- the wire -------------------------------------------------------------------------
    def read(self, reader: SectionReader, g: Geometry) -> ActCode:
        """Read the centroid and code sections of a SPLIT_ACT payload for geometry ``g``.

        Sizes come from ``g`` (checked by the caller against the run's config) and each section
        is bounds-checked before any array is made; codes ``>= L_eff`` and non-zero tail bits
        raise :class:`~fedsqueeze.errors.WireFormatError`.
        """
        cent = reader.array("<f4", g.R * g.L_eff * g.m, "centroids")
        if not np.isfinite(cent).all():
            raise WireFormatError(f"{reader.what}: non-finite centroid values")
        packed = np.frombuffer(reader.bytes(g.code_nbytes, "codes"), dtype=np.uint8)
        codes = np.zeros(g.points, np.uint16)
        if g.width:
            _bp.unpack_bits(packed, g.width, g.points, codes)
            if int(codes.max()) >= g.L_eff:
                raise WireFormatError(f"{reader.what}: code {int(codes.max())} >= L_eff = "
                                      f"{g.L_eff}")
            tail = g.points * g.width % 8
            if tail and packed[-1] >> tail:
                raise WireFormatError(f"{reader.what}: non-zero padding bits after the codes")
        return ActCode(g, cent.reshape(g.R, g.L_eff, g.m).astype(np.float32), codes,
                       packed.copy())


# -- gradients (METHODS.md 5.4) -----------------------------------------------------------------
def codebook_grad_sums(code: ActCode, grad: np.ndarray) -> np.ndarray:
    """``G[r, l] = sum of the gradient sub-vectors coded (r, l)`` as f32[R, L_eff, m] (float64
    sums in increasing sub-vector order; padding columns carry zero gradient)."""
    g = code.geometry
    mcodes = np.empty(g.points, np.uint16)
    _pq.member_codes(code.codes, g.geom, mcodes)
    sums = np.empty((g.R, g.L_eff, g.m), np.float64)
    _pq.accumulate(_transposed(_pad_points(np.asarray(grad, np.float32), g), g), mcodes, sums,
                   np.empty((g.R, g.L_eff), np.int64))
    return sums.astype(np.float32)


def codebook_grad_means(code: ActCode, sums: np.ndarray) -> np.ndarray:
    """The client's view of a codebook gradient: every sub-vector gets its cluster's mean
    ``G[r, a] / count[r, a]`` (``B x d_a`` float32)."""
    g = code.geometry
    counts = np.bincount(_group_ids(g) * g.L_eff + code.codes.astype(np.int64),
                         minlength=g.R * g.L_eff).reshape(g.R, g.L_eff, 1)
    means = (np.asarray(sums, np.float32).reshape(g.R, g.L_eff, g.m)
             / np.maximum(counts, 1).astype(np.float32)).astype(np.float32)
    points = np.empty((g.points, g.m), np.float32)
    _pq.gather(means, code.codes, g.geom, points)
    return _unpad(points, g, None)


def _group_ids(g: Geometry) -> np.ndarray:
    p = np.arange(g.points, dtype=np.int64)
    if g.grouping == GROUPINGS["position"]:
        return (p % g.q) // (g.q // g.R)
    return p // (g.points // g.R)


def to_fp16(x: np.ndarray) -> np.ndarray:
    """IEEE binary16 of ``x``: round-to-nearest-even, clamped to +-65504 (METHODS.md 5.4)."""
    return np.clip(x, -65504.0, 65504.0).astype("<f2")


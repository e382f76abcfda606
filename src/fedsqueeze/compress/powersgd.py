"""PowerSGD codec (METHODS.md section 6.8): rank-``r`` factors by one power-iteration step.

Each tensor of the layout with at least two dimensions is viewed as ``M`` (``n`` = first dim,
``m`` = the rest) and compressed iff ``r (n + m) < n m / 2``; the others travel dense. The codec
follows the alternating single-multiplication scheme of ``epfml/powersgd``:

* phase 0 (even rounds): the shared factor is ``Q`` (``m x r``), the message carries ``P = M Q``,
  the decoder rebuilds ``P Q^T``;
* phase 1 (odd rounds): the shared factor is ``P`` (``n x r``), the message carries ``Q = M^T P``,
  the decoder rebuilds ``P Q^T``.

The shared factor is a :class:`PowerSGDState`: passed to :meth:`PowerSGD.encode` and
:meth:`PowerSGD.decode`, returned (for the next phase, orthonormalised) by ``encode``. Without a
state both sides use the phase-0 factor regenerated from Philox ``POWERSGD_INIT`` keyed by
``init_seed``, so a standalone codec decodes what it did not encode. In FL the server keeps the
factor and broadcasts it (``methods/powersgd.py``).

Payload (the FL layer prepends ``u32 n_i``)::

    u8 phase | u8 r | u16 0 | f32 factors (n r or m r per compressed tensor) | f32 dense tensors
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from .. import rng
from ..comm.wire import SectionReader
from ..errors import WireFormatError
from ..kernels.cpu import lowrank
from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register

__all__ = ["PowerSGD", "PowerSGDState", "Block", "Layout", "orthonormalize", "near_square"]

_PRE = struct.Struct("<BBH")
_DEGENERATE = 1e-5  # a column keeping less than this fraction of its norm after projection


def _dot(a: np.ndarray, b: np.ndarray) -> np.float32:
    # products of float32 are exact in float64; the float64 sum rounded once to float32 does not
    # depend on the BLAS build's summation order (barring a tie), so factors are reproducible
    return np.float32(np.dot(a.astype(np.float64), b.astype(np.float64)))


def _norm(a: np.ndarray) -> np.float32:
    return np.float32(np.sqrt(np.dot(a.astype(np.float64), a.astype(np.float64))))


def orthonormalize(a: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """Modified Gram-Schmidt on float32 columns, in order; returns a new ``(d, r)`` array.

    Columns and updates are float32; inner products are accumulated in float64 and rounded to
    float32 once, so the result does not depend on the BLAS build.

    A column that (nearly) lies in the span of the previous ones is replaced by the same column
    of ``fill`` (projected and normalised the same way), or by zeros when ``fill`` is ``None``.

    >>> q = orthonormalize(np.array([[1, 1], [0, 1]], np.float32))
    >>> q.tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    q = np.array(a, dtype=np.float32, copy=True, order="F")
    for i in range(q.shape[1]):
        cands = [q[:, i].copy()]
        if fill is not None:
            cands.append(np.array(fill[:, i], dtype=np.float32))
        for col in cands:
            before = _norm(col)
            for j in range(i):
                col -= _dot(q[:, j], col) * q[:, j]
            nrm = _norm(col)
            if nrm > 0 and nrm > _DEGENERATE * before:
                q[:, i] = col / nrm
                break
        else:
            q[:, i] = 0
    return np.ascontiguousarray(q)


def near_square(n: int) -> tuple[int, int]:
    """``(a, n // a)`` with ``a`` the largest divisor of ``n`` not above ``sqrt(n)``.

    >>> near_square(1000), near_square(7)
    ((25, 40), (1, 7))
    """
    a = math.isqrt(n)
    while n % a:
        a -= 1
    return a, n // a


@dataclass(frozen=True)
class Block:
    """One tensor: its place in the flat vector and its matrix view ``n x m``."""

    index: int
    offset: int
    n: int
    m: int
    compressed: bool

    @property
    def numel(self) -> int:
        return self.n * self.m


class Layout:
    """Tensors of a flat vector and the section sizes they give for rank ``r``."""

    def __init__(self, shapes: list[tuple[int, ...]], rank: int) -> None:
        self.rank, blocks, off = rank, [], 0
        for i, s in enumerate(shapes):
            n = s[0] if s else 1
            m = math.prod(s[1:]) if len(s) > 1 else 1
            comp = len(s) >= 2 and rank * (n + m) < n * m / 2
            blocks.append(Block(i, off, n, m, comp))
            off += n * m
        self.blocks, self.numel = tuple(blocks), off
        self.compressed = tuple(b for b in self.blocks if b.compressed)
        self.dense = tuple(b for b in self.blocks if not b.compressed)
        self.dense_len = sum(b.numel for b in self.dense)

    def factor_dim(self, b: Block, phase: int) -> int:
        """Rows of the *shared* factor of block ``b`` in ``phase`` (``m`` for Q, ``n`` for P)."""
        return b.m if phase == 0 else b.n

    def factor_len(self, phase: int) -> int:
        """Floats of the shared factors in ``phase``."""
        return sum(self.factor_dim(b, phase) * self.rank for b in self.compressed)

    def upload_len(self, phase: int) -> int:
        """Floats of the uploaded factors in ``phase`` (the other side of the product)."""
        return self.factor_len(1 - phase)

    def split(self, flat: np.ndarray, phase: int, *, shared: bool):
        """``(block, (d, r) view)`` for every compressed block of a flat factor vector."""
        pos = 0
        for b in self.compressed:
            d = self.factor_dim(b, phase if shared else 1 - phase)
            yield b, flat[pos:pos + d * self.rank].reshape(d, self.rank)
            pos += d * self.rank


@dataclass(frozen=True, eq=False)
class PowerSGDState:
    """The shared factors for one phase: ``Q`` blocks (phase 0) or ``P`` blocks (phase 1), flat."""

    phase: int
    factors: np.ndarray


@register
class PowerSGD(Compressor):
    """Rank-``r`` PowerSGD with warm start (Vogels, Karimireddy, Jaggi, NeurIPS 2019).

    Parameters
    ----------
    rank : int
        Rank ``r`` of the factors (1..255).
    shapes : list of list of int, or None
        Tensor shapes of the flat vector, in order (the model's trainable parameters). ``None``
        views the whole vector as one near-square matrix (:func:`near_square`).
    init_seed : int
        Philox key of the factor used when no state is given (the FL layer sets the run seed).
    error_feedback : bool
        Whether the FL client keeps the residual ``M - P Q^T`` (METHODS.md 6.8: yes).

    Examples
    --------
    >>> import numpy as np
    >>> c = PowerSGD(rank=1, shapes=[[8, 6]])
    >>> x = np.outer(np.arange(8), np.ones(6)).astype(np.float32).ravel()   # rank 1
    >>> enc, s1 = c.encode(x, seed=0)           # phase 0: P = M Q0, 8 floats
    >>> enc, s2 = c.encode(x, seed=0, state=s1)  # phase 1: Q = M^T P, 6 floats
    >>> enc.nbytes, bool(np.allclose(c.decode(enc, state=s1), x, atol=1e-5))
    (28, True)
    """

    codec_id = "powersgd"

    def __init__(self, *, rank: int = 2, shapes: list[list[int]] | None = None,
                 init_seed: int = 0, error_feedback: bool = True) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= 255:
            raise ValueError(f"rank = {rank!r}, expected an int in 1..255")
        if shapes is not None:
            if not isinstance(shapes, (list, tuple)) or not shapes or not all(
                    isinstance(s, (list, tuple)) and all(
                        isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in s)
                    for s in shapes):
                raise ValueError(f"shapes = {shapes!r}, expected None or a non-empty list of "
                                 "lists of positive ints")
            shapes = [list(s) for s in shapes]
        if isinstance(init_seed, bool) or not isinstance(init_seed, int) or not (
                0 <= init_seed < 2**64):
            raise ValueError(f"init_seed = {init_seed!r}, expected an int in [0, 2**64)")
        if not isinstance(error_feedback, bool):
            raise ValueError(f"error_feedback = {error_feedback!r}, expected a bool")
        self.rank, self.shapes, self.init_seed = rank, shapes, init_seed
        self.error_feedback = error_feedback
        self._layouts: dict[int, Layout] = {}
        self._defaults: dict[tuple[int, int], PowerSGDState] = {}

    def _params(self):
        return {"rank": self.rank, "shapes": self.shapes, "init_seed": self.init_seed,
                "error_feedback": self.error_feedback}

    # -- layout and shared factors --------------------------------------------------------------
    def layout(self, n: int) -> Layout:
        """The :class:`Layout` of ``n`` elements (``ValueError`` if ``shapes`` disagree)."""
        lay = self._layouts.get(n)
        if lay is None:
            shapes = [tuple(s) for s in self.shapes] if self.shapes else [near_square(n)]
            lay = Layout(shapes, self.rank)
            if lay.numel != n:
                raise ValueError(f"powersgd: shapes hold {lay.numel} elements, the vector {n}")
            self._layouts[n] = lay
        return lay

    def random_factors(self, n: int, phase: int, *, seed: int, round: int = 0) -> np.ndarray:
        """Gaussian ``(d, r)`` blocks from Philox ``POWERSGD_INIT`` (stream = tensor index,
        ``c2`` = ``round``, ``sub_id`` = ``phase``), flat and *not* orthonormalised."""
        lay = self.layout(n)
        parts = [rng.normal(seed, purpose=rng.Purpose.POWERSGD_INIT, stream=b.index, round=round,
                            sub_id=phase, n=lay.factor_dim(b, phase) * self.rank)
                 for b in lay.compressed]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def orthonormal_state(self, n: int, phase: int, raw: np.ndarray, *, seed: int,
                          round: int = 0) -> PowerSGDState:
        """``PowerSGDState(phase, orth(raw))`` block by block; degenerate columns are refilled
        from :meth:`random_factors` ``(seed, round)``."""
        lay = self.layout(n)
        raw = np.asarray(raw, dtype=np.float32)
        if raw.shape != (lay.factor_len(phase),):
            raise ValueError(f"factors of shape {raw.shape}, expected ({lay.factor_len(phase)},)")
        out = np.empty_like(raw)
        for (_, o), (_, a) in zip(lay.split(out, phase, shared=True),
                                  lay.split(raw, phase, shared=True), strict=True):
            o[:] = orthonormalize(a)
        # a zero column means a degenerate one: only then are the refills needed (generating
        # them costs more than the Gram-Schmidt); columns before it come out the same either way
        if any(not np.all(np.any(o != 0, axis=0)) for _, o in lay.split(out, phase, shared=True)):
            fill = self.random_factors(n, phase, seed=seed, round=round)
            pairs = zip(lay.split(out, phase, shared=True), lay.split(raw, phase, shared=True),
                        lay.split(fill, phase, shared=True), strict=True)
            for (_, o), (_, a), (_, f) in pairs:
                o[:] = orthonormalize(a, f)
        return PowerSGDState(phase, out)

    def initial_state(self, n: int, *, seed: int | None = None, phase: int = 0,
                      round: int = 0) -> PowerSGDState:
        """Orthonormalised Philox factors; ``seed`` defaults to ``init_seed``."""
        seed = self.init_seed if seed is None else seed
        raw = self.random_factors(n, phase, seed=seed, round=round)
        return self.orthonormal_state(n, phase, raw, seed=seed, round=round + 1)

    def _default_state(self, n: int, phase: int) -> PowerSGDState:
        """:meth:`initial_state` ``(n, phase=phase)``, computed once per size and phase (a pure
        function of the config; read-only factors) for callers that pass no state."""
        st = self._defaults.get((n, phase))
        if st is None:
            st = self.initial_state(n, phase=phase)
            st.factors.setflags(write=False)
            self._defaults[(n, phase)] = st
        return st

    def _check_state(self, state: PowerSGDState, n: int) -> None:
        want = self.layout(n).factor_len(state.phase)
        if state.phase not in (0, 1) or state.factors.shape != (want,):
            raise ValueError(f"state: phase {state.phase} with {state.factors.shape} factors, "
                             f"expected phase 0 or 1 with ({want},)")

    # -- codec ----------------------------------------------------------------------------------
    def encode(self, x, *, seed: int, state: PowerSGDState | None = None):
        """Upload factors for ``state``; returns the encoded message and the next phase's state."""
        v = as_flat_f32(x)
        n, lay = v.shape[0], self.layout(v.shape[0])
        state = self._default_state(n, 0) if state is None else state
        self._check_state(state, n)
        ph = state.phase
        up = np.empty(lay.upload_len(ph), dtype=np.float32)
        for (b, u), (_, f) in zip(lay.split(up, ph, shared=False),
                                  lay.split(state.factors, ph, shared=True), strict=True):
            mat = v[b.offset:b.offset + b.numel].reshape(b.n, b.m)
            if ph == 0:  # P = M Q
                lowrank.mat_factor(mat, np.ascontiguousarray(f.T, dtype=np.float64), u,
                                   np.empty((self.rank, lowrank.LANES)))
            else:  # Q = M^T P
                lowrank.mat_t_factor(mat, np.ascontiguousarray(f, dtype=np.float32), u,
                                     np.empty((self.rank, b.m)))
        dense = np.concatenate([v[b.offset:b.offset + b.numel] for b in lay.dense]) if lay.dense \
            else np.zeros(0, np.float32)
        enc = Encoded({"phase": ph, "rank": self.rank},
                      (_PRE.pack(ph, self.rank, 0), up.astype("<f4", copy=False),
                       dense.astype("<f4", copy=False)), n)
        return enc, self.orthonormal_state(n, 1 - ph, up, seed=seed)

    def uploads(self, enc: Encoded) -> tuple[np.ndarray, np.ndarray]:
        """``(factors, dense)`` float32 views of an encoded message."""
        return (np.frombuffer(enc.sections[1], dtype="<f4"),
                np.frombuffer(enc.sections[2], dtype="<f4"))

    def parse(self, payload, n: int) -> Encoded:
        rd = SectionReader(payload, "powersgd")
        ph, r, zero = rd.struct(_PRE, "preamble")
        self._require(ph in (0, 1), f"powersgd: phase = {ph}, expected 0 or 1")
        self._require(r == self.rank, f"powersgd: rank = {r}, expected {self.rank}")
        self._require(zero == 0, f"powersgd: reserved = {zero}, expected 0")
        try:
            lay = self.layout(n)
        except ValueError as exc:
            raise WireFormatError(str(exc)) from None
        up = rd.array("<f4", lay.upload_len(ph), "factors")
        dense = rd.array("<f4", lay.dense_len, "dense")
        rd.finish()
        require_finite(up, "powersgd: factors")
        require_finite(dense, "powersgd: dense")
        return Encoded({"phase": ph, "rank": r}, (_PRE.pack(ph, r, 0), up, dense), n)

    def reconstruct(self, phase: int, up: np.ndarray, dense: np.ndarray, factors: np.ndarray,
                    n: int, *, out: np.ndarray | None = None) -> np.ndarray:
        """``P Q^T`` per compressed tensor (float64 sums of exact products, rounded once to
        float32: :func:`fedsqueeze.kernels.cpu.lowrank.outer`) and the dense ones."""
        lay = self.layout(n)
        out = check_out(out, n)
        for (b, u), (_, f) in zip(lay.split(up, phase, shared=False),
                                  lay.split(factors, phase, shared=True), strict=True):
            p, q = (u, f) if phase == 0 else (f, u)
            lowrank.outer(np.ascontiguousarray(p, dtype=np.float32),
                          np.ascontiguousarray(q.T, dtype=np.float64),
                          out[b.offset:b.offset + b.numel], np.empty(b.m))
        pos = 0
        for b in lay.dense:
            out[b.offset:b.offset + b.numel] = dense[pos:pos + b.numel]
            pos += b.numel
        return out

    def decode(self, enc: Encoded, *, out=None, state: PowerSGDState | None = None):
        """Rebuild the vector with the shared factors the encoder used (``state``)."""
        ph = enc.meta["phase"]
        state = self._default_state(enc.n, ph) if state is None else state
        self._check_state(state, enc.n)
        if state.phase != ph:
            raise ValueError(f"state is for phase {state.phase}, the message for phase {ph}")
        up, dense = self.uploads(enc)
        return self.reconstruct(ph, up, dense, state.factors, enc.n, out=out)

    def max_nbytes(self, n: int) -> int:
        lay = self.layout(n)
        return _PRE.size + 4 * (max(lay.upload_len(0), lay.upload_len(1)) + lay.dense_len)

    def theoretical_bits(self, enc: Encoded) -> float:
        up, dense = self.uploads(enc)
        return 32.0 * (up.shape[0] + dense.shape[0])

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        return {"phase": float(enc.meta["phase"])}

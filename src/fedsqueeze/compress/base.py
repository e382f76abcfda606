"""The codec contract: ``Compressor``, ``Encoded`` and ``ErrorFeedback`` (STYLE.md section 3).

A codec turns a flat float32 vector into ``Encoded(meta, sections)``. ``sections`` are the raw
payload, starting with the codec's own binary preamble, in the order METHODS.md lays them out;
they go on the wire 4-byte aligned (:func:`fedsqueeze.comm.wire.join_sections`). ``meta`` repeats
small facts for in-memory use and is never sent: a receiver rebuilds it with :meth:`Compressor.parse`,
which validates every length against the expected vector size before anything is allocated.

The FL layer prepends ``u32 n_i`` to uplinks (METHODS.md section 0.5); codecs never see it.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..comm.wire import join_sections, pad4
from ..errors import WireFormatError

__all__ = ["Compressor", "Encoded", "ErrorFeedback", "as_flat_f32", "check_out", "parse_payload",
           "decode_payload", "all_finite", "require_finite"]


def parse_payload(codec, payload, n: int, seed: int | None) -> Encoded:
    """``codec.parse`` with the message seed when the codec needs it."""
    if codec.needs_seed:
        return codec.parse(payload, n, seed=seed)
    return codec.parse(payload, n)


def all_finite(a) -> bool:
    """Whether a float array holds no NaN or Inf, without a temporary of its size.

    ``min`` and ``max`` propagate NaN, and an Inf is the minimum or the maximum, so two reads of
    the data decide it (``np.isfinite(a).all()`` would allocate a boolean array of ``a.size``).

    >>> all_finite(np.array([1.0, -2.0], np.float32)), all_finite(np.array([1, np.inf]))
    (True, False)
    >>> all_finite(np.zeros(0, np.float32))
    True
    """
    a = np.asarray(a)
    if a.size == 0:
        return True
    return bool(np.isfinite(a.min()) and np.isfinite(a.max()))


def require_finite(a, what: str) -> None:
    """:class:`WireFormatError` naming ``what`` unless every value of ``a`` is finite."""
    if not all_finite(a):
        a = np.asarray(a)
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise WireFormatError(f"{what}: {bad} of {a.size} values are NaN or Inf")


def decode_payload(codec, payload, n: int, seed: int | None, *,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Receive path of every codec payload: :func:`parse_payload`, ``decode``, finiteness check.

    Lengths are validated by ``parse`` before anything is allocated; the decoded vector must then
    be finite, whichever codec produced it (NaN/Inf in a payload, or finite values that overflow
    on decode, e.g. a huge random-k value times ``D / k``; NumPy's overflow warnings are
    silenced for the decode, since this check catches the result). Every failure is a
    :class:`WireFormatError` (a ``ValueError``) naming the codec. Host arrays only.

    >>> from fedsqueeze.compress import from_config
    >>> c = from_config({"id": "identity"})
    >>> decode_payload(c, np.array([1, 2], "<f4").tobytes(), 2, None).tolist()
    [1.0, 2.0]
    >>> decode_payload(c, np.array([1, np.nan], "<f4").tobytes(), 2, None)
    Traceback (most recent call last):
    ...
    fedsqueeze.errors.WireFormatError: identity: values: 1 of 2 values are NaN or Inf
    """
    enc = parse_payload(codec, payload, n, seed)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below
        x = codec.decode(enc, out=out)
    require_finite(x, f"{codec.codec_id}: decoded vector")
    return x


@dataclass(frozen=True)
class Encoded:
    """A codec's output: JSON-able ``meta`` and the payload ``sections`` (preamble first)."""

    meta: Mapping[str, Any]
    sections: tuple[Any, ...]
    n: int = field(default=0)
    """Length of the decoded vector."""

    @property
    def nbytes(self) -> int:
        """Payload bytes on the wire: section lengths, each padded to 4 (the number we log)."""
        return sum(pad4(memoryview(s).nbytes) for s in self.sections)

    def payload(self) -> bytes:
        """The payload as one bytes object (sections joined with 4-byte alignment)."""
        return b"".join(bytes(p) for p in join_sections(self.sections))


def as_flat_f32(x) -> np.ndarray:
    """A contiguous 1-D float32 NumPy view (or copy) of a NumPy array or CPU torch tensor."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        x = x.numpy()
    a = np.asarray(x)
    if a.dtype != np.float32:
        raise TypeError(f"expected float32 input, got {a.dtype}")
    return np.ascontiguousarray(a.reshape(-1))


def check_out(out: np.ndarray | None, n: int) -> np.ndarray:
    """Return ``out`` if it is a float32 vector of length ``n``, else a new one (``out=None``)."""
    if out is None:
        return np.empty(n, dtype=np.float32)
    if out.dtype != np.float32 or out.ndim != 1 or out.shape[0] != n:
        raise ValueError(f"out must be float32 of shape ({n},), got {out.dtype} {out.shape}")
    return out


class Compressor(abc.ABC):
    """Base class of every codec. Subclasses set ``codec_id`` and register with
    :func:`fedsqueeze.compress.register`.

    Subclass contract
    -----------------
    * ``__init__`` takes keyword arguments only, validates them eagerly (``ValueError`` naming the
      argument) and stores them; :meth:`get_config` returns them plus ``"id"``.
    * :meth:`encode` is deterministic given ``(x, seed, state)`` and returns the next state
      (``None`` for stateless codecs) instead of mutating ``self``.
    * :meth:`parse` validates a received payload for a vector of ``n`` elements and returns the
      ``Encoded``; :meth:`decode` turns it back into float32.
    """

    codec_id: ClassVar[str] = ""
    codec_version: ClassVar[int] = 1
    lossless: ClassVar[bool] = False
    stochastic: ClassVar[bool] = False
    error_feedback: bool = False
    """When true the FL worker keeps a per-client residual (:class:`ErrorFeedback`)."""
    needs_seed: ClassVar[bool] = False
    """True if the decoder regenerates randomness from the encoder's seed (random-k): then
    :meth:`parse` takes ``seed=`` (use :func:`parse_payload`)."""

    def message_seed(self, run_seed: int, t: int, client: int) -> int:
        """The ``seed`` the FL layer passes to :meth:`encode` (and to :meth:`parse` when
        ``needs_seed``) for round ``t`` and ``client``: one counter-based stream per message."""
        from .. import rng

        return rng.derive_seed(run_seed, purpose=rng.Purpose.MESSAGE, stream=client, round=t)

    # -- configuration --------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        """The constructor arguments plus ``"id"``; survives a JSON round trip."""
        cfg = {"id": self.codec_id}
        cfg.update(self._params())
        return cfg

    def _params(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]):
        cfg = dict(config)
        cid = cfg.pop("id", cls.codec_id)
        if cid != cls.codec_id:
            raise ValueError(f"config id {cid!r} does not match codec {cls.codec_id!r}")
        return cls(**cfg)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(json.dumps(self.get_config(), sort_keys=True))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    # -- data path ------------------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, Any]:
        """Compress a flat float32 vector (NumPy array or torch tensor)."""

    @abc.abstractmethod
    def decode(self, enc: Encoded, *, out: np.ndarray | None = None) -> np.ndarray:
        """Reconstruct the float32 vector; writes into ``out`` when given (exact size or ValueError)."""

    @abc.abstractmethod
    def parse(self, payload, n: int) -> Encoded:
        """Validate a received payload for a vector of ``n`` elements (``WireFormatError``)."""

    @abc.abstractmethod
    def max_nbytes(self, n: int) -> int:
        """Upper bound of :attr:`Encoded.nbytes` for a vector of ``n`` elements."""

    def theoretical_bits(self, enc: Encoded) -> float:
        """The paper's bit count for this message (no header, padding or framing fields)."""
        return 32.0 * enc.n

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        """Per-message diagnostics for the log (kept fraction, levels, ...)."""
        return {}

    # -- helpers for subclasses -----------------------------------------------------------
    @staticmethod
    def _require(cond: bool, msg: str) -> None:
        if not cond:
            raise WireFormatError(msg)


class ErrorFeedback:
    """Per-(client, tensor) residuals ``e`` with ``compensate`` / ``update`` (Stich et al. 2018).

    ``compensate(key, x)`` returns ``v = x + e``; after the codec ran, ``update(key, v, x_hat)``
    stores ``e = v - x_hat``. Residuals of clients that are not sampled stay untouched. The
    ``store`` is any mutable mapping (in memory, or :class:`fedsqueeze.fl.state.DiskStore`).
    """

    def __init__(self, store: Any | None = None) -> None:
        self.store = {} if store is None else store

    def compensate(self, key, x: np.ndarray) -> np.ndarray:
        e = self.store.get(key)
        return x.copy() if e is None else x + e

    def update(self, key, v: np.ndarray, x_hat: np.ndarray) -> None:
        self.store[key] = (v - x_hat).astype(np.float32, copy=False)

    def nbytes(self) -> int:
        """Memory (or disk) held by residuals."""
        if hasattr(self.store, "nbytes"):
            return int(self.store.nbytes())
        return int(sum(v.nbytes for v in self.store.values()))

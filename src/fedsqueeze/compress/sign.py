"""signSGD and EF-signSGD: one bit per coordinate (METHODS.md 6.6, 6.7).

Bit ``i`` (LSB first) is 1 iff ``x[i] < 0``: ``sign(0) = +1`` (``-0.0`` and NaN too).

* ``signsgd``: payload ``ceil(n/8)`` bytes, pad4; decodes to ``+-1`` (the server's vote rule
  scales them, see :mod:`fedsqueeze.methods.signsgd_vote`). Theoretical bits ``n``.
* ``ef_signsgd``: per segment ``alpha = ||p||_1 / numel`` (float64, stored as f32); payload
  ``f32[T] alpha | signs, pad4``; decodes to ``alpha * sign``; the worker keeps the residual
  (``error_feedback = True``). Theoretical bits ``32 T + n``.

Segments are the model's tensors, given as a ``segments`` list of sizes (default: one segment).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..comm.wire import SectionReader, pad4
from ..errors import WireFormatError
from ..kernels import dispatch
from .base import Compressor, Encoded
from .qsgd import device_or_host_out, input_vector
from .registry import register

__all__ = ["SignSGD", "EFSignSGD", "check_segments", "segment_bounds", "check_pad_bits"]


def check_segments(segments: Any) -> list[int] | None:
    """Validate a ``segments`` config value: ``None`` or a non-empty list of positive ints."""
    if segments is None:
        return None
    if isinstance(segments, (str, bytes)) or not hasattr(segments, "__iter__"):
        raise TypeError(f"segments must be a list of tensor sizes, got {segments!r}")
    out = []
    for v in segments:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
            raise ValueError(f"segments must hold positive integers, got {segments!r}")
        out.append(int(v))
    if not out:
        raise ValueError("segments must not be empty")
    return out


def segment_bounds(segments: list[int] | None, n: int, error=ValueError) -> np.ndarray:
    """``int64[T + 1]`` offsets of the segments of an ``n``-vector (``error`` if they disagree)."""
    if segments is None:
        return np.array([0, n], dtype=np.int64)
    if sum(segments) != n:
        raise error(f"segments sum to {sum(segments)}, the vector has {n} elements")
    return np.concatenate([[0], np.cumsum(segments)]).astype(np.int64)


def check_pad_bits(codes: np.ndarray, nbits: int, what: str) -> None:
    """``WireFormatError`` unless the bits after the first ``nbits`` of ``codes`` are zero."""
    used = nbits % 8
    if used and int(codes[-1]) >> used:
        raise WireFormatError(f"{what}: non-zero padding bits after the last code")


@register
class SignSGD(Compressor):
    """Signs only, one bit per coordinate; decodes to ``+-1``.

    Examples
    --------
    >>> import numpy as np
    >>> c = SignSGD()
    >>> enc, _ = c.encode(np.array([0.5, -2.0, 0.0, -0.0, 3.0], np.float32), seed=0)
    >>> bytes(enc.sections[0]).hex(), c.decode(enc).tolist()
    ('02', [1.0, -1.0, 1.0, 1.0, 1.0])
    >>> 24 + 4 + c.max_nbytes(4810)             # METHODS.md 6.12
    632
    """

    codec_id = "signsgd"

    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, Any]:
        v, n = input_vector(x)
        signs = np.empty((n + 7) // 8, dtype=np.uint8)  # every byte written
        dispatch.pack_signs(v, signs)
        return Encoded({}, (signs,), n), state

    def parse(self, payload, n: int) -> Encoded:
        r = SectionReader(payload, self.codec_id)
        signs = np.frombuffer(r.bytes((n + 7) // 8, "signs"), dtype=np.uint8)
        r.finish()
        check_pad_bits(signs, n, self.codec_id)
        return Encoded({}, (signs,), n)

    def decode(self, enc: Encoded, *, out=None):
        out = device_or_host_out(out, enc.n)
        signs = np.frombuffer(enc.sections[0], dtype=np.uint8)
        dispatch.unpack_signs(signs, np.array([0, enc.n], np.int64), np.ones(1, np.float32), out)
        return out

    def max_nbytes(self, n: int) -> int:
        return pad4((n + 7) // 8)

    def theoretical_bits(self, enc: Encoded) -> float:
        return float(enc.n)

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        return {"bits_per_coord": 8.0 * enc.nbytes / max(1, enc.n)}


@register
class EFSignSGD(Compressor):
    """Scaled signs with error feedback: ``alpha_t * sign(p)`` per segment ``t``.

    Parameters
    ----------
    segments : list of int, optional
        Tensor sizes (summing to the vector length); one ``alpha`` each. Default: one segment.

    Examples
    --------
    >>> import numpy as np
    >>> c = EFSignSGD(segments=[2, 3])
    >>> enc, _ = c.encode(np.array([1, -3, 0.5, 0.5, -2], np.float32), seed=0)
    >>> c.decode(enc).tolist()
    [2.0, -2.0, 1.0, 1.0, -1.0]
    >>> 24 + 4 + EFSignSGD(segments=[4096, 64, 640, 10]).max_nbytes(4810)   # METHODS.md 6.12
    648
    """

    codec_id = "ef_signsgd"
    error_feedback = True

    def __init__(self, *, segments: list[int] | None = None) -> None:
        self.segments = check_segments(segments)

    def _params(self) -> dict[str, Any]:
        return {"segments": self.segments}

    def _nseg(self) -> int:
        return 1 if self.segments is None else len(self.segments)

    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, Any]:
        v, n = input_vector(x)
        bounds = segment_bounds(self.segments, n)
        signs = np.empty((n + 7) // 8, dtype=np.uint8)  # every byte written
        sums = dispatch.sign_abs_encode(v, bounds, signs)  # sum |x| per segment and the signs
        numel = np.maximum(np.diff(bounds), 1).astype(np.float64)
        alpha = (sums / numel).astype("<f4")
        if not np.isfinite(alpha).all():
            raise ValueError(f"{self.codec_id}: input holds NaN or Inf")
        return Encoded({"segments": len(alpha)}, (alpha, signs), n), state

    def parse(self, payload, n: int) -> Encoded:
        segment_bounds(self.segments, n, WireFormatError)
        r = SectionReader(payload, self.codec_id)
        alpha = r.array("<f4", self._nseg(), "alpha")
        signs = np.frombuffer(r.bytes((n + 7) // 8, "signs"), dtype=np.uint8)
        r.finish()
        self._require(bool(np.isfinite(alpha).all() and (alpha >= 0).all()),
                      f"{self.codec_id}: alpha must be finite and >= 0")
        check_pad_bits(signs, n, self.codec_id)
        return Encoded({"segments": len(alpha)}, (alpha, signs), n)

    def decode(self, enc: Encoded, *, out=None):
        out = device_or_host_out(out, enc.n)
        bounds = segment_bounds(self.segments, enc.n)
        alpha = np.asarray(enc.sections[0], dtype=np.float32)
        dispatch.unpack_signs(np.frombuffer(enc.sections[1], dtype=np.uint8), bounds, alpha, out)
        return out

    def max_nbytes(self, n: int) -> int:
        return 4 * self._nseg() + pad4((n + 7) // 8)

    def theoretical_bits(self, enc: Encoded) -> float:
        return 32.0 * self._nseg() + enc.n

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        alpha = np.asarray(enc.sections[0], dtype=np.float64)
        return {"bits_per_coord": 8.0 * enc.nbytes / max(1, enc.n),
                "alpha_mean": float(alpha.mean()) if alpha.size else 0.0}

"""TernGrad: clipped, stochastic ternary codes with one scale per segment (METHODS.md 6.5).

Per segment ``t`` (a tensor): ``sigma`` = population standard deviation (float64, from the fixed
order sums of :mod:`fedsqueeze.kernels.cpu.signs`), clip bound ``cv = f32(clip * sigma)``,
scale ``s = min(f32(max |x|), cv)``; each element keeps ``sign(x) s`` with probability
``min(|x|, cv) / s`` (Philox TERNGRAD, 24-bit), else 0, so the decoded vector is unbiased for the
clipped one. Payload ``f32[T] scales | 2-bit codes (0 -> 0, 1 -> +1, 2 -> -1), pad4``;
theoretical bits ``32 T + n log2 3``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import rng
from ..comm.wire import SectionReader, pad4
from ..errors import WireFormatError
from ..kernels import dispatch
from .base import Compressor, Encoded
from .qsgd import device_or_host_out, input_vector
from .registry import register
from .sign import check_pad_bits, check_segments, segment_bounds

__all__ = ["TernGrad"]


@register
class TernGrad(Compressor):
    """Ternary codes ``{0, +s_t, -s_t}`` with clipping at ``clip`` standard deviations.

    Parameters
    ----------
    clip : float or None
        Clip factor ``c`` (``cv = c sigma``); ``None`` disables clipping. Default 2.5.
    segments : list of int, optional
        Tensor sizes (summing to the vector length); one scale each. Default: one segment.

    Examples
    --------
    >>> import numpy as np
    >>> c = TernGrad(segments=[4096, 64, 640, 10])
    >>> x = np.random.default_rng(0).standard_normal(4810).astype(np.float32)
    >>> enc, _ = c.encode(x, seed=3)
    >>> 24 + 4 + enc.nbytes                     # METHODS.md 6.12
    1248
    >>> sorted(set(np.round(c.decode(enc)[:4096] / enc.sections[0][0]).tolist()))
    [-1.0, 0.0, 1.0]
    """

    codec_id = "terngrad"
    stochastic = True

    def __init__(self, *, clip: float | None = 2.5, segments: list[int] | None = None) -> None:
        if clip is not None:
            if isinstance(clip, bool) or not isinstance(clip, (int, float)):
                raise TypeError(f"clip must be a number or None, got {clip!r}")
            if not (math.isfinite(clip) and clip > 0):
                raise ValueError(f"clip = {clip}, expected a finite number > 0 or None")
            clip = float(clip)
        self.clip = clip
        self.segments = check_segments(segments)

    def _params(self) -> dict[str, Any]:
        return {"clip": self.clip, "segments": self.segments}

    def _nseg(self) -> int:
        return 1 if self.segments is None else len(self.segments)

    def scales_for(self, stats: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(clip bounds cv, scales s)`` in float32 from :func:`dispatch.segment_stats` rows."""
        numel = np.maximum(np.diff(bounds), 1).astype(np.float64)
        mean = stats[:, 0] / numel
        sigma = np.sqrt(np.maximum(stats[:, 1] / numel - mean * mean, 0.0))
        if self.clip is None:
            cv = np.full(len(numel), np.inf, dtype=np.float32)
        else:
            cv = (self.clip * sigma).astype(np.float32)
        return cv, np.minimum(stats[:, 3].astype(np.float32), cv)

    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, Any]:
        v, n = input_vector(x)
        bounds = segment_bounds(self.segments, n)
        stats = dispatch.segment_stats(v, bounds)
        if not np.isfinite(stats).all():
            raise ValueError(f"{self.codec_id}: input holds NaN or Inf")
        cv, scales = self.scales_for(stats, bounds)
        k0, k1 = rng.key_of(seed)
        params = (int(k0), int(k1), int(rng.counter3(rng.Purpose.TERNGRAD)))
        codes = np.zeros((n + 3) // 4, dtype=np.uint8)
        dispatch.ternary_encode(v, bounds, cv, scales, params, codes)
        scales = scales.astype("<f4")
        return Encoded({"segments": len(scales)}, (scales, codes), n), state

    def parse(self, payload, n: int) -> Encoded:
        segment_bounds(self.segments, n, WireFormatError)
        r = SectionReader(payload, self.codec_id)
        scales = r.array("<f4", self._nseg(), "scales")
        codes = np.frombuffer(r.bytes((n + 3) // 4, "codes"), dtype=np.uint8)
        r.finish()
        self._require(bool(np.isfinite(scales).all() and (scales >= 0).all()),
                      f"{self.codec_id}: scales must be finite and >= 0")
        check_pad_bits(codes, 2 * n, self.codec_id)
        return Encoded({"segments": len(scales)}, (scales, codes), n)

    def decode(self, enc: Encoded, *, out=None):
        out = device_or_host_out(out, enc.n)
        bounds = segment_bounds(self.segments, enc.n)
        scales = np.asarray(enc.sections[0], dtype=np.float32)
        bad = dispatch.ternary_decode(np.frombuffer(enc.sections[1], dtype=np.uint8), bounds,
                                      scales, out)
        if bad:
            raise WireFormatError(f"{self.codec_id}: {bad} codes are 3 (only 0, 1, 2 are valid)")
        return out

    def max_nbytes(self, n: int) -> int:
        return 4 * self._nseg() + pad4((n + 3) // 4)

    def theoretical_bits(self, enc: Encoded) -> float:
        return 32.0 * self._nseg() + enc.n * math.log2(3.0)

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        b = np.frombuffer(enc.sections[1], dtype=np.uint8)
        nonzero = int(np.unpackbits((b | (b >> 1)) & 0x55).sum())
        n = max(1, enc.n)
        return {"density": nonzero / n, "bits_per_coord": 8.0 * enc.nbytes / n}

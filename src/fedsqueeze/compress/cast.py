"""float16 and bfloat16 casts (METHODS.md section 6.11).

Payload ``u8 dtype (0 f16, 1 bf16) | u8[3] 0 | u16[n], pad4``; theoretical bits ``16 n``.
"""

from __future__ import annotations

import struct

import numpy as np

from ..comm.wire import SectionReader, pad4
from ..kernels.cpu import cast as _kc
from .base import Compressor, Encoded, as_flat_f32, check_out
from .registry import register

_PRE = struct.Struct("<B3x")


def f32_to_bf16_bits(v: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even of the upper 16 bits of the float32 pattern; NaN stays a quiet NaN
    (``kernels.cpu.cast.f32_to_bf16``)."""
    r = np.empty(v.shape[0], dtype="<u2")
    _kc.f32_to_bf16(v.view(np.uint32), r)
    return r


def f32_to_f16_bits(v: np.ndarray) -> np.ndarray:
    """IEEE binary16 patterns, round-to-nearest-even, clamped to +-65504 (the bytes of
    ``np.clip(v, -65504, 65504).astype("<f2")``; ``kernels.cpu.cast.f32_to_f16``, computed by
    ``f32_to_f16_fast`` with the CPU's F16C conversion where it has one)."""
    v = np.ascontiguousarray(v, dtype=np.float32)
    r = np.empty(v.shape[0], dtype="<u2")
    _kc.f32_to_f16_fast(v, v.view(np.uint32), r)
    return r


class _Cast(Compressor):
    dtype_code = 0
    exponent_mask = 0x7C00
    """Exponent bits of the 16-bit pattern: all ones means Inf or NaN (rejected by ``parse``)."""

    def __init__(self, *, error_feedback: bool = False) -> None:
        if not isinstance(error_feedback, bool):
            raise TypeError(f"error_feedback must be a bool, got {error_feedback!r}")
        self.error_feedback = error_feedback

    def _params(self):
        return {"error_feedback": self.error_feedback}

    def _to_bits(self, v: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        return Encoded({}, (_PRE.pack(self.dtype_code), self._to_bits(v)), v.shape[0]), state

    def parse(self, payload, n: int) -> Encoded:
        r = SectionReader(payload, self.codec_id)
        (code,) = r.struct(_PRE, "dtype")
        self._require(code == self.dtype_code,
                      f"{self.codec_id}: dtype byte {code}, expected {self.dtype_code}")
        bits = r.array("<u2", n, "values")
        r.finish()
        bad = int(_kc.count_all_ones(bits, self.exponent_mask))
        self._require(bad == 0, f"{self.codec_id}: values: {bad} of {n} values are NaN or Inf")
        return Encoded({}, (_PRE.pack(code), bits), n)

    def max_nbytes(self, n: int) -> int:
        return 4 + pad4(2 * n)

    def theoretical_bits(self, enc: Encoded) -> float:
        return 16.0 * enc.n


@register
class Float16(_Cast):
    """IEEE binary16, round-to-nearest-even, clamped to +-65504."""

    codec_id = "fp16"
    dtype_code = 0

    def _to_bits(self, v):
        return f32_to_f16_bits(v)

    def decode(self, enc, *, out=None):
        out = check_out(out, enc.n)
        _kc.f16_to_f32_fast(np.frombuffer(enc.sections[1], dtype="<u2", count=enc.n), out,
                            out.view(np.uint32))
        return out


@register
class BFloat16(_Cast):
    """bfloat16: the upper 16 bits of float32 with round-to-nearest-even."""

    codec_id = "bf16"
    dtype_code = 1
    exponent_mask = 0x7F80

    def _to_bits(self, v):
        return f32_to_bf16_bits(v)

    def decode(self, enc, *, out=None):
        out = check_out(out, enc.n)
        _kc.bf16_to_f32(np.frombuffer(enc.sections[1], dtype="<u2", count=enc.n),
                        out.view(np.uint32))
        return out

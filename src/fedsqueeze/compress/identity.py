"""The no-compression control: float32 as is (FedAvg). Payload ``f32[n]``."""

from __future__ import annotations

import numpy as np

from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register


@register
class Identity(Compressor):
    """Dense float32 (METHODS.md section 6.1): ``4 n`` payload bytes, ``32 n`` theoretical bits.

    >>> import numpy as np
    >>> enc, _ = Identity().encode(np.arange(3, dtype=np.float32), seed=0)
    >>> enc.nbytes, Identity().decode(enc).tolist()
    (12, [0.0, 1.0, 2.0])
    """

    codec_id = "identity"
    lossless = True

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        return Encoded({}, (v.astype("<f4", copy=False),), v.shape[0]), state

    def parse(self, payload, n: int) -> Encoded:
        self._require(len(memoryview(payload)) == 4 * n,
                      f"identity: payload of {len(memoryview(payload))} bytes, expected {4 * n}")
        values = np.frombuffer(payload, dtype="<f4", count=n)
        require_finite(values, "identity: values")
        return Encoded({}, (values,), n)

    def decode(self, enc: Encoded, *, out=None):
        out = check_out(out, enc.n)
        out[:] = np.frombuffer(enc.sections[0], dtype="<f4", count=enc.n)
        return out

    def max_nbytes(self, n: int) -> int:
        return 4 * n

"""Top-k sparsification with error feedback (METHODS.md 6.2).

Payload (after the FL layer's ``u32 n_i``)::

    u32 k | u8 pos_mode | u8[3] 0 | u32 pos_bytes | positions, pad4 | f32[k] values (by index)

Bytes ``12 + pad4(pos_bytes) + 4k``; theoretical bits ``k (32 + ceil(log2 D))``.
"""

from __future__ import annotations

import struct

import numpy as np

from ..comm.wire import SectionReader, pad4
from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register
from .sparse import (
    bitmap_nbytes,
    check_pos_bytes,
    check_rho,
    decode_positions,
    encode_positions,
    index_bits,
    k_of,
    select_topk,
)

__all__ = ["TopK"]

_PRE = struct.Struct("<IB3xI")  # k, pos_mode, pos_bytes


@register
class TopK(Compressor):
    """Keep the ``k = max(1, ceil(rho D))`` entries of largest magnitude (ties: smaller index).

    The codec only selects; with ``error_feedback=True`` the FL worker keeps ``e = v - x_hat`` per
    client (:class:`~fedsqueeze.compress.base.ErrorFeedback`). Positions are delta varints or a
    bitmap, whichever is smaller.

    Parameters
    ----------
    rho : float
        Kept fraction in ``(0, 1]``.
    error_feedback : bool
        Whether the FL worker keeps residuals for this codec.

    Examples
    --------
    >>> import numpy as np
    >>> codec = TopK(rho=0.25)
    >>> x = np.array([0.1, -3.0, 0.2, 2.0, 0.0, 0.5, -0.4, 0.3], np.float32)
    >>> enc, _ = codec.encode(x, seed=0)
    >>> codec.decode(enc).tolist()
    [0.0, -3.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    >>> enc.nbytes, codec.theoretical_bits(enc)
    (24, 70.0)
    """

    codec_id = "topk"

    def __init__(self, *, rho: float = 0.01, error_feedback: bool = True) -> None:
        self.rho = check_rho(rho)
        if not isinstance(error_feedback, bool):
            raise TypeError(f"error_feedback must be a bool, got {error_feedback!r}")
        self.error_feedback = error_feedback

    def _params(self):
        return {"rho": self.rho, "error_feedback": self.error_feedback}

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        n = v.shape[0]
        k = k_of(self.rho, n)
        idx = select_topk(v, k)
        mode, pos = encode_positions(idx, n)
        values = v[idx].astype("<f4")
        meta = {"k": k, "pos_mode": mode, "pos_bytes": int(pos.shape[0])}
        return Encoded(meta, (_PRE.pack(k, mode, pos.shape[0]), pos, values), n), state

    def parse(self, payload, n: int) -> Encoded:
        r = SectionReader(payload, self.codec_id)
        k, mode, pos_bytes = r.struct(_PRE, "preamble")
        expected = k_of(self.rho, n)
        self._require(k == expected, f"topk: k = {k}, expected {expected} for D = {n}, "
                                     f"rho = {self.rho}")
        check_pos_bytes(mode, pos_bytes, k, n, "topk.positions")
        pos = r.bytes(pos_bytes, "positions")
        values = r.array("<f4", k, "values")
        r.finish()
        require_finite(values, "topk: values")
        decode_positions(mode, pos, k, n, "topk.positions")  # validates every index
        meta = {"k": k, "pos_mode": mode, "pos_bytes": pos_bytes}
        return Encoded(meta, (_PRE.pack(k, mode, pos_bytes), pos, values), n)

    def decode(self, enc: Encoded, *, out=None):
        out = check_out(out, enc.n)
        m = enc.meta
        idx = decode_positions(m["pos_mode"], enc.sections[1], m["k"], enc.n, "topk.positions")
        out[:] = 0.0
        out[idx] = np.frombuffer(enc.sections[2], dtype="<f4", count=m["k"])
        return out

    def max_nbytes(self, n: int) -> int:
        return _PRE.size + pad4(bitmap_nbytes(n)) + 4 * k_of(self.rho, n)

    def theoretical_bits(self, enc: Encoded) -> float:
        return float(enc.meta["k"] * (32 + index_bits(enc.n)))

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        m = enc.meta
        return {"kept_fraction": m["k"] / enc.n if enc.n else 0.0, "k": float(m["k"]),
                "pos_mode": float(m["pos_mode"]), "pos_bytes": float(m["pos_bytes"])}

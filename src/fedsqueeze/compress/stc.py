"""Sparse ternary compression, STC (Sattler et al., METHODS.md 6.10).

Payload (after the FL layer's ``u32 n_i``)::

    u32 k | f32 mu | u8 b* | u8[3] 0 | u32 pos_bits | Golomb-Rice stream ceil(pos_bits/8), pad4
    | signs ceil(k/8) bytes (bit 1 = negative), pad4

Bytes ``16 + pad4(ceil(pos_bits/8)) + pad4(ceil(k/8))``; theoretical bits ``k (b_pos + 1) + 32``
with ``b_pos = b* + 1 / (1 - (1 - p)^(2^b*))``.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from ..comm.wire import SectionReader, pad4
from ..kernels.cpu import golomb as _golomb
from ..kernels.cpu.bitpack import pack_bits, unpack_bits
from .base import Compressor, Encoded, as_flat_f32, check_out
from .registry import register
from .sparse import check_rho, k_of, rice_decode, select_topk

__all__ = ["STC", "rice_parameter"]

_PRE = struct.Struct("<IfB3xI")  # k, mu, b*, pos_bits
_PHI = (1.0 + math.sqrt(5.0)) / 2.0


def rice_parameter(p: float) -> int:
    """``b* = 1 + floor(log2(log(phi - 1) / log(1 - p)))``, clamped to ``0..31`` (0 for ``p = 1``).

    >>> rice_parameter(0.01), rice_parameter(0.001), rice_parameter(1.0)
    (6, 9, 0)
    """
    if p >= 1.0:
        return 0
    b = 1 + math.floor(math.log2(math.log(_PHI - 1.0) / math.log1p(-p)))
    return min(31, max(0, b))


def max_rice_bits(n: int, k: int, b: int) -> int:
    """Largest Rice stream of ``k`` sorted indices under ``n``: gaps sum to at most ``n - k``."""
    return k * (1 + b) + (max(0, n - k) >> b)


@register
class STC(Compressor):
    """Top-k, then every kept value becomes ``mu * sign`` with ``mu`` the mean kept magnitude.

    Positions are Golomb-Rice coded gaps with the optimal parameter ``b*`` for ``p = rho``. With
    ``error_feedback=True`` the FL worker keeps ``e = v - T``.

    Parameters
    ----------
    rho : float
        Kept fraction ``p`` in ``(0, 1]``.
    error_feedback : bool
        Whether the FL worker keeps residuals for this codec.

    Examples
    --------
    >>> import numpy as np
    >>> codec = STC(rho=0.25)
    >>> x = np.array([0.1, -3.0, 0.2, 1.0, 0.0, 0.5, -0.4, 0.3], np.float32)
    >>> enc, _ = codec.encode(x, seed=0)
    >>> codec.decode(enc).tolist()
    [0.0, -2.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    >>> enc.nbytes, codec.b_star
    (24, 1)
    """

    codec_id = "stc"

    def __init__(self, *, rho: float = 0.01, error_feedback: bool = True) -> None:
        self.rho = check_rho(rho)
        if not isinstance(error_feedback, bool):
            raise TypeError(f"error_feedback must be a bool, got {error_feedback!r}")
        self.error_feedback = error_feedback
        self.b_star = rice_parameter(self.rho)
        # the positions parse() decoded while validating, keyed by the identity of their stream
        # buffer (held here, so the identity cannot be reused): decode() of that parse result
        # skips a second Golomb-Rice pass. One entry; any other Encoded is decoded afresh.
        self._parsed: tuple[object, np.ndarray] | None = None

    def _params(self):
        return {"rho": self.rho, "error_feedback": self.error_feedback}

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        n = v.shape[0]
        k = k_of(self.rho, n)
        idx = select_topk(v, k)
        vals = v[idx]
        if not np.isfinite(vals).all():
            raise ValueError("stc: input has NaN or Inf among the selected values")
        mu = np.float32(np.abs(vals.astype(np.float64)).mean()) if k else np.float32(0.0)
        nbits = int(_golomb.rice_nbits(idx, self.b_star))
        stream = np.empty((nbits + 7) // 8, dtype=np.uint8)
        _golomb.rice_encode(idx, self.b_star, stream)
        signs = np.zeros((k + 7) // 8, dtype=np.uint8)
        pack_bits((vals < 0).astype(np.uint8), 1, signs)
        pre = _PRE.pack(k, mu, self.b_star, nbits)
        meta = {"k": k, "mu": float(mu), "pos_bits": nbits}
        return Encoded(meta, (pre, stream, signs), n), state

    def parse(self, payload, n: int) -> Encoded:
        r = SectionReader(payload, self.codec_id)
        k, mu, b, nbits = r.struct(_PRE, "preamble")
        expected = k_of(self.rho, n)
        self._require(k == expected, f"stc: k = {k}, expected {expected} for D = {n}, "
                                     f"rho = {self.rho}")
        self._require(math.isfinite(mu) and mu >= 0.0, f"stc: mu = {mu}, expected finite >= 0")
        self._require(b == self.b_star, f"stc: b* = {b}, expected {self.b_star} for p = {self.rho}")
        top = max_rice_bits(n, k, b)
        self._require(k * (1 + b) <= nbits <= top,
                      f"stc: pos_bits = {nbits}, expected {k * (1 + b)}..{top}")
        stream = r.bytes((nbits + 7) // 8, "golomb")
        signs = r.bytes((k + 7) // 8, "signs")
        r.finish()
        idx = rice_decode(stream, nbits, b, k, n, "stc.golomb")  # validates every index
        self._require(k % 8 == 0 or (signs[-1] >> (k % 8)) == 0, "stc: non-zero sign padding bits")
        meta = {"k": k, "mu": float(mu), "pos_bits": nbits}
        self._parsed = (stream, idx)
        return Encoded(meta, (_PRE.pack(k, mu, b, nbits), stream, signs), n)

    def decode(self, enc: Encoded, *, out=None):
        out = check_out(out, enc.n)
        m = enc.meta
        k = m["k"]
        hit = self._parsed
        if hit is not None and hit[0] is enc.sections[1] and hit[1].shape[0] == k:
            idx = hit[1]
        else:
            idx = rice_decode(enc.sections[1], m["pos_bits"], self.b_star, k, enc.n,
                              "stc.golomb")
        neg = np.empty(k, dtype=np.uint8)
        unpack_bits(np.frombuffer(enc.sections[2], dtype=np.uint8), 1, k, neg)
        mu = np.float32(m["mu"])
        out[:] = 0.0
        out[idx] = np.where(neg != 0, -mu, mu)
        return out

    def max_nbytes(self, n: int) -> int:
        k = k_of(self.rho, n)
        return _PRE.size + pad4((max_rice_bits(n, k, self.b_star) + 7) // 8) + pad4((k + 7) // 8)

    def mean_position_bits(self) -> float:
        """``b_pos = b* + 1 / (1 - (1 - p)^(2^b*))`` (8.11 for ``p = 0.01``)."""
        b = self.b_star
        return b + 1.0 / (1.0 - (1.0 - self.rho) ** (2**b))

    def theoretical_bits(self, enc: Encoded) -> float:
        return enc.meta["k"] * (self.mean_position_bits() + 1.0) + 32.0

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        m = enc.meta
        return {"kept_fraction": m["k"] / enc.n if enc.n else 0.0, "k": float(m["k"]),
                "mu": m["mu"], "pos_bits": float(m["pos_bits"])}

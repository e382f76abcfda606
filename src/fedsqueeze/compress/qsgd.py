"""QSGD: stochastic uniform quantisation with bucket norms (METHODS.md 4.1, 4.4, 6.4).

Payload (the FL layer prepends ``u32 n_i``)::

    u16 s | u8 w | u8 coding | u32 b | f32[ceil(n/b)] norms | codes
    coding 0 (fixed): ceil(n*w/8) code bytes, pad4
    coding 1 (elias): u32[ceil(n/b)] nonzero counts | Elias-omega bit stream, pad4

Code ``j`` is ``(level << 1) | sign`` with ``w = 1 + ceil(log2(s + 1))`` bits, LSB first. The
rounding rule (24-bit uniforms from Philox QSGD_ROUND keyed by the message seed) is in
:mod:`fedsqueeze.kernels.cpu.quantize`; inputs on a CUDA device are encoded on the device.
Elias coding transcodes those fixed codes (:mod:`fedsqueeze.kernels.cpu.elias`, on the host):
per nonzero level, ``omega(gap)``, the sign and ``omega(level)``; the same quantised values,
fewer bytes when most levels are 0 (small ``s``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from .. import rng
from ..comm.wire import SectionReader, pad4
from ..errors import WireFormatError
from ..kernels import dispatch
from ..kernels.cpu import elias
from ..kernels.cpu.quantize import code_width
from .base import Compressor, Encoded, as_flat_f32, check_out
from .registry import register

__all__ = ["QSGD", "QSGDFamily", "MAX_LEVELS", "input_vector", "device_or_host_out"]

PRE = struct.Struct("<HBBI")
MAX_LEVELS = 32767
"""Largest ``s``: ``w = 1 + 15 = 16`` bits, the widest code the packers take."""
_CODINGS = {"fixed": 0, "elias": 1}


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} = {value}, expected {lo}..{hi}")
    return int(value)


def input_vector(x):
    """``(vector, n)``: a device vector stays on the device, anything else becomes flat f32."""
    if dispatch.is_device(x):
        v = dispatch.device_vector(x)
        return v, int(v.shape[0])
    v = as_flat_f32(x)
    return v, int(v.shape[0])


def device_or_host_out(out, n: int):
    """``out`` checked as a float32 ``(n,)`` device or host array; a new host array if None."""
    if out is None or not dispatch.is_device(out):
        return check_out(out, n)
    if tuple(out.shape) != (n,) or np.dtype(out.dtype) != np.float32:
        raise ValueError(f"out must be float32 of shape ({n},), got {out.dtype} {tuple(out.shape)}")
    return out


class QSGDFamily(Compressor):
    """Shared payload, parsing and decoding of :class:`QSGD` and ``AdaQuant``.

    Subclasses say which ``s`` an encode uses (:meth:`_levels`) and which ``s`` a received
    payload may carry (:meth:`_accepts`).
    """

    stochastic = True
    bucket: int
    coding: str

    def _levels(self, state: Any) -> int:
        raise NotImplementedError

    def _accepts(self, s: int) -> bool:
        raise NotImplementedError

    def _max_levels(self) -> int:
        raise NotImplementedError

    # -- data path ------------------------------------------------------------------------
    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, Any]:
        s = self._levels(state)
        v, n = input_vector(x)
        w = code_width(s)
        nb = -(-n // self.bucket)
        norms = np.empty(nb, dtype="<f4")
        codes = np.empty((n * w + 7) // 8, dtype=np.uint8)  # the kernels write every byte
        k0, k1 = rng.key_of(seed)
        c3 = rng.counter3(rng.Purpose.QSGD_ROUND)
        dispatch.qsgd_encode(v, (s, self.bucket, w, int(k0), int(k1), int(c3)), norms, codes)
        if not np.isfinite(norms).all():
            raise ValueError(f"{self.codec_id}: input holds NaN or Inf (bucket norms "
                             f"{norms[~np.isfinite(norms)][:3].tolist()})")
        pre = PRE.pack(s, w, _CODINGS[self.coding], self.bucket)
        meta = {"s": s, "w": w, "bucket": self.bucket, "coding": self.coding}
        if self.coding == "fixed":
            return Encoded(meta, (pre, norms, codes), n), state
        counts = np.empty(nb, dtype="<u4")
        bits = int(elias.elias_size(codes, n, self.bucket, w, counts))
        stream = np.zeros((bits + 7) // 8, dtype=np.uint8)
        elias.fixed_to_elias(codes, n, self.bucket, w, stream)
        meta["stream_bits"] = bits
        return Encoded(meta, (pre, norms, counts, stream), n), state

    def parse(self, payload, n: int) -> Encoded:
        cid = self.codec_id
        r = SectionReader(payload, cid)
        s, w, coding, b = r.struct(PRE, "preamble")
        self._require(1 <= s and self._accepts(s),
                      f"{cid}: s = {s} is not accepted by {self!r}")
        self._require(w == code_width(s), f"{cid}: w = {w}, expected {code_width(s)} for s = {s}")
        self._require(coding == _CODINGS[self.coding],
                      f"{cid}: coding = {coding}, expected {_CODINGS[self.coding]}")
        self._require(b == self.bucket, f"{cid}: bucket b = {b}, expected {self.bucket}")
        norms = r.array("<f4", -(-n // b), "norms")
        meta = {"s": int(s), "w": int(w), "bucket": int(b), "coding": self.coding}
        if self.coding == "elias":
            return self._parse_elias(r, meta, norms, n)
        nbytes = (n * w + 7) // 8
        codes = np.frombuffer(r.bytes(nbytes, "codes"), dtype=np.uint8)
        r.finish()
        self._check_norms(norms)
        used = (n * w) % 8
        self._require(used == 0 or int(codes[-1]) >> used == 0,
                      f"{cid}: non-zero padding bits after code {n - 1}")
        return Encoded(meta, (PRE.pack(s, w, coding, b), norms, codes), n)

    def _check_norms(self, norms) -> None:
        self._require(bool(np.isfinite(norms).all() and (norms >= 0).all()),
                      f"{self.codec_id}: norms must be finite and >= 0")

    def _parse_elias(self, r: SectionReader, meta: dict, norms, n: int) -> Encoded:
        """Counts, then the stream (the rest of the payload), decoded to fixed codes here:
        every bound is checked before the codes are allocated or written."""
        cid, s, w, b = self.codec_id, meta["s"], meta["w"], meta["bucket"]
        counts = r.array("<u4", norms.shape[0], "counts")
        self._check_norms(norms)
        self._require(int(counts.sum(dtype=np.int64)) <= n,
                      f"{cid}: nonzero counts add up to {int(counts.sum(dtype=np.int64))} > n = {n}")
        limit = self._elias_max_stream(n, s)
        self._require(r.remaining <= limit,
                      f"{cid}: Elias stream of {r.remaining} bytes, at most {limit} for n = {n}")
        stream = np.frombuffer(r.bytes(r.remaining, "stream"), dtype=np.uint8)
        r.finish()
        enc = Encoded(meta, (PRE.pack(s, w, _CODINGS["elias"], b), norms, counts, stream), n)
        _, bits = self._elias_codes(enc)
        self._require(pad4((bits + 7) // 8) == stream.shape[0],
                      f"{cid}: Elias stream of {stream.shape[0]} bytes holds {bits} bits")
        tail = stream[bits >> 3:]
        self._require(not (tail.size and (int(tail[0]) >> (bits & 7) or tail[1:].any())),
                      f"{cid}: non-zero padding bits after the Elias stream")
        meta["stream_bits"] = bits
        return enc

    def _elias_codes(self, enc: Encoded) -> tuple[np.ndarray, int]:
        """The fixed codes of an Elias-coded message, and the stream bits read."""
        m = enc.meta
        counts = np.asarray(enc.sections[2], dtype=np.uint32)
        stream = np.frombuffer(enc.sections[3], dtype=np.uint8)
        codes = np.zeros((enc.n * m["w"] + 7) // 8, dtype=np.uint8)
        bits = int(elias.elias_to_fixed(stream, 8 * stream.shape[0], counts, enc.n, m["bucket"],
                                        m["w"], m["s"], codes))
        self._require(bits >= 0, f"{self.codec_id}: Elias stream: {elias.ERRORS.get(bits, bits)}")
        return codes, bits

    def _elias_max_stream(self, n: int, s: int) -> int:
        """Bytes of the longest stream: every coordinate nonzero with the longest gap and level
        codes (a bound, used before anything is allocated)."""
        per = int(elias.omega_len(self.bucket)) + 1 + int(elias.omega_len(s))
        return pad4((n * per + 7) // 8)

    def decode(self, enc: Encoded, *, out=None):
        m = enc.meta
        norms = np.asarray(enc.sections[1], dtype=np.float32)
        codes = self._elias_codes(enc)[0] if m.get("coding") == "elias" else \
            np.frombuffer(enc.sections[2], dtype=np.uint8)
        out = device_or_host_out(out, enc.n)
        bad = dispatch.qsgd_decode(codes, norms, (m["s"], m["bucket"], m["w"]), out)
        if bad:
            raise WireFormatError(f"{self.codec_id}: {bad} codes have a level above s = {m['s']}")
        return out

    # -- sizes and diagnostics ------------------------------------------------------------
    def max_nbytes(self, n: int) -> int:
        nb = -(-n // self.bucket)
        if self.coding == "elias":
            return PRE.size + 8 * nb + self._elias_max_stream(n, self._max_levels())
        return PRE.size + 4 * nb + pad4((n * code_width(self._max_levels()) + 7) // 8)

    def theoretical_bits(self, enc: Encoded) -> float:
        """Fixed codes: ``32 ceil(n/b) + n (1 + log2(s + 1))`` (METHODS.md 4.4). Elias: the
        norms and the stream's bits (the counts are framing, counted in the measured bytes)."""
        s = enc.meta["s"]
        if enc.meta.get("coding") == "elias":
            return 32.0 * -(-enc.n // self.bucket) + float(enc.meta["stream_bits"])
        return 32.0 * -(-enc.n // self.bucket) + enc.n * (1.0 + math.log2(s + 1))

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        n = max(1, enc.n)
        return {"s": float(enc.meta["s"]), "code_bits": float(enc.meta["w"]),
                "bits_per_coord": 8.0 * enc.nbytes / n}


@register
class QSGD(QSGDFamily):
    """QSGD with ``s`` levels per sign and buckets of ``bucket`` elements (fixed-length codes).

    Parameters
    ----------
    s : int
        Quantisation levels, 1..32767; codes take ``1 + ceil(log2(s + 1))`` bits.
    bucket : int
        Bucket length ``b``; each bucket sends its float32 L2 norm.
    coding : {"fixed", "elias"}
        Code layout: fixed-length codes, or Elias-omega coding of the nonzero levels
        (METHODS.md 4.1; the same values, fewer bytes for small ``s``).

    Examples
    --------
    >>> import numpy as np
    >>> q = QSGD(s=2)
    >>> x = np.linspace(-1, 1, 4810).astype(np.float32)
    >>> enc, _ = q.encode(x, seed=7)
    >>> 24 + 4 + enc.nbytes                     # METHODS.md 6.12: D = 4810, s = 2, b = 512
    1880
    >>> y = q.decode(q.parse(enc.payload(), x.shape[0]))
    >>> y.dtype, y.shape, q.diagnostics(enc)["code_bits"]
    (dtype('float32'), (4810,), 3.0)
    """

    codec_id = "qsgd"

    def __init__(self, *, s: int = 2, bucket: int = 512, coding: str = "fixed") -> None:
        self.s = _check_int("s", s, 1, MAX_LEVELS)
        self.bucket = _check_int("bucket", bucket, 1, 2**31 - 1)
        if coding not in _CODINGS:
            raise ValueError(f"coding = {coding!r}, expected one of {sorted(_CODINGS)}")
        self.coding = coding

    def _params(self) -> dict[str, Any]:
        return {"s": self.s, "bucket": self.bucket, "coding": self.coding}

    def _levels(self, state: Any) -> int:
        return self.s

    def _accepts(self, s: int) -> bool:
        return s == self.s

    def _max_levels(self) -> int:
        return self.s

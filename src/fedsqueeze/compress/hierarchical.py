"""Deep hierarchical quantization, HDQ (seed 000, METHODS.md 1.1-1.3).

Three stages, each adding its own sections and meta keys: top-k selection (the ``k`` largest
``|v|``), equal-count magnitude tiers, and per-tier uniform quantization of ``|v|`` between the
tier's ``lo`` and ``hi`` with ``bits[h]`` bits plus a sign bit. Each tier carries its own
positions, as delta varints or a bitmap, whichever is smaller.

Payload (after the FL layer's ``u32 n_i``)::

    u32 k | u8 H | u8 flags (bit 0: stochastic rounding) | u16 0
    for h = 1..H:
        u32 k_h | f32 lo_h | f32 hi_h | u8 b_h | u8 pos_mode | u16 0 | u32 pos_bytes
        positions pad4 | signs ceil(k_h/8) pad4 | levels ceil(k_h b_h/8) pad4

Bytes ``8 + sum_h (20 + pad4(pos_bytes_h) + pad4(ceil(k_h/8)) + pad4(ceil(k_h b_h/8)))``;
theoretical bits ``sum_h k_h (ceil(log2 D) + 1 + b_h) + 64 H``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from .. import rng
from ..comm.wire import SectionReader, pad4
from ..kernels.cpu.bitpack import pack_bits, unpack_bits
from .base import Compressor, Encoded, as_flat_f32, check_out
from .registry import register
from .sparse import (
    bitmap_nbytes,
    check_pos_bytes,
    check_rho,
    decode_positions,
    encode_positions,
    index_bits,
    k_of,
    rank_order,
    select_topk,
)

__all__ = ["HDQ", "tier_bounds"]

_PRE = struct.Struct("<IBBH")  # k, H, flags, 0
_TIER = struct.Struct("<IffBBHI")  # k_h, lo_h, hi_h, b_h, pos_mode, 0, pos_bytes
_STOCHASTIC = 1
_ROUNDING = ("nearest", "stochastic")


def tier_bounds(k: int, tiers: int) -> list[tuple[int, int]]:
    """Rank ranges ``[floor((h-1) k / H), floor(h k / H))`` of the equal-count tiers, largest first.

    >>> tier_bounds(10, 3)
    [(0, 3), (3, 6), (6, 10)]
    """
    return [((h * k) // tiers, ((h + 1) * k) // tiers) for h in range(tiers)]


def _packed(codes: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((codes.shape[0] * width + 7) // 8, dtype=np.uint8)
    pack_bits(codes, width, out)
    return out


def _unpacked(buf, width: int, count: int) -> np.ndarray:
    out = np.empty(count, dtype=np.uint32)
    unpack_bits(np.frombuffer(buf, dtype=np.uint8), width, count, out)
    return out


def _clean_tail(buf, nbits: int) -> bool:
    """Whether the unused bits after ``nbits`` in the last byte are zero."""
    return nbits % 8 == 0 or (memoryview(buf)[-1] >> (nbits % 8)) == 0


@register
class HDQ(Compressor):
    """Top-k with error feedback, then hierarchical (per-tier) quantization of the kept values.

    Parameters
    ----------
    rho : float
        Kept fraction in ``(0, 1]``; ``k = max(1, ceil(rho D))``.
    tiers : int
        Number ``H`` of equal-count magnitude tiers (1..255).
    bits : sequence of int
        Bits per tier, largest tier first; length ``tiers``, each 1..16.
    rounding : {"nearest", "stochastic"}
        Level rounding; stochastic uses ``u24`` from Philox HDQ_ROUND keyed by the message seed
        (value of rank ``r`` uses word ``r``).
    error_feedback : bool
        Whether the FL worker keeps residuals ``e = v - x_hat``.
    scope : {"global"}
        Selection over the whole flat vector (``per_tensor`` is not implemented).

    Examples
    --------
    >>> import numpy as np
    >>> codec = HDQ(rho=0.5, tiers=2, bits=(4, 1))
    >>> x = np.array([8.0, 0.1, -6.0, 0.0, 1.0, -0.2, 2.0, 0.3], np.float32)
    >>> enc, _ = codec.encode(x, seed=0)
    >>> codec.decode(enc).tolist()
    [8.0, 0.0, -6.0, 0.0, 1.0, 0.0, 2.0, 0.0]
    >>> enc.nbytes, codec.theoretical_bits(enc)
    (72, 154.0)
    """

    codec_id = "hdq"

    def __init__(self, *, rho: float = 0.01, tiers: int = 3, bits: Sequence[int] = (8, 4, 2),
                 rounding: str = "nearest", error_feedback: bool = True,
                 scope: str = "global") -> None:
        self.rho = check_rho(rho)
        if isinstance(tiers, bool) or not isinstance(tiers, int) or not 1 <= tiers <= 255:
            raise ValueError(f"tiers = {tiers!r}, expected an int in 1..255")
        if isinstance(bits, (str, bytes)) or not isinstance(bits, Sequence):
            raise TypeError(f"bits must be a sequence of ints, got {bits!r}")
        if len(bits) != tiers or not all(
                isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16 for b in bits):
            raise ValueError(f"bits = {bits!r}, expected {tiers} ints in 1..16 (one per tier)")
        if rounding not in _ROUNDING:
            raise ValueError(f"rounding = {rounding!r}, expected one of {_ROUNDING}")
        if not isinstance(error_feedback, bool):
            raise TypeError(f"error_feedback must be a bool, got {error_feedback!r}")
        if scope != "global":
            raise ValueError(f"scope = {scope!r}: only 'global' is implemented")
        self.tiers, self.bits, self.rounding = tiers, tuple(bits), rounding
        self.error_feedback, self.scope = error_feedback, scope

    def _params(self):
        return {"rho": self.rho, "tiers": self.tiers, "bits": list(self.bits),
                "rounding": self.rounding, "error_feedback": self.error_feedback,
                "scope": self.scope}

    # -- encode: selection, tiers, quantization --------------------------------------------
    def _uniforms(self, seed: int, k: int) -> np.ndarray | None:
        if self.rounding != "stochastic":
            return None
        return rng.uniform24(seed, purpose=rng.Purpose.HDQ_ROUND, n=k).astype(np.float64)

    def _quantize(self, mags: np.ndarray, b: int, u: np.ndarray | None):
        """``(lo, hi, levels)`` of one tier's magnitudes (float32) with ``b`` bits."""
        if mags.shape[0] == 0:
            return np.float32(0.0), np.float32(0.0), np.zeros(0, dtype=np.uint32)
        lo, hi = mags.min(), mags.max()
        top = (1 << b) - 1
        if hi == lo:
            return lo, hi, np.zeros(mags.shape[0], dtype=np.uint32)
        x = (mags.astype(np.float64) - np.float64(lo)) / (np.float64(hi) - np.float64(lo)) * top
        j = np.floor(x + (0.5 if u is None else u))
        return lo, hi, np.clip(j, 0, top).astype(np.uint32)

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        n = v.shape[0]
        k = k_of(self.rho, n)
        idx = select_topk(v, k)  # stage 1: sorted indices of the k largest |v|
        vals = v[idx]
        if not np.isfinite(vals).all():
            raise ValueError("hdq: input has NaN or Inf among the selected values")
        order = rank_order(vals)  # stage 2: ranks by |v| descending, ties by index
        rank = np.empty(k, dtype=np.int64)
        rank[order] = np.arange(k, dtype=np.int64)  # rank of each kept value (index order)
        u = self._uniforms(seed, k)
        flags = _STOCHASTIC if u is not None else 0
        sections: list = [_PRE.pack(k, self.tiers, flags, 0)]
        tiers = []
        for (a, z), b in zip(tier_bounds(k, self.tiers), self.bits, strict=True):
            # tier members in increasing index (= np.sort(order[a:z]), without the sort)
            members = np.flatnonzero((rank >= a) & (rank < z))
            ranks_u = None if u is None else u[rank[members]]
            tv = vals[members]
            lo, hi, levels = self._quantize(np.abs(tv), b, ranks_u)  # stage 3
            mode, pos = encode_positions(idx[members], n)
            signs = _packed((tv < 0).astype(np.uint32), 1)
            sections += [_TIER.pack(z - a, lo, hi, b, mode, 0, pos.shape[0]), pos, signs,
                         _packed(levels, b)]
            tiers.append({"k": z - a, "lo": float(lo), "hi": float(hi), "b": b, "pos_mode": mode,
                          "pos_bytes": int(pos.shape[0])})
        return Encoded({"k": k, "flags": flags, "tiers": tiers}, tuple(sections), n), state

    # -- receive -----------------------------------------------------------------------------
    def parse(self, payload, n: int) -> Encoded:
        r = SectionReader(payload, self.codec_id)
        k, H, flags, zero = r.struct(_PRE, "preamble")
        expected = k_of(self.rho, n)
        self._require(k == expected, f"hdq: k = {k}, expected {expected} for D = {n}, "
                                     f"rho = {self.rho}")
        self._require(H == self.tiers, f"hdq: H = {H}, expected {self.tiers}")
        self._require(flags & ~_STOCHASTIC == 0 and zero == 0,
                      f"hdq: flags = {flags:#x}, reserved = {zero}, expected bit 0 only and 0")
        sections: list = [_PRE.pack(k, H, flags, 0)]
        tiers = []
        for h, ((a, z), bits) in enumerate(zip(tier_bounds(k, H), self.bits, strict=True)):
            what = f"hdq.tier[{h}]"
            k_h, lo, hi, b, mode, zero, pos_bytes = r.struct(_TIER, f"tier[{h}] header")
            self._require(k_h == z - a, f"{what}: k_h = {k_h}, expected {z - a}")
            self._require(b == bits, f"{what}: b_h = {b}, expected {bits}")
            self._require(zero == 0, f"{what}: reserved = {zero}, expected 0")
            self._require(bool(np.isfinite(lo) and np.isfinite(hi)) and 0.0 <= lo <= hi,
                          f"{what}: lo = {lo}, hi = {hi}, expected finite 0 <= lo <= hi")
            check_pos_bytes(mode, pos_bytes, k_h, n, f"{what}.positions")
            pos = r.bytes(pos_bytes, f"tier[{h}].positions")
            signs = r.bytes((k_h + 7) // 8, f"tier[{h}].signs")
            levels = r.bytes((k_h * b + 7) // 8, f"tier[{h}].levels")
            self._require(_clean_tail(signs, k_h) and _clean_tail(levels, k_h * b),
                          f"{what}: non-zero padding bits after signs or levels")
            sections += [_TIER.pack(k_h, lo, hi, b, mode, 0, pos_bytes), pos, signs, levels]
            tiers.append({"k": k_h, "lo": lo, "hi": hi, "b": b, "pos_mode": mode,
                          "pos_bytes": pos_bytes})
        r.finish()
        enc = Encoded({"k": k, "flags": flags, "tiers": tiers}, tuple(sections), n)
        all_idx = np.sort(np.concatenate([self._positions(enc, h) for h in range(H)]))
        # each tier's positions are strictly increasing (decode_positions checks): the tiers
        # are disjoint iff the sorted union has no repeat (np.unique's hash path was ~20x slower)
        self._require(not bool(np.any(all_idx[1:] == all_idx[:-1])), "hdq: tiers share positions")
        return enc

    def _positions(self, enc: Encoded, h: int) -> np.ndarray:
        t = enc.meta["tiers"][h]
        return decode_positions(t["pos_mode"], enc.sections[2 + 4 * h], t["k"], enc.n,
                                f"hdq.tier[{h}].positions")

    def decode(self, enc: Encoded, *, out=None):
        out = check_out(out, enc.n)
        out[:] = 0.0
        for h, t in enumerate(enc.meta["tiers"]):
            k_h, b = t["k"], t["b"]
            if k_h == 0:
                continue
            idx = self._positions(enc, h)
            neg = _unpacked(enc.sections[3 + 4 * h], 1, k_h)
            j = _unpacked(enc.sections[4 + 4 * h], b, k_h)
            lo, hi = np.float64(np.float32(t["lo"])), np.float64(np.float32(t["hi"]))
            mag = (lo + j * (hi - lo) / ((1 << b) - 1)).astype(np.float32)
            out[idx] = np.where(neg != 0, -mag, mag)
        return out

    # -- accounting --------------------------------------------------------------------------
    def max_nbytes(self, n: int) -> int:
        k = k_of(self.rho, n)
        return _PRE.size + sum(
            _TIER.size + pad4(bitmap_nbytes(n)) + pad4((z - a + 7) // 8)
            + pad4(((z - a) * b + 7) // 8)
            for (a, z), b in zip(tier_bounds(k, self.tiers), self.bits, strict=True))

    def theoretical_bits(self, enc: Encoded) -> float:
        ib = index_bits(enc.n)
        return float(sum(t["k"] * (ib + 1 + t["b"]) for t in enc.meta["tiers"])
                     + 64 * len(enc.meta["tiers"]))

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        m = enc.meta
        d = {"kept_fraction": m["k"] / enc.n if enc.n else 0.0, "k": float(m["k"])}
        for h, t in enumerate(m["tiers"], start=1):
            d[f"k_{h}"] = float(t["k"])
            d[f"pos_mode_{h}"] = float(t["pos_mode"])
            d[f"pos_bytes_{h}"] = float(t["pos_bytes"])
        return d

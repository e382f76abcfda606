"""Shared helpers of the sparse codecs (top-k, random-k, STC, HDQ): ``k``, selection, positions.

Positions are coded as delta + LEB128 varint (``pos_mode = 0``) or as a ``D``-bit bitmap
(``pos_mode = 1``), whichever is smaller (ties: varint), METHODS.md 0.5 and 1.2. The bitmap bounds
both, so a valid position section never exceeds ``ceil(D / 8)`` bytes, and a varint section holds
at least one byte per index: :func:`decode_positions` checks both before allocating anything.

>>> import numpy as np
>>> mode, buf = encode_positions(np.array([3, 4, 900]), 1000)
>>> mode, bytes(buf).hex()
(0, '0300ff06')
>>> decode_positions(mode, buf, 3, 1000, "topk.positions").tolist()
[3, 4, 900]
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ..errors import WireFormatError
from ..kernels.cpu import golomb as _golomb
from ..kernels.cpu import topk as _topk
from ..kernels.cpu import varint as _varint

__all__ = [
    "POS_VARINT", "POS_BITMAP", "k_of", "check_rho", "index_bits", "select_topk", "rank_order",
    "bitmap_nbytes", "encode_positions", "decode_positions", "check_pos_bytes", "rice_decode",
    "check_status",
]

POS_VARINT = 0
POS_BITMAP = 1


def check_rho(rho: object, name: str = "rho") -> float:
    """Validate a selection ratio in ``(0, 1]``; returns it as a float."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise TypeError(f"{name} must be a number in (0, 1], got {rho!r}")
    if not 0.0 < float(rho) <= 1.0:
        raise ValueError(f"{name} = {rho!r}, expected a number in (0, 1]")
    return float(rho)


def k_of(rho: float, n: int) -> int:
    """``k = min(n, max(1, ceil(rho n)))``, computed exactly from the decimal ``repr`` of ``rho``
    (so ``rho = 0.07, n = 100`` gives 7, not 8). ``k = 0`` only for ``n = 0``."""
    if n <= 0:
        return 0
    return min(n, max(1, math.ceil(Fraction(repr(float(rho))) * n)))


def index_bits(n: int) -> int:
    """``ceil(log2 n)`` (0 for ``n <= 1``): the bits of one index (the usual sparse convention)."""
    return (n - 1).bit_length() if n > 1 else 0


def bitmap_nbytes(n: int) -> int:
    return (n + 7) // 8


def select_topk(v: np.ndarray, k: int) -> np.ndarray:
    """Sorted int64 indices of the ``k`` largest ``|v|``, ties by smaller index (METHODS.md 1.1)."""
    n = v.shape[0]
    out = np.empty(min(k, n), dtype=np.int64)
    _topk.topk_select(v, min(k, n), _topk_hist(), out)
    return out


_HIST: list[np.ndarray] = []


def _topk_hist() -> np.ndarray:
    """The int32 histogram scratch of ``topk_select`` (512 KB), allocated once per process."""
    if not _HIST:
        _HIST.append(np.empty(4 * _topk.TOPK_BINS, dtype=np.int32))
    return _HIST[0]


def rank_order(values: np.ndarray) -> np.ndarray:
    """Permutation sorting ``values`` (given in increasing index order) by ``|v|`` descending,
    ties by index: the rank order of METHODS.md 1.2."""
    n = values.shape[0]
    keys = np.empty(n, dtype=np.uint32)
    _topk.magnitude_keys(np.ascontiguousarray(values, dtype=np.float32), keys)
    # (key, index) in one uint64: unique, so any sort gives the stable order of the keys, and
    # NumPy's default 64-bit argsort is its vectorised one (a stable uint32 sort is a timsort)
    wide = (keys.astype(np.uint64) << np.uint64(32)) | np.arange(n, dtype=np.uint64)
    return np.argsort(wide)


def encode_positions(idx: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """``(pos_mode, bytes)`` of sorted ``idx`` under ``n``: the smaller of varint and bitmap."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    nv = int(_varint.varint_nbytes(idx))
    if nv <= bitmap_nbytes(n):
        buf = np.empty(nv, dtype=np.uint8)
        _varint.varint_encode(idx, buf)
        return POS_VARINT, buf
    buf = np.empty(bitmap_nbytes(n), dtype=np.uint8)
    _varint.bitmap_encode(idx, buf)
    return POS_BITMAP, buf


def check_pos_bytes(mode: int, pos_bytes: int, k: int, n: int, what: str) -> None:
    """Validate a position section's mode and declared length before it is read."""
    if mode == POS_BITMAP:
        if pos_bytes != bitmap_nbytes(n):
            raise WireFormatError(f"{what}: pos_bytes = {pos_bytes}, a bitmap of {n} bits has "
                                  f"{bitmap_nbytes(n)}")
    elif mode == POS_VARINT:
        if not k <= pos_bytes <= bitmap_nbytes(n):
            raise WireFormatError(f"{what}: pos_bytes = {pos_bytes} for {k} varint positions, "
                                  f"expected {k}..{bitmap_nbytes(n)}")
    else:
        raise WireFormatError(f"{what}: pos_mode = {mode}, expected 0 (varint) or 1 (bitmap)")


def check_status(status: int, what: str, k: int, n: int) -> None:
    """Raise ``WireFormatError`` for a non-zero kernel status code."""
    if status != _varint.OK:
        text = _varint.STATUS_TEXT.get(int(status), f"status {status}")
        raise WireFormatError(f"{what}: {text} (k = {k}, D = {n})")


def decode_positions(mode: int, buf, k: int, n: int, what: str) -> np.ndarray:
    """Validate and decode ``k`` sorted positions under ``n`` (errors name ``what``)."""
    buf = np.frombuffer(buf, dtype=np.uint8)
    check_pos_bytes(mode, buf.shape[0], k, n, what)
    out = np.empty(k, dtype=np.int64)
    if mode == POS_VARINT:
        status = _varint.varint_decode(buf, k, n, out)
    else:
        status = _varint.bitmap_decode(buf, k, n, out)
    check_status(status, what, k, n)
    return out


def rice_decode(buf, nbits: int, b: int, k: int, n: int, what: str) -> np.ndarray:
    """Validate and decode ``k`` sorted positions from a Golomb-Rice stream of ``nbits`` bits."""
    buf = np.frombuffer(buf, dtype=np.uint8)
    if buf.shape[0] != (nbits + 7) // 8:
        raise WireFormatError(f"{what}: {buf.shape[0]} bytes for {nbits} bits")
    if k > nbits:
        raise WireFormatError(f"{what}: {nbits} bits cannot hold {k} positions")
    out = np.empty(k, dtype=np.int64)
    check_status(_golomb.rice_decode(buf, nbits, b, k, n, out), what, k, n)
    return out

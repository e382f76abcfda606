"""Weight clustering: the FedCompress model encoding ME (METHODS.md 3.4 item 1 and 3.5).

Tensors are laid out in model order; a *layout* says, per tensor, its element count and whether
it is clustered. On the wire (every section 4-byte aligned, little-endian)::

    clustered tensor:  u8 k | u8[3] 0 | f32[k] codebook | ceil(numel * ceil(log2 k) / 8) bytes, pad4
    other tensor:      f32[numel]

Cluster ids are bit-packed LSB first (METHODS.md 0.5). Codebook entries of empty clusters are
sent too. Theoretical bits: ``sum_clustered (32 k + numel ceil(log2 k)) + 32 sum_other numel``.

The codec ``"clustered"`` runs k-means++ (Philox KMEANS_INIT, stream 0, ``sub_id`` = tensor
index, keyed by the message seed) and ``iters`` Lloyd steps per clustered tensor. FedCompress
(:mod:`fedsqueeze.methods.fedcompress`) instead hands its trained codebooks and ids to
:func:`encode_parts`, and reads messages with :func:`read_parts`.

>>> import numpy as np
>>> c = Clustered(k=4, layout=[[6, True], [2, False]])
>>> x = np.array([0, 0, 1, 1, 5, 5, 0.5, -0.5], np.float32)
>>> enc, _ = c.encode(x, seed=0)
>>> c.decode(c.parse(enc.payload(), 8)).tolist(), enc.nbytes
([0.0, 0.0, 1.0, 1.0, 5.0, 5.0, 0.5, -0.5], 32)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import rng
from ..comm.wire import SectionReader, pad4
from ..errors import WireFormatError
from ..kernels.cpu import bitpack as _bp
from ..kernels.cpu import kmeans as _k
from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register

__all__ = ["Clustered", "K_MIN", "K_MAX", "index_width", "packed_nbytes", "normalize_layout",
           "kmeans_1d", "pack_ids", "unpack_ids", "encode_parts", "read_parts", "decode_parts",
           "me_nbytes", "me_bits"]

K_MIN, K_MAX = 2, 255
_PRE = struct.Struct("<B3x")

Layout = tuple[tuple[int, bool], ...]
"""``((numel, clustered), ...)`` in model order."""

Part = Any
"""A clustered tensor as ``(codebook f32[k], ids u8[numel])``, any other as ``f32[numel]``."""


def index_width(k: int) -> int:
    """``ceil(log2 k)``: bits per cluster id."""
    return (int(k) - 1).bit_length()


def packed_nbytes(numel: int, k: int) -> int:
    """Bytes of ``numel`` packed ids of a ``k``-entry codebook (before the pad to 4)."""
    return (numel * index_width(k) + 7) // 8


def normalize_layout(layout: Sequence[Sequence[Any]] | None, n: int | None = None) -> Layout:
    """Validate a layout (``None`` = one clustered tensor of ``n`` elements)."""
    if layout is None:
        if n is None:
            raise ValueError("layout = None needs the vector length n")
        return ((int(n), True),)
    out = []
    for i, item in enumerate(layout):
        if len(item) != 2 or isinstance(item[0], bool) or not isinstance(item[1], bool):
            raise ValueError(f"layout[{i}] = {item!r}, expected [numel:int, clustered:bool]")
        if int(item[0]) != item[0] or item[0] < 1:
            raise ValueError(f"layout[{i}] numel = {item[0]!r}, expected an integer >= 1")
        out.append((int(item[0]), bool(item[1])))
    if not out:
        raise ValueError("layout is empty")
    if n is not None and sum(m for m, _ in out) != n:
        raise ValueError(f"layout holds {sum(m for m, _ in out)} elements, the vector {n}")
    return tuple(out)


def _check_k(k: int, what: str = "k") -> int:
    if isinstance(k, bool) or int(k) != k or not K_MIN <= k <= K_MAX:
        raise ValueError(f"{what} = {k!r}, expected an integer in [{K_MIN}, {K_MAX}]")
    return int(k)


def kmeans_1d(x: np.ndarray, k: int, *, seed: int, sub_id: int = 0, iters: int = 0,
              stream: int = 0, round: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means++ seeding (Philox KMEANS_INIT) plus up to ``iters`` Lloyd steps on a 1-D tensor.

    Parameters
    ----------
    x : ndarray
        float32 values (any shape; flattened).
    k : int
        Clusters, in ``[2, 255]``. With fewer distinct values than ``k`` some centres repeat
        (their clusters stay empty).
    seed, stream, round, sub_id : int
        Philox keys of the ``k`` seeding uniforms.
    iters : int
        Lloyd steps after seeding (0 = seeding only, as tfmot's KMEANS_PLUS_PLUS).

    Returns
    -------
    codebook : ndarray of float32, shape (k,)
    ids : ndarray of uint8, nearest codebook entry of every element (ties: lowest id)
    """
    k = _check_k(k)
    v = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    if v.size == 0:
        raise ValueError("kmeans_1d needs at least one value")
    if iters < 0:
        raise ValueError(f"iters = {iters}, expected >= 0")
    u = rng.uniform53(seed, purpose=rng.Purpose.KMEANS_INIT, stream=stream, round=round,
                      sub_id=sub_id, n=k)
    codebook = np.empty(k, np.float32)
    _k.kmeanspp_init(v, u, np.empty(v.size, np.float64), codebook)
    ids = np.full(v.size, K_MAX, np.uint8)
    _k.lloyd_1d(v, codebook, ids, np.empty(k, np.float64), np.empty(k, np.int64), int(iters))
    return codebook, ids


def pack_ids(ids: np.ndarray, k: int) -> np.ndarray:
    """Bit-pack cluster ids at ``ceil(log2 k)`` bits (u8[``packed_nbytes``])."""
    out = np.empty(packed_nbytes(ids.shape[0], k), np.uint8)
    _bp.pack_bits(np.ascontiguousarray(ids, dtype=np.uint8), index_width(k), out)
    return out


def unpack_ids(packed, numel: int, k: int, what: str = "ids") -> np.ndarray:
    """Unpack and validate ids (``WireFormatError`` for an id ``>= k`` or non-zero tail bits)."""
    buf = np.frombuffer(packed, dtype=np.uint8)
    if buf.shape[0] != packed_nbytes(numel, k):
        raise WireFormatError(f"{what}: {buf.shape[0]} bytes, expected {packed_nbytes(numel, k)}")
    ids = np.empty(numel, np.uint8)
    used = (numel * index_width(k)) % 8
    if used and int(buf[-1]) >> used:
        raise WireFormatError(f"{what}: non-zero unused bits after the last id")
    _bp.unpack_bits(buf, index_width(k), numel, ids)
    if numel and int(ids.max()) >= k:
        raise WireFormatError(f"{what}: cluster id {int(ids.max())} >= k = {k}")
    return ids


def encode_parts(parts: Sequence[Part], layout: Layout) -> tuple[list, float]:
    """Sections and theoretical bits of ME for tensors already clustered (or dense)."""
    if len(parts) != len(layout):
        raise ValueError(f"{len(parts)} tensors for a layout of {len(layout)}")
    sections: list = []
    bits = 0.0
    for i, (part, (numel, clustered)) in enumerate(zip(parts, layout, strict=True)):
        if clustered:
            codebook, ids = part
            codebook = np.ascontiguousarray(codebook, dtype="<f4")
            k = _check_k(codebook.shape[0], f"tensor {i}: k")
            if ids.shape != (numel,):
                raise ValueError(f"tensor {i}: {ids.shape} ids, expected ({numel},)")
            sections += [_PRE.pack(k), codebook, pack_ids(ids, k)]
            bits += 32.0 * k + numel * index_width(k)
        else:
            dense = np.ascontiguousarray(part, dtype="<f4").reshape(-1)
            if dense.shape != (numel,):
                raise ValueError(f"tensor {i}: {dense.shape} values, expected ({numel},)")
            sections.append(dense)
            bits += 32.0 * numel
    return sections, bits


def read_parts(reader: SectionReader, layout: Layout, *, k: int | None = None
               ) -> tuple[list[Part], list]:
    """Parse ME from ``reader`` (every length checked first); returns ``(parts, sections)``.

    ``k`` given: every clustered tensor must use exactly ``k`` centroids.
    """
    parts: list[Part] = []
    sections: list = []
    for i, (numel, clustered) in enumerate(layout):
        if clustered:
            pre = reader.bytes(_PRE.size, f"tensor {i} k")
            (kt,) = _PRE.unpack(pre)
            if not K_MIN <= kt <= K_MAX or (k is not None and kt != k):
                raise WireFormatError(f"{reader.what}: tensor {i} has k = {kt}, expected "
                                      f"{k if k is not None else f'{K_MIN}..{K_MAX}'}")
            if pre[1:].tobytes() != b"\0\0\0":
                raise WireFormatError(f"{reader.what}: tensor {i}: non-zero reserved bytes")
            codebook = reader.array("<f4", kt, f"tensor {i} codebook")
            require_finite(codebook, f"{reader.what}: tensor {i} codebook")
            packed = reader.bytes(packed_nbytes(numel, kt), f"tensor {i} ids")
            ids = unpack_ids(packed, numel, kt, f"{reader.what}: tensor {i} ids")
            parts.append((codebook, ids))
            sections += [pre, codebook, packed]
        else:
            dense = reader.array("<f4", numel, f"tensor {i} values")
            require_finite(dense, f"{reader.what}: tensor {i} values")
            parts.append(dense)
            sections.append(dense)
    return parts, sections


def decode_parts(parts: Sequence[Part], layout: Layout, out: np.ndarray) -> np.ndarray:
    """Write the float32 tensors of ``parts`` into ``out`` (sized by the caller)."""
    pos = 0
    for part, (numel, clustered) in zip(parts, layout, strict=True):
        if clustered:
            codebook, ids = part
            _k.gather(np.ascontiguousarray(codebook, dtype=np.float32), ids, out[pos:pos + numel])
        else:
            out[pos:pos + numel] = part
        pos += numel
    return out


def me_nbytes(layout: Layout, k: int) -> int:
    """Wire bytes of ME when every clustered tensor uses ``k`` centroids."""
    return sum(4 + 4 * k + pad4(packed_nbytes(m, k)) if c else 4 * m for m, c in layout)


def me_bits(layout: Layout, k: int) -> float:
    """Theoretical bits of ME at ``k`` centroids per clustered tensor."""
    return float(sum(32 * k + m * index_width(k) if c else 32 * m for m, c in layout))


@register
class Clustered(Compressor):
    """Per-tensor weight clustering: codebook + bit-packed cluster ids; other tensors float32.

    Parameters
    ----------
    k : int
        Centroids per clustered tensor, in ``[2, 255]``.
    iters : int
        Lloyd steps after k-means++ seeding.
    layout : list of [numel, clustered], optional
        Tensors of the vector in order.
    shapes : list of list of int, optional
        Tensor shapes in model order (the FL layer fills them in); used when ``layout`` is
        ``None``: tensors with two or more dimensions (weights) are clustered, 1-D ones (biases,
        norms) stay float32. With neither, the whole vector is one clustered tensor.
    """

    codec_id = "clustered"
    codec_version = 1

    def __init__(self, *, k: int = 8, iters: int = 10,
                 layout: Sequence[Sequence[Any]] | None = None,
                 shapes: Sequence[Sequence[int]] | None = None) -> None:
        self.k = _check_k(k)
        if isinstance(iters, bool) or int(iters) != iters or not 0 <= iters <= 1000:
            raise ValueError(f"iters = {iters!r}, expected an integer in [0, 1000]")
        self.iters = int(iters)
        self.shapes = None
        if shapes is not None:
            if not shapes or any(not s or any(isinstance(d, bool) or int(d) != d or d < 1
                                              for d in s) for s in shapes):
                raise ValueError(f"shapes = {shapes!r}, expected non-empty lists of ints >= 1")
            self.shapes = [[int(d) for d in s] for s in shapes]
        if layout is not None:
            self.layout: Layout | None = normalize_layout(layout)
        elif self.shapes is not None:
            self.layout = tuple((math.prod(s), len(s) >= 2) for s in self.shapes)
        else:
            self.layout = None
        self._explicit = layout is not None

    def _params(self) -> dict[str, Any]:
        lay = [[m, c] for m, c in self.layout] if self._explicit and self.layout else None
        return {"k": self.k, "iters": self.iters, "layout": lay, "shapes": self.shapes}

    def _layout(self, n: int) -> Layout:
        if self.layout is None:
            return normalize_layout(None, n)
        if sum(m for m, _ in self.layout) != n:
            raise ValueError(f"layout holds {sum(m for m, _ in self.layout)} elements, got {n}")
        return self.layout

    def encode(self, x, *, seed: int, state: Any = None) -> tuple[Encoded, Any]:
        v = as_flat_f32(x)
        layout = self._layout(v.shape[0])
        parts: list[Part] = []
        pos = 0
        for i, (numel, clustered) in enumerate(layout):
            seg = v[pos:pos + numel]
            parts.append(kmeans_1d(seg, self.k, seed=seed, sub_id=i, iters=self.iters)
                         if clustered else seg)
            pos += numel
        sections, bits = encode_parts(parts, layout)
        return Encoded({"k": self.k, "bits": bits}, tuple(sections), v.shape[0]), state

    def parse(self, payload, n: int) -> Encoded:
        try:
            layout = self._layout(n)
        except ValueError as exc:
            raise WireFormatError(f"clustered: {exc}") from None
        r = SectionReader(payload, self.codec_id)
        _, sections = read_parts(r, layout, k=self.k)
        r.finish()
        return Encoded({"k": self.k, "bits": me_bits(layout, self.k)}, tuple(sections), n)

    def decode(self, enc: Encoded, *, out: np.ndarray | None = None) -> np.ndarray:
        out = check_out(out, enc.n)
        layout = self._layout(enc.n)
        parts: list[Part] = []
        it = iter(enc.sections)
        for numel, clustered in layout:
            if clustered:
                pre, codebook, packed = next(it), next(it), next(it)
                (kt,) = _PRE.unpack(bytes(memoryview(pre).cast("B")))
                cb = np.frombuffer(codebook, dtype="<f4", count=kt)
                parts.append((cb, unpack_ids(packed, numel, kt)))
            else:
                parts.append(np.frombuffer(next(it), dtype="<f4", count=numel))
        return decode_parts(parts, layout, out)

    def max_nbytes(self, n: int) -> int:
        return me_nbytes(self._layout(n), self.k)

    def theoretical_bits(self, enc: Encoded) -> float:
        return float(enc.meta["bits"])

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        return {"k": float(self.k)}

"""Payloads of the split-learning messages (METHODS.md 5.5). Bytes only: no torch, no MPI.

Every section starts 4-byte aligned; all scalars little-endian::

    DOWN_MODEL (prefix)  f32[D_c]
    SPLIT_ACT            u16 B | u16 q | u16 R | u16 L_eff | u32 d_a | u8 label_bits | u8 grouping
                         | u16 step | f32[R L_eff m] centroids
                         | ceil(B q ceil(log2 L_eff) / 8) bytes codes, pad4
                         | ceil(B label_bits / 8) bytes labels, pad4
    SPLIT_ACT (dense)    the same preamble with q = R = L_eff = 0 | f32[B d_a] | labels, pad4
    SPLIT_GRAD           u8 format | u8[3] 0 | dense_fp32: f32[B d_a]; dense_fp16: f16[B d_a], pad4;
                         codebook: f32[R L_eff m] per-centroid gradient sums
    UP_UPDATE (prefix)   u32 n_c | f32[D_c]

``step`` is the 1-based local step of the round (``/comm`` logs the same number); METHODS.md 5.5
leaves these two bytes zero, STYLE.md section 4 puts the step there. Labels are bit-packed at
``ceil(log2 #classes)`` bits, LSB first. Receivers check every preamble field against what the
run's config and the lockstep schedule predict, and every section length, before allocating;
float sections (activations, gradients, prefixes) must be finite.

>>> from fedsqueeze.compress.activations import GPQ
>>> g = GPQ(q=64, R=1, L=16).geometry(32, 1024)
>>> act_payload_nbytes(32, 1024, 4, g) + 24          # METHODS.md 5.5 worked example
2104
>>> [grad_payload_nbytes(f, 32, 1024, g) + 24 for f in BACKWARD]
[131100, 65564, 1052]
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..comm.wire import SectionReader, pad4
from ..compress.activations import (
    GPQ,
    ActCode,
    Geometry,
    codebook_grad_means,
    codebook_grad_sums,
    to_fp16,
)
from ..compress.base import require_finite
from ..errors import WireFormatError
from ..kernels.cpu import bitpack as _bp

__all__ = ["ACT_PRE", "GRAD_PRE", "UP_PRE", "BACKWARD", "ActSpec", "ActMessage", "label_width",
           "act_sections", "act_payload_nbytes", "parse_act", "grad_sections",
           "grad_payload_nbytes", "grad_theoretical_bits", "parse_grad", "prefix_up_sections",
           "parse_prefix_up", "parse_prefix_down", "sections_pad"]

ACT_PRE = struct.Struct("<HHHHIBBH")  # B, q, R, L_eff, d_a, label_bits, grouping, step
GRAD_PRE = struct.Struct("<BBBB")  # format, 0, 0, 0
UP_PRE = struct.Struct("<I")  # n_c
BACKWARD = {"dense_fp32": 0, "dense_fp16": 1, "codebook": 2}
"""Backward format name -> the SPLIT_GRAD format byte."""


def label_width(num_classes: int) -> int:
    """``ceil(log2 #classes)`` bits per label (0 for a single class)."""
    if not 1 <= num_classes <= 65536:
        raise ValueError(f"num_classes = {num_classes}: labels travel as at most 16 bits")
    return (int(num_classes) - 1).bit_length()


def sections_pad(sections) -> int:
    """Alignment bytes that :func:`~fedsqueeze.comm.wire.join_sections` adds to ``sections``."""
    return sum(pad4(memoryview(s).nbytes) - memoryview(s).nbytes for s in sections)


@dataclass(frozen=True)
class ActSpec:
    """What a SPLIT_ACT receiver expects from the run's config.

    ``gpq`` is ``None`` for uncompressed split learning.
    """

    d_a: int
    num_classes: int
    gpq: GPQ | None = None

    @property
    def label_bits(self) -> int:
        return label_width(self.num_classes)

    def geometry(self, B: int) -> Geometry | None:
        return None if self.gpq is None else self.gpq.geometry(B, self.d_a)


@dataclass(frozen=True, eq=False)
class ActMessage:
    """A parsed SPLIT_ACT: labels and either a GPQ code or the dense activations."""

    B: int
    step: int
    labels: np.ndarray
    code: ActCode | None
    dense: np.ndarray | None
    label_nbytes: int  # the label section with its padding
    pad_bytes: int  # every alignment byte of the payload

    @property
    def theoretical_bits(self) -> float:
        if self.code is not None:
            return self.code.theoretical_bits
        return 32.0 * (0 if self.dense is None else self.dense.size)


# -- SPLIT_ACT ----------------------------------------------------------------------------------
def _label_nbytes(B: int, label_bits: int) -> int:
    return _bp.packed_nbytes(B, label_bits)


def act_payload_nbytes(B: int, d_a: int, label_bits: int, geometry: Geometry | None) -> int:
    """Payload bytes of a SPLIT_ACT (add 24 for the frame)."""
    body = 4 * B * d_a if geometry is None else (geometry.centroid_nbytes
                                                 + pad4(geometry.code_nbytes))
    return ACT_PRE.size + body + pad4(_label_nbytes(B, label_bits))


def act_sections(*, step: int, labels: np.ndarray, label_bits: int, d_a: int,
                 code: ActCode | None = None, dense: np.ndarray | None = None) -> tuple:
    """Sections of a SPLIT_ACT: a GPQ ``code`` or ``dense`` (``B x d_a`` float32), and labels."""
    if (code is None) == (dense is None):
        raise ValueError("pass exactly one of code and dense")
    B = int(labels.shape[0])
    if not 1 <= step <= 0xFFFF:
        raise ValueError(f"step = {step}: the preamble holds a u16 (1..65535)")
    packed = np.zeros(_label_nbytes(B, label_bits), np.uint8)
    if label_bits:
        _bp.pack_bits(np.ascontiguousarray(labels, dtype=np.uint16), label_bits, packed)
    if code is not None:
        g = code.geometry
        if g.B != B or g.d_a != d_a:
            raise ValueError(f"code is {g.B} x {g.d_a}, labels {B}, d_a {d_a}")
        pre = ACT_PRE.pack(B, g.q, g.R, g.L_eff, d_a, label_bits, g.grouping, step)
        return (pre, *code.sections, packed)
    assert dense is not None
    if dense.shape != (B, d_a) or dense.dtype != np.float32:
        raise ValueError(f"dense activations must be float32 {(B, d_a)}, got {dense.dtype} "
                         f"{dense.shape}")
    return (ACT_PRE.pack(B, 0, 0, 0, d_a, label_bits, 0, step), np.ascontiguousarray(dense),
            packed)


def parse_act(payload, spec: ActSpec, *, B: int, step: int) -> ActMessage:
    """Validate and read a SPLIT_ACT payload of batch size ``B`` at ``step``.

    Raises :class:`~fedsqueeze.errors.WireFormatError` naming the first field that differs
    from what the config and the schedule predict, or a bad section length, before allocating.
    """
    r = SectionReader(payload, "SPLIT_ACT")
    b, q, R, L_eff, d_a, lb, grouping, st = r.struct(ACT_PRE, "preamble")
    g = spec.geometry(B)
    want_q, want_R, want_L, want_g = (0, 0, 0, 0) if g is None else (g.q, g.R, g.L_eff,
                                                                      g.grouping)
    for name, got, want in (("B", b, B), ("step", st, step), ("d_a", d_a, spec.d_a),
                            ("q", q, want_q), ("R", R, want_R), ("L_eff", L_eff, want_L),
                            ("label_bits", lb, spec.label_bits), ("grouping", grouping, want_g)):
        if got != want:
            raise WireFormatError(f"SPLIT_ACT: {name} = {got}, expected {want}")
    need = act_payload_nbytes(B, spec.d_a, spec.label_bits, g)
    if memoryview(payload).nbytes != need:
        raise WireFormatError(f"SPLIT_ACT: payload of {memoryview(payload).nbytes} bytes, "
                              f"expected {need}")
    code = dense = None
    if g is None:
        raw_act = r.array("<f4", B * spec.d_a, "activations")
        require_finite(raw_act, "SPLIT_ACT: activations")
        dense = np.array(raw_act.reshape(B, spec.d_a), dtype=np.float32)
        pad = 0
    else:
        assert spec.gpq is not None
        code = spec.gpq.read(r, g)
        pad = pad4(g.code_nbytes) - g.code_nbytes
    nl = _label_nbytes(B, spec.label_bits)
    raw = np.frombuffer(r.bytes(nl, "labels"), dtype=np.uint8)
    r.finish()
    labels = np.zeros(B, np.uint16)
    if spec.label_bits:
        _bp.unpack_bits(raw, spec.label_bits, B, labels)
        tail = B * spec.label_bits % 8
        if tail and raw[-1] >> tail:
            raise WireFormatError("SPLIT_ACT: non-zero padding bits after the labels")
    if int(labels.max()) >= spec.num_classes:
        raise WireFormatError(f"SPLIT_ACT: label {int(labels.max())} >= {spec.num_classes} "
                              "classes")
    pad += pad4(nl) - nl
    return ActMessage(B, st, labels.astype(np.int64), code, dense, pad4(nl), pad)


# -- SPLIT_GRAD ---------------------------------------------------------------------------------
def grad_payload_nbytes(fmt: str, B: int, d_a: int, geometry: Geometry | None) -> int:
    """Payload bytes of a SPLIT_GRAD in format ``fmt`` (add 24 for the frame)."""
    if fmt == "dense_fp32":
        return GRAD_PRE.size + 4 * B * d_a
    if fmt == "dense_fp16":
        return GRAD_PRE.size + pad4(2 * B * d_a)
    if fmt == "codebook" and geometry is not None:
        return GRAD_PRE.size + geometry.centroid_nbytes
    raise ValueError(f"backward format {fmt!r} (codebook needs a GPQ geometry)")


def grad_theoretical_bits(fmt: str, B: int, d_a: int, geometry: Geometry | None) -> float:
    """Bits the paper would count: 32 or 16 per element, or the codebook's ``32 R L m``."""
    if fmt == "codebook" and geometry is not None:
        return 32.0 * geometry.R * geometry.L_eff * geometry.m
    return (32.0 if fmt == "dense_fp32" else 16.0) * B * d_a


def grad_sections(fmt: str, grad: np.ndarray, code: ActCode | None = None) -> tuple:
    """Sections of a SPLIT_GRAD carrying ``grad`` (``B x d_a`` float32, ``dl/dz_tilde``)."""
    pre = GRAD_PRE.pack(BACKWARD[fmt], 0, 0, 0)
    if fmt == "dense_fp32":
        return (pre, np.ascontiguousarray(grad, dtype=np.float32))
    if fmt == "dense_fp16":
        return (pre, to_fp16(grad))
    if code is None:
        raise ValueError("the codebook backward needs the batch's GPQ code")
    return (pre, codebook_grad_sums(code, grad))


def parse_grad(payload, fmt: str, *, B: int, d_a: int, code: ActCode | None = None
               ) -> np.ndarray:
    """Validate a SPLIT_GRAD and return the gradient the client uses (``B x d_a`` float32).

    ``codebook`` gradients become per-cluster means of the client's own codes.
    """
    if code is not None and (code.geometry.B, code.geometry.d_a) != (B, d_a):
        raise ValueError(f"code is {code.geometry.B} x {code.geometry.d_a}, expected {B} x {d_a}")
    r = SectionReader(payload, "SPLIT_GRAD")
    f, *reserved = r.struct(GRAD_PRE, "format")
    if f != BACKWARD[fmt]:
        raise WireFormatError(f"SPLIT_GRAD: format = {f}, expected {BACKWARD[fmt]} ({fmt})")
    if any(reserved):
        raise WireFormatError(f"SPLIT_GRAD: reserved bytes {reserved}, expected zeros")
    geometry = None if code is None else code.geometry
    need = grad_payload_nbytes(fmt, B, d_a, geometry)
    if memoryview(payload).nbytes != need:
        raise WireFormatError(f"SPLIT_GRAD: payload of {memoryview(payload).nbytes} bytes, "
                              f"expected {need}")
    if fmt == "dense_fp32":
        raw = r.array("<f4", B * d_a, "gradient")
        require_finite(raw, "SPLIT_GRAD: gradient")
        out = raw.reshape(B, d_a).astype(np.float32)
    elif fmt == "dense_fp16":
        raw = r.array("<f2", B * d_a, "gradient")
        require_finite(raw, "SPLIT_GRAD: gradient")
        out = raw.reshape(B, d_a).astype(np.float32)
    else:
        assert code is not None and geometry is not None
        sums = r.array("<f4", geometry.R * geometry.L_eff * geometry.m, "codebook gradient")
        require_finite(sums, "SPLIT_GRAD: codebook gradient")
        out = codebook_grad_means(code, sums)  # |mean| <= |sum|: finite
    r.finish()
    return out


# -- prefixes -----------------------------------------------------------------------------------
def prefix_up_sections(n: int, w: np.ndarray) -> tuple:
    """``u32 n_c | f32[D_c]``."""
    return (UP_PRE.pack(int(n)), np.ascontiguousarray(w, dtype=np.float32))


def parse_prefix_up(payload, d_c: int, n_expected: int) -> np.ndarray:
    """The client's trained prefix (checks ``n_c`` and the length)."""
    r = SectionReader(payload, "UP_UPDATE (prefix)")
    (n,) = r.struct(UP_PRE, "n_c")
    if n != n_expected:
        raise WireFormatError(f"UP_UPDATE: n_c = {n}, the client holds {n_expected} samples")
    w = r.array("<f4", d_c, "prefix")
    r.finish()
    require_finite(w, "UP_UPDATE (prefix)")
    return w


def parse_prefix_down(payload, d_c: int) -> np.ndarray:
    """The round's prefix (``f32[D_c]``)."""
    r = SectionReader(payload, "DOWN_MODEL (prefix)")
    w = r.array("<f4", d_c, "prefix")
    r.finish()
    require_finite(w, "DOWN_MODEL (prefix)")
    return w


"""Hostile split-learning frames (SPLIT_ACT, SPLIT_GRAD, prefixes): regression tests of what the
frame fuzzer found (``benchmarks/fuzz_frames.py``, targets ``split_*``; docs/security.md 4).

Each case goes through the receive path of the fuzz target (``unpack_frame`` -> round/client ->
``split.payloads.parse_*`` -> GPQ decode) and must raise ``WireFormatError``.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.errors import WireFormatError
from fedsqueeze.split import payloads as SP

from ._engine import fuzz, target

F32 = {"nan": 0x7FC00000, "-nan": 0xFFC00000, "inf": 0x7F800000, "-inf": 0xFF800000}
F16 = {"nan": 0x7E00, "-nan": 0xFE00, "inf": 0x7C00, "-inf": 0xFC00}
U32 = struct.Struct("<I")


def refix(f: bytearray) -> bytes:
    U32.pack_into(f, 16, len(f) - wire.HEADER_SIZE)
    U32.pack_into(f, 20, zlib.crc32(f[wire.HEADER_SIZE:]))
    return bytes(f)


def rejected(name: str, frame: bytes, match: str) -> None:
    with pytest.raises(WireFormatError, match=match):
        target(name).decode(frame)


# float sections: (target, offset of the section in the frame, word size)
ACT_VALUES = wire.HEADER_SIZE + SP.ACT_PRE.size
GRAD_VALUES = wire.HEADER_SIZE + SP.GRAD_PRE.size
PREFIX_VALUES = wire.HEADER_SIZE + SP.UP_PRE.size
CASES = {
    "split_act_dense": (ACT_VALUES, 4, "activations"),
    "split_grad_fp32": (GRAD_VALUES, 4, "gradient"),
    "split_grad_fp16": (GRAD_VALUES, 2, "gradient"),
    "split_grad_codebook": (GRAD_VALUES, 4, "codebook gradient"),
    "split_prefix": (PREFIX_VALUES, 4, "prefix"),
    "split_act_gpq": (ACT_VALUES, 4, "centroid"),
}


@pytest.mark.parametrize("value", sorted(F32))
@pytest.mark.parametrize("name", sorted(CASES))
def test_non_finite_floats_are_rejected(name, value):
    """Found by the fuzzer: NaN/Inf activations, gradients (fp32, fp16, codebook sums) and
    prefixes were accepted and reached the suffix model, the client's backward or the FedAvg of
    the prefixes."""
    off, size, what = CASES[name]
    for pos in (0, 1, 5):  # first, second and a later element of the section
        f = bytearray(target(name).frames[0])
        at = off + size * pos
        if size == 4:
            U32.pack_into(f, at, F32[value])
        else:
            struct.pack_into("<H", f, at, F16[value])
        rejected(name, refix(f), what)


def test_non_finite_prefix_downlink_is_rejected():
    w = np.ones(fuzz().SPLIT_DC, np.float32)
    w[3] = np.inf
    with pytest.raises(WireFormatError, match="DOWN_MODEL"):
        SP.parse_prefix_down(w.tobytes(), fuzz().SPLIT_DC)


def test_codebook_gradient_of_huge_finite_sums_stays_finite():
    """Means are sums divided by counts >= 1: finite sums give finite means."""
    f = bytearray(target("split_grad_codebook").frames[0])
    n = (len(f) - GRAD_VALUES) // 4
    for i in range(n):
        U32.pack_into(f, GRAD_VALUES + 4 * i, 0x7F7FFFFF)  # FLT_MAX
    g = target("split_grad_codebook").decode(refix(f))
    assert g.dtype == np.float32 and np.isfinite(g).all()


@pytest.mark.parametrize("name", sorted(fuzz().EXTRA_TARGETS))
def test_valid_frames_decode_and_truncations_are_rejected(name):
    t = target(name)
    for f in t.frames:
        assert t.check(t.decode(f)) == ""
    f = t.frames[0]
    for cut in range(wire.HEADER_SIZE, len(f), max(1, (len(f) - wire.HEADER_SIZE) // 40)):
        with pytest.raises(WireFormatError):
            t.decode(refix(bytearray(f[:cut])) if name != "frame" else f[:cut])


@pytest.mark.parametrize("name", sorted(n for n in fuzz().EXTRA_TARGETS if n != "frame"))
def test_huge_declared_sizes_are_rejected_before_allocating(name):
    """Every u16/u32 field of the preamble set to its maximum (B, q, R, L_eff, d_a, n_c...)."""
    import tracemalloc

    t = target(name)
    for off in range(t.body, min(len(t.frames[0]), t.body + 16), 2):
        f = bytearray(t.frames[0])
        struct.pack_into("<H", f, off, 0xFFFF)
        tracemalloc.start()
        try:
            try:
                out = t.decode(refix(f))
            except WireFormatError:
                out = None
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert out is None or t.check(out) == "", (name, off)
        assert peak <= fuzz().ALLOC_LIMIT, (name, off, peak)

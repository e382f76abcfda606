"""Sign and ternary kernels on the device, the fixed-order statistics partials, and the
signsgd / ef_signsgd / terngrad codecs encoding straight from device arrays."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fedsqueeze.compress.sign import EFSignSGD, SignSGD
from fedsqueeze.compress.terngrad import TernGrad
from fedsqueeze.kernels import dispatch
from fedsqueeze.kernels.cpu import signs as cpu

from .harness import assert_same_bytes, grid, shapes

gpu = pytest.importorskip("fedsqueeze.kernels.cuda.signs")

BOUNDS = np.array([0, 3, 4, 13, 13, 300, 700], np.int64)  # ragged, with an empty segment
N = int(BOUNDS[-1])
PARAMS = (0xCAFEF00D, 0x5EED, 14 << 24)


def _x(seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(N).astype(np.float32)
    x[::11] = 0.0
    x[5::13] = -0.0
    return x


def _dev(a):
    return cuda.to_device(np.ascontiguousarray(a))


@shapes
def test_pack_and_unpack_signs(limits):
    x = _x()
    want = np.zeros((N + 7) // 8, np.uint8)
    cpu.pack_signs(x, want)
    got = _dev(np.full(want.shape[0], 0x5A, np.uint8))
    with grid(limits):
        gpu.pack_signs(_dev(x), got)
    assert_same_bytes(want, got, "signs")
    scales = np.arange(1, len(BOUNDS), dtype=np.float32) / 3
    dec = np.zeros(N, np.float32)
    cpu.unpack_signs(want, BOUNDS, scales, dec)
    ddec = _dev(np.zeros(N, np.float32))
    with grid(limits):
        gpu.unpack_signs(_dev(want), _dev(BOUNDS), _dev(scales), ddec)
    assert_same_bytes(dec, ddec, "unpacked signs")


@shapes
def test_ternary_encode_and_decode(limits):
    x = _x(1)
    clips = np.linspace(0.5, 2.0, len(BOUNDS) - 1).astype(np.float32)
    scales = np.minimum(clips, np.float32(1.5))
    want = np.zeros((N + 3) // 4, np.uint8)
    dispatch.ternary_encode(x, BOUNDS, clips, scales, PARAMS, want)
    got = _dev(np.full(want.shape[0], 0x77, np.uint8))
    with grid(limits):
        gpu.ternary_encode(_dev(x), _dev(BOUNDS), _dev(clips), _dev(scales), PARAMS, got)
    assert_same_bytes(want, got, "ternary codes")
    dec = np.zeros(N, np.float32)
    assert cpu.ternary_decode(want, BOUNDS, scales, dec) == 0
    ddec = _dev(np.zeros(N, np.float32))
    with grid(limits):
        assert gpu.ternary_decode(_dev(want), _dev(BOUNDS), _dev(scales), ddec) == 0
    assert_same_bytes(dec, ddec, "ternary decode")


@shapes
def test_segment_partials(limits):
    x = np.random.default_rng(2).standard_normal(9000).astype(np.float32) * np.float32(100)
    pieces = cpu.piece_bounds(np.array([0, 5, 9000], np.int64))
    want = np.zeros((pieces.shape[0], 4))
    cpu.segment_partials(x, pieces, want)
    got = _dev(np.zeros((pieces.shape[0], 4)))
    with grid(limits):
        gpu.segment_partials(_dev(x), _dev(pieces), got)
    assert_same_bytes(want, got, "partials")


@pytest.mark.parametrize("codec", [SignSGD(), EFSignSGD(segments=[3, 1, 9, 287, 400]),
                                   TernGrad(segments=[13, 287, 400])],
                         ids=["signsgd", "ef_signsgd", "terngrad"])
def test_codec_device_path(codec):
    x = _x(3)
    host_enc, _ = codec.encode(x, seed=5)
    with grid((64, 2)):
        dev_enc, _ = codec.encode(_dev(x), seed=5)
    assert dev_enc.payload() == host_enc.payload()
    out = cuda.device_array(N, np.float32)
    with grid((64, 2)):
        codec.decode(codec.parse(host_enc.payload(), N), out=out)
    assert_same_bytes(codec.decode(host_enc), out, "decoded on the device")

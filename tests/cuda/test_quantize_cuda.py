"""QSGD on the device: norms, codes and decoded floats bit-identical to the CPU kernels, and
the codec's device path (input stays on the device) producing the host path's bytes."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fedsqueeze.compress.adaquant import AdaQuant
from fedsqueeze.compress.qsgd import QSGD
from fedsqueeze.kernels import dispatch
from fedsqueeze.kernels.cpu import quantize as cpu

from .harness import assert_same_bytes, grid, shapes

gpu = pytest.importorskip("fedsqueeze.kernels.cuda.quantize")

KEY = (0x01234567, 0x89ABCDEF)
C3 = 13 << 24


def _x(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    x[::17] = 0.0
    return x


def _cpu_encode(x, s, bucket):
    w = cpu.code_width(s)
    norms = np.zeros(-(-x.shape[0] // bucket), np.float32)
    out = np.zeros((x.shape[0] * w + 7) // 8, np.uint8)
    dispatch.qsgd_encode(x, (s, bucket, w, *KEY, C3), norms, out)
    return norms, out


@shapes
@pytest.mark.parametrize("s,bucket,n", [(1, 64, 1), (2, 64, 333), (7, 100, 801), (255, 8, 90),
                                        (32767, 512, 600)])
def test_encode_matches_cpu(limits, s, bucket, n):
    x = _x(n, seed=s + n)
    want_norms, want = _cpu_encode(x, s, bucket)
    norms = cuda.device_array(want_norms.shape[0], np.float32)
    scales = cuda.device_array(want_norms.shape[0], np.float32)
    out = cuda.to_device(np.full(want.shape[0], 0xA5, np.uint8))
    with grid(limits):
        gpu.qsgd_encode(cuda.to_device(x), (s, bucket, cpu.code_width(s), *KEY, C3), norms, out,
                        scales)
    assert_same_bytes(want_norms, norms, "norms")
    assert_same_bytes(want, out, "codes")


@shapes
@pytest.mark.parametrize("s,bucket,n", [(2, 64, 333), (255, 8, 90)])
def test_decode_matches_cpu(limits, s, bucket, n):
    x = _x(n, seed=n)
    norms, packed = _cpu_encode(x, s, bucket)
    want = np.zeros(n, np.float32)
    params = (s, bucket, cpu.code_width(s))
    assert dispatch.qsgd_decode(packed, norms, params, want) == 0
    got = cuda.to_device(np.zeros(n, np.float32))
    with grid(limits):
        bad = gpu.qsgd_decode(cuda.to_device(packed), cuda.to_device(norms), params, got)
    assert bad == 0
    assert_same_bytes(want, got, "decoded")


def test_decode_counts_invalid_levels():
    packed = np.zeros(3, np.uint8)
    packed[0] = 0b110  # code 6: level 3 > s = 2 (width 3)
    got = cuda.device_array(8, np.float32)
    with grid((32, 1)):
        bad = gpu.qsgd_decode(cuda.to_device(packed), cuda.to_device(np.ones(1, np.float32)),
                              (2, 512, 3), got)
    assert bad == 1


@pytest.mark.parametrize("codec", [QSGD(s=3, bucket=50), AdaQuant(bucket=64)],
                         ids=["qsgd", "adaquant"])
def test_codec_device_path(codec):
    x = _x(500, seed=9)
    host_enc, _ = codec.encode(x, seed=11)
    with grid((64, 2)):
        dev_enc, _ = codec.encode(cuda.to_device(x), seed=11)
    assert dev_enc.payload() == host_enc.payload()
    out = cuda.device_array(500, np.float32)
    with grid((64, 2)):
        assert codec.decode(codec.parse(host_enc.payload(), 500), out=out) is out
    assert_same_bytes(codec.decode(host_enc), out, "decoded on the device")
    with pytest.raises(ValueError):
        codec.decode(host_enc, out=cuda.device_array(499, np.float32))

"""Bit packing on the device: byte-identical to the CPU's per-width loops."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fedsqueeze.kernels.cpu import bitpack as cpu

from .harness import assert_same_bytes, grid, shapes

gpu = pytest.importorskip("fedsqueeze.kernels.cuda.bitpack")


@shapes
@pytest.mark.parametrize("w", [1, 2, 3, 4, 5, 7, 8, 9, 12, 15, 16])
@pytest.mark.parametrize("n", [1, 9, 130])
def test_pack_and_unpack_match_cpu(limits, w, n):
    codes = np.random.default_rng(w * n).integers(0, 2**w, n).astype(np.uint16)
    nbytes = cpu.packed_nbytes(n, w)
    want = np.zeros(nbytes, np.uint8)
    cpu.pack_bits(codes, w, want)
    got = cuda.to_device(np.full(nbytes, 0xA5, np.uint8))
    with grid(limits):
        gpu.pack_bits(cuda.to_device(codes), w, got)
    assert_same_bytes(want, got, "pack_bits")
    back = cuda.to_device(np.zeros(n, np.uint16))
    with grid(limits):
        gpu.unpack_bits(cuda.to_device(want), w, n, back)
    assert_same_bytes(codes, back, "unpack_bits")

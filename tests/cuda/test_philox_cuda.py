"""Philox4x32-10 on the device: Random123 known answers and byte equality with the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fedsqueeze.kernels.cpu import philox as cpu

from .harness import assert_same_bytes, grid, shapes

gpu = pytest.importorskip("fedsqueeze.kernels.cuda.philox")

KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT, ids=["zeros", "ones", "pi"])
def test_known_answers(ctr, key, expected):
    out = cuda.to_device(np.zeros(4, np.uint32))
    with grid((32, 1)):
        gpu.fill_u32(out, *ctr, *key)
    assert tuple(int(v) for v in out.copy_to_host()) == expected


@shapes
@pytest.mark.parametrize("n,c0_start", [(1, 0), (203, 7), (64, 2**32 - 5)])
def test_fill_u32_matches_cpu(limits, n, c0_start):
    args = [np.uint32(v) for v in (c0_start, 3, 4, 13 << 24, 0xDEADBEEF, 0x1234)]
    want = np.zeros(n, np.uint32)
    cpu.fill_u32(want, *args)
    got = cuda.to_device(np.zeros(n, np.uint32))
    with grid(limits):
        gpu.fill_u32(got, *args)
    assert_same_bytes(want, got, "fill_u32")


@shapes
@pytest.mark.parametrize("n", [1, 101])
def test_fill_uniform53_matches_cpu(limits, n):
    args = [np.uint32(v) for v in (1, 2, 2 << 24, 77, 88)]
    want = np.zeros(n, np.float64)
    cpu.fill_uniform53(want, *args)
    got = cuda.to_device(np.zeros(n, np.float64))
    with grid(limits):
        gpu.fill_uniform53(got, *args)
    assert_same_bytes(want, got, "fill_uniform53")

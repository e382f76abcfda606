"""Bit packing (kernels/cpu/bitpack.py) against the NumPy oracle, widths 1..16."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fedsqueeze.kernels import dispatch
from fedsqueeze.kernels.cpu import bitpack as B
from tests import naive

WIDTHS = list(range(1, 17))
SIZES = [0, 1, 7, 8, 9, 63, 1001]


def _codes(n: int, w: int, seed: int, dtype=np.uint16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**w, n).astype(dtype)


@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("n", SIZES)
def test_pack_matches_oracle_and_writes_only_its_bytes(w, n):
    codes = _codes(n, w, seed=100 * w + n)
    nbytes = B.packed_nbytes(n, w)
    out = np.full(nbytes + 5, 0xA5, np.uint8)
    B.pack_bits(codes, w, out)
    np.testing.assert_array_equal(out[:nbytes], naive.pack_bits(codes, w))
    assert (out[nbytes:] == 0xA5).all()


@pytest.mark.parametrize("w", WIDTHS)
@pytest.mark.parametrize("n", SIZES)
def test_unpack_inverts_pack(w, n):
    codes = _codes(n, w, seed=7 * w + n)
    packed = naive.pack_bits(codes, w)
    out = np.full(n + 3, 0xBEEF, np.uint16)
    B.unpack_bits(packed, w, n, out)
    np.testing.assert_array_equal(out[:n], codes)
    assert (out[n:] == 0xBEEF).all()


@pytest.mark.parametrize("w", [1, 3, 4, 9, 16])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.int64])
def test_code_dtypes(w, dtype):
    codes = _codes(37, min(w, 8) if dtype == np.uint8 else w, seed=w, dtype=dtype)
    out = np.zeros(B.packed_nbytes(37, w), np.uint8)
    B.pack_bits(codes, w, out)
    np.testing.assert_array_equal(out, naive.pack_bits(codes, w))


@pytest.mark.parametrize("w", [1, 2, 3, 4, 5, 8, 11, 16])
def test_bits_above_width_are_ignored(w):
    codes = _codes(50, w, seed=w).astype(np.uint32)
    noisy = codes | (np.uint32(0xFFFFFFFF) << np.uint32(w))  # every bit above the width set
    a = np.zeros(B.packed_nbytes(50, w), np.uint8)
    b = np.zeros_like(a)
    B.pack_bits(codes, w, a)
    B.pack_bits(noisy, w, b)
    np.testing.assert_array_equal(a, b)


def test_lsb_first_layout_example():
    # METHODS.md 0.5: value i occupies stream bits [3i, 3i+3), its LSB first; 5, 3, 6 give the
    # stream 1,0,1 | 1,1,0 | 0,1,1 and byte 0 holds stream bits 0..7 with bit 0 as its LSB
    out = np.zeros(2, np.uint8)
    B.pack_bits(np.array([0b101, 0b011, 0b110], np.uint16), 3, out)
    assert out.tolist() == [0b10011101, 0b1]


@pytest.mark.parametrize("w", [3, 7, 13])
def test_group_helpers_round_trip(w):
    codes = _codes(8, w, seed=w)
    lo = hi = np.uint64(0)
    for j in range(8):  # the 8 slots of one group are the unit under test
        lo, hi = B.group_put(lo, hi, codes[j], j, w)
    buf = np.zeros(w, np.uint8)
    B.group_store(lo, hi, buf, 0, w)
    np.testing.assert_array_equal(buf, naive.pack_bits(codes, w))
    lo2, hi2 = B.group_load(buf, 0, w)
    assert [int(B.group_get(lo2, hi2, j, w)) for j in range(8)] == codes.tolist()


def test_dispatch_on_host_arrays():
    codes = _codes(100, 5, seed=1)
    out = np.zeros(B.packed_nbytes(100, 5), np.uint8)
    dispatch.pack_bits(codes, 5, out)
    back = np.zeros(100, np.uint16)
    dispatch.unpack_bits(out, 5, 100, back)
    np.testing.assert_array_equal(back, codes)


KERNEL_FILES = ["cpu/bitpack.py", "cpu/quantize.py", "cpu/signs.py", "cuda/philox.py",
                "cuda/bitpack.py", "cuda/quantize.py", "cuda/signs.py", "dispatch.py"]


@pytest.mark.parametrize("rel", KERNEL_FILES)
def test_no_inline_compiler_flags(rel):
    # STYLE.md 5: Numba flags live only in kernels/config.py
    src = (Path(B.__file__).resolve().parents[1] / rel).read_text()
    assert not re.search(r"jit\([^)]*(fastmath|error_model|parallel|cache)\s*=", src), rel
    assert not re.search(r"NJIT\s*,|\*\*\{\s*\*\*NJIT", src), rel  # no NJIT plus extra flags

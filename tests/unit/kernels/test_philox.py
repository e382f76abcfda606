"""Philox4x32-10: Random123 known answers for the CPU kernels, and the vectorisable variant used
by the quantisers (``kernels/cpu/quantize.py::philox4x32_unrolled``) against the reference
``kernels/cpu/philox.py`` and the NumPy oracle. The CUDA twin runs the same answers in tests/cuda.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.kernels.cpu import philox as P
from fedsqueeze.kernels.cpu import quantize as Q
from tests import naive

# METHODS.md 0.7 (DEShawResearch/random123 tests/kat_vectors): counter, key -> output
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def _u32(*v):
    return [np.uint32(x) for x in v]


@pytest.mark.parametrize("fn", [P.philox4x32, Q.philox4x32_unrolled],
                         ids=["philox4x32", "philox4x32_unrolled"])
@pytest.mark.parametrize("ctr,key,expected", KAT, ids=["zeros", "ones", "pi"])
def test_known_answers(fn, ctr, key, expected):
    assert tuple(int(w) for w in fn(*_u32(*ctr), *_u32(*key))) == expected


@pytest.mark.parametrize("ctr,key,expected", KAT, ids=["zeros", "ones", "pi"])
def test_fill_u32_known_answers(ctr, key, expected):
    out = np.zeros(4, np.uint32)
    P.fill_u32(out, *_u32(*ctr), *_u32(*key))
    assert tuple(int(w) for w in out) == expected


@pytest.mark.parametrize("seed", range(6))
def test_unrolled_equals_reference_on_random_counters(seed):
    row = np.random.default_rng(seed).integers(0, 2**32, 6, dtype=np.uint64).astype(np.uint32)
    expected = naive.philox4x32_np(*(int(v) for v in row))
    assert tuple(map(int, Q.philox4x32_unrolled(*row))) == tuple(int(w) for w in expected)
    assert tuple(map(int, P.philox4x32(*row))) == tuple(int(w) for w in expected)


@pytest.mark.parametrize("n,c0_start", [(1, 0), (7, 5), (64, 2**32 - 3)])
def test_fill_u32_matches_oracle(n, c0_start):
    out = np.empty(n, np.uint32)
    P.fill_u32(out, np.uint32(c0_start), *_u32(1, 2, 13 << 24, 0xDEADBEEF, 42))
    ref = naive.philox_words(n, (0xDEADBEEF, 42), c1=1, c2=2, c3=13 << 24, c0_start=c0_start)
    np.testing.assert_array_equal(out, ref)


def test_unrolled_runs_without_jit():
    # the CUDA simulator and NUMBA_DISABLE_JIT run this source as Python: no overflow warnings
    out = Q.philox4x32_unrolled.py_func(*_u32(*KAT[1][0]), *_u32(*KAT[1][1]))
    assert tuple(int(w) for w in out) == KAT[1][2]

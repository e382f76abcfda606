"""CUDA count sketch kernels against the CPU kernels (run on a GPU or with NUMBA_ENABLE_CUDASIM=1).

Hashing is integer-only and the median query a fixed sequence of float32 operations, so both must
match the CPU bit for bit. Insertion uses atomics: integer-valued inputs (exact float32 sums) must
match bit for bit, general inputs to float32 rounding. Inputs stay small for the simulator.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fedsqueeze import rng
from fedsqueeze.kernels.config import launch_limits
from fedsqueeze.kernels.cpu import sketch as cpu

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda.is_available(), reason="needs a GPU or NUMBA_ENABLE_CUDASIM=1"),
    # the simulator runs the shared Philox rounds as Python on NumPy uint32 scalars, whose
    # wrap-around (intended, mod 2^32) NumPy reports as an overflow
    pytest.mark.filterwarnings("ignore:overflow encountered in scalar add:RuntimeWarning"),
]

gpu = pytest.importorskip("fedsqueeze.kernels.cuda.sketch")

C3 = rng.counter3(rng.Purpose.SKETCH_HASH)
SHAPES = [(32, 1), (8, 3)]  # (threads per block, max blocks): one block, and grid-stride over 3


def params(cols: int, seed: int):
    k0, k1 = rng.key_of(seed)
    return (np.uint32(cols), k0, k1, C3)


def launch(function, *args) -> None:
    function(*args)
    cuda.synchronize()


@pytest.mark.parametrize("limits", SHAPES)
@pytest.mark.parametrize("cols,seed", [(7, 0), (2**31 + 11, 2**40 + 7)])
def test_hashes_byte_identical(limits, cols, seed):
    idx = np.concatenate([np.arange(30), [2**32 - 1]]).astype(np.int64)
    b_cpu = np.empty((3, idx.size), np.int64)
    s_cpu = np.empty((3, idx.size), np.float32)
    cpu.sketch_hashes(idx, b_cpu, s_cpu, params(cols, seed))
    d_b = cuda.to_device(np.full((3, idx.size), -1, np.int64))
    d_s = cuda.to_device(np.zeros((3, idx.size), np.float32))
    with launch_limits(*limits):
        launch(gpu.sketch_hashes, cuda.to_device(idx), d_b, d_s, params(cols, seed))
    assert d_b.copy_to_host().tobytes() == b_cpu.tobytes()
    assert d_s.copy_to_host().tobytes() == s_cpu.tobytes()


@pytest.mark.parametrize("limits", SHAPES)
@pytest.mark.parametrize("seed", [0, 5])
def test_insert_integers_bit_identical(limits, seed):
    g = np.random.default_rng(seed)
    x = g.integers(-8, 9, 40).astype(np.float32)
    t_cpu = np.zeros((3, 5), np.float32)
    cpu.sketch_insert(x, t_cpu, params(5, seed))
    d_t = cuda.to_device(np.zeros((3, 5), np.float32))
    with launch_limits(*limits):
        launch(gpu.sketch_insert, cuda.to_device(x), d_t, params(5, seed))
    assert d_t.copy_to_host().tobytes() == t_cpu.tobytes()


@pytest.mark.parametrize("seed", [1, 2])
def test_insert_floats_close(seed):
    x = np.random.default_rng(seed).standard_normal(40).astype(np.float32)
    t_cpu = np.zeros((3, 6), np.float32)
    cpu.sketch_insert(x, t_cpu, params(6, seed))
    d_t = cuda.to_device(np.zeros((3, 6), np.float32))
    with launch_limits(32, 2):
        launch(gpu.sketch_insert, cuda.to_device(x), d_t, params(6, seed))
    np.testing.assert_allclose(d_t.copy_to_host(), t_cpu, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("limits", SHAPES)
@pytest.mark.parametrize("rows", [3, 4])
def test_query_bit_identical(limits, rows):
    table = np.random.default_rng(rows).standard_normal((rows, 9)).astype(np.float32)
    out_cpu = np.empty(40, np.float32)
    cpu.sketch_query(table, out_cpu, params(9, 3))
    d_out = cuda.to_device(np.full(40, np.nan, np.float32))
    with launch_limits(*limits):
        launch(gpu.sketch_query, cuda.to_device(table), d_out, params(9, 3))
    assert d_out.copy_to_host().tobytes() == out_cpu.tobytes()


@pytest.mark.parametrize("threads,blocks,work,expected",
                         [(32, 4, 1000, (4, 32)), (32, 4, 33, (2, 32)), (64, 8, 0, (1, 64))])
def test_launch_shape(threads, blocks, work, expected):
    with launch_limits(threads, blocks):
        assert gpu.launch_shape(work) == expected


def test_launch_shape_rejects_too_many_threads():
    with launch_limits(2048, 1), pytest.raises(ValueError, match="2048"):
        gpu.launch_shape(10)


@pytest.mark.parametrize("limits", SHAPES)
@pytest.mark.parametrize("rows", [3, 4])
def test_hashed_kernels_match_cpu(limits, rows):
    n, cols = 40, 7
    b = np.empty((rows, n), np.int32)
    s = np.empty((rows, n), np.int8)
    cpu.sketch_hashes(np.arange(n, dtype=np.int64), b, s, params(cols, 1))
    x = np.random.default_rng(rows).integers(-8, 9, n).astype(np.float32)
    t_cpu = np.zeros((rows, cols), np.float32)
    cpu.sketch_insert_hashed(x, b, s, t_cpu)
    out_cpu = np.empty(n, np.float32)
    cpu.sketch_query_hashed(t_cpu, b, s, out_cpu)
    d_b, d_s = cuda.to_device(b), cuda.to_device(s)
    d_t = cuda.to_device(np.zeros((rows, cols), np.float32))
    d_out = cuda.to_device(np.full(n, np.nan, np.float32))
    with launch_limits(*limits):
        launch(gpu.sketch_insert_hashed, cuda.to_device(x), d_b, d_s, d_t)
        launch(gpu.sketch_query_hashed, d_t, d_b, d_s, d_out)
    assert d_t.copy_to_host().tobytes() == t_cpu.tobytes()
    assert d_out.copy_to_host().tobytes() == out_cpu.tobytes()

"""CUDA FWHT and Fastfood kernels against the CPU kernels (a GPU or NUMBA_ENABLE_CUDASIM=1).

FWHT butterflies, the sign flip, the Gaussian scaling and the forward rows are fixed float32 /
float64 operations per element: bit-identical to the CPU. The transpose's float64 multiply-add
may be fused into an FMA by a GPU compiler, so it is compared with a tight tolerance (the
simulator reproduces it exactly). Sizes stay small for the simulator.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import cuda

from fedsqueeze.compress.subspace import Fastfood
from fedsqueeze.kernels.config import launch_limits
from fedsqueeze.kernels.cpu import fwht as cpu_fwht

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda.is_available(), reason="needs a GPU or NUMBA_ENABLE_CUDASIM=1"),
]

gfwht = pytest.importorskip("fedsqueeze.kernels.cuda.fwht")
gproj = pytest.importorskip("fedsqueeze.kernels.cuda.project")

LIMITS = [(32, 1), (8, 3)]  # (threads per block, max blocks): one block, and grid-stride


def vec(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("limits", LIMITS)
@pytest.mark.parametrize("rows,n", [(1, 1), (1, 2), (3, 16), (2, 64)])
def test_fwht_batch_bit_identical(limits, rows, n):
    x = vec((rows, n), n)
    want = x.copy()
    cpu_fwht.fwht_batch(want)
    dx = cuda.to_device(x)
    with launch_limits(*limits):
        gfwht.fwht_batch(dx)
    cuda.synchronize()
    assert dx.copy_to_host().tobytes() == want.tobytes()


@pytest.mark.parametrize("n", [4, 32])
def test_fwht_1d_bit_identical(n):
    x = vec(n, 1)
    want = x.copy()
    cpu_fwht.fwht(want)
    dx = cuda.to_device(x)
    with launch_limits(8, 2):
        gfwht.fwht(dx)
    assert dx.copy_to_host().tobytes() == want.tobytes()


# (D, d, block_log2, chunk): partial last block, several chunks, a chunk larger than nb
CASES = [(100, 6, 4, 3), (64, 8, 3, 8), (20, 3, 2, 2)]


@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("D,d,bl,chunk", CASES)
def test_forward_bit_identical(D, d, bl, chunk, add):
    A = Fastfood(D, d, seed=7, subspace=2, tensor=1, block_log2=bl, cache="on")
    x, base = vec(d, D), vec(D, d)
    want = base.copy()
    A.forward(x, want, add=add)
    out = cuda.to_device(base)
    with launch_limits(16, 2):
        A.forward_device(cuda.to_device(x), out, add=add, chunk=chunk)
    assert out.copy_to_host().tobytes() == want.tobytes()


@pytest.mark.parametrize("D,d,bl,chunk", CASES)
def test_transpose_matches_cpu(D, d, bl, chunk):
    A = Fastfood(D, d, seed=3, subspace=5, block_log2=bl, cache="on")
    g = vec(D, 2 * D)
    want = np.zeros(d)
    A._transpose(g, want)
    acc = cuda.to_device(np.zeros(d))
    with launch_limits(16, 2):
        A.transpose_device(cuda.to_device(g), acc, chunk=chunk)
    np.testing.assert_allclose(acc.copy_to_host(), want, rtol=1e-12, atol=1e-12)

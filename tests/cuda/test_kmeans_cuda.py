"""CUDA twins of the k-means kernels equal the CPU kernels bit for bit (small sizes; runs on a GPU
or under NUMBA_ENABLE_CUDASIM=1). Tiny launch limits force the grid-stride paths."""

from __future__ import annotations

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to simulate)", allow_module_level=True)

from fedsqueeze.kernels import config  # noqa: E402
from fedsqueeze.kernels.cpu import kmeans as cpu  # noqa: E402
from fedsqueeze.kernels.cuda import kmeans as gpu  # noqa: E402

pytestmark = pytest.mark.cuda

LIMITS = [(256, 1024), (4, 2), (1, 1)]


@pytest.mark.parametrize(("threads", "blocks"), LIMITS)
@pytest.mark.parametrize(("n", "k", "seed"), [(1, 2, 0), (37, 8, 1), (300, 30, 2)])
def test_assign_equals_cpu(threads, blocks, n, k, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal(n).astype(np.float32)
    c = g.standard_normal(k).astype(np.float32)
    c[-1] = c[0]  # a duplicate centroid: ties must resolve to the lowest id on both targets
    want = np.full(n, 255, np.uint8)
    cpu.assign_1d(x, c, want)
    d_out = cuda.to_device(np.full(n, 255, np.uint8))
    with config.launch_limits(threads, blocks):
        gpu.assign_1d(cuda.to_device(x), cuda.to_device(c), d_out)
    np.testing.assert_array_equal(d_out.copy_to_host(), want)


@pytest.mark.parametrize(("threads", "blocks"), LIMITS)
@pytest.mark.parametrize(("n", "k"), [(1, 2), (50, 8), (129, 30)])
def test_gather_equals_cpu(threads, blocks, n, k):
    g = np.random.default_rng(n)
    cb = g.standard_normal(k).astype(np.float32)
    ids = g.integers(0, k, n).astype(np.uint8)
    want = np.empty(n, np.float32)
    cpu.gather(cb, ids, want)
    d_out = cuda.to_device(np.zeros(n, np.float32))
    with config.launch_limits(threads, blocks):
        gpu.gather(cuda.to_device(cb), cuda.to_device(ids), d_out)
    np.testing.assert_array_equal(d_out.copy_to_host(), want)

"""The CUDA radix select returns the CPU kernel's index set (real GPU or NUMBA_ENABLE_CUDASIM=1).

Inputs stay at a few hundred elements: the simulator runs about 5k threads per second. Launch
limits are lowered so several blocks, several tiles per block and the grid-stride loops run.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.kernels.config import launch_limits
from fedsqueeze.kernels.cpu import topk as cpu

cuda = pytest.importorskip("numba.cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda.is_available(), reason="no GPU and NUMBA_ENABLE_CUDASIM unset"),
]


def _vector(n: int, seed: int, ties: bool) -> np.ndarray:
    g = np.random.default_rng(seed)
    if ties:
        return g.choice(np.array([0.0, -0.0, 1.5, -1.5, 4.0], np.float32), n).astype(np.float32)
    return g.standard_normal(n).astype(np.float32)


def _cpu_topk(v: np.ndarray, k: int) -> np.ndarray:
    out = np.empty(v.shape[0], np.int64)
    c = cpu.topk_indices(v, k, np.empty(v.shape[0], np.uint32), np.empty(256, np.int64), out)
    return out[:c]


@pytest.mark.parametrize("threads,blocks", [(32, 2), (64, 8)])
@pytest.mark.parametrize("n,k,ties,seed", [(200, 5, False, 0), (333, 100, True, 1),
                                           (96, 95, False, 2), (50, 50, False, 3)])
def test_topk_matches_cpu(threads, blocks, n, k, ties, seed):
    from fedsqueeze.kernels.cuda import topk as gpu

    v = _vector(n, seed, ties)
    with launch_limits(threads, blocks):
        d_keys = cuda.device_array(n, np.uint32)
        d_out = cuda.device_array(n, np.int64)
        count = gpu.topk_indices(cuda.to_device(v), k, d_keys, cuda.device_array(256, np.int64),
                                 d_out)
        keys = d_keys.copy_to_host()
    expected = _cpu_topk(v, k)
    assert count == expected.shape[0]
    np.testing.assert_array_equal(d_out.copy_to_host()[:count], expected)
    cpu_keys = np.empty(n, np.uint32)
    cpu.magnitude_keys(v, cpu_keys)
    np.testing.assert_array_equal(keys, cpu_keys)


@pytest.mark.parametrize("k,seed", [(7, 0), (150, 1)])
def test_smallest_k_u64_matches_cpu(k, seed):
    from fedsqueeze.kernels.cuda import topk as gpu

    n = 160
    keys = np.random.default_rng(seed).integers(0, 2**62, n, dtype=np.uint64) << np.uint64(2)
    keys[::3] = keys[1]  # exact ties, broken by index
    expected = np.empty(n, np.int64)
    c = cpu.smallest_k(keys, k, np.empty(256, np.int64), expected)
    with launch_limits(32, 3):
        d_out = cuda.device_array(n, np.int64)
        count = gpu.smallest_k(cuda.to_device(keys), k, cuda.device_array(256, np.int64), d_out)
    assert count == c
    np.testing.assert_array_equal(d_out.copy_to_host()[:count], expected[:c])


def test_rejects_too_many_threads():
    from fedsqueeze.kernels.cuda import topk as gpu

    with launch_limits(2048, 1), pytest.raises(ValueError, match="threads per block"):
        gpu.launch_shape(10)

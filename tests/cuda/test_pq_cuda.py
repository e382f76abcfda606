"""CUDA twins of the grouped-PQ kernels equal the CPU kernels (small sizes; a GPU or
NUMBA_ENABLE_CUDASIM=1). Tiny launch limits force the grid-stride paths. Data are well separated
so that a GPU's FMA contraction cannot flip a nearest-centroid choice."""

from __future__ import annotations

import numpy as np
import pytest

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA device (set NUMBA_ENABLE_CUDASIM=1 to simulate)", allow_module_level=True)

from fedsqueeze.compress.activations import GPQ  # noqa: E402
from fedsqueeze.kernels import config  # noqa: E402
from fedsqueeze.kernels.cpu import pq as cpu  # noqa: E402
from fedsqueeze.kernels.cuda import pq as gpu  # noqa: E402

pytestmark = pytest.mark.cuda

LIMITS = [(64, 16), (4, 2), (1, 1)]
# (B, q, m, R, L, mode)
CASES = [(2, 4, 3, 1, 4, 0), (3, 4, 2, 2, 3, 0), (3, 4, 2, 2, 3, 1), (1, 6, 1, 3, 2, 1)]


def _points(B, q, m, seed):
    g = np.random.default_rng(seed)
    centres = g.standard_normal((5, m)) * 10
    x = centres[g.integers(0, 5, B * q)] + 0.01 * g.standard_normal((B * q, m))
    return x.astype(np.float32)


def _cpu_t(x, geom):
    pts_t = np.empty((x.shape[1], x.shape[0]), np.float32)
    cpu.transpose_points(x, geom, pts_t)
    return pts_t


@pytest.mark.parametrize(("threads", "blocks"), LIMITS)
@pytest.mark.parametrize("case", CASES)
def test_transpose_and_assign_equal_cpu(threads, blocks, case):
    B, q, m, R, L, mode = case
    x = _points(B, q, m, 0)
    geom = (q, R, mode)
    pts_t = _cpu_t(x, geom)
    c = x[:L * R].reshape(R, L, m).copy()
    codes = np.full(B * q, 65535, np.uint16)
    mcodes = np.empty_like(codes)
    n_cpu = cpu.assign(pts_t, c, geom, codes, mcodes, np.empty((2, 8), np.float32),
                       np.empty(8, np.int64))
    with config.launch_limits(threads, blocks):
        d_t = cuda.device_array((m, B * q), np.float32)
        gpu.transpose_points(cuda.to_device(x), geom, d_t)
        d_codes = cuda.to_device(np.full(B * q, 65535, np.uint16))
        d_m = cuda.device_array(B * q, np.uint16)
        n_gpu = gpu.assign(d_t, cuda.to_device(c), geom, d_codes, d_m)
    np.testing.assert_array_equal(d_t.copy_to_host(), pts_t)
    np.testing.assert_array_equal(d_codes.copy_to_host(), codes)
    np.testing.assert_array_equal(d_m.copy_to_host(), mcodes)
    assert n_gpu == n_cpu == B * q


@pytest.mark.parametrize(("threads", "blocks"), LIMITS)
@pytest.mark.parametrize("case", CASES)
def test_accumulate_finalize_gather_equal_cpu(threads, blocks, case):
    B, q, m, R, L, mode = case
    x = _points(B, q, m, 1)
    geom = (q, R, mode)
    pts_t = _cpu_t(x, geom)
    codes = np.random.default_rng(2).integers(0, L, B * q).astype(np.uint16)
    mcodes = np.empty_like(codes)
    cpu.member_codes(codes, geom, mcodes)
    sums, counts = np.empty((R, L, m)), np.empty((R, L), np.int64)
    cpu.accumulate(pts_t, mcodes, sums, counts)
    cent = np.zeros((R, L, m), np.float32)
    cpu.finalize(sums, counts, cent)
    out = np.empty_like(x)
    cpu.gather(cent, codes, geom, out)
    with config.launch_limits(threads, blocks):
        d_m = cuda.device_array(B * q, np.uint16)
        gpu.member_codes(cuda.to_device(codes), geom, d_m)
        d_s, d_n = cuda.device_array((R, L, m), np.float64), cuda.device_array((R, L), np.int64)
        gpu.accumulate(cuda.to_device(pts_t), d_m, d_s, d_n)
        d_c = cuda.to_device(np.zeros((R, L, m), np.float32))
        gpu.finalize(d_s, d_n, d_c)
        d_out = cuda.device_array(x.shape, np.float32)
        gpu.gather(d_c, cuda.to_device(codes), geom, d_out)
    np.testing.assert_array_equal(d_m.copy_to_host(), mcodes)
    np.testing.assert_array_equal(d_s.copy_to_host(), sums)
    np.testing.assert_array_equal(d_n.copy_to_host(), counts)
    np.testing.assert_array_equal(d_c.copy_to_host(), cent)
    np.testing.assert_array_equal(d_out.copy_to_host(), out)


@pytest.mark.parametrize(("q", "R", "L", "grouping", "B", "d_a"), [
    (4, 1, 4, "position", 2, 8), (4, 2, 2, "sample", 3, 6)])
def test_encode_of_a_device_array_equals_the_cpu_encode(q, R, L, grouping, B, d_a):
    gpq = GPQ(q=q, R=R, L=L, iters=3, grouping=grouping)
    g = np.random.default_rng(3)
    z = (np.repeat(g.standard_normal((B, 1)) * 10, d_a, axis=1)
         + 0.01 * g.standard_normal((B, d_a))).astype(np.float32)
    want, _ = gpq.encode(z, seed=5, client=2, round=1)
    with config.launch_limits(4, 2):
        got, state = gpq.encode(cuda.to_device(z), seed=5, client=2, round=1)
    np.testing.assert_array_equal(got.centroids, want.centroids)
    np.testing.assert_array_equal(got.codes, want.codes)
    assert got.packed.tobytes() == want.packed.tobytes() and got.kmeans_steps == want.kmeans_steps
    np.testing.assert_array_equal(state, want.centroids)

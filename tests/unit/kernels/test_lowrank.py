"""PowerSGD product kernels (METHODS.md 6.8) against float64 NumPy products rounded to float32."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fedsqueeze.kernels.cpu import lowrank as k

SHAPES = [(1, 1, 1), (3, 7, 2), (25, 40, 2), (65, 74, 5), (9, 64, 1), (5, 200, 3), (300, 129, 2)]


def data(n: int, m: int, r: int, seed: int):
    g = np.random.default_rng(seed)
    mat = (g.standard_normal((n, m)) * 0.01).astype(np.float32)
    return (mat, g.standard_normal((m, r)).astype(np.float32),
            g.standard_normal((n, r)).astype(np.float32))


def lane_order_dot(x: np.ndarray, f: np.ndarray) -> np.float64:
    """The documented order of ``mat_factor``: element ``j`` into lane ``j % 8``, lanes combined
    as ``((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7))``; plain Python floats (float64)."""
    lanes = [0.0] * 8
    for j in range(x.shape[0]):
        lanes[j % 8] += float(x[j]) * float(f[j])
    a = lanes
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


@pytest.mark.parametrize("n,m,r", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_mat_factor(n, m, r, seed):
    mat, q, _ = data(n, m, r, seed)
    out = np.empty((n, r), np.float32)
    k.mat_factor(mat, np.ascontiguousarray(q.T, np.float64), out, np.empty((r, k.LANES)))
    ref = np.array([[lane_order_dot(mat[i], q[:, c]) for c in range(r)] for i in range(n)])
    np.testing.assert_array_equal(out, ref.astype(np.float32))
    np.testing.assert_allclose(out, mat.astype(np.float64) @ q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,m,r", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_mat_t_factor(n, m, r, seed):
    mat, _, p = data(n, m, r, seed)
    out = np.empty((m, r), np.float32)
    k.mat_t_factor(mat, p, out, np.empty((r, m)))
    ref = np.zeros((m, r), np.float64)
    for i in range(n):  # increasing i, float64, as documented
        ref += mat[i].astype(np.float64)[:, None] * p[i].astype(np.float64)[None, :]
    np.testing.assert_array_equal(out, ref.astype(np.float32))


@pytest.mark.parametrize("n,m,r", SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_outer(n, m, r, seed):
    _, q, p = data(n, m, r, seed)
    out = np.empty(n * m, np.float32)
    k.outer(p, np.ascontiguousarray(q.T, np.float64), out, np.empty(m))
    ref = np.zeros((n, m), np.float64)
    for c in range(r):  # columns in order, float64
        ref += p[:, c].astype(np.float64)[:, None] * q[:, c].astype(np.float64)[None, :]
    np.testing.assert_array_equal(out, ref.astype(np.float32).ravel())


@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no dispatchers without JIT")
@pytest.mark.parametrize("fn", [k.mat_factor, k.mat_t_factor, k.outer])
def test_no_inline_fastmath(fn):
    assert fn.targetoptions.get("fastmath") is False

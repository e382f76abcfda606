"""k-means kernels against the NumPy oracles of tests/naive.py (bit-exact where the oracle does the
same float operations, tolerances for the float64-reference convolution)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.compress.clustering import index_width, kmeans_1d, pack_ids
from fedsqueeze.kernels.cpu import kmeans as K
from tests import naive


def _data(n: int, seed: int, kind: str) -> np.ndarray:
    g = np.random.default_rng(seed)
    if kind == "normal":
        return g.standard_normal(n).astype(np.float32)
    if kind == "few":  # fewer distinct values than clusters
        return g.choice(np.array([-1.0, 0.25, 3.0], np.float32), n)
    if kind == "const":
        return np.full(n, 0.5, np.float32)
    raise ValueError(kind)


CASES = [(1, 2, 0, "normal"), (7, 3, 1, "normal"), (200, 8, 2, "normal"), (500, 30, 3, "normal"),
         (64, 8, 4, "few"), (10, 4, 5, "const"), (1000, 255, 6, "normal")]


@pytest.mark.parametrize(("n", "k", "seed", "kind"), CASES)
def test_assign_matches_oracle(n, k, seed, kind):
    x = _data(n, seed, kind)
    c = np.random.default_rng(seed + 100).standard_normal(k).astype(np.float32)
    out = np.full(n, 255, np.uint8)
    changed = K.assign_1d(x, c, out)
    np.testing.assert_array_equal(out, naive.kmeans_assign(x, c))
    assert changed == n - int((naive.kmeans_assign(x, c) == 255).sum())
    assert K.assign_1d(x, c, out) == 0  # a second pass changes nothing


def test_assign_ties_go_to_lowest_id():
    x = np.array([0.0, 1.0, 2.0], np.float32)
    c = np.array([1.0, -1.0, 1.0, 3.0], np.float32)  # 0.0 ties ids 0 and 1; 2.0 ties 0, 2, 3
    out = np.zeros(3, np.uint8)
    K.assign_1d(x, c, out)
    assert out.tolist() == [0, 0, 0]


@pytest.mark.parametrize(("n", "k", "seed", "kind"), CASES)
def test_kmeanspp_matches_oracle(n, k, seed, kind):
    x = _data(n, seed, kind)
    u = np.random.default_rng(seed + 7).random(k)
    out = np.empty(k, np.float32)
    K.kmeanspp_init(x, u, np.empty(n, np.float64), out)
    np.testing.assert_array_equal(out, naive.kmeanspp_seed(x, u))
    assert np.isin(out, x).all()  # seeds are data points


@pytest.mark.parametrize(("u1", "want"), [(0.1, 3.0), (0.0999, 1.0), (0.0, 1.0), (0.95, 3.0)])
def test_kmeanspp_boundary(u1, want):
    # x = [0, 1, 3], first centre 0: d2 = [0, 1, 9], running sums [0, 1, 10]; the pick is the
    # first running sum strictly above u1 * 10 (u1 = 0.1 lands exactly on 1.0)
    x = np.array([0.0, 1.0, 3.0], np.float32)
    u = np.array([0.0, u1])
    out = np.empty(2, np.float32)
    K.kmeanspp_init(x, u, np.empty(3), out)
    assert out.tolist() == [0.0, want] == naive.kmeanspp_seed(x, u).tolist()


@pytest.mark.parametrize(("n", "k", "seed", "kind"), CASES)
@pytest.mark.parametrize("iters", [0, 1, 5, 50])
def test_lloyd_matches_oracle(n, k, seed, kind, iters):
    x = _data(n, seed, kind)
    c0 = naive.kmeanspp_seed(x, np.random.default_rng(seed).random(k))
    c, ids = c0.copy(), np.full(n, 255, np.uint8)
    steps = K.lloyd_1d(x, c, ids, np.empty(k), np.empty(k, np.int64), iters)
    ref_c, ref_ids, ref_steps = naive.kmeans_lloyd(x, c0, iters)
    np.testing.assert_array_equal(c, ref_c)
    np.testing.assert_array_equal(ids, ref_ids)
    assert steps == ref_steps


@pytest.mark.parametrize("n", [1, 33, 4096])
def test_lloyd_lowers_distortion(n):
    x = _data(n, n, "normal")
    err = []
    for iters in (0, 20):
        c, ids = kmeans_1d(x, 8, seed=3, iters=iters)
        err.append(float(((x - c[ids]) ** 2).sum()))
    assert err[1] <= err[0]


@pytest.mark.parametrize(("k", "n"), [(2, 5), (8, 100), (30, 1)])
def test_gather(k, n):
    g = np.random.default_rng(k)
    cb = g.standard_normal(k).astype(np.float32)
    ids = g.integers(0, k, n).astype(np.uint8)
    out = np.empty(n, np.float32)
    K.gather(cb, ids, out)
    np.testing.assert_array_equal(out, cb[ids])


@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_1d_deterministic_and_seeded(seed):
    x = _data(300, 11, "normal")
    a = kmeans_1d(x, 8, seed=seed, sub_id=2)
    b = kmeans_1d(x, 8, seed=seed, sub_id=2)
    c = kmeans_1d(x, 8, seed=seed, sub_id=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert a[1].max() < 8


@pytest.mark.parametrize(("c_in", "c_out", "hw", "ksz", "pad", "k"),
                         [(1, 2, 5, 3, 1, 8), (3, 4, 6, 3, 0, 30), (2, 3, 4, 1, 0, 2),
                          (16, 32, 8, 3, 1, 8)])
def test_lut_conv2d_matches_direct_conv(c_in, c_out, hw, ksz, pad, k):
    g = np.random.default_rng(c_in * 100 + k)
    x = g.standard_normal((2, c_in, hw, hw)).astype(np.float32)
    cb = g.standard_normal(k).astype(np.float32)
    ids = g.integers(0, k, c_out * c_in * ksz * ksz).astype(np.uint8)
    bias = g.standard_normal(c_out).astype(np.float32)
    w = cb[ids].reshape(c_out, c_in, ksz, ksz)
    oh = hw + 2 * pad - ksz + 1
    out = np.empty((2, c_out, oh, oh), np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((2, c_in * ksz * ksz, oh * oh), np.float32)
    K.lut_conv2d(xp, pack_ids(ids, k), cb, bias, np.empty(c_in * ksz * ksz, np.float32), cols,
                 out, (index_width(k), ksz, ksz))
    np.testing.assert_allclose(out, naive.conv2d_direct(x, w, bias, pad), rtol=1e-5, atol=1e-5)
    dense = np.empty_like(out)
    K.dense_conv2d(xp, np.ascontiguousarray(w.reshape(c_out, -1)), bias, cols, dense, (ksz, ksz))
    np.testing.assert_array_equal(dense, out)  # same loops, same weights: bit-identical

"""Radix top-k selection (kernels/cpu/topk.py) against the NumPy oracles of tests/naive.py."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.kernels.cpu import topk as K
from tests import naive

from .nojit import assert_runs_without_jit


def _vector(n: int, kind: str, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    if kind == "normal":
        return g.standard_normal(n).astype(np.float32)
    if kind == "ties":  # few distinct magnitudes, both signs, +-0.0
        v = g.choice(np.array([0.0, -0.0, 1.0, -1.0, 2.5, -2.5], np.float32), n)
        return v.astype(np.float32)
    if kind == "constant":
        return np.full(n, -3.0, np.float32)
    if kind == "extreme":  # subnormals next to values near the float32 maximum
        return (g.standard_normal(n) * g.choice([1e-42, 1e37], n)).astype(np.float32)
    raise ValueError(kind)


def _topk(v: np.ndarray, k: int) -> np.ndarray:
    keys = np.empty(v.shape[0], np.uint32)
    out = np.full(v.shape[0], -1, np.int64)
    hist = np.empty(K.HIST_BINS, np.int64)
    count = K.topk_indices(v, k, keys, hist, out)
    assert count == min(k, v.shape[0])
    return out[:count]


@pytest.mark.parametrize("kind", ["normal", "ties", "constant", "extreme"])
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (9, 3), (100, 1), (100, 50), (100, 99),
                                 (100, 100), (3000, 30), (3000, 2999)])
def test_topk_matches_oracle(kind, n, k):
    v = _vector(n, kind, seed=n * 7 + k)
    np.testing.assert_array_equal(_topk(v, k), naive.topk_indices(v, k))


@pytest.mark.parametrize("n", [5, 64])
def test_k_zero_and_k_above_n(n):
    v = _vector(n, "normal", seed=1)
    assert _topk(v, 0).shape == (0,)
    np.testing.assert_array_equal(_topk(v, n + 3), np.arange(n))


@pytest.mark.parametrize("seed", [0, 1])
def test_ties_prefer_smaller_index(seed):
    v = np.zeros(40, np.float32)
    v[[5, 9, 30, 31]] = [-2.0, 2.0, 2.0, -2.0]
    np.testing.assert_array_equal(_topk(v, 3), [5, 9, 30])
    np.testing.assert_array_equal(_topk(v, 6), [0, 1, 5, 9, 30, 31])


@pytest.mark.parametrize("width", [np.uint32, np.uint64])
@pytest.mark.parametrize("n,k,seed", [(50, 7, 0), (1000, 10, 1), (1000, 999, 2)])
def test_smallest_k_matches_oracle(width, n, k, seed):
    g = np.random.default_rng(seed)
    keys = g.integers(0, 2**20, n).astype(width) << width(8 * np.dtype(width).itemsize - 20)
    keys[::4] = keys[1]  # many exact ties
    out = np.empty(n, np.int64)
    count = K.smallest_k(keys, k, np.empty(K.HIST_BINS, np.int64), out)
    np.testing.assert_array_equal(out[:count], naive.smallest_keys(keys, k))


@pytest.mark.parametrize("seed", [0, 2**40 + 5])
def test_randk_keys_match_oracle_philox(seed):
    n = 300
    keys = np.empty(n, np.uint64)
    k0, k1 = rng.key_of(seed)
    K.randk_keys(keys, np.uint32(0), np.uint32(0), rng.counter3(rng.Purpose.RANDK), k0, k1)
    out = np.empty(n, np.int64)
    count = K.smallest_k(keys, 17, np.empty(K.HIST_BINS, np.int64), out)
    np.testing.assert_array_equal(out[:count], naive.randk_indices(n, 17, seed))


@pytest.mark.parametrize("dtype", [np.float32])
def test_magnitude_keys_order_like_abs(dtype):
    v = np.array([0.0, -0.0, 1e-45, -1.0, 1.0, np.inf, -3.5], dtype)
    keys = np.empty(v.shape[0], np.uint32)
    K.magnitude_keys(v, keys)
    assert keys[0] == keys[1] == 0x7FFFFFFF
    assert keys[3] == keys[4]
    assert list(np.argsort(keys, kind="stable")) == [5, 6, 3, 4, 2, 0, 1]


def _randk_select(n: int, k: int, seed: int) -> np.ndarray:
    k0, k1 = rng.key_of(seed)
    z = np.uint32(0)
    out = np.full(max(n, 1), -1, np.int64)
    hi = np.empty(n, np.uint16)
    count = K.randk_select(k, z, z, rng.counter3(rng.Purpose.RANDK), k0, k1, hi,
                           np.empty(K.RANDK_BINS, np.int64), out)
    assert count == min(max(k, 0), n)
    return out[:count]


# n > 4096 crosses the Philox chunks; n = 200,000 puts ~3 keys in each of the 65,536 bins, so the
# threshold bin usually holds keys on both sides of the cut
@pytest.mark.parametrize("n,k,seed", [(1, 1, 0), (300, 17, 5), (300, 299, 2**63 + 1),
                                      (5000, 50, 3), (200_000, 2000, 7), (200_000, 150_001, 8)])
def test_randk_select_matches_oracle(n, k, seed):
    np.testing.assert_array_equal(_randk_select(n, k, seed), naive.randk_indices(n, k, seed))


@pytest.mark.parametrize("n,k", [(10, 0), (10, 10), (10, 25)])
def test_randk_select_edges(n, k):
    np.testing.assert_array_equal(_randk_select(n, k, 1), np.arange(min(k, n)))


def _topk_select(v: np.ndarray, k: int) -> np.ndarray:
    out = np.full(max(v.shape[0], 1), -1, np.int64)
    hist = np.full(4 * K.TOPK_BINS, 7, np.int32)  # dirty scratch: the kernel clears it
    count = K.topk_select(v, k, hist, out)
    assert count == min(max(k, 0), v.shape[0])
    return out[:count]


# the two-pass 16-bit-histogram selection of the codecs: same index set as the oracle (and so as
# topk_indices, the CUDA twin's contract), threshold bins with few and with all the candidates
@pytest.mark.parametrize("kind", ["normal", "ties", "constant", "extreme"])
@pytest.mark.parametrize("n,k", [(1, 1), (2, 1), (9, 3), (100, 1), (100, 50), (100, 99),
                                 (100, 100), (3000, 30), (3000, 2999), (50_001, 500)])
def test_topk_select_matches_oracle(kind, n, k):
    v = _vector(n, kind, seed=n * 5 + k)
    np.testing.assert_array_equal(_topk_select(v, k), naive.topk_indices(v, k))


def test_topk_select_edges_and_ties():
    v = np.zeros(40, np.float32)
    v[[5, 9, 30, 31]] = [-2.0, 2.0, 2.0, -2.0]
    np.testing.assert_array_equal(_topk_select(v, 3), [5, 9, 30])
    np.testing.assert_array_equal(_topk_select(v, 6), [0, 1, 5, 9, 30, 31])
    np.testing.assert_array_equal(_topk_select(v, 0), np.zeros(0, np.int64))
    np.testing.assert_array_equal(_topk_select(v, 45), np.arange(40))
    # same top 16 key bits, different low bits: decided inside the threshold bin
    w = np.array([1.0, 1.0000001, -1.0000002, 1.0000001, 0.5], np.float32)
    np.testing.assert_array_equal(_topk_select(w, 2), [1, 2])
    np.testing.assert_array_equal(_topk_select(w, 3), [1, 2, 3])


@pytest.mark.parametrize("n,k", [(3000, 30), (200_000, 2000)])
def test_topk_select_equals_topk_indices(n, k):
    v = (np.random.default_rng(n).standard_normal(n) * 0.01).astype(np.float32)
    np.testing.assert_array_equal(_topk_select(v, k), _topk(v, k))


NO_JIT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fedsqueeze.kernels.cpu import topk as K
    from tests import naive
    g = np.random.default_rng(0)
    for v, k in [(g.standard_normal(700).astype(np.float32), 9),
                 (g.choice(np.array([0.0, -0.0, 1.0, -1.0], np.float32), 300), 100),
                 (np.full(50, -3.0, np.float32), 7), (np.ones(5, np.float32), 5)]:
        out = np.empty(v.shape[0], np.int64)
        c = K.topk_select(v, k, np.empty(4 * K.TOPK_BINS, np.int32), out)
        assert c == min(k, v.shape[0]) and (out[:c] == naive.topk_indices(v, k)).all()
    print("ok")
""")


def test_topk_select_without_jit():
    # STYLE.md rule 4: the kernel bodies also run as plain Python
    assert_runs_without_jit(NO_JIT_SCRIPT)

"""Count sketch CPU kernels against the NumPy oracles of tests/naive.py (METHODS.md 6.9)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.kernels.cpu import sketch as k
from tests import naive

C3 = rng.counter3(rng.Purpose.SKETCH_HASH)


def params(cols: int, seed: int):
    k0, k1 = rng.key_of(seed)
    return (np.uint32(cols), k0, k1, C3)


def vector(n: int, seed: int, kind: str) -> np.ndarray:
    g = np.random.default_rng(seed)
    if kind == "normal":
        return g.standard_normal(n).astype(np.float32)
    if kind == "sparse":
        x = np.zeros(n, np.float32)
        x[g.choice(n, size=max(1, n // 20), replace=False)] = g.standard_normal(max(1, n // 20))
        return x
    return g.integers(-8, 9, n).astype(np.float32)  # "ints": sums are exact


@pytest.mark.parametrize("counter,key,expected", [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
])
def test_oracle_philox_known_answers(counter, key, expected):
    """The oracle's own Philox must pass the Random123 known-answer tests (METHODS.md 0.7)."""
    got = naive.philox4x32_np(*counter, *key)
    assert tuple(int(w) for w in got) == expected


@pytest.mark.parametrize("seed", [0, 1, 2**40 + 7])
@pytest.mark.parametrize("cols", [1, 7, 97, 2**31 + 11])
@pytest.mark.parametrize("rows", [1, 5])
def test_hashes_match_oracle(seed, cols, rows):
    idx = np.concatenate([np.arange(300), [2**31, 2**32 - 1]]).astype(np.int64)
    b = np.empty((rows, idx.size), np.int64)
    s = np.empty((rows, idx.size), np.float32)
    k.sketch_hashes(idx, b, s, params(cols, seed))
    b_ref, s_ref = naive.count_sketch_hashes(idx, rows, cols, seed)
    np.testing.assert_array_equal(b, b_ref)
    np.testing.assert_array_equal(s, s_ref)
    assert b.min() >= 0 and b.max() < cols
    assert set(np.unique(s).tolist()) <= {-1.0, 1.0}


@pytest.mark.parametrize("seed", [0, 3])
def test_hashes_spread_evenly(seed):
    """Buckets are close to uniform and signs close to balanced (chi-square style bounds)."""
    n, cols = 20000, 10
    b = np.empty((2, n), np.int64)
    s = np.empty((2, n), np.float32)
    k.sketch_hashes(np.arange(n, dtype=np.int64), b, s, params(cols, seed))
    counts = np.bincount(b[0], minlength=cols)
    chi2 = float(((counts - n / cols) ** 2 / (n / cols)).sum())
    assert chi2 < 40  # 9 degrees of freedom: P(chi2 > 40) < 1e-5
    assert abs(float(s.mean())) < 0.05
    assert (b[0] != b[1]).mean() > 0.85  # rows hash independently


@pytest.mark.parametrize("kind", ["normal", "sparse", "ints"])
@pytest.mark.parametrize("n,rows,cols", [(1, 1, 1), (50, 5, 7), (1000, 5, 20), (333, 4, 64)])
@pytest.mark.parametrize("seed", [0, 2**33 + 5])
def test_insert_matches_oracle(kind, n, rows, cols, seed):
    x = vector(n, n + rows, kind)
    table = np.zeros((rows, cols), np.float32)
    k.sketch_insert(x, table, params(cols, seed))
    np.testing.assert_array_equal(table, naive.count_sketch(x, rows, cols, seed))


@pytest.mark.parametrize("seed", [0, 9])
def test_insert_adds_to_the_table(seed):
    """Sketching is linear: inserting a then b equals the sketch of a + b (integers: exactly)."""
    a, b = vector(200, seed, "ints"), vector(200, seed + 1, "ints")
    t = np.zeros((5, 11), np.float32)
    k.sketch_insert(a, t, params(11, seed))
    k.sketch_insert(b, t, params(11, seed))
    np.testing.assert_array_equal(t, naive.count_sketch(a + b, 5, 11, seed))


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 32])
@pytest.mark.parametrize("seed", [0, 11])
def test_query_matches_oracle(rows, seed):
    g = np.random.default_rng(rows + seed)
    table = g.standard_normal((rows, 13)).astype(np.float32)
    out = np.empty(400, np.float32)
    k.sketch_query(table, out, params(13, seed))
    np.testing.assert_array_equal(out, naive.count_sketch_query(table, 400, seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_heavy_hitters_are_recovered_exactly(seed):
    """A 10-sparse vector in 5 rows of 200 buckets: the support comes back bit-exact, and a zero
    coordinate reads non-zero only if 3 of its 5 buckets are shared with the support (~0.1%)."""
    n = 5000
    x = np.zeros(n, np.float32)
    g = np.random.default_rng(seed)
    support = g.choice(n, 10, replace=False)
    x[support] = g.standard_normal(10).astype(np.float32)
    table = np.zeros((5, 200), np.float32)
    k.sketch_insert(x, table, params(200, seed))
    out = np.empty(n, np.float32)
    k.sketch_query(table, out, params(200, seed))
    np.testing.assert_array_equal(out[support], x[support])
    assert np.count_nonzero(out) - 10 <= 0.005 * n


@pytest.mark.parametrize("kind", ["normal", "sparse"])
def test_row_estimate_is_unbiased_over_hash_seeds(kind):
    """``s_j(i) S[j, h_j(i)]`` is an unbiased estimate of ``x_i`` over random hash functions."""
    n, cols, trials = 40, 8, 600
    x = vector(n, 5, kind)
    acc = np.zeros(n, np.float64)
    for seed in range(trials):
        table = np.zeros((1, cols), np.float32)
        k.sketch_insert(x, table, params(cols, seed))
        out = np.empty(n, np.float32)
        k.sketch_query(table, out, params(cols, seed))
        acc += out
    var = (np.sum(x.astype(np.float64) ** 2) - x.astype(np.float64) ** 2) / cols
    err = np.abs(acc / trials - x)
    assert np.all(err <= 5 * np.sqrt(var / trials) + 1e-6)


@pytest.mark.parametrize("n,rows,cols", [(1, 1, 1), (300, 5, 13), (1000, 4, 20)])
@pytest.mark.parametrize("seed", [0, 2**33 + 5])
def test_hashed_kernels_equal_the_hashing_ones(n, rows, cols, seed):
    """int32/int8 cached hashes give the same tables and estimates bit for bit."""
    b = np.empty((rows, n), np.int32)
    s = np.empty((rows, n), np.int8)
    k.sketch_hashes(np.arange(n, dtype=np.int64), b, s, params(cols, seed))
    b_ref, s_ref = naive.count_sketch_hashes(np.arange(n), rows, cols, seed)
    np.testing.assert_array_equal(b, b_ref)
    np.testing.assert_array_equal(s, s_ref)
    x = vector(n, seed % 7, "normal")
    t = np.zeros((rows, cols), np.float32)
    k.sketch_insert_hashed(x, b, s, t)
    np.testing.assert_array_equal(t, naive.count_sketch(x, rows, cols, seed))
    out = np.empty(n, np.float32)
    k.sketch_query_hashed(t, b, s, out)
    np.testing.assert_array_equal(out, naive.count_sketch_query(t, n, seed))


@pytest.mark.parametrize("n,rows,cols,width", [(1, 1, 1, 4), (300, 5, 13, 7), (1000, 4, 20, 64),
                                               (5000, 5, 101, 4096)])
@pytest.mark.parametrize("seed", [0, 2**33 + 5])
def test_chunked_kernels_equal_the_hashing_ones(n, rows, cols, width, seed):
    """Hashing chunk by chunk into a small scratch gives the same tables and estimates bit for
    bit (every cell still adds its coordinates in increasing order), for any scratch width."""
    x = vector(n, seed % 5 + n, "normal")
    b = np.empty((rows, width), np.int32)
    s = np.empty((rows, width), np.int8)
    t = np.zeros((rows, cols), np.float32)
    k.sketch_insert_chunked(x, t, params(cols, seed), b, s)
    t_ref = np.zeros((rows, cols), np.float32)
    k.sketch_insert(x, t_ref, params(cols, seed))
    np.testing.assert_array_equal(t.view(np.uint32), t_ref.view(np.uint32))
    np.testing.assert_array_equal(t, naive.count_sketch(x, rows, cols, seed))
    out = np.empty(n, np.float32)
    k.sketch_query_chunked(t, out, params(cols, seed), b, s, np.empty((rows, width), np.float32))
    np.testing.assert_array_equal(out, naive.count_sketch_query(t, n, seed))
    b_all, s_all = np.empty((rows, n), np.int32), np.empty((rows, n), np.int8)
    k.sketch_hashes(np.arange(n, dtype=np.int64), b_all, s_all, params(cols, seed))
    b_rng, s_rng = np.empty((rows, n), np.int32), np.empty((rows, n), np.int8)
    k.hash_range(0, n, b_rng, s_rng, params(cols, seed))
    np.testing.assert_array_equal(b_rng, b_all)
    np.testing.assert_array_equal(s_rng, s_all)
    out2 = np.empty(n, np.float32)
    k.sketch_query_hashed_gather(t, b_all, s_all, out2, np.empty((rows, width), np.float32))
    np.testing.assert_array_equal(out2.view(np.uint32), out.view(np.uint32))

"""Grouped-PQ kernels (FedLite) against the NumPy oracles of tests/naive.py: bit-exact, because the
oracles do the same float operations in the same order (float32 distance sums over increasing d,
float64 centroid sums over increasing p)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.kernels.cpu import pq as K
from tests import naive

MODES = {"position": 0, "sample": 1}

# (B, q, m, R, L, grouping, kind)
CASES = [
    (1, 1, 1, 1, 1, "position", "normal"),
    (1, 4, 2, 1, 2, "position", "normal"),
    (3, 8, 5, 2, 4, "position", "normal"),
    (3, 8, 5, 2, 4, "sample", "normal"),
    (32, 64, 16, 1, 16, "position", "relu"),
    (7, 12, 3, 4, 8, "position", "relu"),
    (7, 12, 3, 4, 8, "sample", "few"),
    (5, 6, 4, 3, 64, "sample", "const"),
    (40, 32, 1, 2, 64, "position", "normal"),
]


def _points(B, q, m, kind, seed):
    g = np.random.default_rng(seed)
    if kind == "normal":
        x = g.standard_normal((B * q, m))
    elif kind == "relu":  # activations after a ReLU: many exact zeros
        x = np.maximum(g.standard_normal((B * q, m)), 0)
    elif kind == "few":  # fewer distinct points than centroids
        x = g.choice(np.array([-1.0, 0.25, 3.0]), (B * q, 1)) * np.ones(m)
    else:
        x = np.full((B * q, m), 0.5)
    return x.astype(np.float32)


def _setup(case, seed=0):
    B, q, m, R, L, grouping, kind = case
    x = _points(B, q, m, kind, seed)
    geom = (q, R, MODES[grouping])
    gid = naive.pq_group_ids(B * q, q, R, grouping)
    L_eff = min(L, B * q // R)
    pts_t = np.empty((m, B * q), np.float32)
    K.transpose_points(x, geom, pts_t)
    return x, geom, gid, L_eff, pts_t


def _scratch():
    return np.empty((2, K.CHUNK), np.float32), np.empty(K.CHUNK, np.int64)


@pytest.mark.parametrize("case", CASES)
def test_members_enumerate_each_group_in_order(case):
    x, geom, gid, _, pts_t = _setup(case)
    q, R, mode = geom
    n = x.shape[0] // R
    for r in range(R):
        members = [K.member(r, k, q, R, mode, x.shape[0]) for k in range(n)]
        np.testing.assert_array_equal(members, np.flatnonzero(gid == r))
        np.testing.assert_array_equal(pts_t[:, r * n:(r + 1) * n], x[members].T)
    assert [K.group_of(p, q, R, mode, x.shape[0]) for p in range(x.shape[0])] == gid.tolist()


@pytest.mark.parametrize("case", CASES)
def test_assign_matches_oracle(case):
    x, geom, gid, L_eff, pts_t = _setup(case)
    c = np.random.default_rng(5).standard_normal((geom[1], L_eff, x.shape[1])).astype(np.float32)
    codes = np.full(x.shape[0], 65535, np.uint16)
    mcodes = np.empty_like(codes)
    changed = K.assign(pts_t, c, geom, codes, mcodes, *_scratch())
    want = naive.pq_assign(x, c, gid)
    np.testing.assert_array_equal(codes, want)
    assert changed == x.shape[0]
    member_order = np.concatenate([np.flatnonzero(gid == r) for r in range(geom[1])])
    np.testing.assert_array_equal(mcodes, want[member_order])
    assert K.assign(pts_t, c, geom, codes, mcodes, *_scratch()) == 0


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_assign_block_size_does_not_change_codes(chunk):
    x, geom, gid, L_eff, pts_t = _setup(CASES[4])
    c = np.random.default_rng(1).standard_normal((1, L_eff, x.shape[1])).astype(np.float32)
    codes = np.zeros(x.shape[0], np.uint16)
    K.assign(pts_t, c, geom, codes, np.empty_like(codes), np.empty((2, chunk), np.float32),
             np.empty(chunk, np.int64))
    np.testing.assert_array_equal(codes, naive.pq_assign(x, c, gid))


def test_assign_ties_go_to_the_lowest_id():
    x = np.array([[0.0, 0.0], [2.0, 2.0]], np.float32)
    c = np.array([[[1.0, 1.0], [-1.0, -1.0], [1.0, 1.0], [3.0, 3.0]]], np.float32)
    pts_t = np.ascontiguousarray(x.T)
    codes = np.zeros(2, np.uint16)
    K.assign(pts_t, c, (1, 1, 0), codes, np.empty_like(codes), *_scratch())
    assert codes.tolist() == [0, 0]


@pytest.mark.parametrize("case", CASES)
def test_accumulate_matches_oracle(case):
    x, geom, gid, L_eff, pts_t = _setup(case)
    codes = np.random.default_rng(2).integers(0, L_eff, x.shape[0]).astype(np.uint16)
    mcodes = np.empty_like(codes)
    K.member_codes(codes, geom, mcodes)
    R = geom[1]
    sums = np.full((R, L_eff, x.shape[1]), np.nan)
    counts = np.full((R, L_eff), -1, np.int64)
    K.accumulate(pts_t, mcodes, sums, counts)
    want_s, want_c = naive.pq_sums(x, codes, gid, R, L_eff)
    np.testing.assert_array_equal(sums, want_s)
    np.testing.assert_array_equal(counts, want_c)


@pytest.mark.parametrize("case", CASES)
def test_kmeanspp_matches_oracle(case):
    x, geom, gid, L_eff, pts_t = _setup(case, seed=3)
    u = np.random.default_rng(4).random((geom[1], L_eff))
    out = np.full((geom[1], L_eff, x.shape[1]), np.nan, np.float32)
    K.kmeanspp(pts_t, geom, u, np.empty(2 * (x.shape[0] // geom[1])), out)
    np.testing.assert_array_equal(out, naive.pq_kmeanspp(x, gid, u))
    for r in range(geom[1]):  # seeds are points of their own group
        pts = {tuple(p) for p in x[gid == r]}
        assert all(tuple(c) in pts for c in out[r])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("iters", [0, 1, 3, 10])
def test_lloyd_matches_oracle(case, iters):
    x, geom, gid, L_eff, pts_t = _setup(case, seed=6)
    R, m = geom[1], x.shape[1]
    u = np.random.default_rng(7).random((R, L_eff))
    c0 = naive.pq_kmeanspp(x, gid, u)
    c = c0.copy()
    codes = np.full(x.shape[0], 65535, np.uint16)
    steps = K.lloyd(pts_t, c, codes, np.empty_like(codes), np.empty((R, L_eff, m)),
                    np.empty((R, L_eff), np.int64), _scratch(), (*geom, iters))
    want_c, want_codes, want_steps = naive.pq_lloyd(x, c0, gid, iters)
    np.testing.assert_array_equal(c, want_c)
    np.testing.assert_array_equal(codes, want_codes)
    assert steps == want_steps <= iters


@pytest.mark.parametrize("case", CASES)
def test_gather_matches_oracle(case):
    x, geom, gid, L_eff, _ = _setup(case)
    B, q = case[0], case[1]
    c = np.random.default_rng(8).standard_normal((geom[1], L_eff, x.shape[1])).astype(np.float32)
    codes = np.random.default_rng(9).integers(0, L_eff, x.shape[0]).astype(np.uint16)
    out = np.empty_like(x)
    K.gather(c, codes, geom, out)
    d_a = q * x.shape[1]
    np.testing.assert_array_equal(out.reshape(B, -1), naive.pq_decode(c, codes, gid, d_a, B))


def test_lloyd_lowers_the_quantisation_error():
    x, geom, gid, L_eff, pts_t = _setup(CASES[4], seed=11)
    u = np.random.default_rng(12).random((1, L_eff))
    c = naive.pq_kmeanspp(x, gid, u)
    err0 = np.sum((x - naive.pq_decode(c, naive.pq_assign(x, c, gid), gid, x.size, 1)
                   .reshape(x.shape)) ** 2)
    codes = np.full(x.shape[0], 65535, np.uint16)
    K.lloyd(pts_t, c, codes, np.empty_like(codes), np.empty((1, L_eff, x.shape[1])),
            np.empty((1, L_eff), np.int64), _scratch(), (*geom, 10))
    out = np.empty_like(x)
    K.gather(c, codes, geom, out)
    assert np.sum((x - out) ** 2) < 0.9 * err0

"""The activation quantiser (compress/activations.py): geometry, sizes, determinism, warm starts,
wire round trip, and the gradient helpers of the backward formats."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.comm.wire import SectionReader, join_sections
from fedsqueeze.compress.activations import (
    GPQ,
    code_width,
    codebook_grad_means,
    codebook_grad_sums,
    to_fp16,
)
from tests import naive

# (q, R, L, grouping, B, d_a)
CASES = [
    (64, 1, 16, "position", 32, 1024),
    (64, 2, 4, "sample", 32, 1024),
    (16, 4, 2, "position", 5, 1024),
    (32, 1, 16, "position", 3, 512),
    (7, 7, 3, "sample", 2, 20),  # q does not divide d_a: zero padding
    (4, 1, 1, "position", 4, 8),  # a single centroid: 0-bit codes
    (8, 2, 64, "position", 3, 16),  # L > points per group: L_eff = B q / R
]


def _z(B, d_a, seed=0):
    g = np.random.default_rng(seed)
    return np.maximum(g.standard_normal((B, d_a)), 0).astype(np.float32)


def _gpq(case, iters=10):
    q, R, L, grouping, _, _ = case
    return GPQ(q=q, R=R, L=L, iters=iters, grouping=grouping)


def test_methods_worked_example():
    g = GPQ(q=64, R=1, L=16).geometry(32, 1024)
    assert (g.m, g.L_eff, g.width) == (16, 16, 4)
    assert (g.centroid_nbytes, g.code_nbytes) == (1024, 1024)
    assert g.theoretical_bits == 32 * 16 * 16 + 32 * 64 * 4 == 16_384


@pytest.mark.parametrize("case", CASES)
def test_encode_matches_the_oracle_and_sizes(case):
    q, R, L, grouping, B, d_a = case
    gpq = _gpq(case)
    z = _z(B, d_a)
    code, state = gpq.encode(z, seed=7, client=3, round=2)
    g = code.geometry
    assert g.L_eff == min(L, B * q // R) and g.m == -(-d_a // q)
    assert code.centroids.shape == (R, g.L_eff, g.m) and code.codes.shape == (B * q,)
    assert code.packed.nbytes == (B * q * code_width(g.L_eff) + 7) // 8
    # the oracle: k-means++ from the same Philox uniforms, then Lloyd
    points = naive.pq_points(z, q)
    gid = naive.pq_group_ids(B * q, q, R, grouping)
    u = np.stack([rng.uniform53(7, purpose=rng.Purpose.KMEANS_INIT, stream=3, round=2,
                                sub_id=r, n=g.L_eff) for r in range(R)])
    want_c, want_codes, _ = naive.pq_lloyd(points, naive.pq_kmeanspp(points, gid, u), gid, 10)
    np.testing.assert_array_equal(code.centroids, want_c)
    np.testing.assert_array_equal(code.codes, want_codes)
    np.testing.assert_array_equal(gpq.decode(code), naive.pq_decode(want_c, want_codes, gid,
                                                                    d_a, B))
    np.testing.assert_array_equal(state, code.centroids)


@pytest.mark.parametrize("case", CASES)
def test_encode_is_deterministic_and_keyed_by_client_and_round(case):
    gpq = _gpq(case, iters=0)
    z = _z(case[4], case[5], seed=1)
    a, _ = gpq.encode(z, seed=1, client=0, round=0)
    b, _ = gpq.encode(z, seed=1, client=0, round=0)
    assert a.packed.tobytes() == b.packed.tobytes()
    np.testing.assert_array_equal(a.centroids, b.centroids)
    g = a.geometry
    if g.L_eff > 1 and g.points // g.R > g.L_eff:
        others = [gpq.encode(z, seed=1, client=c, round=t)[0].centroids
                  for c, t in ((1, 0), (0, 1))]
        assert any(not np.array_equal(a.centroids, o) for o in others)


def test_warm_start_uses_the_state_when_its_shape_matches():
    gpq = GPQ(q=64, R=1, L=16, iters=0)
    z = _z(32, 1024, seed=2)
    state = np.random.default_rng(3).standard_normal((1, 16, 16)).astype(np.float32)
    code, nxt = gpq.encode(z, seed=0, client=0, round=0, state=state)
    np.testing.assert_array_equal(code.centroids, state)  # iters = 0: the warm start is kept
    np.testing.assert_array_equal(code.codes, naive.pq_assign(naive.pq_points(z, 64), state,
                                                              np.zeros(32 * 64, int)))
    cold, _ = gpq.encode(z, seed=0, client=0, round=0)
    stale, _ = gpq.encode(z, seed=0, client=0, round=0, state=state[:, :8])  # wrong shape
    np.testing.assert_array_equal(stale.centroids, cold.centroids)
    assert nxt is not state


def test_more_centroids_lower_the_distortion():
    z = _z(32, 1024, seed=4)
    errs = []
    for L in (2, 4, 16, 64):
        gpq = GPQ(q=64, R=1, L=L)
        errs.append(np.linalg.norm(z - gpq.decode(gpq.encode(z, seed=0, client=0, round=0)[0])))
    assert errs == sorted(errs, reverse=True) and errs[-1] < 0.8 * errs[0]


@pytest.mark.parametrize("case", CASES)
def test_read_is_the_inverse_of_the_sections(case):
    gpq = _gpq(case)
    code, _ = gpq.encode(_z(case[4], case[5], seed=5), seed=0, client=0, round=0)
    payload = b"".join(bytes(p) for p in join_sections(code.sections))
    r = SectionReader(payload, "test")
    back = gpq.read(r, code.geometry)
    r.finish()
    np.testing.assert_array_equal(back.centroids, code.centroids)
    np.testing.assert_array_equal(back.codes, code.codes)
    np.testing.assert_array_equal(gpq.decode(back), gpq.decode(code))


def test_decode_into_a_caller_buffer():
    gpq = GPQ(q=4, R=1, L=2)
    code, _ = gpq.encode(_z(3, 8), seed=0, client=0, round=0)
    buf = np.empty((3, 8), np.float32)
    assert gpq.decode(code, out=buf) is buf
    with pytest.raises(ValueError, match="shape"):
        gpq.decode(code, out=np.empty((3, 9), np.float32))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"q": 6, "R": 4}, "divide"), ({"L": 0}, "L = 0"), ({"q": 0}, "q = 0"),
    ({"iters": -1}, "iters"), ({"grouping": "rows"}, "grouping"), ({"L": 2.5}, "L = 2.5"),
    ({"R": True}, "R = True")])
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPQ(**kwargs)


def test_config_repr_and_equality():
    a = GPQ(q=32, R=2, L=8, iters=3, grouping="sample")
    b = eval(repr(a), {"GPQ": GPQ})  # noqa: S307 - our own repr
    assert a == b and hash(a) == hash(b) and GPQ(**a.get_config()) == a
    assert a != GPQ(q=32, R=2, L=8, iters=3)


def test_encode_rejects_a_wrong_dtype():
    with pytest.raises(TypeError, match="float32"):
        GPQ(q=4).encode(np.zeros((2, 8)), seed=0, client=0, round=0)


@pytest.mark.parametrize("case", CASES)
def test_codebook_gradient_sums_and_means(case):
    gpq = _gpq(case)
    q, R, _, grouping, B, d_a = case
    code, _ = gpq.encode(_z(B, d_a, seed=6), seed=0, client=0, round=0)
    grad = np.random.default_rng(7).standard_normal((B, d_a)).astype(np.float32)
    sums = codebook_grad_sums(code, grad)
    gid = naive.pq_group_ids(B * q, q, R, grouping)
    want, counts = naive.pq_sums(naive.pq_points(grad, q), code.codes, gid, R,
                                 code.geometry.L_eff)
    np.testing.assert_array_equal(sums, want.astype(np.float32))
    means = codebook_grad_means(code, sums)
    assert means.shape == (B, d_a)
    # every sub-vector of a cluster receives the same mean; the cluster total is preserved
    sub = naive.pq_points(means, q)
    for p in range(B * q):
        np.testing.assert_allclose(sub[p] * counts[gid[p], code.codes[p]],
                                   sums[gid[p], code.codes[p]], rtol=1e-5, atol=1e-6)


def test_fp16_rounds_to_nearest_even_and_clamps():
    x = np.array([1.0, 1 + 2**-11, 1 + 3 * 2**-11, 1e6, -1e6, np.nan], np.float32)
    h = to_fp16(x)
    assert h.dtype == np.dtype("<f2")
    assert h[:5].tolist() == [1.0, 1.0, 1.001953125, 65504.0, -65504.0] and np.isnan(h[5])

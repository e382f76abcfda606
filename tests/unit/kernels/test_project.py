"""Fastfood projection kernels against the explicit matrix in tests/naive.py (METHODS 2.4, 2.5)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.compress.subspace import Fastfood
from fedsqueeze.kernels.cpu import project as k
from tests import naive

pytestmark = [
    # with NUMBA_DISABLE_JIT=1 the shared Philox rounds run as Python on NumPy uint32 scalars,
    # whose wrap-around (intended, mod 2^32) NumPy reports as an overflow
    pytest.mark.filterwarnings("ignore:overflow encountered in scalar add:RuntimeWarning"),
]

# (D, d, block_log2): several blocks with a partial last one, L | D, one block longer than D
CASES = [(300, 10, 4), (256, 16, 4), (97, 5, None), (50, 7, 7), (1, 1, None)]


def explicit(A: Fastfood) -> np.ndarray:
    bits, perm, gauss, _ = A.blocks()
    signs = np.array([naive.unpack_sign_bits(b, A.L) for b in bits])
    return naive.fastfood_matrix(signs, perm, gauss, A.rows, A.dim)


def vec(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("cache", ["on", "off"])
@pytest.mark.parametrize("D,d,bl", CASES)
def test_forward_matches_explicit_matrix(D, d, bl, cache):
    A = Fastfood(D, d, seed=11, subspace=3, tensor=2, block_log2=bl, cache=cache)
    x = vec(d, D)
    np.testing.assert_allclose(A.forward(x), explicit(A) @ x.astype(np.float64),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cache", ["on", "off"])
@pytest.mark.parametrize("D,d,bl", CASES)
def test_transpose_matches_explicit_matrix(D, d, bl, cache):
    A = Fastfood(D, d, seed=11, subspace=3, tensor=2, block_log2=bl, cache=cache)
    g = vec(D, d)
    np.testing.assert_allclose(A.transpose(g), explicit(A).T @ g.astype(np.float64),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("D,d,bl", CASES)
def test_cached_and_regenerated_are_bit_identical(D, d, bl):
    on = Fastfood(D, d, seed=5, subspace=1, block_log2=bl, cache="on")
    off = Fastfood(D, d, seed=5, subspace=1, block_log2=bl, cache="off")
    x, g = vec(d, 1), vec(D, 2)
    assert on.forward(x).tobytes() == off.forward(x).tobytes()
    assert on.transpose(g).tobytes() == off.transpose(g).tobytes()


@pytest.mark.parametrize("D,d,bl", CASES[:3])
def test_add_mode_equals_separate_add(D, d, bl):
    A = Fastfood(D, d, seed=2, block_log2=bl)
    x, base = vec(d, 3), vec(D, 4)
    out = base.copy()
    A.forward(x, out, add=True)
    assert out.tobytes() == (base + A.forward(x)).tobytes()


@pytest.mark.parametrize("seed,subspace,tensor", [(0, 0, 0), (2**40 + 3, 77, 5)])
def test_random_blocks_follow_the_documented_keys(seed, subspace, tensor):
    # counter (c0 = element block, c1 = block b, c2 = subspace, c3 = purpose << 24 | tensor)
    A = Fastfood(40, 3, seed=seed, subspace=subspace, tensor=tensor, block_log2=4)
    bits, perm, gauss, scales = A.blocks()
    P = rng.Purpose
    for b in range(A.nb):
        kw = {"stream": b, "round": subspace, "sub_id": tensor}
        words = rng.random_u32(seed, purpose=P.FF_SIGN, n=A.L, **kw)
        np.testing.assert_array_equal(naive.unpack_sign_bits(bits[b], A.L),
                                      1.0 - 2.0 * (words & 1))
        np.testing.assert_array_equal(perm[b], rng.permutation(seed, A.L, purpose=P.FF_PERM,
                                                               **kw))
        np.testing.assert_array_equal(gauss[b], rng.normal(seed, purpose=P.FF_GAUSS, n=A.L,
                                                           **kw))
        g64 = gauss[b].astype(np.float64)
        assert scales[b] == 1.0 / np.sqrt(40 * float(np.sum(g64 * g64)))


@pytest.mark.parametrize("D,d,bl", [(256, 16, 4), (64, 64, 6)])
def test_unit_columns_exact_when_L_divides_D(D, d, bl):
    M = explicit(Fastfood(D, d, seed=9, block_log2=bl))
    np.testing.assert_allclose(np.linalg.norm(M, axis=0), 1.0, rtol=1e-12)


def test_kernel_accumulates_into_acc():
    A = Fastfood(64, 4, seed=1, block_log2=3)
    g = vec(64, 5)
    acc = np.ones(4)
    k.transpose_cached(g, *A.blocks(), np.empty(8, np.float32), np.empty(8, np.float32), acc)
    np.testing.assert_allclose(acc - 1.0, A.transpose(g), rtol=1e-6)


@pytest.mark.parametrize("fn", [k.gen_block, k.fill_cache, k.forward_cached, k.transpose_cached,
                                k.forward_regen, k.transpose_regen])
@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no dispatchers without JIT")
def test_no_inline_fastmath(fn):
    assert fn.targetoptions.get("fastmath") is False

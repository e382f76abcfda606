"""FWHT CPU kernel against the NumPy oracle of tests/naive.py (METHODS.md section 2.4)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fedsqueeze.kernels.cpu import fwht as k
from tests import naive

SIZES = [1, 2, 8, 64, 1024]


def vector(n: int, seed: int, kind: str, dtype=np.float32) -> np.ndarray:
    g = np.random.default_rng(seed)
    if kind == "ints":
        return g.integers(-4, 5, n).astype(dtype)  # sums of small integers are exact
    return g.standard_normal(n).astype(dtype)


@pytest.mark.parametrize("n", SIZES)
def test_integer_input_matches_oracle_exactly(n):
    x = vector(n, n, "ints")
    want = naive.fwht(x)
    k.fwht(x)
    np.testing.assert_array_equal(x, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", SIZES)
def test_float_input_matches_oracle(n, dtype):
    x = vector(n, 7 + n, "normal", dtype)
    want = naive.fwht(x)
    k.fwht(x)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(x, want, rtol=tol, atol=tol * np.sqrt(n) * np.abs(want).max())


@pytest.mark.parametrize("n", [4, 256])
def test_involution_up_to_n(n):
    x = vector(n, 3, "normal", np.float64)
    y = x.copy()
    k.fwht(y)
    k.fwht(y)
    np.testing.assert_allclose(y, n * x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows,n", [(1, 16), (5, 32)])
def test_batch_equals_rows_bit_for_bit(rows, n):
    x = vector(rows * n, 11, "normal").reshape(rows, n)
    want = x.copy()
    for r in range(rows):
        k.fwht(want[r])
    k.fwht_batch(x)
    assert x.tobytes() == want.tobytes()


def test_butterfly_order_is_the_documented_one():
    # (x_j, x_{j+h}) <- (x_j + x_{j+h}, x_j - x_{j+h}) for h = 1, 2: H_4 in Sylvester order
    x = np.eye(4, dtype=np.float32)
    k.fwht_batch(x)
    np.testing.assert_array_equal(x, naive.hadamard(4))


@pytest.mark.parametrize("fn", [k.fwht, k.fwht_batch])
@pytest.mark.skipif(numba.config.DISABLE_JIT, reason="no dispatchers without JIT")
def test_no_inline_fastmath(fn):
    assert fn.targetoptions.get("fastmath") is False

"""Dynamic client sampling of seed 000 (METHODS.md 1.4), as implemented in fl/sampling.py.

``C_t = max(C_min, C_0 exp(-beta t))``, ``m_t = max(1, round(C_t N))``; uniform mode takes the
``m_t`` smallest 64-bit Philox SAMPLING keys, norm mode Efraimidis-Spirakis keys. The oracles here
recompute the Philox words with the NumPy implementation in tests/naive.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsqueeze.fl.sampling import Sampler, count_at, fraction_at, sample_uniform, sample_weighted
from tests import naive

SAMPLING = 2
DEFAULTS = dict(fraction=0.5, dynamic=True, beta=0.05, c_min=0.1)


def _words(seed: int, t: int, n: int):
    return naive.philox4x32_np(0, np.arange(n), t, SAMPLING << 24, seed & 0xFFFFFFFF,
                               (seed >> 32) & 0xFFFFFFFF)


def _uniform_oracle(seed: int, t: int, n: int, m: int) -> np.ndarray:
    w0, w1, _, _ = _words(seed, t, n)
    keys = (w1.astype(np.uint64) << np.uint64(32)) | w0.astype(np.uint64)
    return naive.smallest_keys(keys, m)


def _weighted_oracle(seed: int, t: int, probs: np.ndarray, m: int) -> np.ndarray:
    w0, w1, _, _ = _words(seed, t, probs.shape[0])
    u = ((w0 >> 5).astype(np.float64) * 2.0**26 + (w1 >> 6).astype(np.float64)) * 2.0**-53
    keys = -np.log1p(-u) / probs
    return np.sort(np.lexsort((np.arange(probs.shape[0]), keys))[:m])


@pytest.mark.parametrize("t,c", [(0, 0.5), (10, 0.303), (20, 0.184)])
def test_fraction_schedule(t, c):
    assert fraction_at(t, **DEFAULTS) == pytest.approx(c, abs=5e-4)


@pytest.mark.parametrize("t", [33, 34, 50, 1000])
def test_floor_reached_at_t33(t):
    assert fraction_at(32, **DEFAULTS) > 0.1
    assert fraction_at(t, **DEFAULTS) == 0.1


@pytest.mark.parametrize("t", [0, 7, 40])
def test_static_fraction_without_dynamic(t):
    assert fraction_at(t, fraction=0.3, dynamic=False, beta=0.05, c_min=0.1) == 0.3


@pytest.mark.parametrize("n,t,m", [(50, 0, 25), (50, 10, 15), (50, 20, 9), (50, 33, 5),
                                   (100, 0, 50), (3, 40, 1), (1, 0, 1)])
def test_count_and_sample_size(n, t, m):
    assert count_at(t, n, **DEFAULTS) == m
    assert m == max(1, round(max(0.1, 0.5 * math.exp(-0.05 * t)) * n))
    s = Sampler(7, n, **DEFAULTS).sample(t)
    assert s.shape == (m,) and np.all(np.diff(s) > 0) and s.min() >= 0 and s.max() < n


@pytest.mark.parametrize("seed,t,n", [(0, 0, 50), (123, 10, 50), (2**40 + 3, 33, 200)])
def test_uniform_sample_is_the_smallest_philox_keys(seed, t, n):
    m = count_at(t, n, **DEFAULTS)
    np.testing.assert_array_equal(Sampler(seed, n, **DEFAULTS).sample(t),
                                  _uniform_oracle(seed, t, n, m))


@pytest.mark.parametrize("mode", ["uniform", "norm"])
@pytest.mark.parametrize("seed", [0, 99])
def test_deterministic_and_keyed_only_by_seed_and_round(mode, seed):
    a = Sampler(seed, 60, mode=mode, **DEFAULTS)
    b = Sampler(seed, 60, mode=mode, **DEFAULTS)
    forward = [a.sample(t) for t in range(12)]
    backward = [b.sample(t) for t in reversed(range(12))][::-1]  # call order does not matter
    for x, y in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(x, y)
    m5 = count_at(5, 60, **DEFAULTS)
    direct = sample_uniform(seed, 5, 60, m5) if mode == "uniform" else forward[5]
    np.testing.assert_array_equal(a.sample(5), direct)
    assert not np.array_equal(a.sample(0), Sampler(seed + 1, 60, mode=mode, **DEFAULTS).sample(0))
    assert not np.array_equal(a.sample(0), a.sample(1))


@pytest.mark.parametrize("seed", [3])
def test_uniform_mode_ignores_observed_norms(seed):
    s = Sampler(seed, 40, **DEFAULTS)
    before = s.sample(4)
    for c in range(40):
        s.observe(c, float(c))
    np.testing.assert_array_equal(s.sample(4), before)


@pytest.mark.parametrize("seed", [0, 1])
def test_norm_mode_before_any_update_is_uniform_probabilities(seed):
    s = Sampler(seed, 20, mode="norm", **DEFAULTS)
    np.testing.assert_allclose(s.probabilities(), np.full(20, 1 / 20))
    np.testing.assert_array_equal(s.sample(2), _weighted_oracle(seed, 2, np.full(20, 1 / 20),
                                                                count_at(2, 20, **DEFAULTS)))


@pytest.mark.parametrize("eps", [0.1, 0.5])
def test_norm_mode_probabilities_and_oracle(eps):
    n = 30
    s = Sampler(5, n, mode="norm", epsilon=eps, **DEFAULTS)
    for c in range(0, n, 2):
        s.observe(c, 1.0 + c)
    p = s.probabilities()
    scores = np.array([1.0 + c if c % 2 == 0 else 29.0 for c in range(n)])  # unseen: max seen
    np.testing.assert_allclose(p, (1 - eps) * scores / scores.sum() + eps / n)
    assert p.sum() == pytest.approx(1.0)
    m6 = count_at(6, n, **DEFAULTS)
    np.testing.assert_array_equal(s.sample(6), _weighted_oracle(5, 6, p, m6))
    np.testing.assert_array_equal(sample_weighted(5, 6, p, 4), _weighted_oracle(5, 6, p, 4))


@pytest.mark.parametrize("seed,rounds", [(11, 300)])
def test_norm_mode_prefers_large_norm_clients(seed, rounds):
    n, big = 50, 10
    s = Sampler(seed, n, mode="norm", fraction=0.2, dynamic=False, beta=0.05, c_min=0.1)
    for c in range(n):
        s.observe(c, 10.0 if c < big else 0.1)
    hits = np.zeros(n)
    for t in range(rounds):
        hits[s.sample(t)] += 1
    rate_big, rate_small = hits[:big].mean() / rounds, hits[big:].mean() / rounds
    # pi_big ~ 0.088, pi_small ~ 0.003 with m = 10 draws: big clients are in most rounds
    assert rate_big > 0.6 and rate_small < 0.15 and rate_big > 5 * rate_small
    u = Sampler(seed, n, fraction=0.2, dynamic=False, beta=0.05, c_min=0.1)
    uhits = np.zeros(n)
    for t in range(rounds):
        uhits[u.sample(t)] += 1
    assert abs(uhits[:big].mean() - uhits[big:].mean()) / rounds < 0.08  # uniform: no preference

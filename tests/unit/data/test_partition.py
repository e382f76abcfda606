"""Partitions: coverage, determinism, the NIID-Bench Dirichlet loop, shards, validation holds."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.data.partition import dirichlet_min_size, partition, validation_split
from fedsqueeze.errors import ConfigError

LABELS = np.repeat(np.arange(10), 200)  # 2,000 samples, balanced
SKEWED = np.concatenate([np.repeat(np.arange(10), np.arange(10, 110, 10)), np.zeros(5, int)])


def _niid_bench(labels, n_parties, beta, seed, min_require_size=10):
    """NIID-Bench ``partition_data`` ``noniid-labeldir``, transcribed with an explicit generator."""
    gen = rng.numpy_generator(seed, rng.Purpose.PARTITION, 0)
    n = labels.shape[0]
    min_size = 0
    while min_size < min_require_size:
        idx_batch = [[] for _ in range(n_parties)]
        for k in range(int(labels.max()) + 1):
            idx_k = np.where(labels == k)[0]
            gen.shuffle(idx_k)
            proportions = gen.dirichlet(np.repeat(beta, n_parties))
            proportions = np.array([p * (len(idx_j) < n / n_parties)
                                    for p, idx_j in zip(proportions, idx_batch, strict=True)])
            proportions = proportions / proportions.sum()
            proportions = (np.cumsum(proportions) * len(idx_k)).astype(int)[:-1]
            idx_batch = [idx_j + idx.tolist()
                         for idx_j, idx in zip(idx_batch, np.split(idx_k, proportions),
                                               strict=True)]
            min_size = min(len(idx_j) for idx_j in idx_batch)
    out = []
    for j in range(n_parties):
        batch = np.array(idx_batch[j], dtype=np.int64)
        gen.shuffle(batch)
        out.append(batch)
    return out


SCHEMES = ["iid", "iid_uniform", "dirichlet", "shards"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("labels", "clients"), [(LABELS, 20), (SKEWED, 7)])
def test_every_sample_exactly_once(scheme, labels, clients):
    parts = partition(labels, clients, scheme, seed=1)
    assert len(parts) == clients and all(p.dtype == np.int64 for p in parts)
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_deterministic_in_seed(scheme):
    a, b = partition(LABELS, 10, scheme, seed=4), partition(LABELS, 10, scheme, seed=4)
    c = partition(LABELS, 10, scheme, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(("labels", "clients", "alpha", "seed"), [
    (LABELS, 20, 0.5, 0), (LABELS, 10, 0.1, 3), (SKEWED, 5, 1.0, 2), (LABELS, 50, 5.0, 1)])
def test_dirichlet_equals_niid_bench(labels, clients, alpha, seed):
    ours = partition(labels, clients, "dirichlet", seed=seed, alpha=alpha)
    ref = _niid_bench(labels, clients, alpha, seed)
    for x, y in zip(ours, ref, strict=True):
        np.testing.assert_array_equal(x, y)
    assert min(len(p) for p in ours) >= 10


def _label_skew(parts, labels):
    """Mean total-variation distance between client label mixes and the global mix."""
    k = int(labels.max()) + 1
    glob = np.bincount(labels, minlength=k) / len(labels)
    return np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - glob).sum()
                    for p in parts])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dirichlet_skew_grows_as_alpha_falls(seed):
    skews = [_label_skew(partition(LABELS, 20, "dirichlet", seed=seed, alpha=a), LABELS)
             for a in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]


@pytest.mark.parametrize(("n", "clients", "min_size", "expect"), [
    (2000, 20, 10, 10), (100, 20, 10, 2), (30, 20, 10, 1), (2000, 20, 0, 1)])
def test_dirichlet_min_size_rule(n, clients, min_size, expect):
    assert dirichlet_min_size(n, clients, min_size) == expect


@pytest.mark.parametrize("alpha", [0.05, 0.5])
def test_dirichlet_small_set_lowers_min_size(alpha):
    labels = np.repeat(np.arange(10), 6)  # 60 samples, 20 clients: 10 per client is impossible
    parts = partition(labels, 20, "dirichlet", seed=0, alpha=alpha)
    assert min(len(p) for p in parts) >= 1
    assert sum(len(p) for p in parts) == 60


@pytest.mark.parametrize(("clients", "per_client"), [(10, 2), (5, 4), (20, 1)])
def test_shards_label_counts(clients, per_client):
    parts = partition(LABELS, clients, "shards", seed=2, shards_per_client=per_client)
    shard = len(LABELS) // (clients * per_client)
    for p in parts:
        counts = np.bincount(LABELS[p], minlength=10)
        assert len(p) == shard * per_client
        assert np.count_nonzero(counts) <= per_client
        assert np.all(counts % shard == 0)


def test_iid_sizes_and_uniform_assignment():
    parts = partition(LABELS, 7, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    uni = partition(LABELS, 7, "iid_uniform", seed=0)
    assert sum(len(p) for p in uni) == 2000 and max(len(p) for p in uni) - min(
        len(p) for p in uni) > 1  # multinomial sizes, not equal ones
    assert all(np.all(np.diff(p) > 0) for p in uni)


def test_natural_returns_given_groups():
    groups = [np.array([2, 0]), np.array([1]), np.array([3, 4])]
    parts = partition(np.zeros(5, int), 3, "natural", seed=0, groups=groups)
    assert [p.tolist() for p in parts] == [[2, 0], [1], [3, 4]]


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"scheme": "natural", "groups": None}, ConfigError, "needs groups"),
    ({"scheme": "natural", "groups": [np.array([0, 1])] * 3}, ValueError, "exactly once"),
    ({"scheme": "bogus"}, ConfigError, r"unknown partition scheme 'bogus'.*dirichlet.*shards"),
    ({"scheme": "dirichlet", "alpha": 0.0}, ConfigError, "alpha = 0.0"),
    ({"scheme": "shards", "shards_per_client": 1000}, ConfigError, "shards but only"),
])
def test_partition_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        partition(np.zeros(5, int), 3, seed=0, **kwargs)


@pytest.mark.parametrize(("n", "frac", "client"), [(50, 0.1, 0), (37, 0.2, 5), (9, 0.1, 1)])
def test_validation_split(n, frac, client):
    idx = np.arange(100, 100 + n)
    tr, val = validation_split(idx, frac, seed=3, client=client)
    assert len(val) == int(frac * n)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, val])), idx)
    again = validation_split(idx, frac, seed=3, client=client)
    np.testing.assert_array_equal(val, again[1])
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(val) > 0)


def test_validation_split_depends_on_client():
    idx = np.arange(200)
    held = [validation_split(idx, 0.1, seed=0, client=c)[1] for c in range(3)]
    assert not np.array_equal(held[0], held[1]) and not np.array_equal(held[1], held[2])

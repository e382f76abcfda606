"""Client partitions of a training set (METHODS.md section 7.7): seeded index arrays, not copies.

Randomness comes from ``rng.numpy_generator(seed, Purpose.PARTITION, stream)`` with the stream
layout

==========================  =============================================================
stream                      use
==========================  =============================================================
``PARTITION_STREAM`` = 0    :func:`partition`
``SPLIT_STREAM`` = 1        seeded train/test splits and user subsets of loaders
``2 + client``              :func:`validation_split` of that client
==========================  =============================================================

so a result depends on the seed (and the client), never on the rank or on call order.

>>> import numpy as np
>>> parts = partition(np.repeat(np.arange(4), 25), 5, "iid", seed=0)
>>> [len(p) for p in parts], np.array_equal(np.sort(np.concatenate(parts)), np.arange(100))
([20, 20, 20, 20, 20], True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .. import rng
from ..errors import ConfigError

__all__ = ["partition", "validation_split", "dirichlet_min_size", "SCHEMES", "PARTITION_STREAM",
           "DIRICHLET_MAX_TRIES"]

PARTITION_STREAM = 0
DIRICHLET_MAX_TRIES = 1000
"""Dirichlet draws at one minimum size before the minimum is halved (see :func:`partition`)."""


def _generator(seed: int, stream: int = PARTITION_STREAM) -> np.random.Generator:
    return rng.numpy_generator(seed, rng.Purpose.PARTITION, stream)


def _iid(labels, num_clients, gen, **_):
    return np.array_split(gen.permutation(len(labels)), num_clients)


def _iid_uniform(labels, num_clients, gen, **_):
    owner = gen.integers(0, num_clients, len(labels))
    order = np.argsort(owner, kind="stable")
    return np.split(order, np.cumsum(np.bincount(owner, minlength=num_clients))[:-1])


def _shards(labels, num_clients, gen, *, shards_per_client, **_):
    num_shards = num_clients * shards_per_client
    if num_shards > len(labels):
        raise ConfigError(f"shards: {num_shards} shards but only {len(labels)} samples")
    shards = np.array_split(np.argsort(labels, kind="stable"), num_shards)
    perm = gen.permutation(num_shards)
    return [np.concatenate([shards[s] for s in perm[j * shards_per_client:
                                                    (j + 1) * shards_per_client]])
            for j in range(num_clients)]


def dirichlet_min_size(num_samples: int, num_clients: int, min_size: int) -> int:
    """The minimum client size the Dirichlet loop starts from: ``min(min_size, n // (2 N))``,
    at least 1, so that a small training set (few samples per client) can still be split."""
    return max(1, min(min_size, num_samples // (2 * num_clients)))


def _dirichlet_once(labels, num_clients, gen, alpha, num_classes):
    """One draw: ``(order, owner, sizes)``, the shuffled class-by-class sample order and the
    client of each position. Only sizes are needed to accept or reject a draw; the parts are
    built once, from the accepted one, by :func:`_dirichlet_parts`."""
    n = len(labels)
    sizes = np.zeros(num_clients, dtype=np.int64)
    order, owner = [], []
    clients = np.arange(num_clients)
    for k in range(num_classes):
        idx_k = np.flatnonzero(labels == k)
        gen.shuffle(idx_k)
        p = gen.dirichlet(np.repeat(alpha, num_clients))
        p = p * (sizes < n / num_clients)  # balance rule: full clients get no more
        total = p.sum()
        # every client already full (possible only once all samples are placed) or the draw
        # underflowed to zero: fall back to equal shares instead of dividing by zero
        p = p / total if total > 0 else np.full(num_clients, 1.0 / num_clients)
        cuts = (np.cumsum(p) * len(idx_k)).astype(np.int64)[:-1]
        counts = np.diff(cuts, prepend=0, append=len(idx_k))
        sizes += counts
        order.append(idx_k)
        owner.append(np.repeat(clients, counts))
    return order, owner, sizes


def _dirichlet_parts(order, owner, sizes) -> list[np.ndarray]:
    """Client ``j`` gets its share of class 0, then of class 1, ... (each in shuffled order)."""
    flat = np.concatenate(order) if order else np.zeros(0, np.int64)
    by_client = flat[np.argsort(np.concatenate(owner) if owner else flat, kind="stable")]
    return np.split(by_client, np.cumsum(sizes)[:-1])


def _dirichlet(labels, num_clients, gen, *, alpha, min_size, **_):
    if not alpha > 0:
        raise ConfigError(f"dirichlet: alpha = {alpha}, expected > 0")
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    need = dirichlet_min_size(len(labels), num_clients, min_size)
    while True:
        for _ in range(DIRICHLET_MAX_TRIES):
            order, owner, sizes = _dirichlet_once(labels, num_clients, gen, alpha, num_classes)
            if sizes.min() >= need:
                parts = _dirichlet_parts(order, owner, sizes)
                for part in parts:
                    gen.shuffle(part)
                return parts
        if need == 1:
            raise RuntimeError(f"dirichlet: no draw gave every one of {num_clients} clients a "
                               f"sample in {DIRICHLET_MAX_TRIES} tries (alpha = {alpha}, "
                               f"{len(labels)} samples); use fewer clients or a larger alpha")
        need //= 2


SCHEMES: dict[str, Callable[..., list[np.ndarray]]] = {
    "iid": _iid, "iid_uniform": _iid_uniform, "dirichlet": _dirichlet, "shards": _shards,
}
"""Seeded schemes by name; ``"natural"`` is handled apart, since it takes given groups."""


def partition(
    labels: np.ndarray, num_clients: int, scheme: str, *, seed: int, alpha: float = 0.5,
    shards_per_client: int = 2, min_size: int = 10,
    groups: Sequence[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` among ``num_clients`` clients.

    Parameters
    ----------
    labels : ndarray of int
        Training labels in ``[0, num_classes)``.
    num_clients : int
    scheme : {"iid", "iid_uniform", "dirichlet", "shards", "natural"}
        ``iid``: a permutation cut by ``numpy.array_split`` (near-equal sizes).
        ``iid_uniform``: every sample to a uniformly random client (clients may be empty).
        ``dirichlet``: the NIID-Bench ``noniid-labeldir`` loop: per class ``Dir_N(alpha)``
        proportions, zeroed for clients already holding ``n / N`` samples, redrawn until every
        client has at least ``m`` samples. ``m`` starts at :func:`dirichlet_min_size` (the
        requested ``min_size``, lowered to ``n // (2 N)`` for small sets) and is halved after
        each ``DIRICHLET_MAX_TRIES`` failed draws, down to 1; ``RuntimeError`` past that.
        ``shards``: sort by label (stable), cut into ``N * shards_per_client`` near-equal
        shards, give each client ``shards_per_client`` random shards.
        ``natural``: ``groups`` as given (one per client; validated, not reshuffled).
    seed : int
        Run seed; the draws come from ``numpy_generator(seed, PARTITION, 0)``.
    alpha, shards_per_client, min_size
        Scheme parameters (see above).
    groups : sequence of ndarray, optional
        Required by ``natural`` (``Dataset.train_groups``).

    Returns
    -------
    list of ndarray
        ``num_clients`` int64 index arrays; each sample appears exactly once.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or (labels.size and labels.min() < 0):
        raise ValueError(f"labels must be 1-D non-negative integers, got shape {labels.shape}")
    if num_clients < 1:
        raise ConfigError(f"num_clients = {num_clients}, expected >= 1")
    if scheme == "natural":
        if groups is None or len(groups) != num_clients:
            raise ConfigError(f"natural partition needs groups with one entry per client "
                              f"({num_clients}), got {None if groups is None else len(groups)}")
        out = [np.asarray(g, dtype=np.int64) for g in groups]
        counts = np.bincount(np.concatenate(out), minlength=len(labels)) if out else []
        if len(counts) != len(labels) or np.any(counts != 1):
            raise ValueError("natural partition: groups must cover every sample exactly once")
        return out
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown partition scheme {scheme!r}; known: "
                          f"{', '.join(sorted([*SCHEMES, 'natural']))}")
    if num_clients > len(labels) and scheme in ("iid", "dirichlet"):
        raise ConfigError(f"{scheme}: {num_clients} clients but only {len(labels)} samples")
    if shards_per_client < 1 or min_size < 0:
        raise ConfigError(f"shards_per_client = {shards_per_client}, min_size = {min_size}")
    parts = SCHEMES[scheme](labels.astype(np.int64), num_clients, _generator(seed), alpha=alpha,
                            shards_per_client=shards_per_client, min_size=min_size)
    return [np.asarray(p, dtype=np.int64) for p in parts]


def validation_split(indices: np.ndarray, frac: float, seed: int,
                     client: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``int(frac * len(indices))`` of one client's samples for validation.

    The held-out positions are seeded by (seed, client) (PARTITION, stream ``2 + client``);
    both outputs keep the input's relative order.

    Returns
    -------
    train, val : ndarray
        Disjoint subsets of ``indices`` whose union is ``indices``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if not 0.0 <= frac < 1.0:
        raise ConfigError(f"validation fraction {frac}, expected in [0, 1)")
    if client < 0:
        raise ValueError(f"client = {client}, expected >= 0")
    n_val = int(frac * len(indices))
    held = np.zeros(len(indices), dtype=bool)
    held[_generator(seed, 2 + client).permutation(len(indices))[:n_val]] = True
    return indices[~held], indices[held]

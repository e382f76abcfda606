"""Client samplers keyed by (seed, round): identical on any number of ranks (METHODS.md 1.4)."""

from __future__ import annotations

import math

import numpy as np

from .. import rng
from ..kernels.cpu.philox import philox4x32, u53_from

import numba as nb

from ..kernels.config import NJIT


@nb.njit(**NJIT)
def _uniform_keys(out, t, k0, k1, c3):  # pragma: no cover - compiled
    # kappa_c = Philox(SAMPLING, c2 = t, stream c1 = c) as a 64-bit integer (words 0, 1 of block 0)
    for c in range(out.shape[0]):
        w0, w1, w2, w3 = philox4x32(np.uint32(0), np.uint32(c), np.uint32(t), c3, k0, k1)
        out[c] = (np.uint64(w1) << np.uint64(32)) | np.uint64(w0)


@nb.njit(**NJIT)
def _u53_keys(out, t, k0, k1, c3):  # pragma: no cover - compiled
    for c in range(out.shape[0]):
        w0, w1, w2, w3 = philox4x32(np.uint32(0), np.uint32(c), np.uint32(t), c3, k0, k1)
        out[c] = u53_from(w0, w1)


def fraction_at(t: int, fraction: float, *, dynamic: bool, beta: float, c_min: float) -> float:
    """``C_t = max(c_min, fraction * exp(-beta t))`` if dynamic, else ``fraction``."""
    if not dynamic:
        return fraction
    return max(c_min, fraction * math.exp(-beta * t))


def count_at(t: int, num_clients: int, **kw) -> int:
    """``m_t = max(1, round(C_t N))``."""
    return max(1, min(num_clients, int(round(fraction_at(t, **kw) * num_clients))))


def sample_uniform(seed: int, t: int, num_clients: int, m: int) -> np.ndarray:
    """The ``m`` clients with the smallest 64-bit Philox keys (ties by id), sorted by id."""
    keys = np.empty(num_clients, dtype=np.uint64)
    k0, k1 = rng.key_of(seed)
    _uniform_keys(keys, np.uint32(t), k0, k1, rng.counter3(rng.Purpose.SAMPLING))
    if m >= num_clients:
        return np.arange(num_clients, dtype=np.int64)
    order = np.lexsort((np.arange(num_clients), keys))
    return np.sort(order[:m]).astype(np.int64)


def sample_weighted(seed: int, t: int, probs: np.ndarray, m: int) -> np.ndarray:
    """Efraimidis-Spirakis without replacement: the ``m`` smallest ``-ln(1 - u53_c) / pi_c``."""
    n = probs.shape[0]
    u = np.empty(n, dtype=np.float64)
    k0, k1 = rng.key_of(seed)
    _u53_keys(u, np.uint32(t), k0, k1, rng.counter3(rng.Purpose.SAMPLING))
    with np.errstate(divide="ignore"):
        keys = -np.log1p(-u) / probs
    order = np.lexsort((np.arange(n), keys))
    return np.sort(order[:m]).astype(np.int64)


class Sampler:
    """Uniform or norm-weighted sampling with an optional dynamic fraction (seed 000).

    Norm-weighted mode keeps ``s_c`` = norm of client ``c``'s last decoded update (the server has
    it, no bytes); never-seen clients get ``max s`` (1 before any update).
    """

    def __init__(self, seed: int, num_clients: int, *, mode: str = "uniform", fraction: float = 0.5,
                 dynamic: bool = False, beta: float = 0.05, c_min: float = 0.1,
                 epsilon: float = 0.1) -> None:
        self.seed, self.n, self.mode = seed, num_clients, mode
        self.kw = dict(fraction=fraction, dynamic=dynamic, beta=beta, c_min=c_min)
        self.epsilon = epsilon
        self.scores = np.full(num_clients, np.nan) if mode == "norm" else None

    def fraction(self, t: int) -> float:
        return fraction_at(t, **self.kw)

    def count(self, t: int) -> int:
        return count_at(t, self.n, **self.kw)

    def sample(self, t: int) -> np.ndarray:
        m = self.count(t)
        if self.mode == "uniform":
            return sample_uniform(self.seed, t, self.n, m)
        return sample_weighted(self.seed, t, self.probabilities(), m)

    def probabilities(self) -> np.ndarray:
        s = self.scores.copy()
        seen = ~np.isnan(s)
        s[~seen] = s[seen].max() if seen.any() else 1.0
        total = s.sum()
        base = s / total if total > 0 else np.full(self.n, 1.0 / self.n)
        return (1 - self.epsilon) * base + self.epsilon / self.n

    def observe(self, client: int, update_norm: float) -> None:
        if self.scores is not None:
            self.scores[client] = update_norm

    def state_dict(self) -> dict:
        return {} if self.scores is None else {"scores": self.scores.copy()}

    def load_state_dict(self, d: dict) -> None:
        if self.scores is not None and "scores" in d:
            self.scores[:] = d["scores"]

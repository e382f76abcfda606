"""Which worker trains which sampled client in a round (deterministic).

``balanced`` (default): longest-processing-time first by sample count — clients in decreasing
sample count (ties by id) go to the worker with the least work so far (ties by rank), so every
worker gets about the same number of samples to train. ``home``: client ``c`` always lives on
worker ``1 + c mod W`` (METHODS.md 0.3), so per-client state never moves.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["assign", "home_worker"]


def home_worker(client: int, workers: list[int]) -> int:
    return workers[client % len(workers)]


def assign(clients: np.ndarray, samples: np.ndarray, workers: list[int], mode: str = "balanced",
           exclude: set[int] | frozenset = frozenset()) -> dict[int, np.ndarray]:
    """Map every worker rank to the sorted ids of the clients it trains this round.

    >>> assign(np.array([0, 1, 2, 3]), np.array([10, 40, 10, 20]), [1, 2])
    {1: array([1]), 2: array([0, 2, 3])}
    """
    live = [w for w in workers if w not in exclude]
    if not live:
        raise RuntimeError("no live worker ranks left")
    out: dict[int, list[int]] = {w: [] for w in live}
    if mode == "home":
        for c in clients:
            w = home_worker(int(c), workers)
            if w in exclude:  # the home is gone: fall back to a live worker, deterministically
                w = live[int(c) % len(live)]
            out[w].append(int(c))
    else:
        order = sorted((int(c) for c in clients), key=lambda c: (-int(samples[c]), c))
        heap = [(0, w) for w in live]
        heapq.heapify(heap)
        for c in order:
            load, w = heapq.heappop(heap)
            out[w].append(c)
            heapq.heappush(heap, (load + int(samples[c]), w))
    return {w: np.array(sorted(cs), dtype=np.int64) for w, cs in out.items()}

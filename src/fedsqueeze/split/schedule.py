"""Which clients the split server serves, where they live, and in what order (METHODS.md 5.1).

A round runs in lockstep: local step ``s = 1, 2, ...`` of every participating client, in
increasing client id, before step ``s + 1`` of any. Client ``c`` has
``tau_c = min(E * ceil(n_c / B), train.max_steps)`` steps (the batches of
:meth:`fedsqueeze.fl.train.Trainer.batches`) and simply drops out of later steps. Both the server
and the workers derive the whole schedule from the config, so no step counts travel.

Clients live on their home worker ``1 + (c mod W)`` (METHODS.md 0.3): the k-means warm starts
then never move between ranks, and the order of service does not depend on ``W``.

>>> plan = RoundPlan.build([3, 0, 5], samples=[10, 70, 0, 33, 0, 40], batch=32, epochs=1)
>>> plan.clients.tolist(), [plan.steps[c] for c in plan.clients]
([0, 3, 5], [1, 2, 2])
>>> [plan.active(s).tolist() for s in (1, 2)], plan.batch_at(3, 2)
([[0, 3, 5], [3, 5]], 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..fl.schedule import assign

__all__ = ["steps_for", "batch_at", "placement", "RoundPlan", "MAX_STEPS"]

MAX_STEPS = 0xFFFF
"""Steps per round are a u16 on the wire and in ``/comm``."""


def steps_for(n: int, batch: int, epochs: int, max_steps: int | None = None) -> int:
    """Local steps of a client with ``n`` samples."""
    per_epoch = -(-int(n) // int(batch))
    total = per_epoch * int(epochs)
    return total if max_steps is None else min(total, int(max_steps))


def batch_at(n: int, batch: int, step: int) -> int:
    """Batch size of local step ``step`` (1-based) of a client with ``n`` samples."""
    per_epoch = -(-int(n) // int(batch))
    i = (int(step) - 1) % per_epoch
    return min(int(batch), int(n) - i * int(batch))


def placement(clients: np.ndarray, workers: list[int],
              exclude=frozenset()) -> dict[int, np.ndarray]:
    """Home worker of every client (``fl.schedule.assign`` in ``home`` mode)."""
    return assign(np.asarray(clients, np.int64), np.zeros(0), workers, "home", exclude=exclude)


@dataclass(frozen=True)
class RoundPlan:
    """The lockstep schedule of one round: participating clients and their step counts."""

    clients: np.ndarray  # increasing ids of the clients that train
    steps: dict[int, int]
    samples: dict[int, int]
    batch: int

    @classmethod
    def build(cls, clients: Sequence[int], *, samples: Sequence[int] | np.ndarray, batch: int,
              epochs: int, max_steps: int | None = None) -> RoundPlan:
        ids = np.array(sorted(int(c) for c in clients if int(samples[int(c)]) > 0), np.int64)
        n = {int(c): int(samples[int(c)]) for c in ids}
        steps = {c: steps_for(n[c], batch, epochs, max_steps) for c in n}
        if steps and max(steps.values()) > MAX_STEPS:
            raise ValueError(f"{max(steps.values())} local steps in one round exceed {MAX_STEPS}; "
                             "lower train.epochs or set train.max_steps")
        return cls(ids, steps, n, int(batch))

    @property
    def n_steps(self) -> int:
        return max(self.steps.values(), default=0)

    def active(self, step: int) -> np.ndarray:
        """Clients (increasing id) that take part in local step ``step`` (1-based)."""
        return np.array([c for c in self.clients if self.steps[int(c)] >= step], np.int64)

    def batch_at(self, client: int, step: int) -> int:
        return batch_at(self.samples[int(client)], self.batch, step)

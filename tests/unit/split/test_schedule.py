"""The lockstep schedule equals what the trainer really yields, and clients stay at home."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsqueeze.config import TrainConfig
from fedsqueeze.fl.train import Trainer
from fedsqueeze.split.schedule import MAX_STEPS, RoundPlan, batch_at, placement, steps_for


@pytest.mark.parametrize(("n", "batch", "epochs", "max_steps"), [
    (1, 32, 1, None), (32, 32, 1, None), (33, 32, 1, None), (70, 16, 3, None),
    (70, 16, 3, 7), (5, 2, 2, 100), (64, 64, 2, 1)])
def test_schedule_equals_the_trainer_batches(n, batch, epochs, max_steps):
    x = torch.arange(n, dtype=torch.float32)[:, None]
    y = torch.zeros(n, dtype=torch.int64)
    tr = Trainer(None, x, y, [np.arange(n)], TrainConfig(epochs=epochs, batch_size=batch,
                                                         max_steps=max_steps), seed=0)
    sizes = [xb.shape[0] for xb, _ in tr.batches(0, 0)]
    assert steps_for(n, batch, epochs, max_steps) == len(sizes)
    assert [batch_at(n, batch, s) for s in range(1, len(sizes) + 1)] == sizes


def test_round_plan_orders_and_drops_out():
    plan = RoundPlan.build([9, 2, 4], samples=np.array([0, 0, 64, 0, 10, 0, 0, 0, 0, 40]),
                           batch=32, epochs=1)
    assert plan.clients.tolist() == [2, 4, 9] and plan.n_steps == 2
    assert plan.active(1).tolist() == [2, 4, 9] and plan.active(2).tolist() == [2, 9]
    assert plan.active(3).tolist() == []
    assert plan.batch_at(9, 2) == 8


def test_clients_without_samples_do_not_train():
    plan = RoundPlan.build([0, 1], samples=[0, 3], batch=2, epochs=1)
    assert plan.clients.tolist() == [1]


def test_too_many_steps_is_an_error():
    with pytest.raises(ValueError, match="max_steps"):
        RoundPlan.build([0], samples=[MAX_STEPS + 1], batch=1, epochs=1)


@pytest.mark.parametrize("workers", [[1], [1, 2], [1, 2, 3, 4]])
def test_placement_is_the_home_worker(workers):
    clients = np.array([0, 3, 5, 6, 11])
    homes = placement(clients, workers)
    for w, cs in homes.items():
        assert all(workers[c % len(workers)] == w for c in cs)
        assert list(cs) == sorted(cs)
    assert sorted(c for cs in homes.values() for c in cs) == clients.tolist()

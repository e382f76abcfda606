"""Trainer: one model and one optimizer per worker give each client what a fresh pair would."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from fedsqueeze.fl.train import Trainer, flat_params, set_flat_params
from fedsqueeze.models import build_model


def _data():
    g = np.random.default_rng(0)
    x = torch.from_numpy(g.standard_normal((300, 64)).astype(np.float32))
    y = torch.from_numpy(g.integers(0, 10, 300))
    return x, y, [np.arange(i * 30, (i + 1) * 30) for i in range(10)]


@pytest.mark.parametrize("optimizer,momentum,mu", [("sgd", 0.0, 0.0), ("sgd", 0.9, 0.0),
                                                   ("adam", 0.0, 0.01)])
def test_a_reused_trainer_equals_a_fresh_one_per_client(optimizer, momentum, mu):
    x, y, parts = _data()
    cfg = types.SimpleNamespace(batch_size=8, epochs=2, lr=0.05, optimizer=optimizer,
                                momentum=momentum, weight_decay=1e-4, prox_mu=mu, max_steps=None)

    def model():
        return build_model("digits_mlp", input_shape=(64,), num_classes=10, seed=1)

    w = flat_params(model())
    shared = Trainer(model(), x, y, parts, cfg, 5)
    for c in range(4):  # momentum buffers / Adam moments must not leak from client to client
        got, stats = shared.train(w, client=c, round=2)
        ref, _ = Trainer(model(), x, y, parts, cfg, 5).train(w, client=c, round=2)
        np.testing.assert_array_equal(got, ref)
        assert stats["steps"] == 8 and not np.array_equal(got, w)


def test_flat_params_round_trip_with_and_without_the_cached_list():
    m = build_model("digits_cnn", input_shape=(1, 8, 8), num_classes=10, seed=2)
    params = list(m.parameters())
    v = np.arange(flat_params(m).shape[0], dtype=np.float32)
    set_flat_params(m, v, params)
    np.testing.assert_array_equal(flat_params(m), v)
    np.testing.assert_array_equal(flat_params(m, params), v)
    with pytest.raises(ValueError, match="values"):
        set_flat_params(m, v[:-1])

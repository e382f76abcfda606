"""The maths of the split roles, run in-process (tests/unit/split/_sim.py): uncompressed split
learning of one client is plain SGD on the whole model, the FedLite correction is
``g + (lambda / B)(z - z_tilde)``, warm starts persist, options and checkpoints behave."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedsqueeze.errors import ConfigError
from fedsqueeze.fl.strategy import get_method, get_roles
from fedsqueeze.fl.train import flat_params, set_flat_params
from fedsqueeze.split.client import PrefixClient, SplitWorker
from fedsqueeze.split.payloads import grad_sections, parse_grad
from fedsqueeze.split.server import SplitServer

from ._sim import Sim, payload, small_config


@pytest.mark.parametrize(("optimizer", "rounds"), [("sgd", 2), ("adam", 1)])
def test_one_client_split_learning_is_centralised_training(optimizer, rounds):
    """One client: the same batches, the same optimiser steps as training the whole model (SGD
    over several rounds; Adam over one, as the server's suffix Adam keeps state across rounds
    and a client's prefix Adam does not)."""
    cfg = small_config(data={"clients": 1}, train={"optimizer": optimizer, "lr": 0.05})
    sim = Sim(cfg)
    model = sim.world.model_factory()
    opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = opt_cls(model.parameters(), lr=0.05)
    for t in range(rounds):
        set_flat_params(model, sim.weights)  # the round starts from the averaged prefix
        for xb, yb in sim.worker.trainer.batches(0, t):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        sim.round(t)
        np.testing.assert_allclose(sim.weights, flat_params(model), rtol=1e-6, atol=1e-7)


def test_prefixes_are_averaged_by_sample_count():
    sim = Sim(small_config(data={"clients": 3, "partition": "dirichlet", "alpha": 0.5}))
    w0 = sim.strategy.prefix_w.copy()
    pcs = sim.round(0)
    n = {c: int(sim.world.samples[c]) for c in pcs}
    want = w0 + sum(n[c] * (flat_params(pc.prefix) - w0) for c, pc in pcs.items()) / sum(
        n.values())
    np.testing.assert_allclose(sim.strategy.prefix_w, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("backward", ["dense_fp32", "codebook"])
def test_gradient_correction(lam, backward):
    sim = Sim(small_config("fedlite", train={"lr": 1.0},
                           method={"q": 64, "L": 4, "lambda": lam, "backward": backward}))
    wk = sim.worker
    pc = PrefixClient(copy.deepcopy(wk.parts.prefix), sim.strategy.prefix_w.copy(),
                      wk.trainer.batches(0, 0), client=0, round=0, worker=wk)
    model = copy.deepcopy(pc.prefix)  # the same weights, for the step by hand
    sections = pc.forward(1)
    z, zt = pc._z.detach().clone(), torch.from_numpy(pc._zt.copy())
    B = z.shape[0]
    grad = np.random.default_rng(0).standard_normal(tuple(z.shape)).astype(np.float32) * 1e-2
    gp = payload(grad_sections(backward, grad, pc._code))
    g_used = torch.from_numpy(parse_grad(gp, backward, B=B, d_a=z.shape[1], code=pc._code))
    if backward == "dense_fp32":
        assert np.array_equal(g_used.numpy(), grad)
    pc.backward(gp)
    # SGD (lr 1) with dL/dz = g + (lambda / B)(z - z_tilde): the gradient of
    # <g, z> + (lambda / 2B) |z - sg(z_tilde)|^2
    xb, _ = next(iter(wk.trainer.batches(0, 0)))
    z2 = model(xb)
    torch.testing.assert_close(z2.detach(), z)
    obj = (z2 * g_used).sum() + lam / (2 * B) * ((z2 - zt) ** 2).sum()
    obj.backward()
    with torch.no_grad():
        want = torch.cat([(p - p.grad).reshape(-1) for p in model.parameters()]).numpy()
    np.testing.assert_allclose(flat_params(pc.prefix), want, rtol=1e-5, atol=1e-6)
    assert sections[0][:2] == (B).to_bytes(2, "little")


def test_warm_starts_persist_between_rounds():
    sim = Sim(small_config("fedlite", method={"q": 16, "L": 8}))
    pcs = sim.round(0)
    for c, pc in pcs.items():
        assert np.array_equal(sim.worker.store[("gpq", c)], pc.state)
        assert pc.stats["kmeans_steps"] >= 0 and 0 < pc.stats["distortion"]
    pcs1 = sim.round(1)
    for c, pc in pcs1.items():  # the first batch of round 1 started from round 0's centroids
        assert pc.state is not None and pc.state.shape == sim.worker.store[("gpq", c)].shape


def test_runs_are_reproducible():
    a, b = Sim(small_config("fedlite")), Sim(small_config("fedlite"))
    for t in range(2):
        a.round(t)
        b.round(t)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_strategy_checkpoint_round_trip():
    cfg = small_config("fedlite", method={"server_optimizer": "adam", "server_lr": 0.01})
    a = Sim(cfg)
    a.round(0)
    state = a.strategy.state_dict()
    assert any(k.startswith("opt.") for k in state)
    b = Sim(cfg)
    b.strategy.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    b.worker.store.update(a.worker.store)
    np.testing.assert_array_equal(a.weights, b.weights)
    a.round(1)
    b.round(1)
    np.testing.assert_array_equal(a.weights, b.weights)


def test_methods_are_registered_with_their_roles():
    assert get_roles("split") == (SplitServer, SplitWorker)
    assert get_roles("fedlite") == (SplitServer, SplitWorker)
    assert set(SplitServer.extra_client_columns) <= set(SplitServer.extra_round_columns)


@pytest.mark.parametrize(("method", "options", "match"), [
    ("fedlite", {"q": 64, "R": 3}, "R = 3 must divide q = 64"),
    ("fedlite", {"L": 0}, "method.L"),
    ("fedlite", {"lambda": -1.0}, "method.lambda"),
    ("fedlite", {"grouping": "rows"}, "method.grouping"),
    ("fedlite", {"nope": 1}, "method.nope"),
    ("split", {"q": 64}, "method.q"),
    ("split", {"backward": "codebook"}, "method.backward"),
])
def test_options_are_validated(method, options, match):
    with pytest.raises(ConfigError, match=match):
        get_method(method, options)


def test_lambda_alias():
    _, _, opts = get_method("fedlite", {"lambda": 0.25})
    assert opts.lambda_ == 0.25 and opts.make_gpq().L == 16


def test_unknown_cut_names_the_option():
    with pytest.raises(ConfigError, match="method.cut = 'conv9'"):
        Sim(small_config(method={"cut": "conv9"}))

"""AdaQuantFL sync mode (METHODS.md 4.2-4.4) driven through its hooks, without MPI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsqueeze import config
from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Kind
from fedsqueeze.compress.adaquant import AdaQuant
from fedsqueeze.compress.qsgd import QSGD
from fedsqueeze.errors import ConfigError, UpdateRejected, WireFormatError
from fedsqueeze.fl.strategy import UP_PRE, ClientContext, ServerContext, get_method
from fedsqueeze.fl.train import Trainer, evaluate, flat_params, set_flat_params
from fedsqueeze.methods.adaquant import (
    CTRL_DOWN,
    CTRL_UP,
    AdaQuantClient,
    AdaQuantFL,
    AdaQuantOptions,
    level_for,
)

CLIENTS = 3


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def make_world(seed: int = 1, codec=None, opts=None):
    codec = codec or AdaQuant()
    opts = opts or AdaQuantOptions()
    cfg = config.from_dict({"seed": seed, "data": {"clients": CLIENTS},
                            "sampling": {"fraction": 1.0}, "train": {"lr": 0.5, "epochs": 3},
                            "compress": {"up": codec.get_config()},
                            "fl": {"method": "adaquant"}})
    g = np.random.default_rng(seed)
    x = torch.from_numpy(g.standard_normal((60, 4)).astype(np.float32))
    y = torch.from_numpy((g.random(60) * 3).astype(np.int64))
    parts = [np.arange(0, 10), np.arange(10, 30), np.arange(30, 60)]
    model = tiny_model()
    w0 = flat_params(model)
    trainer = Trainer(model, x, y, parts, cfg.train, cfg.seed)
    samples = np.array([len(p) for p in parts])
    server = AdaQuantFL(ServerContext(cfg, opts, w0.size, w0, codec, codec, CLIENTS, samples))
    client = AdaQuantClient(ClientContext(cfg, opts, w0.size, w0, codec, codec, {}))
    return server, client, trainer, samples


def run_round(server, client, trainer, samples, t):
    clients = np.arange(CLIENTS)
    server.begin_round(t, clients, samples)
    w = server.weights.copy()
    replies = {c: b"".join(bytes(s) for s in client.control_payload(t, c, trainer, w))
               for c in clients}
    answers = server.control(t, replies)
    for c in clients:
        client.on_control(t, c, answers[c].sections[0])
    for c in clients:
        w_end, _ = client.train(t, c, trainer, w)
        up = client.encode(t, c, w_end - w, int(samples[c]))
        payload = b"".join(bytes(p) for p in wire.join_sections(up.sections))
        server.accumulate(t, c, UP_PRE.unpack(payload[:4])[0], payload[4:])
    return replies, answers, server.end_round(t)


@pytest.mark.parametrize("f0,fk,s0,s_max,expected", [
    (1.0, 1.0, 2, 255, 2), (1.0, 0.25, 2, 255, 4), (1.0, 0.26, 2, 255, 4),
    (4.0, 16.0, 2, 255, 1), (0.0, 1.0, 2, 255, 1), (1.0, 0.0, 2, 255, 255),
    (1.0, 1e-4, 2, 10, 10), (2.0, 0.5, 3, 255, 6),
])
def test_level_rule(f0, fk, s0, s_max, expected):
    assert level_for(f0, fk, s0=s0, s_max=s_max) == expected


def test_round_zero_uses_s0_and_the_weighted_loss():
    server, client, trainer, samples = make_world()
    replies, answers, cols = run_round(server, client, trainer, samples, 0)
    losses = [CTRL_UP.unpack(replies[c])[1] for c in range(CLIENTS)]
    ns = [CTRL_UP.unpack(replies[c])[0] for c in range(CLIENTS)]
    assert ns == samples.tolist()
    fk = sum(n * f for n, f in zip(ns, losses, strict=True)) / sum(ns)
    assert cols["s_k"] == 2 and cols["F_k"] == pytest.approx(fk, rel=1e-12)
    assert server.f0 == cols["F_k"]
    dls = list(answers.values())
    assert all(d is dls[0] for d in dls) and dls[0].kind == Kind.DOWN_CTRL
    assert CTRL_DOWN.unpack(dls[0].sections[0]) == (2, 0)


def test_reported_loss_is_the_local_loss_of_the_received_model():
    server, client, trainer, samples = make_world()
    w = server.weights
    (payload,) = client.control_payload(0, 2, trainer, w)
    n_i, f_i = CTRL_UP.unpack(payload)
    model = tiny_model()
    set_flat_params(model, w)
    xs, ys = trainer.client_data(2)
    assert n_i == 30 and f_i == np.float32(evaluate(model, xs, ys)[0])


def test_levels_follow_the_falling_loss():
    server, client, trainer, samples = make_world()
    cols = [run_round(server, client, trainer, samples, t)[2] for t in range(4)]
    f0 = cols[0]["F_k"]
    for c in cols[1:]:  # every later round applies the rule to its own F_k
        assert c["s_k"] == min(255, max(1, math.ceil(2 * math.sqrt(f0 / c["F_k"]))))
    assert cols[-1]["F_k"] < f0 and cols[-1]["s_k"] > 2


def test_updates_are_quantised_with_the_rounds_level():
    server, client, trainer, samples = make_world()
    server.begin_round(0, np.arange(3), samples)
    server.control(0, {0: CTRL_UP.pack(10, 1.0)})  # round 0: s_k = s0 = 2
    delta = np.random.default_rng(0).standard_normal(server.ctx.n_params).astype(np.float32)
    good = AdaQuant().encode(delta, seed=1, state={"s": 2})[0].payload()
    server.accumulate(0, 0, 10, good)
    bad = AdaQuant().encode(delta, seed=1, state={"s": 3})[0].payload()
    with pytest.raises(UpdateRejected, match="s_k = 2"):
        server.accumulate(0, 1, 10, bad)


def test_unusable_replies_are_ignored():
    server, *_ = make_world()
    server.begin_round(0, np.arange(3), np.ones(3))
    server.control(0, {0: CTRL_UP.pack(10, 4.0), 1: CTRL_UP.pack(10, float("nan")),
                       2: CTRL_UP.pack(0, 100.0)})
    assert server.fk == 4.0 and server.f0 == 4.0
    dl = server.control(1, {0: CTRL_UP.pack(1, -1.0)})  # nothing usable: keep the level
    assert CTRL_DOWN.unpack(dl[0].sections[0])[0] == 2 and server.fk == 4.0


def test_malformed_loss_reports_are_skipped_and_every_client_is_answered():
    server, *_ = make_world()
    server.begin_round(0, np.arange(3), np.ones(3))
    dl = server.control(0, {0: CTRL_UP.pack(1, 1.0) + b"\0\0\0\0", 1: b"",
                            2: CTRL_UP.pack(10, 4.0)})
    assert sorted(dl) == [0, 1, 2]
    assert server.fk == 4.0  # only the well-formed report entered F_k


def test_malformed_level_frames_are_rejected_by_the_client():
    server, client, *_ = make_world()
    with pytest.raises(WireFormatError):
        client.on_control(0, 0, CTRL_DOWN.pack(0, 0))
    with pytest.raises(WireFormatError):
        client.on_control(0, 0, CTRL_DOWN.pack(2, 1))


def test_encode_without_a_level_is_an_error():
    _, client, *_ = make_world()
    with pytest.raises(RuntimeError, match="no DOWN_CTRL"):
        client.encode(0, 0, np.zeros(client.ctx.n_params, np.float32), 1)


def test_control_frame_sizes():
    """METHODS.md 4.3: UP_CTRL 24 + 8 = 32 bytes, DOWN_CTRL 24 + 4 = 28 bytes."""
    assert len(wire.pack_frame(Kind.UP_CTRL, [CTRL_UP.pack(5, 0.5)])) == 32
    assert len(wire.pack_frame(Kind.DOWN_CTRL, [CTRL_DOWN.pack(4, 0)])) == 28


def test_needs_the_adaquant_codec():
    with pytest.raises(ConfigError, match="adaquant"):
        make_world(codec=QSGD())
    with pytest.raises(ConfigError, match="s_max"):
        make_world(codec=AdaQuant(s_max=16), opts=AdaQuantOptions(s_max=32))


@pytest.mark.parametrize("options", [{"s0": 0}, {"s0": 9, "s_max": 8}, {"levels": 3},
                                     {"s_max": 40000}])
def test_options_validated(options):
    with pytest.raises(ConfigError):
        get_method("adaquant", options)


def test_state_dict_keeps_the_reference_loss():
    server, client, trainer, samples = make_world()
    run_round(server, client, trainer, samples, 0)
    state = server.state_dict()
    other, *_ = make_world()
    other.load_state_dict(state)
    assert other.f0 == server.f0 and other.s_k == server.s_k
    np.testing.assert_array_equal(other.weights, server.weights)

"""PowerSGD in FL (METHODS.md 6.8) driven through its hooks without MPI, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import config
from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Flag
from fedsqueeze.compress.identity import Identity
from fedsqueeze.compress.powersgd import PowerSGD
from fedsqueeze.errors import ConfigError, WireFormatError
from fedsqueeze.fl.strategy import ClientContext, NoOptions, ServerContext, get_method
from fedsqueeze.methods.powersgd import PowerSGDClient, PowerSGDStrategy
from tests import naive

SHAPES = [[12, 10], [12], [8, 3, 3], [8]]  # D = 120 + 12 + 72 + 8 = 212; tensors 0 and 2 compressed
D = 212
DIGITS_MLP = [[64, 64], [64], [10, 64], [10]]


def make(shapes=SHAPES, d=D, seed=4, rank=2, ef=True, clients=3, **fl):
    up = {"id": "powersgd", "rank": rank, "shapes": shapes, "error_feedback": ef}
    cfg = config.from_dict({"seed": seed, "data": {"clients": clients},
                            "sampling": {"fraction": 1.0},
                            "compress": {"up": up}, "fl": {"method": "powersgd", **fl}})
    codec = PowerSGD.from_config(up)
    w0 = np.random.default_rng(seed).standard_normal(d).astype(np.float32)
    server = PowerSGDStrategy(ServerContext(cfg, NoOptions(), d, w0, codec, Identity(), clients,
                                            np.ones(clients)))
    store: dict = {}
    client = PowerSGDClient(ClientContext(cfg, NoOptions(), d, w0, codec, Identity(), store))
    return server, client, store


def joined(sections) -> bytes:
    return b"".join(bytes(p) for p in wire.join_sections(sections))


def play(server, client, rounds, weights, t0=0):
    """Run rounds of (per-client update lists) through the hooks; returns the applied updates."""
    applied = []
    for t, deltas in enumerate(rounds, start=t0):
        server.begin_round(t, np.arange(len(deltas)), np.asarray(weights))
        before = server.weights.copy()
        for c, (delta, n) in enumerate(zip(deltas, weights, strict=True)):
            dl = server.downlink(t, c)
            assert dl is server.downlink(t, c + 1)  # one shared object per round
            client.receive(t, c, dl.flags, joined(dl.sections))
            up = client.encode(t, c, delta, n)
            server.accumulate(t, c, n, joined(up.sections)[4:])
        server.end_round(t)
        applied.append(server.weights.astype(np.float64) - before)
    return applied


def updates(seed, rounds, clients, d=D):
    g = np.random.default_rng(seed)
    return [[g.standard_normal(d).astype(np.float32) for _ in range(clients)]
            for _ in range(rounds)]


def reference(rounds, weights, q0s, blocks):
    """Plain NumPy FL PowerSGD in float64: error feedback per client, weighted factor average,
    Gram-Schmidt of the average as the next factor. ``blocks``: (offset, n, m) of compressed
    tensors; everything else is dense. Returns the applied update of every round."""
    p = np.asarray(weights, np.float64) / np.sum(weights)
    e = [np.zeros(D) for _ in weights]
    factors = [q.astype(np.float64) for q in q0s]
    out = []
    for t, deltas in enumerate(rounds):
        ms = [d.astype(np.float64) + e_i for d, e_i in zip(deltas, e, strict=True)]
        # dense tensors: the plain weighted mean
        applied = sum(pi * m for pi, m in zip(p, ms, strict=True))
        new = []
        for (off, n, m), f in zip(blocks, factors, strict=True):
            mats = [mm[off:off + n * m].reshape(n, m) for mm in ms]
            ups = [mat @ f if t % 2 == 0 else mat.T @ f for mat in mats]
            for i, (mat, u) in enumerate(zip(mats, ups, strict=True)):
                approx = u @ f.T if t % 2 == 0 else f @ u.T
                e[i][off:off + n * m] = (mat - approx).ravel()
            mean = sum(pi * u for pi, u in zip(p, ups, strict=True))
            applied[off:off + n * m] = (mean @ f.T if t % 2 == 0 else f @ mean.T).ravel()
            new.append(naive.gram_schmidt(mean))
        factors = new
        out.append(applied)
    return out


@pytest.mark.parametrize("weights", [[1, 1, 1], [2, 5, 13]])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_reference(weights, seed):
    server, client, _ = make(seed=seed)
    lay = server.layout
    q0s = [f.copy() for _, f in lay.split(server.state.factors, 0, shared=True)]
    blocks = [(b.offset, b.n, b.m) for b in lay.compressed]
    assert [b.index for b in lay.compressed] == [0, 2]
    rounds = updates(seed, 4, 3)
    got = play(server, client, rounds, weights)
    want = reference(rounds, weights, q0s, blocks)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=0, atol=2e-4 * np.abs(w).max())


@pytest.mark.parametrize("weights", [[1, 1, 1], [3, 1, 6]])
@pytest.mark.parametrize("server_lr", [1.0])
def test_error_feedback_conserves_the_updates(weights, server_lr):
    """sum_t applied_t + sum_i p_i e_i == sum_t sum_i p_i Delta_i (full participation)."""
    server, client, store = make(server_lr=server_lr)
    rounds = updates(7, 5, 3)
    applied = play(server, client, rounds, weights)
    p = np.asarray(weights, np.float64) / np.sum(weights)
    sent = sum(sum(pi * d.astype(np.float64) for pi, d in zip(p, ds, strict=True)) for ds in rounds)
    left = sum(pi * store[("ef", c)].astype(np.float64) for c, pi in enumerate(p))
    np.testing.assert_allclose(sum(applied) + left, sent, atol=1e-4)
    assert np.abs(left).max() > 1e-3  # the residuals are really in use


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_one_update_is_exact_after_two_phases(seed):
    """A rank-1 update, sent twice: after the P round and the Q round exactly 2 Delta is applied
    and the residual is zero (the Q round rebuilds M = 2 Delta - Delta_hat_0 exactly)."""
    server, client, store = make(seed=seed, clients=1)
    g = np.random.default_rng(seed)
    delta = np.zeros(D, np.float32)
    delta[:120] = np.outer(g.standard_normal(12), g.standard_normal(10)).ravel()
    delta[120:132] = g.standard_normal(12)  # dense bias: always exact
    delta[132:204] = np.outer(g.standard_normal(8), g.standard_normal(9)).ravel()
    applied = play(server, client, [[delta], [delta]], [1])
    assert not np.allclose(applied[0], delta, atol=1e-3)  # one phase alone is not enough
    np.testing.assert_allclose(sum(applied), 2 * delta.astype(np.float64), atol=1e-5)
    np.testing.assert_allclose(store[("ef", 0)], 0, atol=1e-5)


@pytest.mark.parametrize("t", [0, 1])
def test_downlink_and_uplink_sizes_digits_mlp(t):
    """METHODS.md 6.12: uplink 920 / 1,352 bytes (P / Q round) with header and n_i; the downlink
    carries the model and the factors and counts 32 (D + factor floats) theoretical bits."""
    server, client, _ = make(DIGITS_MLP, 4810, clients=1)
    if t == 1:
        play(server, client, updates(0, 1, 1, 4810), [1])
    server.begin_round(t, np.array([0]), np.array([1]))
    dl = server.downlink(t, 0)
    floats = (64 + 64) * 2 if t == 0 else (64 + 10) * 2
    assert dl.flags == Flag.FULL_MODEL
    assert dl.theoretical_bits == 32 * (4810 + floats)
    assert len(wire.pack_frame(dl.kind, list(dl.sections))) == 24 + 4 * (4810 + floats)
    w = client.receive(t, 0, dl.flags, joined(dl.sections))
    np.testing.assert_array_equal(w, server.weights)
    up = client.encode(t, 0, np.ones(4810, np.float32), 1)
    assert len(wire.pack_frame(4, list(up.sections))) == (920, 1352)[t]
    assert up.theoretical_bits == 32 * ((148, 256)[t] + 74)


def test_round_without_updates_restarts_the_next_phase():
    server, client, _ = make()
    server.begin_round(0, np.array([], np.int64), np.array([], np.int64))
    w = server.weights.copy()
    assert server.end_round(0) == {"phase": 0, "update_norm": 0.0}
    np.testing.assert_array_equal(server.weights, w)
    server.begin_round(1, np.array([0]), np.array([1]))
    assert server.state.phase == 1
    for _, f in server.layout.split(server.state.factors, 1, shared=True):
        np.testing.assert_allclose(f.T.astype(np.float64) @ f, np.eye(2), atol=1e-5)
    play(server, client, updates(3, 2, 1), [1], t0=1)  # and the protocol goes on


def test_upload_of_the_wrong_phase_is_rejected():
    server, client, _ = make()
    server.begin_round(0, np.array([0]), np.array([1]))
    state = server.codec.initial_state(D, phase=1)
    enc, _ = server.codec.encode(np.ones(D, np.float32), seed=0, state=state)
    with pytest.raises(WireFormatError, match="phase 1"):
        server.accumulate(0, 0, 1, enc.payload())


def test_encode_needs_the_rounds_downlink():
    server, client, _ = make()
    with pytest.raises(RuntimeError, match="downlink"):
        client.encode(0, 0, np.ones(D, np.float32), 1)


def test_without_error_feedback_no_residual_is_kept():
    server, client, store = make(ef=False)
    play(server, client, updates(0, 2, 3), [1, 1, 1])
    assert store == {}


def test_state_dict_round_trip_continues_identically():
    rounds = updates(9, 4, 3)
    a, ca, _ = make()
    play(a, ca, rounds[:3], [1, 2, 3])
    b, _, _ = make(seed=77)
    b.load_state_dict(a.state_dict())
    assert b.state.phase == 1
    _, cb, _ = make()
    cb.ctx.store.update(ca.ctx.store)
    play(a, ca, rounds[3:], [1, 2, 3], t0=3)
    play(b, cb, rounds[3:], [1, 2, 3], t0=3)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.state.factors, b.state.factors)


@pytest.mark.parametrize("up,match", [
    ({"id": "identity"}, "powersgd"),
    ({"id": "powersgd"}, "shapes"),
    ({"id": "powersgd", "shapes": [[12, 10]]}, "120 elements"),
])
def test_configuration_errors(up, match):
    cfg = config.from_dict({"compress": {"up": up}, "fl": {"method": "powersgd"}})
    from fedsqueeze import compress

    codec = compress.from_config(up)
    w0 = np.zeros(D, np.float32)
    with pytest.raises(ConfigError, match=match):
        PowerSGDStrategy(ServerContext(cfg, NoOptions(), D, w0, codec, Identity(), 1, np.ones(1)))
    with pytest.raises(ConfigError, match=match):
        PowerSGDClient(ClientContext(cfg, NoOptions(), D, w0, codec, Identity(), {}))


def test_registered():
    strategy, program, _ = get_method("powersgd", {})
    assert (strategy, program) == (PowerSGDStrategy, PowerSGDClient)
    with pytest.raises(ConfigError, match="rank"):
        get_method("powersgd", {"rank": 2})

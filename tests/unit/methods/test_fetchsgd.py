"""FetchSGD (METHODS.md 6.9) driven through its hooks, without MPI, against a NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsqueeze import config
from fedsqueeze.compress.countsketch import CountSketch
from fedsqueeze.compress.identity import Identity
from fedsqueeze.errors import WireFormatError, ConfigError, UpdateRejected
from fedsqueeze.fl.strategy import UP_PRE, ClientContext, ServerContext, get_method
from fedsqueeze.methods.fetchsgd import FetchSGD, FetchSGDClient, FetchSGDOptions
from tests import naive

D = 600


def make_cfg(up: dict, seed: int = 3, **fl) -> config.RunConfig:
    return config.from_dict({"seed": seed, "data": {"clients": 4},
                             "sampling": {"fraction": 1.0},
                             "compress": {"up": up}, "fl": {"method": "fetchsgd", **fl}})


def make_server(codec: CountSketch, opts: FetchSGDOptions, seed: int = 3, **fl) -> FetchSGD:
    cfg = make_cfg(codec.get_config(), seed, **fl)
    w0 = np.random.default_rng(seed).standard_normal(D).astype(np.float32)
    return FetchSGD(ServerContext(cfg, opts, D, w0, codec, Identity(), 4, np.full(4, 10)))


def make_client(codec: CountSketch, store: dict) -> FetchSGDClient:
    cfg = make_cfg(codec.get_config())
    return FetchSGDClient(ClientContext(cfg, FetchSGDOptions(), D, np.zeros(D, np.float32), codec,
                                        Identity(), store))


def updates(seed: int, rounds: int, clients: int) -> list[list[np.ndarray]]:
    g = np.random.default_rng(seed)
    return [[(g.standard_normal(D) * g.uniform(0.1, 2.0)).astype(np.float32)
             for _ in range(clients)] for _ in range(rounds)]


def run_server(server: FetchSGD, client: FetchSGDClient, rounds, weights, t0: int = 0):
    cols = []
    for t, deltas in enumerate(rounds, start=t0):
        server.begin_round(t, np.arange(len(deltas)), np.asarray(weights))
        for c, (delta, n) in enumerate(zip(deltas, weights, strict=True)):
            up = client.encode(t, c, delta, n)
            frame = b"".join(bytes(memoryview(s)) for s in up.sections)
            assert UP_PRE.unpack(frame[:4]) == (n,)
            server.accumulate(t, c, n, frame[4:])
        cols.append(server.end_round(t))
    return cols


def reference(w0, rounds, weights, rows, cols, hash_seed, rho, eta, k):
    """A straightforward NumPy FetchSGD: oracle sketches, stable argsort top-k, bucket zeroing."""
    w = w0.copy()
    s_u = np.zeros((rows, cols), np.float32)
    s_e = np.zeros((rows, cols), np.float32)
    for deltas in rounds:
        acc = np.zeros((rows, cols), np.float64)
        for d, n in zip(deltas, weights, strict=True):
            acc += np.float64(n) * naive.count_sketch(d, rows, cols, hash_seed).astype(np.float64)
        s = (acc / sum(weights)).astype(np.float32)
        s_u = (np.float32(rho) * s_u + s).astype(np.float32)
        s_e = (s_e + np.float32(eta) * s_u).astype(np.float32)
        est = naive.count_sketch_query(s_e, D, hash_seed)
        idx = np.sort(np.argsort(-np.abs(est), kind="stable")[:k])
        idx = idx[est[idx] != 0]
        b, _ = naive.count_sketch_hashes(idx, rows, cols, hash_seed)
        s_u[np.arange(rows)[:, None], b] = 0
        s_e[np.arange(rows)[:, None], b] = 0
        w[idx] += est[idx]
    return w, s_u, s_e


@pytest.mark.parametrize("rho,eta,k_fraction",
                         [(0.9, 1.0, 0.01), (0.0, 0.5, 0.05), (0.5, 2.0, 1.0)])
@pytest.mark.parametrize("weights", [[10, 10, 10], [1, 5, 30]])
@pytest.mark.parametrize("hash_seed", [0, 2**45 + 1])
def test_matches_numpy_reference(rho, eta, k_fraction, weights, hash_seed):
    codec = CountSketch(cols=40, hash_seed=hash_seed)
    opts = FetchSGDOptions(rho=rho, eta=eta, k_fraction=k_fraction)
    server = make_server(codec, opts)
    rounds = updates(hash_seed % 97, 4, len(weights))
    w0 = server.weights.copy()
    cols = run_server(server, make_client(codec, {}), rounds, weights)
    k = math.ceil(k_fraction * D)
    w, s_u, s_e = reference(w0, rounds, weights, 5, 40, hash_seed, rho, eta, k)
    np.testing.assert_array_equal(server.weights, w)
    np.testing.assert_array_equal(server.s_u, s_u)
    np.testing.assert_array_equal(server.s_e, s_e)
    assert all(0 < c["k_t"] <= k for c in cols)
    assert cols[-1]["sketch_e_norm"] == pytest.approx(np.linalg.norm(s_e.astype(np.float64)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_update_is_applied_exactly_and_its_buckets_cleared(seed):
    """An update with <= k non-zeros is recovered exactly; zeroing its buckets empties S_u, S_e."""
    codec = CountSketch(ratio=4.0, hash_seed=seed)
    server = make_server(codec, FetchSGDOptions(k_fraction=0.01))
    w0 = server.weights.copy()
    delta = np.zeros(D, np.float32)
    g = np.random.default_rng(seed)
    delta[g.choice(D, 6, replace=False)] = g.standard_normal(6).astype(np.float32)
    cols = run_server(server, make_client(codec, {}), [[delta, delta]], [3, 7])
    np.testing.assert_allclose(server.weights, w0 + delta, rtol=0, atol=1e-6)
    assert cols[0]["k_t"] == 6
    assert not server.s_u.any() and not server.s_e.any()


def test_momentum_and_error_carry_over_between_rounds():
    """With k = 1 most of the update stays in S_e and is applied in later rounds."""
    codec = CountSketch(cols=64)
    server = make_server(codec, FetchSGDOptions(rho=0.0, eta=1.0, k_fraction=1 / D))
    delta = np.zeros(D, np.float32)
    delta[[10, 20, 30]] = [3.0, 2.0, 1.0]
    w0 = server.weights.copy()
    cols = run_server(server, make_client(codec, {}), [[delta], [np.zeros(D, np.float32)],
                                                       [np.zeros(D, np.float32)]], [1])
    assert [c["k_t"] for c in cols] == [1, 1, 1]
    np.testing.assert_allclose(server.weights - w0, delta, atol=1e-6)


def test_clients_are_stateless_and_upload_count_sketches():
    codec = CountSketch(cols=16)
    store: dict = {}
    client = make_client(codec, store)
    delta = np.random.default_rng(0).standard_normal(D).astype(np.float32)
    up = client.encode(0, 2, delta, 9)
    assert store == {}
    assert up.theoretical_bits == 32 * 5 * 16
    enc = codec.parse(b"".join(bytes(memoryview(s)) for s in up.sections[1:]), D)
    np.testing.assert_array_equal(codec.table(enc), codec.sketch(delta))


def test_state_dict_round_trip_continues_identically():
    codec = CountSketch(cols=30)
    rounds = updates(5, 4, 2)
    a = make_server(codec, FetchSGDOptions(k_fraction=0.02))
    run_server(a, make_client(codec, {}), rounds[:2], [1, 2])
    b = make_server(codec, FetchSGDOptions(k_fraction=0.02), seed=99)  # other w0
    b.load_state_dict(a.state_dict())
    for s in (a, b):
        run_server(s, make_client(codec, {}), rounds[2:], [1, 2], t0=2)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.s_e, b.s_e)
    np.testing.assert_array_equal(a.s_u, b.s_u)
    bad = a.state_dict()
    bad["s_u"] = np.zeros((5, 3), np.float32)
    with pytest.raises(ValueError, match="s_u"):
        b.load_state_dict(bad)


def test_round_without_updates_changes_nothing():
    codec = CountSketch(cols=30)
    server = make_server(codec, FetchSGDOptions())
    run_server(server, make_client(codec, {}), updates(1, 1, 2), [1, 1])
    w, s_e = server.weights.copy(), server.s_e.copy()
    server.begin_round(1, np.array([], np.int64), np.array([], np.int64))
    assert server.end_round(1)["k_t"] == 0
    np.testing.assert_array_equal(server.weights, w)
    np.testing.assert_array_equal(server.s_e, s_e)


@pytest.mark.parametrize("bad", ["nan", "norm"])
def test_rejects_bad_sketches(bad):
    codec = CountSketch(cols=30)
    server = make_server(codec, FetchSGDOptions(), max_update_norm=5.0)
    server.begin_round(0, np.array([0]), np.array([1]))
    delta = np.ones(D, np.float32) * (np.nan if bad == "nan" else 1.0)  # norm ~ sqrt(600) > 5
    payload = codec.encode(delta, seed=0)[0].payload()
    # NaN payloads are rejected by the generic finiteness check of the decode path
    # (WireFormatError), too-large norms by the strategy (UpdateRejected): both ValueErrors
    err = WireFormatError if bad == "nan" else UpdateRejected
    with pytest.raises(err, match="NaN" if bad == "nan" else "max_update_norm"):
        server.accumulate(0, 0, 1, payload)


def test_configuration_errors():
    codec = CountSketch()
    with pytest.raises(ConfigError, match="countsketch"):
        FetchSGD(ServerContext(make_cfg({"id": "identity"}), FetchSGDOptions(), D,
                               np.zeros(D, np.float32), Identity(), Identity(), 4, np.ones(4)))
    with pytest.raises(ConfigError, match="countsketch"):
        FetchSGDClient(ClientContext(make_cfg({"id": "identity"}), FetchSGDOptions(), D,
                                     np.zeros(D, np.float32), Identity(), Identity(), {}))
    with pytest.raises(ConfigError, match="aggregator"):
        make_server(codec, FetchSGDOptions(), aggregator="median")


@pytest.mark.parametrize("options,match", [({"rho": 1.0}, "rho"), ({"eta": 0}, "eta"),
                                           ({"k_fraction": 0}, "k_fraction"), ({"k": 3}, "k")])
def test_options_are_validated(options, match):
    with pytest.raises(ConfigError, match=match):
        get_method("fetchsgd", options)


def test_registered():
    strategy, program, opts = get_method("fetchsgd", {"rho": 0.5})
    assert (strategy, program, opts.rho, opts.k_fraction) == (FetchSGD, FetchSGDClient, 0.5, 0.01)

"""FedCompress: weight sharing, controller, score, distillation and the client/server round trip
on a tiny conv model (8x8 inputs like digits), a few steps each."""

from __future__ import annotations

import math
import struct

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from fedsqueeze.compress.base import Encoded
from fedsqueeze.compress.clustering import me_nbytes
from fedsqueeze.config import from_dict
from fedsqueeze.data.datasets import Dataset
from fedsqueeze.errors import WireFormatError
from fedsqueeze.fl.strategy import ClientContext, ServerContext, get_method
from fedsqueeze.fl.train import Trainer, flat_params, set_flat_params
from fedsqueeze.methods.fedcompress import (
    ControllerOptions,
    effective_rank,
    embeddings,
    should_grow,
    zip_size,
)
from fedsqueeze.methods.fedcompress_ood import ood_inputs
from fedsqueeze.methods.weight_clustering import (
    WeightSharing,
    clustered_mask,
    kd_loss,
    model_layout,
)


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(1), nn.Linear(3, 10))


def tiny_mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(1), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 10))


# -- weight sharing -----------------------------------------------------------------------------
@pytest.mark.parametrize(("factory", "mode", "expect"), [
    (tiny_cnn, "auto", [True, False, False, False]),
    (tiny_cnn, "conv+linear", [True, False, True, False]),
    (tiny_mlp, "auto", [True, False, True, False]),
    (tiny_mlp, "conv", [False, False, False, False]),
])
def test_clustered_mask(factory, mode, expect):
    assert clustered_mask(factory(), mode) == expect


@pytest.mark.parametrize("k", [2, 4, 8])
def test_weight_sharing_gradients(k):
    model = tiny_cnn()
    ws = WeightSharing(model, clustered_mask(model), k, seed=3)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(k))
    eff = ws.effective()["0.weight"]
    eff.retain_grad()
    out = torch.func.functional_call(model, {"0.weight": eff}, (x,))
    (out ** 2).sum().backward()
    g = eff.grad.reshape(-1)
    ids = torch.from_numpy(ws._ids[0].astype(np.int64))
    want = torch.zeros(k).index_add_(0, ids, g)  # each centroid: sum of its members' gradients
    torch.testing.assert_close(ws.centroids[0].grad, want)
    torch.testing.assert_close(ws.shadow[0].grad.reshape(-1), g)  # straight through
    np.testing.assert_array_equal(eff.detach().reshape(-1).numpy(),
                                  ws.centroids[0].detach().numpy()[ws._ids[0]])


def test_reassignment_every_forward_and_strip():
    model = tiny_cnn()
    n_before = flat_params(model).shape[0]
    names = [n for n, _ in model.named_parameters()]
    ws = WeightSharing(model, clustered_mask(model), 4, seed=0)
    with torch.no_grad():
        ws.shadow[0].fill_(float(ws.centroids[0][2]))  # every weight now nearest to centroid 2
    ws.effective()
    assert set(ws._ids[0].tolist()) == {int(np.argmin(np.abs(
        ws.centroids[0].detach().numpy() - ws.centroids[0][2].item())))}
    parts = ws.strip()
    assert [n for n, _ in model.named_parameters()] == names
    assert flat_params(model).shape[0] == n_before
    cb, ids = parts[0]
    np.testing.assert_array_equal(model[0].weight.detach().reshape(-1).numpy(), cb[ids])
    np.testing.assert_array_equal(parts[1], model[0].bias.detach().numpy())


@pytest.mark.parametrize("t2", [False, True])
def test_kd_loss(t2):
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    p, q = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    want = (p * (p.log() - q.log())).sum(1).mean() * (4.0 if t2 else 1.0)
    torch.testing.assert_close(kd_loss(s, t, 2.0, t2), want)
    assert float(kd_loss(t, t, 2.0, t2)) == pytest.approx(0.0, abs=1e-7)


# -- controller ---------------------------------------------------------------------------------
def _pandas_rule(hist, c: ControllerOptions) -> bool:
    """An independent pandas transcription of METHODS.md 3.2."""
    df = pd.DataFrame(hist, columns=["a", "s", "k"])
    k_n = df.k.iloc[-1]
    ra = df.a.rolling(c.window, min_periods=1).mean().diff().iloc[-1]
    rs = df.s.rolling(c.window, min_periods=1).mean().diff().iloc[-1]
    den = c.base * (k_n - c.k_init) or 1.0
    return bool(k_n < c.k_max and (df.k == k_n).sum() >= c.patience
                and len(df) >= max(c.init_rounds, 2)
                and ra <= c.limit / den and rs <= 10 * c.limit / den)


@pytest.mark.parametrize(("hist", "grow"), [
    ([(0.5, 3.0, 8)], False),                                  # one round: no difference yet
    ([(0.5, 3.0, 8)] * 3, False),                              # patience 4 not reached
    ([(0.5, 3.0, 8)] * 4, True),                               # plateau after 4 rounds at k = 8
    ([(0.5 + 0.05 * i, 3.0, 8) for i in range(4)], False),     # accuracy still rising
    ([(0.5, 3.0 + 0.5 * i, 8) for i in range(4)], False),      # score still rising
    ([(0.5, 3.0, 8)] * 4 + [(0.5, 3.0, 9)] * 3 + [(0.5, 3.0, 9)], True),
    ([(0.5, 3.0, 9)] * 3 + [(0.512, 3.0, 9)], True),           # rolling gain 0.004 <= 0.01 / 2
    ([(0.5, 3.0, 9)] * 3 + [(0.518, 3.0, 9)], False),          # rolling gain 0.006 > 0.01 / 2
    ([(0.5, 3.0, 30)] * 6, False),                             # k_max reached
    ([(0.5, math.nan, 8)] * 4, False),                         # no score: no decision
])
def test_should_grow_cases(hist, grow):
    c = ControllerOptions()
    assert should_grow(hist, c) is grow
    assert _pandas_rule(hist, c) is grow


@pytest.mark.parametrize("seed", range(6))
def test_should_grow_equals_pandas_transcription(seed):
    g = np.random.default_rng(seed)
    c = ControllerOptions(k_init=8, k_max=12)
    hist, k = [], 8
    for _ in range(40):
        hist.append((float(0.6 + 0.004 * g.standard_normal()),
                     float(4.0 + 0.02 * g.standard_normal()), k))
        grow = should_grow(hist, c)
        assert grow == _pandas_rule(hist, c)
        k += int(grow)
    assert k > 8  # the random walk plateaus, so k grows at least once


# -- effective rank, embeddings, zip ------------------------------------------------------------
@pytest.mark.parametrize(("e", "want"), [
    (np.eye(4), 4.0), (np.ones((5, 3)), 1.0), (np.diag([1.0, 100.0, 0.01]), 3.0),
    (np.zeros((0, 3)), math.nan), (np.zeros((3, 2)), math.nan)])
def test_effective_rank(e, want):
    got = effective_rank(e)
    assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)


def test_embeddings_from_last_linear_input():
    model = tiny_cnn()
    x = torch.randn(7, 1, 8, 8)
    e = embeddings(model, x)
    assert e.shape == (7, 3)
    np.testing.assert_allclose(e, model[:4](x).detach().numpy(), rtol=1e-6)


def test_zip_size_smaller_for_clustered():
    g = np.random.default_rng(0)
    w = g.standard_normal(5000).astype(np.float32)
    shapes = [(50, 100)]
    cb = g.standard_normal(8).astype(np.float32)
    assert zip_size(cb[g.integers(0, 8, 5000)], shapes) < 0.6 * zip_size(w, shapes)


# -- OOD inputs ---------------------------------------------------------------------------------
def _digits_like(n: int = 40, seed: int = 0) -> Dataset:
    g = np.random.default_rng(seed)
    x = (g.integers(0, 17, (n, 1, 8, 8)) / 16).astype(np.float32)
    y = np.arange(n) % 10
    return Dataset(x, y, x[:10], y[:10], 10, (1, 8, 8), "digits")


def test_ood_folder(tmp_path):
    g = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", g.integers(0, 256, (3, 16, 16, 3)).astype(np.uint8))
    (tmp_path / "b.pgm").write_bytes(b"P5\n# c\n4 4\n255\n" + bytes(range(16)))
    x = ood_inputs(_digits_like(), f"folder:{tmp_path}", 4, seed=0)
    assert x.shape == (4, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x * 16, np.round(x * 16))  # digits quantisation
    with pytest.raises(ValueError, match="5"):
        ood_inputs(_digits_like(), f"folder:{tmp_path}", 5, seed=0)


# -- the method end to end (one worker, loopback) -----------------------------------------------
def _setup(method: str, score: str = "scalar", clients: int = 3, seed: int = 0):
    ds = _digits_like(60, seed)
    cfg = from_dict({"seed": seed, "fl": {"method": method},
                     "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "optimizer": "adam",
                               "max_steps": 3},
                     "method": {"score": score, "cluster_epochs": 1,
                                **({"kd": {"epochs": 1, "batch_size": 16},
                                    "ood": {"size": 40}} if method == "fedcompress" else {})}})
    strategy_cls, program_cls, opts = get_method(method, cfg.method)
    model = tiny_cnn(seed)
    w0, n = flat_params(model), flat_params(model).shape[0]
    parts = np.array_split(np.arange(60), clients)
    samples = np.array([p.size for p in parts])
    from fedsqueeze.compress import from_config

    up = from_config({"id": "identity"})
    sctx = ServerContext(cfg, opts, n, w0, up, up, clients, samples,
                         evaluate=lambda w: (0.0, 0.5), model_factory=lambda: tiny_cnn(seed))
    sctx.dataset = ds
    cctx = ClientContext(cfg, opts, n, w0, up, up, {})
    cctx.model_factory = lambda: tiny_cnn(seed)
    trainer = Trainer(tiny_cnn(seed), torch.from_numpy(ds.x_train),
                      torch.from_numpy(ds.y_train), parts, cfg.train, cfg.seed)
    return strategy_cls(sctx), program_cls(cctx), trainer, samples


def _run_round(st, prog, trainer, samples, t):
    clients = np.arange(len(samples))
    st.begin_round(t, clients, samples)
    ups = {}
    for c in clients:
        dl = st.downlink(t, int(c))
        payload = Encoded({}, dl.sections).payload()
        w = prog.receive(t, int(c), dl.flags, payload)
        w_end, stats = prog.train(t, int(c), trainer, w)
        up = prog.encode(t, int(c), w_end - w, int(samples[c]))
        ups[int(c)] = (Encoded({}, up.sections).payload(), w_end, stats, payload, w)
    for c, (payload, *_rest) in ups.items():
        (n,) = struct.unpack_from("<I", payload)
        st.accumulate(t, c, n, memoryview(payload)[4:])
    return st.end_round(t), ups


@pytest.mark.parametrize("score", ["scalar", "embeddings"])
def test_fedcompress_round_trip(score):
    st, prog, trainer, samples = _setup("fedcompress", score)
    layout = model_layout(tiny_cnn())
    cols, ups = _run_round(st, prog, trainer, samples, 0)
    for c, (payload, w_end, stats, down, _w) in ups.items():
        assert len(down) == 4 + me_nbytes(layout, 8) and down[0] == 8  # clustered downlink
        n_val = int(0.1 * samples[c])
        head = 4 + 12 if score == "scalar" else 4 + 12 + 4 * n_val * 3
        assert len(payload) == head + me_nbytes(layout, 8)
        assert stats["samples"] == samples[c] - n_val
        model = tiny_cnn()
        set_flat_params(model, w_end)
        assert len(np.unique(model[0].weight.detach().numpy())) <= 8
    assert cols["k_t"] == 8 and cols["k_next"] == 8
    assert cols["model_bytes"] == me_nbytes(layout, 8)
    assert 0 <= cols["val_accuracy"] <= 1 and cols["val_score"] > 0
    assert cols["zip_bytes_down"] > 0 and cols["zip_bytes_up"] > 0
    assert cols["teacher_test_accuracy"] == 0.5
    assert np.isfinite(cols["distill_loss"])
    # the next downlink carries the distilled, clustered model
    st.begin_round(1, np.arange(3), samples)
    dl = st.downlink(1, 0)
    assert Encoded({}, dl.sections).payload() != ups[0][3]
    w = prog.receive(1, 0, dl.flags, Encoded({}, dl.sections).payload())
    np.testing.assert_array_equal(w, st.weights)


def test_client_clustering_dense_downlink():
    st, prog, trainer, samples = _setup("client_clustering")
    cols, ups = _run_round(st, prog, trainer, samples, 0)
    n = st.ctx.n_params
    assert all(len(u[3]) == 4 + 4 * n for u in ups.values())
    w_i = [u[1] for u in ups.values()]
    weights = [samples[c] - int(0.1 * samples[c]) for c in ups]
    np.testing.assert_allclose(st.weights, np.average(w_i, axis=0, weights=weights), rtol=1e-6)
    assert cols["model_bytes"] == 4 * n and np.isnan(cols.get("distill_loss", np.nan))


def test_uploads_are_deterministic():
    a = _run_round(*_setup("client_clustering"), 0)[1]
    b = _run_round(*_setup("client_clustering"), 0)[1]
    assert all(a[c][0] == b[c][0] for c in a)


@pytest.mark.parametrize(("cut", "match"), [(6, "needs|declares"), (None, "k = 9")])
def test_server_rejects_bad_uplinks(cut, match):
    st, prog, trainer, samples = _setup("client_clustering")
    st.begin_round(0, np.arange(3), samples)
    dl = st.downlink(0, 0)
    w = prog.receive(0, 0, dl.flags, Encoded({}, dl.sections).payload())
    w_end, _ = prog.train(0, 0, trainer, w)
    payload = bytearray(Encoded({}, prog.encode(0, 0, w_end - w, int(samples[0])).sections)
                        .payload())[4:]
    if cut is None:
        payload[12] = 9  # k of the first clustered tensor
    else:
        payload = payload[:cut]
    with pytest.raises(WireFormatError, match=match):
        st.accumulate(0, 0, int(samples[0]), bytes(payload))


def test_state_dict_round_trip():
    st, prog, trainer, samples = _setup("fedcompress")
    _run_round(st, prog, trainer, samples, 0)
    st2 = _setup("fedcompress")[0]
    st2.load_state_dict(st.state_dict())
    for s in (st, st2):
        s.begin_round(1, np.arange(3), samples)
    a, b = st.downlink(1, 0), st2.downlink(1, 0)
    assert Encoded({}, a.sections).payload() == Encoded({}, b.sections).payload()
    assert st2.history == st.history and st2.k == st.k


# -- inference benchmark (METHODS.md 3.4 item 8) ------------------------------------------------
@pytest.mark.parametrize("k", [2, 8])
def test_inference_benchmark_runs(k, tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "benchmarks" / "fedcompress_inference.py"
    spec = importlib.util.spec_from_file_location("fedcompress_inference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:  # main() checks LUT and dense outputs against torch before timing
        out = bench.main(["--k", str(k), "--runs", "2", "--warmup", "1", "--batch", "1", "3",
                          "--json", str(tmp_path / "r.json")])
    finally:
        torch.set_num_threads(threads)
    assert out["k"] == [k] and [r["batch"] for r in out["rows"]] == [1, 3]
    assert json.loads((tmp_path / "r.json").read_text())["rows"][1]["t_numba_lut_s"] > 0

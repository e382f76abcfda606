"""The ``igc`` method driven through its Strategy / ClientProgram hooks without MPI.

Frames are built with ``comm.wire.pack_frame`` exactly as the server and worker build them, so
the byte counts checked here are the ``len(frame)`` the transport logs (METHODS.md 2.6, 2.7).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsqueeze import compress
from fedsqueeze.comm.tags import Flag, Kind
from fedsqueeze.comm.wire import HEADER_SIZE, pack_frame, unpack_frame
from fedsqueeze.config import from_dict
from fedsqueeze.errors import ConfigError
from fedsqueeze.fl.state import MemoryStore
from fedsqueeze.fl.strategy import UP_PRE, ClientContext, ServerContext, get_method
from fedsqueeze.fl.train import Trainer, flat_params
from fedsqueeze.methods.igc import IGCClient, IGCStrategy

N_CLIENTS, IN, HID, OUT = 4, 8, 16, 4
D = IN * HID + HID + HID * OUT + OUT  # 212


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(IN, HID), nn.ReLU(), nn.Linear(HID, OUT))


class Harness:
    """One server strategy and ``ranks`` client programs (one per worker rank)."""

    def __init__(self, method: dict, *, ranks: int = 1, seed: int = 0, lr: float = 0.1,
                 server_lr: float = 1.0, factory: bool = False) -> None:
        self.cfg = from_dict({"seed": seed, "fl": {"method": "igc", "server_lr": server_lr},
                              "train": {"lr": lr, "batch_size": 8, "epochs": 1},
                              "data": {"clients": N_CLIENTS}, "method": method})
        _, _, self.opts = get_method("igc", self.cfg.method)
        g = np.random.default_rng(seed)
        x = torch.from_numpy(g.standard_normal((N_CLIENTS * 24, IN)).astype(np.float32))
        y = torch.from_numpy((x[:, 0] > 0).long().numpy() + 2 * (x[:, 1] > 0).long().numpy())
        parts = [np.arange(c * 24, (c + 1) * 24) for c in range(N_CLIENTS)]
        self.model = make_model(seed)
        self.w0 = flat_params(self.model)
        ident = compress.from_config({"id": "identity"})
        samples = np.array([p.size for p in parts])
        mf = {"model_factory": make_model} if factory else {}
        self.server = IGCStrategy(ServerContext(self.cfg, self.opts, D, self.w0, ident, ident,
                                                N_CLIENTS, samples, **mf))
        self.programs = [IGCClient(ClientContext(self.cfg, self.opts, D, self.w0, ident, ident,
                                                 MemoryStore(), **mf)) for _ in range(ranks)]
        self.trainer = Trainer(self.model, x, y, parts, self.cfg.train, seed)
        self.samples = samples
        self.log: list[dict] = []

    def round(self, t: int, clients: list[int], rank_of=lambda c: 0) -> dict:
        s = self.server
        s.begin_round(t, np.array(clients), self.samples[clients])
        starts, row = {}, {"down": {}, "up": {}, "flags": {}, "views": {}}
        for c in clients:
            dl = s.downlink(t, c)
            frame = pack_frame(Kind.DOWN_MODEL, dl.sections, round=t, client=c, flags=dl.flags)
            h, payload = unpack_frame(frame)
            row["down"][c], row["flags"][c] = len(frame), h.flags
            starts[c] = self.programs[rank_of(c)].receive(t, c, h.flags, payload)
            row["views"][c] = np.array(starts[c])
        for c in clients:
            prog = self.programs[rank_of(c)]
            w_end, stats = prog.train(t, c, self.trainer, starts[c])
            up = prog.encode(t, c, w_end - starts[c], int(self.samples[c]))
            frame = pack_frame(Kind.UP_UPDATE, up.sections, round=t, client=c)
            row["up"][c] = len(frame)
            _, payload = unpack_frame(frame)
            (n,) = UP_PRE.unpack_from(payload)
            s.accumulate(t, c, n, payload[UP_PRE.size:])
        row["cols"] = s.end_round(t)
        self.log.append(row)
        return row


# -- bytes match METHODS.md 2.6 / 2.7 ----------------------------------------------------------
@pytest.mark.parametrize("variant", ["static", "ksub", "timevarying"])
@pytest.mark.parametrize("d", [16, 64])
def test_upload_bytes(variant, d):
    h = Harness({"variant": variant, "d": d, "K": 3})
    for t in range(2):
        row = h.round(t, [0, 2])
        assert set(row["up"].values()) == {HEADER_SIZE + 4 + 4 * d}


@pytest.mark.parametrize("d", [16, 64])
def test_static_download_bytes(d):
    h = Harness({"variant": "static", "d": d})
    for t in range(3):
        row = h.round(t, [1, 3])
        assert set(row["down"].values()) == {HEADER_SIZE + 4 * d}
        assert set(row["flags"].values()) == {int(Flag.FULL_MODEL)}


def test_worked_example_digits_mlp_sizes():
    # METHODS.md 6.12: IGC d = 256 on DigitsMLP: 1,052 bytes up, 1,048 static down
    assert HEADER_SIZE + 4 + 4 * 256 == 1052 and HEADER_SIZE + 4 * 256 == 1048


@pytest.mark.parametrize("K", [1, 3])
def test_ksub_stateless_sends_all_K(K):
    h = Harness({"variant": "ksub", "d": 16, "K": K, "client_state": "stateless"})
    for t in range(4):
        row = h.round(t, [0, 1])
        assert set(row["down"].values()) == {HEADER_SIZE + 4 + K * (4 + 4 * 16)}


def test_ksub_stateful_sends_changed_vectors():
    K, d = 3, 16
    h = Harness({"variant": "ksub", "d": d, "K": K})
    per = 4 + 4 * d
    # client 0 every round; client 1 at rounds 0 and 4 (missed 1..3)
    expect0 = [0, 1, 1, 1, 1]  # before round 0 nothing changed; then the previous round's k
    for t in range(5):
        clients = [0, 1] if t in (0, 4) else [0]
        row = h.round(t, clients)
        assert row["down"][0] == HEADER_SIZE + 4 + expect0[t] * per
        if t == 4:  # rounds 0..3 changed k = 0, 1, 2, 0 -> all three vectors
            assert row["down"][1] == HEADER_SIZE + 4 + 3 * per
            assert row["flags"][1] == int(Flag.FULL_MODEL) and row["flags"][0] == int(Flag.REPLAY)
        assert row["cols"]["subspace"] == t % K


def tv_bytes(count: int, d: int) -> int:
    return HEADER_SIZE + 8 + count * (4 + 4 * d)


def test_timevarying_replay_or_full_whichever_is_smaller():
    d = 64  # replay entry 260 bytes, full model 4 * 212 = 848: replay up to 3 missed rounds
    h = Harness({"variant": "timevarying", "d": d})
    full = HEADER_SIZE + 8 + 4 * D
    missed = {}
    for t in range(8):
        clients = [0] + ([1] if t in (0, 3) else []) + ([2] if t in (0, 7) else [])
        row = h.round(t, clients)
        assert row["down"][0] == tv_bytes(1 if t else 0, d)  # one missed round each time
        missed[t] = row
    assert missed[3]["down"][1] == tv_bytes(3, d)  # missed rounds 0, 1, 2: 812 < 880
    assert missed[3]["flags"][1] == int(Flag.REPLAY)
    assert missed[7]["down"][2] == full  # 7 missed rounds: full model is smaller
    assert missed[7]["flags"][2] == int(Flag.FULL_MODEL)
    assert missed[7]["cols"]["down_full"] == 1 and missed[7]["cols"]["down_replay"] == 1


def test_timevarying_tie_goes_to_replay():
    # D = 212, d = 52: one entry 212 bytes = 4 D / 4 ... 4 entries = 848 = the full model
    h = Harness({"variant": "timevarying", "d": 52})
    for t in range(5):
        row = h.round(t, [0] + ([1] if t in (0, 4) else []))
    assert row["down"][1] == tv_bytes(4, 52) == HEADER_SIZE + 8 + 4 * D
    assert row["flags"][1] == int(Flag.REPLAY)


def test_timevarying_stateless_always_full():
    h = Harness({"variant": "timevarying", "d": 16, "client_state": "stateless"})
    for t in range(3):
        row = h.round(t, [0, 1])
        assert set(row["down"].values()) == {HEADER_SIZE + 8 + 4 * D}


# -- views and aggregation -------------------------------------------------------------------
@pytest.mark.parametrize("variant,client_state", [("static", "stateful"), ("ksub", "stateful"),
                                                  ("ksub", "stateless"),
                                                  ("timevarying", "stateful"),
                                                  ("timevarying", "stateless")])
def test_client_view_equals_server_model(variant, client_state):
    h = Harness({"variant": variant, "d": 32, "K": 3, "client_state": client_state}, ranks=2)
    sched = [[0, 1, 2], [0], [1, 3], [2], [0, 1, 2, 3], [3]]
    for t, clients in enumerate(sched):
        w_server = h.server.weights.copy()
        row = h.round(t, clients, rank_of=lambda c: c % 2)
        for c in clients:
            if variant == "ksub":  # sum order differs (active subspace last): rounding only
                np.testing.assert_allclose(row["views"][c], w_server, rtol=1e-6, atol=1e-6)
            else:  # same float operations in the same order: bit-identical
                assert row["views"][c].tobytes() == w_server.tobytes()


@pytest.mark.parametrize("variant", ["static", "ksub", "timevarying"])
def test_subspace_aggregate_equals_mean_of_decoded_updates(variant):
    h = Harness({"variant": variant, "d": 32, "K": 2}, server_lr=0.5)
    h.round(0, [0, 1])
    t, clients = 1, [0, 2, 3]
    w_before = h.server.weights.astype(np.float64)
    s = h.server
    s.begin_round(t, np.array(clients), h.samples[clients])
    decoded, weights = [], []
    for c in clients:
        dl = s.downlink(t, c)
        _, payload = unpack_frame(pack_frame(Kind.DOWN_MODEL, dl.sections, flags=dl.flags))
        w = h.programs[0].receive(t, c, dl.flags, payload)
        w_end, _ = h.programs[0].train(t, c, h.trainer, w)
        up = h.programs[0].encode(t, c, w_end - w, int(h.samples[c]))
        z = np.frombuffer(b"".join(bytes(x) for x in up.sections[1:]), "<f4")
        A = s.codec.projection(D, s.codec.subspace_for(t))
        decoded.append(A.forward(z).astype(np.float64))  # the decompressed full-space update
        weights.append(float(h.samples[c]))
        s.accumulate(t, c, int(h.samples[c]), b"".join(bytes(x) for x in up.sections[1:]))
    s.end_round(t)
    mean = sum(wi * x for wi, x in zip(weights, decoded, strict=True)) / sum(weights)
    np.testing.assert_allclose(s.weights, w_before + 0.5 * mean, rtol=1e-5, atol=1e-6)


def test_training_reduces_loss():
    h = Harness({"variant": "static", "d": 64}, lr=0.5)
    before = h.trainer.local_loss(h.server.weights, 0)
    for t in range(8):
        h.round(t, [0, 1, 2, 3])
    after = h.trainer.local_loss(h.server.weights, 0)
    assert after < before - 0.05, (before, after)


@pytest.mark.parametrize("method", [{"variant": "static", "d": 16, "optimizer": "adam"},
                                    {"variant": "timevarying", "d": 16, "projection": "dense"},
                                    {"variant": "ksub", "d": 8, "K": 2, "scope": "per_layer",
                                     "layer_sizes": [128, 16, 64, 4]}])
def test_options_variants_run_and_stay_in_subspace(method):
    h = Harness(method)
    h.round(0, [0, 1])
    if method["variant"] == "static":  # theta - theta_0 lies in span(A): A (A^T A)^-1 A^T fixes it
        A = h.server.codec.projection(D, 0)
        M = np.stack([A.forward(e) for e in np.eye(16, dtype=np.float32)], 1).astype(np.float64)
        delta = h.server.weights.astype(np.float64) - h.w0
        coef = np.linalg.lstsq(M, delta, rcond=None)[0]
        np.testing.assert_allclose(M @ coef, delta, atol=1e-6)


# -- errors and state ---------------------------------------------------------------------
def test_timevarying_client_moved_between_ranks_is_refused():
    h = Harness({"variant": "timevarying", "d": 64}, ranks=2)
    h.programs[1].ctx.store = h.programs[0].ctx.store  # a shared (disk-like) store
    h.round(0, [0], rank_of=lambda c: 0)
    h.round(1, [1], rank_of=lambda c: 1)   # rank 1 now at round 1
    h.round(2, [0], rank_of=lambda c: 0)   # client 0 synced at 2 on rank 0
    with pytest.raises(RuntimeError, match="schedule"):
        h.round(3, [0], rank_of=lambda c: 1)  # rank 1's view is older than client 0's


@pytest.mark.parametrize("bad", [{"variant": "nope"}, {"d": 0}, {"unknown": 1}])
def test_options_are_validated(bad):
    with pytest.raises(ConfigError, match="method"):
        get_method("igc", bad)


def test_per_layer_needs_sizes():
    with pytest.raises(ConfigError, match="layer_sizes"):
        Harness({"scope": "per_layer", "d": 8})


def test_per_layer_reads_sizes_from_the_model_factory():
    h = Harness({"scope": "per_layer", "d": 8}, factory=True)
    assert h.server.codec.layout == h.programs[0].codec.layout == [128, 16, 64, 4]
    row = h.round(0, [0, 1])
    assert set(row["up"].values()) == {HEADER_SIZE + 4 + 4 * 8}


@pytest.mark.parametrize("variant", ["ksub", "timevarying"])
def test_state_dict_roundtrip(variant):
    h = Harness({"variant": variant, "d": 16, "K": 2})
    for t in range(3):
        h.round(t, [t % 2, 2])
    state = h.server.state_dict()
    fresh = Harness({"variant": variant, "d": 16, "K": 2}).server
    fresh.load_state_dict({k: np.asarray(v) for k, v in state.items()})
    np.testing.assert_array_equal(fresh.weights, h.server.weights)
    fresh.begin_round(3, np.array([0]), h.samples[[0]])
    dl = fresh.downlink(3, 0)
    if variant == "timevarying":  # workers lost their cached view: one full download
        assert dl.flags == Flag.FULL_MODEL


def test_per_layer_sizes_must_match_the_model():
    h = Harness({"scope": "per_layer", "d": 8, "layer_sizes": [100, 44, 64, 4]})  # sums to D
    with pytest.raises(ConfigError, match="does not match"):
        h.round(0, [0])

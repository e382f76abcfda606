"""Split learning and FedLite end to end over MPI (3 ranks: the suffix server and 2 client
workers): the run log, byte counts equal to the payload formulas of METHODS.md 5.5 (recomputed
here from the sizes, independently of ``split.payloads``), measured bytes equal on both ends,
and bit-identical results on 2 and 3 ranks."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm.tags import Kind
from fedsqueeze.log import read_run

from .conftest import fedsqueeze_run

pytestmark = pytest.mark.mpi

SHORT = ("fl.rounds=2", "data.clients=6")
D_A, D_C, CLASSES, LABEL_BITS = 1024, 160, 10, 4  # digits_cnn cut at conv1
RUNS = {
    "split": ("jobs/split.toml", ()),
    "fedlite": ("jobs/fedlite.toml", ()),
    "fedlite_codebook": ("jobs/fedlite.toml", ("method.q=16", "method.R=2", "method.L=5",
                                               "method.grouping=\"sample\"",
                                               "method.backward=\"codebook\"",
                                               "method.lambda=0.1", "train.batch_size=20")),
}


def pad4(n: int) -> int:
    return -(-n // 4) * 4


def _run(tmp_path_factory, name: str, ranks: int = 3):
    job, sets = RUNS[name]
    out = tmp_path_factory.mktemp(f"{name}{ranks}")
    fedsqueeze_run(ranks, job, out, name, *SHORT, *sets, timeout=110)
    return read_run(out / f"{name}.h5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    cache: dict[str, object] = {}

    def get(name: str):
        if name not in cache:
            cache[name] = _run(tmp_path_factory, name)
        return cache[name]
    return get


def _expected(run, sizes, row) -> tuple[int, int]:
    """``(SPLIT_ACT payload, SPLIT_GRAD payload)`` bytes of one step from the config and the
    client's sample count alone."""
    cfg, m = run.config, run.config["method"]
    n = sizes[int(row.client)]
    b = cfg["train"]["batch_size"]
    B = min(b, n - ((int(row.step) - 1) % -(-n // b)) * b)
    labels = pad4(-(-B * LABEL_BITS // 8))
    if cfg["fl"]["method"] == "split":
        return 16 + 4 * B * D_A + labels, 4 + 4 * B * D_A
    q, R, L = m.get("q", 64), m.get("R", 1), m.get("L", 16)
    L_eff, sub = min(L, B * q // R), -(-D_A // q)
    width = (L_eff - 1).bit_length()
    centroids = 4 * R * L_eff * sub
    act = 16 + centroids + pad4(-(-B * q * width // 8)) + labels
    grad = 4 + (centroids if m.get("backward") == "codebook" else 4 * B * D_A)
    return act, grad


@pytest.mark.parametrize("name", list(RUNS))
def test_every_message_has_the_size_of_its_payload_formula(runs, name):
    r = runs(name)
    assert r.status["state"] == "completed"
    c = r.comm
    assert (c["header_bytes"] == 24).all()
    acts = c[c["msg_type"] == int(Kind.SPLIT_ACT)]
    grads = c[c["msg_type"] == int(Kind.SPLIT_GRAD)]
    assert len(acts) == len(grads) > 0 and (acts["step"] >= 1).all()
    sizes = [p.shape[0] for p in r.partition()]
    for row in acts.itertuples():
        assert row.payload_bytes == _expected(r, sizes, row)[0], row
    for row in grads.itertuples():
        assert row.payload_bytes == _expected(r, sizes, row)[1], row
    assert (c.loc[c["msg_type"] == int(Kind.DOWN_MODEL), "payload_bytes"] == 4 * D_C).all()
    assert (c.loc[c["msg_type"] == int(Kind.UP_UPDATE), "payload_bytes"] == 4 + 4 * D_C).all()


def test_default_fedlite_batch_is_the_methods_example(runs):
    c = runs("fedlite").comm
    acts = c[c["msg_type"] == int(Kind.SPLIT_ACT)]
    full = acts["payload_bytes"] + acts["header_bytes"]
    assert (full == 2104).sum() > 0  # B = 32: 24 + 16 + 1,024 + 1,024 + 16
    assert set(full) <= {2104} | set(full[full < 2104])


@pytest.mark.parametrize("name", list(RUNS))
def test_per_client_bytes_add_up_and_match_the_sender(runs, name):
    r = runs(name)
    cl, c = r.clients, r.comm
    ok = cl["status"] == 0
    # what the server received equals what each worker counted at its Isend
    np.testing.assert_array_equal(cl.loc[ok, "bytes_up"], cl.loc[ok, "sent_bytes"])
    np.testing.assert_array_equal(cl["bytes_up"], cl["act_bytes"] + cl["label_bytes"]
                                  + cl["prefix_up_bytes"])
    np.testing.assert_array_equal(cl["bytes_down"], cl["grad_bytes"] + cl["prefix_down_bytes"])
    frame = c["payload_bytes"] + c["header_bytes"]
    for key, direction in (("bytes_up", 1), ("bytes_down", 0)):
        by_comm = frame[c["direction"] == direction].groupby(
            [c["round"], c["client"]]).sum()
        mine = cl.set_index(["round", "client"])[key]
        np.testing.assert_array_equal(mine.loc[by_comm.index].to_numpy(), by_comm.to_numpy())
        np.testing.assert_array_equal(cl.groupby("round")[key].sum().to_numpy(),
                                      r.rounds[key].to_numpy())
    steps = c[c["msg_type"] == int(Kind.SPLIT_ACT)].groupby(["round", "client"]).size()
    np.testing.assert_array_equal(cl.set_index(["round", "client"]).loc[steps.index,
                                                                         "split_steps"], steps)


@pytest.mark.parametrize("name", list(RUNS))
def test_round_columns(runs, name):
    r = runs(name)
    rd = r.rounds
    assert list(rd["round"]) == [0, 1]
    assert np.isfinite(rd["test_accuracy"]).all() and np.isfinite(rd["train_loss"]).all()
    np.testing.assert_allclose(rd["act_ratio"], rd["act_dense_bytes"]
                               / (rd["act_bytes"] + rd["label_bytes"]))
    if name == "split":
        assert (rd["act_ratio"] < 1).all() and np.isnan(rd["test_accuracy_quantized"]).all()
    else:
        assert (rd["act_ratio"] > 20).all() and (rd["distortion"] > 0).all()
        assert np.isfinite(rd["test_accuracy_quantized"].iloc[-1])
    assert r.model.shape == (5130,) and np.isfinite(r.model).all()


def test_bit_identical_on_2_and_3_ranks(runs, tmp_path_factory):
    a = runs("fedlite_codebook")
    b = _run(tmp_path_factory, "fedlite_codebook", ranks=2)
    np.testing.assert_array_equal(a.model, b.model)
    for col in ("test_accuracy", "train_loss", "bytes_up", "bytes_down", "distortion"):
        np.testing.assert_array_equal(a.rounds[col], b.rounds[col])
    cols = ["round", "client", "step", "direction", "msg_type", "payload_bytes"]
    key = ["round", "client", "msg_type", "step"]
    np.testing.assert_array_equal(a.comm[cols].sort_values(key).to_numpy(),
                                  b.comm[cols].sort_values(key).to_numpy())


def test_bad_method_option_fails_before_training(tmp_path):
    p = fedsqueeze_run(2, "jobs/fedlite.toml", tmp_path, "bad", "method.R=3", check=False,
                       timeout=110)
    assert p.returncode != 0
    assert "R = 3 must divide q = 64" in p.stderr
    assert not (tmp_path / "bad.h5").exists()

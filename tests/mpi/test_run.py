"""End-to-end runs over MPI: determinism across rank counts, byte accounting, the HDF5 log."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm.wire import HEADER_SIZE
from fedsqueeze.log import read_run

from .conftest import fedsqueeze_run, run_mpi

pytestmark = pytest.mark.mpi

SHORT = ("fl.rounds=3", "train.epochs=1", "data.clients=12")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    for n in (2, 3, 5):
        fedsqueeze_run(n, "jobs/quickstart.toml", out, f"r{n}", *SHORT)
    return {n: read_run(out / f"r{n}.h5") for n in (2, 3, 5)}


@pytest.mark.parametrize("model", ["digits_mlp", "mnist_2nn"])
def test_unchecked_frames_give_the_same_run(tmp_path, model):
    """``fl.checksum = false`` drops the CRC32 and nothing else. mnist_2nn (55,210 weights)
    makes every model frame larger than ZERO_COPY_MIN: header + sections as one derived-datatype
    message, and one shared payload for both workers' downlinks."""
    sets = (*SHORT, f"model.name={model}")
    fedsqueeze_run(3, "jobs/quickstart.toml", tmp_path, "crc", *sets)
    fedsqueeze_run(3, "jobs/quickstart.toml", tmp_path, "nocrc", *sets, "fl.checksum=false")
    a, b = read_run(tmp_path / "crc.h5"), read_run(tmp_path / "nocrc.h5")
    np.testing.assert_array_equal(a.model, b.model)
    np.testing.assert_array_equal(a.rounds["test_accuracy"], b.rounds["test_accuracy"])
    np.testing.assert_array_equal(a.clients["bytes_up"], b.clients["bytes_up"])
    np.testing.assert_array_equal(a.clients["bytes_down"], b.clients["bytes_down"])
    assert (a.clients["bytes_down"] == HEADER_SIZE + 4 * a.model.shape[0]).all()
    assert b.status["state"] == "completed"


def test_bit_identical_on_2_3_and_5_ranks(runs):
    a = runs[2]
    for n in (3, 5):
        b = runs[n]
        np.testing.assert_array_equal(a.model, b.model)
        np.testing.assert_array_equal(a.rounds["test_accuracy"], b.rounds["test_accuracy"])
        np.testing.assert_array_equal(a.rounds["bytes_up"], b.rounds["bytes_up"])
        np.testing.assert_array_equal(a.rounds["bytes_down"], b.rounds["bytes_down"])
        cols = ["round", "client", "bytes_up", "bytes_down", "local_loss"]
        np.testing.assert_array_equal(a.clients[cols].to_numpy(), b.clients[cols].to_numpy())


def test_logged_bytes_equal_the_frames_handed_to_mpi(runs):
    r = runs[3]
    c = r.clients
    ok = c["status"] == 0
    # bytes_up is what the server received (Get_count); sent_bytes what the worker's transport
    # counted at its Isend call: the same frames, so the same numbers
    np.testing.assert_array_equal(c.loc[ok, "bytes_up"], c.loc[ok, "sent_bytes"])
    d = r.config["data"]
    n_params = r.model.shape[0]
    assert (c.loc[ok, "bytes_up"] == HEADER_SIZE + 4 + 4 * n_params).all()
    assert (c["bytes_down"] == HEADER_SIZE + 4 * n_params).all()
    per_round = c.groupby("round")["bytes_up"].sum().to_numpy()
    np.testing.assert_array_equal(per_round, r.rounds["bytes_up"].to_numpy())
    assert d["clients"] == 12


def test_log_tables_and_status(runs):
    r = runs[2]
    assert r.status["state"] == "completed"
    assert list(r.rounds["round"]) == [0, 1, 2]
    for col in ("round", "test_accuracy", "test_loss", "bytes_up", "bytes_down", "t_train",
                "t_encode", "t_decode", "t_wait", "t_aggregate", "t_evaluate"):
        assert col in r.rounds.columns, col
    for col in ("round", "client", "rank", "bytes_up", "bytes_down", "samples", "local_loss"):
        assert col in r.clients.columns, col
    assert r.rounds["test_accuracy"].iloc[-1] > r.rounds["test_accuracy"].iloc[0] - 0.05
    assert (r.comm["header_bytes"] == HEADER_SIZE).all()


def test_config_error_names_the_key_before_training(tmp_path):
    p = fedsqueeze_run(2, "jobs/quickstart.toml", tmp_path, "bad", "train.lr=-1", check=False,
                       timeout=120)
    assert p.returncode != 0
    assert "train.lr" in p.stderr and "greater than 0" in p.stderr
    assert not (tmp_path / "bad.h5").exists()


def test_a_rerun_under_the_same_name_starts_from_scratch(tmp_path):
    """Error-feedback residuals on disk from an earlier run must not leak into a fresh one."""
    sets = (*SHORT, 'compress.up={id="topk", rho=0.05, error_feedback=true}',
            'fl.client_state="disk"')
    fedsqueeze_run(2, "jobs/quickstart.toml", tmp_path, "a", *sets)
    first = read_run(tmp_path / "a.h5").model.copy()
    assert (tmp_path / "a.client_state").exists()
    args = ["-m", "fedsqueeze", "run", "jobs/quickstart.toml", "--out", str(tmp_path), "--name",
            "a", "--no-progress", "--overwrite"]
    for s in sets:
        args += ["--set", s]
    run_mpi(2, args)
    np.testing.assert_array_equal(read_run(tmp_path / "a.h5").model, first)

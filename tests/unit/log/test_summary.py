"""run_metrics / read_runs / summarize: byte totals, bytes to target, ratios, text."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fedsqueeze.log import RunWriter, read_run, read_runs, run_metrics, summarize
from fedsqueeze.log.schema import SYSTEM_CLIENT
from fedsqueeze.log.summary import dense_bytes, flatten_config

D = 100
ACC = [0.1, 0.4, float("nan"), 0.7, 0.65]
UP = [50, 60, 70, 80, 90]
DOWN = [400, 400, 400, 400, 400]


def write(path, *, state=None, config=None, n_buffers=None):
    meta = {"method": "topk", "dataset": "digits"}
    if n_buffers is not None:
        meta["n_buffers"] = n_buffers
    with RunWriter(path, config=config or {"compress": {"id": "topk", "k": 5}}, meta=meta,
                   n_params=D) as w:
        w.append_setup({"round": 0, "client": [0, 1], "header_bytes": 24, "payload_bytes": 16})
        for t in range(5):
            w.append_round({"round": t, "bytes_up": UP[t], "bytes_down": DOWN[t],
                            "test_accuracy": ACC[t], "test_loss": 1.0 / (t + 1),
                            "wall_s": 2.0, "t_train": 1.0, "t_wait": 0.5})
            # two clients: down 200 B each (logical) + one physical broadcast; up split 1:rest
            w.append_comm({"round": t, "client": [SYSTEM_CLIENT, 0, 1, 0, 1],
                           "direction": [0, 0, 0, 1, 1], "header_bytes": 24,
                           "payload_bytes": [176, 176, 176, 1, UP[t] - 48 - 1],
                           "theoretical_bits": [3200, 3200, 3200, 10, 30],
                           "physical": [1, 0, 0, 1, 1]})
            w.append_clients({"round": t, "client": [0, 1], "bytes_up": [25, UP[t] - 25],
                              "bytes_down": [200, 200]})
            w.append_system(t, 8)
            w.flush()
        w.event(4, "warning", "w", "warn")
        if state:
            w.set_status(state, error="bad" if state == "failed" else None)


@pytest.fixture
def run(tmp_path):
    write(tmp_path / "a.h5")
    return read_run(tmp_path / "a.h5")


@pytest.mark.parametrize(("target", "round_", "nbytes"), [
    (0.05, 0, 450), (0.1, 0, 450), (0.3, 1, 910), (0.69, 3, 1860), (0.7, 3, 1860),
    (0.71, None, None), (None, None, None),
])
def test_bytes_to_target(run, target, round_, nbytes):
    m = run_metrics(run, target)
    if round_ is None:
        assert math.isnan(m["round_to_target"]) and math.isnan(m["bytes_to_target"])
    else:
        assert m["round_to_target"] == round_
        assert m["bytes_to_target"] == nbytes


def test_totals(run):
    m = run_metrics(run)
    assert m["method"] == "topk" and m["compressor"] == "topk" and m["dataset"] == "digits"
    assert m["final_accuracy"] == 0.65
    assert m["best_accuracy"] == 0.7
    assert m["final_test_loss"] == 0.2
    assert m["bytes_up"] == sum(UP)
    assert m["bytes_down"] == sum(DOWN)
    assert m["bytes_setup"] == 80
    assert m["bytes_system"] == 40
    assert m["bytes_total_incl_setup"] == sum(UP) + sum(DOWN) + 80
    assert m["bytes_up_per_client"] == sum(UP) / 2
    assert m["mean_round_s"] == 2.0
    assert m["mean_t_train"] == 1.0
    assert math.isnan(m["mean_t_encode"])
    assert m["state"] == "completed"
    assert m["n_events"] == 1
    assert m["config.compress.k"] == 5


@pytest.mark.parametrize("n_buffers", [None, 0, 10])
def test_ratios(tmp_path, n_buffers):
    write(tmp_path / "r.h5", n_buffers=n_buffers)
    m = run_metrics(read_run(tmp_path / "r.h5"))
    nb = n_buffers or 0
    # 5 rounds x 2 clients per direction; the physical broadcast row does not count
    assert m["ratio_up"] == pytest.approx(10 * (28 + 4 * (D + nb)) / sum(UP))
    assert m["ratio_down"] == pytest.approx(10 * (24 + 4 * (D + nb)) / 2000)
    assert m["paper_ratio_up"] == pytest.approx(32 * (D + nb) * 10 / (40 * 5))
    assert m["paper_ratio_down"] == pytest.approx(1 + nb / D)


def test_ratio_from_clients_when_no_comm(tmp_path):
    path = tmp_path / "c.h5"
    with RunWriter(path, config={}, meta={}, n_params=D) as w:
        w.append_clients({"round": [0, 0, 1], "client": [0, 1, 0], "bytes_up": [28, 100, 0]})
    m = run_metrics(read_run(path))
    assert m["ratio_up"] == pytest.approx(2 * dense_bytes(1, D) / 128)
    assert math.isnan(m["ratio_down"])


@pytest.mark.parametrize(("direction", "expected"), [(0, 24 + 4 * D), (1, 28 + 4 * D)])
def test_dense_bytes(direction, expected):
    assert dense_bytes(direction, D) == expected


def test_flatten_config():
    assert flatten_config({"a": {"b": {"c": 1}}, "l": [1, 2]}) == {"a.b.c": 1, "l": "[1, 2]"}


@pytest.mark.parametrize("state", [None, "failed", "preempted"])
def test_read_runs_folder(tmp_path, state):
    (tmp_path / "sweep" / "sub").mkdir(parents=True)
    write(tmp_path / "sweep" / "a.h5")
    write(tmp_path / "sweep" / "sub" / "b.h5", state=state,
          config={"compress": {"id": "topk", "k": 9}})
    df = read_runs(tmp_path / "sweep", target_accuracy=0.3)
    assert df["name"].tolist() == ["a", "b"]
    assert df["config.compress.k"].tolist() == [5, 9]
    assert df["state"].tolist() == ["completed", state or "completed"]
    assert df["bytes_to_target"].tolist() == [910, 910]
    assert len(read_runs([tmp_path / "sweep" / "a.h5"])) == 1


def test_read_runs_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_runs(tmp_path / "none")


def test_summarize(tmp_path):
    write(tmp_path / "a.h5", state="failed")
    text = summarize(tmp_path / "a.h5", target_accuracy=0.3)
    for expected in ("status        failed (bad)", "method        topk", "rounds done      5",
                     "final accuracy   0.65", "bytes to 0.3     910 B", "setup", "t_train",
                     "events: 1 (warning 1)"):
        assert expected in text, expected
    assert re.search(r"^compress\.k\s+5$", text, re.M)
    up = [line for line in text.splitlines() if line.startswith("up ")][0]
    assert up.split()[1:3] == ["350", "B"]
    assert "12.23" in up  # 10 x 428 / 350 vs f32 dense
    assert np.isclose(run_metrics(read_run(tmp_path / "a.h5"))["ratio_up"], 4280 / 350)

"""report(): files, markdown tables, and the data behind every plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedsqueeze.analysis import load_runs, report
from fedsqueeze.log import read_run, run_metrics

from ._runs import write_run

PNG = b"\x89PNG\r\n\x1a\n"


def make_sweeps(tmp_path):
    a = tmp_path / "sweepA"
    write_run(a / "runs" / "q2.h5", seed=1, method="qsgd", settings={"bits": 2})
    write_run(a / "runs" / "q4.h5", seed=2, method="qsgd", settings={"bits": 4}, eval_every=2)
    (a / "manifest.json").write_text(json.dumps([
        {"index": 0, "name": "qsgd-b2", "h5": "runs/q2.h5", "overrides": ["compress.bits=2"]},
        {"index": 1, "name": "qsgd-b4", "h5": "runs/q4.h5", "overrides": ["compress.bits=4"]},
        {"index": 2, "name": "qsgd-b8", "h5": "runs/q8.h5", "overrides": ["compress.bits=8"]},
    ]))
    b = tmp_path / "sweepB"
    write_run(b / "topk.h5", seed=3, method="topk", settings={"k": 5}, n_rounds=4)
    write_run(b / "fedavg.h5", seed=4, method="identity", settings={}, state="failed")
    return [str(a), str(b)]


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("report")


@pytest.fixture(scope="module")
def sweeps(module_dir):
    return make_sweeps(module_dir)


@pytest.fixture(scope="module")
def runs_by_label(sweeps):
    runs, skipped = load_runs(sweeps)
    assert skipped == []
    return {label: run for _, label, run in runs}


@pytest.fixture(scope="module")
def data(sweeps, module_dir):
    """The plot data of one report over both sweeps (read-only for the tests)."""
    return report(sweeps, str(module_dir / "out"))["data"]


@pytest.mark.parametrize("target", [None, 0.5, 0.99])
def test_report_files_and_summary(sweeps, runs_by_label, tmp_path, target):
    out = report(sweeps, str(tmp_path / "out"), target_accuracy=target)
    assert set(out["plots"]) == {"accuracy_vs_mb", "accuracy_vs_round", "time_breakdown",
                                 "client_bytes"}
    for png in out["plots"].values():
        data = Path(png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    assert out["tables"] == {"summary_csv": out["summary_csv"], "summary_md": out["summary_md"]}
    summary = pd.read_csv(out["summary_csv"])
    assert sorted(summary["label"]) == ["fedavg", "qsgd-b2", "qsgd-b4", "topk"]
    assert sorted(summary["group"].unique()) == ["sweepA", "sweepB"]
    for _, row in summary.iterrows():
        expected = run_metrics(runs_by_label[row["label"]], target)
        for col in ("final_accuracy", "bytes_up", "bytes_down", "bytes_to_target",
                    "mean_round_s", "mean_t_wait"):
            np.testing.assert_allclose(row[col], expected[col], rtol=1e-12)
    assert summary.loc[summary["label"] == "fedavg", "state"].item() == "failed"
    md = Path(out["summary_md"]).read_text()
    assert "## sweepA" in md and "## sweepB" in md
    section_a = md.split("## sweepA")[1].split("## sweepB")[0]
    header_a = section_a.strip().splitlines()[0]
    assert "compress.bits" in header_a          # varies inside sweepA
    assert "fl.rounds" not in header_a          # constant inside sweepA
    assert ("bytes_to_target_MB" in md) == (target is not None)
    assert out["skipped"] == []


def test_accuracy_vs_mb_data(data, runs_by_label):
    df = data["accuracy_vs_mb"]
    assert set(df["label"]) == set(runs_by_label)
    for label, d in df.groupby("label"):
        run = runs_by_label[label]
        r = run.rounds
        assert np.all(np.diff(d["cum_mb"]) > 0)
        cum = np.cumsum(r["bytes_up"].astype(float) + r["bytes_down"]) / 1e6
        evaluated = r["test_accuracy"].notna().to_numpy()
        np.testing.assert_allclose(d["cum_mb"], cum[evaluated])
        np.testing.assert_array_equal(d["test_accuracy"], r["test_accuracy"][evaluated])
        assert d["method"].iloc[0] == run.meta["method"]
    assert len(df[df["label"] == "qsgd-b4"]) == 3   # evaluated every other round


def test_accuracy_vs_round_data(data, runs_by_label):
    df = data["accuracy_vs_round"]
    for label, d in df.groupby("label"):
        r = runs_by_label[label].rounds.dropna(subset=["test_accuracy"])
        np.testing.assert_array_equal(d["round"], r["round"])
        np.testing.assert_array_equal(d["test_accuracy"], r["test_accuracy"])


def test_time_breakdown_data(data, runs_by_label):
    df = data["time_breakdown"]
    parts = ["t_train", "t_encode", "t_decode", "t_wait", "t_aggregate", "t_evaluate"]
    for _, row in df.iterrows():
        r = runs_by_label[row["label"]].rounds
        np.testing.assert_allclose(row[parts].astype(float), r[parts].mean(), rtol=1e-12)
        assert row["other"] >= 0
        np.testing.assert_allclose(row[parts + ["other"]].sum(), r["wall_s"].mean())


def test_client_bytes_data(data, runs_by_label):
    df = data["client_bytes"]
    for label, d in df.groupby("label"):
        c = runs_by_label[label].clients
        expected = c.groupby("client")[["bytes_up", "bytes_down"]].sum()
        np.testing.assert_array_equal(d["client"], expected.index)
        np.testing.assert_array_equal(d["bytes_up"], expected["bytes_up"])
        np.testing.assert_array_equal(d["bytes_total"],
                                      expected["bytes_up"] + expected["bytes_down"])
        assert d["bytes_total"].sum() == (runs_by_label[label].rounds[["bytes_up", "bytes_down"]]
                                          .to_numpy().sum())


def test_unreadable_and_duplicate_labels(tmp_path):
    write_run(tmp_path / "g1" / "run.h5", seed=5, method="qsgd", settings={"bits": 2})
    write_run(tmp_path / "g2" / "run.h5", seed=6, method="qsgd", settings={"bits": 4})
    (tmp_path / "g2" / "broken.h5").write_bytes(b"\0" * 64)
    out = report([str(tmp_path / "g1"), str(tmp_path / "g2")], str(tmp_path / "out"))
    assert sorted(out["summary"]["label"]) == ["g1/run", "g2/run"]
    assert [p for p, _ in out["skipped"]] == [str(tmp_path / "g2" / "broken.h5")]
    assert read_run(tmp_path / "g1" / "run.h5").status["state"] == "completed"


def test_empty_report(tmp_path):
    (tmp_path / "empty").mkdir()
    out = report([str(tmp_path / "empty")], str(tmp_path / "out"))
    assert "No readable runs" in Path(out["summary_md"]).read_text()
    assert all(Path(p).read_bytes().startswith(PNG) for p in out["plots"].values())
    assert out["data"]["accuracy_vs_mb"].empty


def test_missing_input(tmp_path):
    with pytest.raises(FileNotFoundError):
        report([str(tmp_path / "nope")], str(tmp_path / "out"))

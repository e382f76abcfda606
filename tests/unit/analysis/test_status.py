"""status(): done / running (live SWMR read) / failed / preempted / pending per sweep entry."""

from __future__ import annotations

import json

import pytest

from fedsqueeze.analysis import status
from tests.unit.log._procutil import WriterProc

from ._runs import write_run


def manifest(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps([
        {"index": i, "name": n, "h5": f"runs/{n}.h5", "overrides": [f"x={i}"]}
        for i, n in enumerate(names)]))


@pytest.mark.parametrize(("state", "label"), [
    (None, "done"), ("failed", "failed"), ("preempted", "preempted")])
def test_finished_states(tmp_path, state, label):
    manifest(tmp_path, ["a", "b"])
    write_run(tmp_path / "runs" / "a.h5", seed=1, method="qsgd", settings={}, n_rounds=3,
              state=state)
    df = status(tmp_path)
    assert df["name"].tolist() == ["a", "b"]
    assert df["state"].tolist() == [label, "pending"]
    assert df["last_round"].tolist()[0] == 2
    assert df["rounds_done"].tolist() == [3, 0]
    assert (df["error"].iloc[0] == "boom") == (state == "failed")
    assert df["overrides"].tolist() == ['["x=0"]', '["x=1"]']


def test_running_and_unreadable(tmp_path):
    manifest(tmp_path, ["live", "broken", "later"])
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "broken.h5").write_bytes(b"garbage")
    with WriterProc(tmp_path / "runs" / "live.h5", n_rounds=4, hold=True) as proc:
        proc.wait_for("holding")
        df = status(tmp_path).set_index("name")
        assert df.loc["live", "state"] == "running"
        assert df.loc["live", "last_round"] == 3
        assert df.loc["live", "rounds_done"] == 4
        assert df.loc["broken", "state"] == "failed"
        assert df.loc["broken", "error"].startswith("unreadable: ")
        assert df.loc["later", "state"] == "pending"
        proc.kill()
    # a killed writer leaves a readable file that still says "running"
    assert status(tmp_path).set_index("name").loc["live", "state"] == "running"


def test_folder_without_manifest(tmp_path):
    write_run(tmp_path / "b.h5", seed=2, method="topk", settings={}, n_rounds=2)
    write_run(tmp_path / "a.h5", seed=3, method="topk", settings={}, n_rounds=2, state="failed")
    df = status(tmp_path)
    assert df["name"].tolist() == ["a", "b"]
    assert df["index"].tolist() == [0, 1]
    assert df["state"].tolist() == ["failed", "done"]


def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        status(tmp_path / "nope")


def test_bad_manifest(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"h5": "x"}))
    with pytest.raises(ValueError, match="manifest"):
        status(tmp_path)

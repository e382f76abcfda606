"""Crash safety and concurrent reading, with a real writer process (``_writer_proc.py``)."""

from __future__ import annotations

import time

import h5py
import numpy as np
import pytest

from fedsqueeze.log import read_run
from fedsqueeze.log.reader import read_status

from ._procutil import WriterProc
from ._writer_proc import COMM_PER_ROUND, expected_round, message


def check_consistent(run, min_rounds: int) -> int:
    """Every row the reader shows equals what the writer wrote; returns the rounds seen."""
    r = run.rounds
    n = len(r)
    assert n >= min_rounds
    np.testing.assert_array_equal(r["round"], np.arange(n))
    for col in ("bytes_up", "bytes_down", "test_accuracy", "wall_s"):
        np.testing.assert_array_equal(r[col], [expected_round(t)[col] for t in range(n)])
    assert run.status["last_round"] == n - 1
    assert run.status["rounds_done"] == n
    # tables are committed together: exactly the rows of the committed rounds
    assert len(run.comm) == COMM_PER_ROUND * n
    np.testing.assert_array_equal(run.comm["round"], np.repeat(np.arange(n), COMM_PER_ROUND))
    np.testing.assert_array_equal(
        run.comm["payload_bytes"],
        np.repeat(np.arange(n), COMM_PER_ROUND) + np.tile(np.arange(COMM_PER_ROUND), n))
    assert len(run.clients) == COMM_PER_ROUND * n
    assert run.events["message"].tolist() == [message(t) for t in range(n)]
    return n


@pytest.mark.parametrize("kill_after", [0, 5, 40])
def test_sigkill_keeps_flushed_rounds(tmp_path, kill_after):
    path = tmp_path / "killed.h5"
    with WriterProc(path, n_rounds=-1) as proc:
        proc.wait_for(f"flushed {kill_after}")
        proc.kill()  # while it is writing later rounds
        assert proc.proc.returncode == -9
    run = read_run(path)
    check_consistent(run, min_rounds=kill_after + 1)
    assert run.status["state"] == "running"
    assert run.status["error"] is None
    assert read_status(path)["rounds_done"] == len(run.rounds)


def test_killed_file_opens_with_plain_h5py_swmr(tmp_path):
    path = tmp_path / "killed.h5"
    with WriterProc(path, n_rounds=-1) as proc:
        proc.wait_for("flushed 3")
        proc.kill()
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        assert f["rounds/round"].shape[0] >= 4
        assert f.attrs["encoding-type"] == "fedsqueeze-run"


def test_concurrent_reader(tmp_path):
    path = tmp_path / "live.h5"
    n_total = 30
    seen = []
    with WriterProc(path, n_rounds=n_total, sleep_s=0.05) as proc:
        proc.wait_for("flushed 0")
        deadline = time.monotonic() + 120
        while proc.proc.poll() is None and time.monotonic() < deadline:
            run = read_run(path)
            if run.status["state"] != "running":
                break
            seen.append(check_consistent(run, min_rounds=1))
        proc.finish()
    assert len(seen) >= 2, "the reader never caught the writer mid-run"
    assert seen == sorted(seen)
    assert seen[0] < n_total
    final = read_run(path)
    assert final.status["state"] == "completed"
    check_consistent(final, min_rounds=n_total)


def test_swmr_handle_sees_growth(tmp_path):
    """A reader that keeps the file open sees new rounds after ``refresh()``."""
    path = tmp_path / "live.h5"
    with WriterProc(path, n_rounds=3, hold=True) as proc:
        proc.wait_for("flushed 0")
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            ds = f["rounds/round"]
            first = ds.shape[0]
            proc.wait_for("holding")
            ds.refresh()
            assert first >= 1
            assert ds.shape[0] == 3
            np.testing.assert_array_equal(ds[()], [0, 1, 2])
        run = read_run(path)
        assert run.status["state"] == "running"
        check_consistent(run, min_rounds=3)

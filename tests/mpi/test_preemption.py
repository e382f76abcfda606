"""SLURM-style preemption: a signal makes the server checkpoint at the end of the round and
exit; ``--resume`` continues (here on a different number of ranks) and ends bit-identical."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from fedsqueeze.log import read_run

from .conftest import fedsqueeze_run, launch, rank_pids, run_mpi, wait_rounds

pytestmark = pytest.mark.mpi

SETS = ("fl.rounds=40", "data.clients=12", "train.epochs=1",
        'compress.up={id="topk", rho=0.05}')  # error feedback: client state must survive too


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGTERM])
def test_preempt_and_resume_is_bit_identical(tmp_path, sig):
    fedsqueeze_run(3, "jobs/quickstart.toml", tmp_path, "full", *SETS)
    proc = launch(tmp_path, "p", *SETS)
    try:
        wait_rounds(tmp_path / "p.h5", 3, proc=proc)
        for pid in rank_pids("p").values():  # what scancel --signal does to a job step
            os.kill(pid, sig)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # also closes the pipes of a run that already ended
    assert proc.returncode == 3, err[-3000:]
    interrupted = read_run(tmp_path / "p.h5")
    assert interrupted.status["state"] == "preempted"
    assert (tmp_path / "p.ckpt" / "server.npz").exists()
    done = len(interrupted.rounds)
    assert 3 <= done < 40
    args = ["-m", "fedsqueeze", "run", "jobs/quickstart.toml", "--out", str(tmp_path),
            "--name", "p", "--no-progress", "--resume"]
    for s in SETS:
        args += ["--set", s]
    run_mpi(4, args)
    a, b = read_run(tmp_path / "full.h5"), read_run(tmp_path / "p.h5")
    assert b.status["state"] == "completed"
    assert list(b.rounds["round"]) == list(range(40))
    np.testing.assert_array_equal(a.model, b.model)
    for col in ("test_accuracy", "bytes_up", "bytes_down"):
        np.testing.assert_array_equal(a.rounds[col], b.rounds[col])
    assert (b.events["code"] == "resumed").any()


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    p = run_mpi(2, ["-m", "fedsqueeze", "run", "jobs/quickstart.toml", "--out", str(tmp_path),
                    "--name", "none", "--resume"], check=False, timeout=180)
    assert p.returncode != 0 and "no checkpoint" in p.stderr

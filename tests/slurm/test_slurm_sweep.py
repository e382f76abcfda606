"""End to end on a real SLURM: sbatch the sweep array, wait, read every HDF5 file; preempt a
task, requeue it and check that it resumes to the same final model as an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedsqueeze.launch.sweep import read_manifest, task_logs
from fedsqueeze.log.reader import read_run, read_status

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
SWEEP_JOB = "jobs/quickstart_sweep.toml"
SMALL = ["--set", "data.clients=8"]
# 8 array tasks of 3 ranks on a 2-core node: overcommit, at most 4 tasks at once
CI_SLURM = ["--slurm", "overcommit=true", "--slurm", "max_parallel=4", "--slurm", 'time="15"']


def final_run(folder: Path, entry: dict):
    logs = task_logs(folder, entry)
    assert logs, f"{entry['name']}: no HDF5 file in {folder}"
    return logs, read_run(logs[-1])


@pytest.mark.parametrize(("launcher", "tasks"), [("srun", list(range(8))), ("mpiexec", [2, 5])])
def test_sweep_array_end_to_end(sweep_in, launcher, tasks):
    """The whole sweep with srun (the default inside an allocation); two of its tasks with
    MPICH's mpiexec, which starts its proxies through srun itself."""
    sw = sweep_in(f"sweep-{launcher}")
    some = [] if len(tasks) == 8 else ["--tasks", ",".join(map(str, tasks))]
    args = [*SMALL, "--set", "fl.rounds=3", "--set", "train.max_steps=4", *CI_SLURM]
    env = {"FEDSQUEEZE_LAUNCHER": launcher}
    t0 = time.monotonic()
    sw.submit(SWEEP_JOB, *args, *some, env=env)
    states = sw.wait(timeout=1500)
    print(f"\n[slurm] {launcher}: {len(tasks)} array tasks finished in "
          f"{time.monotonic() - t0:.0f} s", file=sys.stderr)
    assert sorted(states) == [f"{sw.job_id}_{t}" for t in tasks], states
    assert all(s == ("COMPLETED", "0:0") for s in states.values()), f"{states}\n{sw.logs()}"

    entries = read_manifest(sw.folder)
    assert [e["index"] for e in entries] == list(range(8))
    bytes_up = {}
    for e in (entries[t] for t in tasks):
        logs, run = final_run(sw.folder, e)
        assert logs == [sw.folder / e["h5"]], "a task that was never preempted has one file"
        assert run.status["state"] == "completed", (e["name"], run.status, sw.logs())
        assert list(run.rounds["round"]) == [0, 1, 2]
        assert np.isfinite(run.rounds["test_accuracy"]).all()
        assert (run.rounds["bytes_up"] > 0).all() and (run.rounds["bytes_down"] > 0).all()
        assert run.model is not None and np.isfinite(run.model).all()
        # the file holds the config of its manifest entry: the axis values arrived
        expected = json.loads((sw.folder / e["config"]).read_text())
        for key in ("compress", "data", "seed", "fl", "train"):
            assert run.config[key] == expected[key], (e["name"], key)
        ov = e["overrides"]
        assert run.config["compress"]["up"]["id"] == ov["compress.up"]["id"]
        assert (run.config["data"]["alpha"], run.config["seed"]) == (ov["data.alpha"], ov["seed"])
        assert run.meta.get("n_workers") == 2, run.meta  # all 3 ranks joined one world
        bytes_up[(ov["compress.up"]["id"], ov["data.alpha"], ov["seed"])] = \
            int(run.rounds["bytes_up"].sum())
        log = (sw.folder / "logs" / f"{e['name']}.out").read_text()
        assert "attempt 1" in log and "launcher exited 0" in log
    for (codec, alpha, seed), n in bytes_up.items():
        if codec == "topk" and ("identity", alpha, seed) in bytes_up:
            assert n < bytes_up[("identity", alpha, seed)] / 2, bytes_up

    # re-submitting the same sweep into the same folder skips the completed runs
    sw.submit(SWEEP_JOB, *args, "--tasks", str(tasks[0]), env=env)
    assert sw.wait(timeout=300) == {f"{sw.job_id}_{tasks[0]}": ("COMPLETED", "0:0")}
    log = (sw.folder / "logs" / f"{entries[tasks[0]]['name']}.out").read_text()
    assert "already completed" in log


def _wait_progress(folder: Path, entry: dict, attempt: int, last_round: int, sw,
                   timeout: float = 900) -> None:
    """Until the log of ``attempt`` (1-based: ``attempt - 1`` interrupted logs exist beside
    the current one) has flushed round ``last_round``, so its ranks are past start-up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = task_logs(folder, entry)
        if len(logs) == attempt:
            st = _status(logs[-1])
            assert st.get("state") != "completed", \
                f"run finished before it could be preempted: {st}"
            if st.get("last_round", -1) >= last_round:
                return
        time.sleep(0.5)
    pytest.fail(f"{entry['name']}: attempt {attempt} did not reach round {last_round}\n"
                f"{sw.logs()}")


def _status(path: Path) -> dict:
    try:
        return read_status(path)
    except (OSError, KeyError, ValueError):
        return {}


def test_preempt_requeue_resume(sweep_in, slurm_cluster):
    """Attempt 1: ``scancel --signal=TERM`` (every rank gets SIGTERM, as on preemption); the
    server checkpoints, the task fails with the "preempted" code and is requeued by hand.
    Attempt 2: the time-limit warning (USR2 to the batch shell, ``--signal=B:USR2@...``); the
    task runner stops the ranks and requeues itself. Attempt 3 completes, and its final model
    equals that of an uninterrupted run of the same config through slurm/run.sbatch."""
    # rounds slow and many enough that attempt 2 is still running when the test signals it
    # (a SIGUSR1 is acted on one round late, see Server._preempted)
    rounds = 40
    run_args = [*SMALL, "--set", f"fl.rounds={rounds}", "--set", "train.epochs=5"]
    sw = sweep_in("preempt")
    task = f"{sw.submit(SWEEP_JOB, *run_args, *CI_SLURM, '--tasks', '5')}_5"
    entry = read_manifest(sw.folder)[5]

    # the uninterrupted reference: the same job copy and overrides through slurm/run.sbatch
    ref = sw.folder.parent / "reference"
    sets = [x for k, v in _sets(entry).items() for x in ("--set", f"{k}={v}")]
    p = subprocess.run(["sbatch", "--parsable", "--overcommit", "-n", "3",
                        f"--output={ref}.out", str(ROOT / "slurm/run.sbatch"),
                        str(sw.folder / "job.toml"), *sets, "--out", str(ref), "--name", "ref"],
                       env={**slurm_cluster.env, "FEDSQUEEZE_PYTHON": sys.executable},
                       capture_output=True, text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr

    _wait_progress(sw.folder, entry, attempt=1, last_round=1, sw=sw)
    slurm_cluster.run("scancel", "--signal=TERM", task)
    deadline = time.monotonic() + 300
    while sw.states().get(task, ("?",))[0] in ("RUNNING", "COMPLETING"):
        assert time.monotonic() < deadline, f"{task} did not stop on SIGTERM\n{sw.logs()}"
        time.sleep(1)
    assert sw.states()[task][0] == "FAILED", sw.states()  # preempted, not requeued by itself
    first_stop = _status(task_logs(sw.folder, entry)[-1]).get("last_round", -1)
    slurm_cluster.run("scontrol", "requeue", task)
    _wait_progress(sw.folder, entry, attempt=2, last_round=first_stop + 2, sw=sw)
    slurm_cluster.run("scancel", "--batch", "--signal=USR2", task)
    states = sw.wait(timeout=900)
    assert states[task] == ("COMPLETED", "0:0"), f"{states}\n{sw.logs()}"

    logs, run = final_run(sw.folder, entry)
    assert len(logs) == 3, (logs, sw.logs())
    assert [read_status(f)["state"] for f in logs] == ["preempted", "preempted", "completed"]
    assert logs[-1] == sw.folder / entry["h5"]  # the manifest's file holds the finished run
    assert list(run.rounds["round"]) == list(range(rounds))  # rounds of every attempt
    out = (sw.folder / "logs" / f"{entry['name']}.out").read_text()
    for text in ("attempt 1", "attempt 2", "attempt 3", "got SIGUSR2, sending SIGUSR1",
                 "requeueing job"):
        assert text in out, f"{text!r} missing from the task log:\n{out}"

    deadline = time.monotonic() + 900
    while _status(ref / "ref.h5").get("state") != "completed":
        assert time.monotonic() < deadline, Path(f"{ref}.out").read_text(errors="replace")
        time.sleep(2)
    reference = read_run(ref / "ref.h5")
    assert list(reference.rounds["round"]) == list(range(rounds))
    np.testing.assert_array_equal(run.model, reference.model)


def _sets(entry: dict) -> dict[str, str]:
    from fedsqueeze.launch.sweep import toml_literal

    return {k: toml_literal(v) for k, v in entry["overrides"].items()}

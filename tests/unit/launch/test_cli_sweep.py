"""`fedsqueeze sweep / sweep-task / launch` with a fake sbatch and a fake mpiexec."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from fedsqueeze.cli import main

JOB = """
name = "tiny"
[data]
name = "digits"
clients = 6
[fl]
rounds = 2
[sweep]
"compress.up" = [{id = "identity"}, {id = "fp16"}]
seed = [0, 1]
[sweep.slurm]
time = "00:05:00"
"""


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(JOB)
    return path


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Fake sbatch (prints a job id, records argv and FEDSQUEEZE_PYTHON) and mpiexec (records
    argv, exits 0)."""
    b = tmp_path / "bin"
    b.mkdir()
    log = tmp_path / "calls.jsonl"
    py = sys.executable
    for name, rc_line in (("sbatch", "print('4242')"), ("mpiexec", "")):
        (b / name).write_text(
            f"#!{py}\nimport json, os, sys\n"
            f"if sys.argv[1:] == ['--version']: print('HYDRA'); sys.exit(0)\n"
            f"open({str(log)!r}, 'a').write(json.dumps({{'cmd': {name!r}, 'argv': sys.argv[1:],"
            f" 'python': os.environ.get('FEDSQUEEZE_PYTHON')}}) + '\\n')\n{rc_line}\n")
        (b / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{b}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FEDSQUEEZE_MPIEXEC", str(b / "mpiexec"))
    monkeypatch.setenv("FEDSQUEEZE_LAUNCHER", "mpiexec")
    for k in list(os.environ):
        if k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    return lambda: [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_dry_run_prints_script_and_writes_nothing(job, tmp_path, capsys, fakes):
    out = tmp_path / "sw"
    assert main(["sweep", str(job), "--out", str(out), "--dry-run"]) == 0
    cap = capsys.readouterr()
    assert cap.out.startswith("#!/bin/bash\n")
    sb = [ln for ln in cap.out.splitlines() if ln.startswith("#SBATCH")]
    assert sb == sorted(sb)
    assert "#SBATCH --array=0-3" in sb and "#SBATCH --time=00:05:00" in sb
    assert f"#SBATCH --output={out}/logs/tiny-%4a.out" in sb
    assert "4 runs of 3 ranks" in cap.err and "tiny-0003" in cap.err
    assert not out.exists() and fakes() == []


def test_sweep_writes_folder_without_submitting(job, tmp_path, capsys, fakes):
    out = tmp_path / "sw"
    assert main(["sweep", str(job), "--out", str(out), "--slurm", "max_parallel=2"]) == 0
    assert f"sbatch {out}/sweep.sbatch {out}" in capsys.readouterr().out
    assert "#SBATCH --array=0-3%2" in (out / "sweep.sbatch").read_text()
    assert len(json.loads((out / "manifest.json").read_text())) == 4
    assert fakes() == []


def test_submit_calls_sbatch(job, tmp_path, capsys, fakes):
    out = tmp_path / "sw"
    assert main(["sweep", str(job), "--out", str(out), "--submit"]) == 0
    stdout = capsys.readouterr().out
    assert f"sweep folder: {out}" in stdout and "job id: 4242" in stdout
    (call,) = fakes()
    assert call["argv"] == ["--parsable", str(out / "sweep.sbatch"), str(out)]
    assert call["python"] == sys.executable
    assert (out / "jobs.txt").read_text() == "4242\n"


def test_sweep_task_runs_the_manifest_entry(job, tmp_path, capsys, fakes):
    out = tmp_path / "sw"
    main(["sweep", str(job), "--out", str(out)])
    assert main(["sweep-task", str(out), "3"]) == 0
    (call,) = fakes()
    argv = call["argv"]
    assert argv[:2] == ["-n", "3"]
    assert argv[3:] == ["-m", "fedsqueeze", "run", str(out / "job.toml"),
                        "--set", 'compress.up={"id" = "fp16"}', "--set", "seed=1",
                        "--out", str(out), "--name", "tiny-0003", "--resume-if-possible",
                        "--no-progress"]
    assert "warning" not in capsys.readouterr().err


def test_sweep_task_index_from_slurm(job, tmp_path, fakes, monkeypatch):
    out = tmp_path / "sw"
    main(["sweep", str(job), "--out", str(out)])
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    monkeypatch.setenv("FEDSQUEEZE_RANKS", "5")
    assert main(["sweep-task", str(out)]) == 0
    (call,) = fakes()
    assert call["argv"][:2] == ["-n", "5"] and "tiny-0001" in call["argv"]


def test_sweep_task_warns_on_config_drift(job, tmp_path, capsys, fakes):
    out = tmp_path / "sw"
    main(["sweep", str(job), "--out", str(out)])
    cfg = json.loads((out / "configs/tiny-0000.json").read_text())
    cfg["fl"]["rounds"] = 99
    (out / "configs/tiny-0000.json").write_text(json.dumps(cfg))
    assert main(["sweep-task", str(out), "0"]) == 0
    assert "config differs from configs/tiny-0000.json in fl.rounds" in capsys.readouterr().err


def test_submit_some_tasks(job, tmp_path, capsys, fakes):
    out = tmp_path / "sw"
    assert main(["sweep", str(job), "--out", str(out), "--tasks", "3, 0-1"]) == 0
    assert "#SBATCH --array=3,0-1\n" in (out / "sweep.sbatch").read_text()
    assert len(json.loads((out / "manifest.json").read_text())) == 4


@pytest.mark.parametrize(("argv", "match"), [
    (["sweep", "{job}", "--tasks", "4"], "4 is outside the sweep's tasks 0-3"),
    (["sweep", "{job}", "--tasks", "1-x"], "expected indices and ranges"),
    (["sweep-task", "{out}", "9"], "no task 9"),
    (["sweep-task", "{out}"], "SLURM_ARRAY_TASK_ID is unset"),
    (["sweep-task", "{out}", "x"], "not an integer"),
    (["sweep", "{job}", "--slurm", "time=\"later\""], "time = 'later'"),
    (["sweep", "{job}", "--set", "seed=3"], "overlaps the sweep axis 'seed'"),
    (["sweep", "{out}/nope.toml"], "no such job file"),
])
def test_errors_are_one_line(job, tmp_path, capsys, fakes, argv, match):
    out = tmp_path / "sw"
    main(["sweep", str(job), "--out", str(out)])
    capsys.readouterr()
    assert main([a.format(out=out, job=job) for a in argv]) == 2
    err = capsys.readouterr().err
    assert match in err and err.startswith("ConfigError") and err.count("\n") == 1


def test_sbatch_failure_is_reported(job, tmp_path, capsys, fakes):
    sbatch = Path(os.environ["PATH"].split(os.pathsep)[0]) / "sbatch"
    sbatch.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
    assert main(["sweep", str(job), "--out", str(tmp_path / "sw"), "--submit"]) == 2
    assert "SbatchError" in capsys.readouterr().err


def test_launch_single_run(tmp_path, capsys, fakes):
    job = tmp_path / "one.toml"
    job.write_text('name = "one"\n[fl]\nrounds = 2\n')
    assert main(["launch", str(job), "--set", "seed=4", "--ranks", "4",
                 "--out", str(tmp_path / "o")]) == 0
    (call,) = fakes()
    assert call["argv"][:2] == ["-n", "4"]
    assert call["argv"][6:] == [str(job), "--set", "seed=4", "--out", str(tmp_path / "o"),
                                "--name", "one", "--resume-if-possible", "--no-progress"]
    assert main(["launch", str(job), "--set", "train.lr=-1"]) == 2
    assert main(["launch", str(job), "--ranks", "1"]) == 2

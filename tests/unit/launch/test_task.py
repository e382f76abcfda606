"""The task runner without SLURM: launcher choice, the run command, signals and requeue.

Stand-ins: a fake ``mpiexec`` (FEDSQUEEZE_MPIEXEC) that starts a small Python "run", which
behaves like ``fedsqueeze run`` on preemption (stop signal -> exit 3), and a fake ``scontrol``
on PATH that records its arguments.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedsqueeze.errors import ConfigError
from fedsqueeze.launch.task import LaunchSpec, launcher_command, run_command

SPEC = LaunchSpec(job=Path("/j/job.toml"), set_args=("--set", "seed=1"), out=Path("/o"),
                  name="t-0001", ranks=3)


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def fakebin(tmp_path, monkeypatch):
    """A bin folder first on PATH with fake srun, scontrol and mpiexec."""
    b = tmp_path / "bin"
    b.mkdir()
    for name in ("srun", "scontrol"):
        _exe(b / name, f'#!/bin/sh\necho "$@" >> "{tmp_path}/{name}.calls"\n')
    _exe(b / "mpiexec", "#!/bin/sh\necho 'HYDRA build details:'\n")
    monkeypatch.setenv("PATH", f"{b}{os.pathsep}{os.environ['PATH']}")
    return b


def test_auto_outside_slurm_is_mpiexec(fakebin, tmp_path):
    cmd, extra = launcher_command(3, environ={}, python=str(tmp_path / "python"))
    assert cmd == [str(fakebin / "mpiexec"), "-n", "3"] and extra == {}  # from PATH


def test_auto_inside_slurm_is_srun_for_a_site_mpi(fakebin, tmp_path):
    py = str(tmp_path / "site-env" / "python")  # no mpiexec beside it: a module's MPI
    cmd, _ = launcher_command(4, environ={"SLURM_JOB_ID": "5", "SLURM_CPUS_PER_TASK": "2",
                                          "FEDSQUEEZE_LAUNCHER_ARGS": "--exclusive -v"},
                              python=py)
    assert cmd == ["srun", "--mpi=pmi2", "--ntasks=4", "--kill-on-bad-exit=1",
                   "--cpus-per-task=2", "--exclusive", "-v"]


def test_auto_inside_slurm_prefers_the_bundled_mpiexec(fakebin):
    # the python in fakebin has an mpiexec beside it (PyPI MPICH's place)
    cmd, _ = launcher_command(3, environ={"SLURM_JOB_ID": "5"}, python=str(fakebin / "python"))
    assert cmd == [str(fakebin / "mpiexec"), "-n", "3"]


def test_srun_mpi_plugin(fakebin):
    cmd, _ = launcher_command(2, environ={"SLURM_JOB_ID": "5", "FEDSQUEEZE_SRUN_MPI": "pmix",
                                          "FEDSQUEEZE_LAUNCHER": "srun"})
    assert cmd[1] == "--mpi=pmix"


def test_mpiexec_forced_inside_slurm(fakebin):
    cmd, _ = launcher_command(3, environ={"SLURM_JOB_ID": "5", "FEDSQUEEZE_LAUNCHER": "mpiexec",
                                          "FEDSQUEEZE_MPIEXEC": str(fakebin / "mpiexec")})
    assert cmd[0].endswith("mpiexec") and cmd[1:] == ["-n", "3"]


def test_open_mpi_gets_oversubscription(fakebin):
    ompi = _exe(fakebin / "ompi-mpiexec", "#!/bin/sh\necho 'mpiexec (Open MPI) 5.0.5'\n")
    _, extra = launcher_command(3, environ={"FEDSQUEEZE_MPIEXEC": str(ompi)})
    assert extra["PRTE_MCA_rmaps_default_mapping_policy"] == ":oversubscribe"


@pytest.mark.parametrize(("env", "match"), [
    ({"FEDSQUEEZE_LAUNCHER": "ssh"}, "FEDSQUEEZE_LAUNCHER='ssh'"),
    ({"FEDSQUEEZE_LAUNCHER": "srun"}, "srun outside a SLURM allocation"),
])
def test_launcher_errors(fakebin, env, match):
    with pytest.raises(ConfigError, match=match):
        launcher_command(3, environ=env)


def test_run_command():
    cmd = run_command(SPEC, python="py")
    assert cmd == ["py", "-m", "fedsqueeze", "run", "/j/job.toml", "--set", "seed=1", "--out",
                   "/o", "--name", "t-0001", "--resume-if-possible", "--no-progress"]


# -- signals and requeue, in a subprocess (the runner installs signal handlers) ---------------
FAKE_RUN = """
import json, os, signal, sys, time
# argv: fake-mpiexec -n N python -m fedsqueeze run ... ; record it, then act like the server
out = os.environ["FAKE_OUT"]
got = []
signal.signal(signal.SIGUSR1, lambda s, f: got.append("USR1"))
signal.signal(signal.SIGTERM, lambda s, f: got.append("TERM"))
open(out + "/ready", "w").close()
t0 = time.monotonic()
while not got and time.monotonic() - t0 < float(os.environ.get("FAKE_RUN_S", "30")):
    time.sleep(0.05)
json.dump({"argv": sys.argv[1:], "signals": got}, open(out + "/run.json", "w"))
sys.exit(3 if got else 0)
"""

RUNNER = """
import sys
from pathlib import Path
from fedsqueeze.launch.task import LaunchSpec, run_task
spec = LaunchSpec(job=Path("job.toml"), set_args=("--set", "seed=1"), out=Path(sys.argv[1]),
                  name="t-0001", ranks=3)
sys.exit(run_task(spec))
"""


def _runner(tmp_path, fakebin, extra_env, send=None, timeout=60):
    fake = _exe(tmp_path / "fake-mpiexec",
                f"#!/bin/sh\nif [ \"$1\" = --version ]; then echo HYDRA; exit 0; fi\n"
                f"exec {sys.executable} {tmp_path / 'fake_run.py'} \"$@\"\n")
    (tmp_path / "fake_run.py").write_text(FAKE_RUN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(FEDSQUEEZE_LAUNCHER="mpiexec", FEDSQUEEZE_MPIEXEC=str(fake),
               FAKE_OUT=str(tmp_path), FEDSQUEEZE_REQUEUE_WAIT="0", **extra_env)
    p = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if send is not None:
        deadline = time.monotonic() + timeout
        while not (tmp_path / "ready").exists():
            assert time.monotonic() < deadline and p.poll() is None, p.communicate()
            time.sleep(0.05)
        p.send_signal(send)
    out, err = p.communicate(timeout=timeout)
    run = json.loads((tmp_path / "run.json").read_text())
    calls = tmp_path / "scontrol.calls"
    return p.returncode, run, calls.read_text().split("\n")[:-1] if calls.exists() else [], err


def test_plain_run_passes_through(tmp_path, fakebin):
    rc, run, calls, err = _runner(tmp_path, fakebin, {"FAKE_RUN_S": "0.2"})
    assert rc == 0 and run["signals"] == [] and calls == []
    assert run["argv"][:2] == ["-n", "3"]
    assert run["argv"][3:] == ["-m", "fedsqueeze", "run", "job.toml", "--set", "seed=1", "--out",
                               str(tmp_path), "--name", "t-0001", "--resume-if-possible",
                               "--no-progress"]
    assert "attempt 1" in err


def test_usr2_stops_ranks_and_requeues(tmp_path, fakebin):
    rc, run, calls, err = _runner(tmp_path, fakebin, {"SLURM_JOB_ID": "77",
                                                      "SLURM_ARRAY_JOB_ID": "70",
                                                      "SLURM_ARRAY_TASK_ID": "1"},
                                  send=signal.SIGUSR2)
    assert run["signals"] == ["USR1"]  # forwarded as the stop signal, not as USR2
    assert calls == ["requeue 77"] and rc == 3
    assert "got SIGUSR2, sending SIGUSR1" in err and "requeueing job 77" in err


def test_term_stops_ranks_without_requeue(tmp_path, fakebin):
    rc, run, calls, _ = _runner(tmp_path, fakebin, {"SLURM_JOB_ID": "77"}, send=signal.SIGTERM)
    assert run["signals"] == ["USR1"] and calls == [] and rc == 3


def test_stop_signal_is_configurable(tmp_path, fakebin):
    _, run, _, _ = _runner(tmp_path, fakebin, {"FEDSQUEEZE_STOP_SIGNAL": "TERM"},
                           send=signal.SIGUSR2)
    assert run["signals"] == ["TERM"]


def test_requeue_failure_is_reported(tmp_path, fakebin):
    _exe(fakebin / "scontrol", "#!/bin/sh\necho 'Job is no longer running' >&2\nexit 1\n")
    rc, _, _, err = _runner(tmp_path, fakebin, {"SLURM_JOB_ID": "77"}, send=signal.SIGUSR2)
    assert rc == 3 and "requeue failed" in err and "no longer running" in err

"""MPI tier: every test launches ``mpiexec`` in a subprocess with a timeout (oversubscribed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep +
                       os.environ.get("PATH", ""))
    if exe is None:
        pytest.fail("mpiexec not found: run the tests through scripts/test.sh (it installs MPI)")
    return exe


def mpi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONHASHSEED="0",
               # Open MPI (if that is the library): allow root and oversubscription
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PRTE_MCA_rmaps_default_mapping_policy=":oversubscribe")
    return env


def run_mpi(n: int, args: list[str], *, timeout: float = 600, check: bool = True,
            cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``mpiexec -n n python <args>``; output captured; fails the test on a timeout."""
    cmd = [mpiexec(), "-n", str(n), sys.executable, *args]
    try:
        p = subprocess.run(cmd, cwd=cwd, env=mpi_env(), capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s\n{exc.stdout}\n{exc.stderr}")
    if check and p.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {p.returncode}\nstdout:\n{p.stdout}\n"
                    f"stderr:\n{p.stderr[-6000:]}")
    return p


def fedsqueeze_run(n: int, job: str, out: Path, name: str, *sets: str, timeout: float = 600,
                   check: bool = True) -> subprocess.CompletedProcess:
    args = ["-m", "fedsqueeze", "run", job, "--out", str(out), "--name", name, "--no-progress"]
    for s in sets:
        args += ["--set", s]
    return run_mpi(n, args, timeout=timeout, check=check)


def launch(tmp_path, name, *sets, n: int = 3, extra: tuple = ()):
    """Start a run in the background with ``-disable-auto-cleanup`` (a dead rank does not take
    the others down, so the server can notice and react)."""
    args = [mpiexec(), "-disable-auto-cleanup", "-n", str(n), sys.executable, "-m",
            "fedsqueeze", "run", "jobs/quickstart.toml", "--out", str(tmp_path), "--name", name,
            "--no-progress", *extra]
    for s in sets:
        args += ["--set", s]
    return subprocess.Popen(args, cwd=ROOT, env=mpi_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def rank_pids(name: str) -> dict[int, int]:
    out = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if name in cmd and "run" in cmd and "mpiexec" not in os.path.basename(cmd[0]):
            try:
                env = p.environ()
            except psutil.Error:
                continue
            rank = env.get("PMI_RANK") or env.get("OMPI_COMM_WORLD_RANK")
            if rank is not None:
                out[int(rank)] = p.info["pid"]
    return out


def _read_run(path):
    from fedsqueeze.log import read_run

    return read_run(path)


def wait_rounds(path, n: int, timeout: float = 240, proc=None) -> None:
    """Wait until the log at ``path`` holds ``n`` rounds; fail at once, with its output, if the
    launched ``proc`` ends first."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        if path.exists():
            try:
                if len(_read_run(path).rounds) >= n:
                    return
            except Exception as exc:  # noqa: BLE001 - the file may be mid-creation
                last = exc
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit code {proc.returncode}) before {path} held {n} "
                        f"rounds:\n{err[-3000:]}")
        time.sleep(0.5)
    state = "still running" if proc is None or proc.poll() is None else f"exit {proc.returncode}"
    pytest.fail(f"{path} never reached {n} rounds in {timeout} s (run {state}; last read "
                f"error: {last!r})")



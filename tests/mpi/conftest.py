"""MPI tier: every test launches ``mpiexec`` in a subprocess with a timeout (oversubscribed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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

"""The worker-rank guard (issue #8), without MPI: a hydra-started worker that dies of a signal
looks like an exit code to its parent (hydra's proxy), which then kills nobody."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fedsqueeze.launch.guard import wanted

pytestmark = pytest.mark.skipif(os.name != "posix", reason="fork/exec guard is POSIX only")

HYDRA = {"MPI_LOCALRANKID": "0", "PMI_RANK": "2", "PMI_FD": "9"}


@pytest.mark.parametrize("env, expected", [
    (HYDRA, True),
    ({"MPI_LOCALRANKID": "1", "PMI_ID": "3", "PMI_PORT": "h:1"}, True),
    (HYDRA | {"PMI_RANK": "0"}, False),  # the server: hydra's cleanup of the workers is wanted
    (HYDRA | {"FEDSQUEEZE_RANK_GUARD": "0"}, False),
    (HYDRA | {"FEDSQUEEZE_RANK_GUARDED": "1"}, False),  # already the guarded rank
    ({"PMI_RANK": "2", "PMI_FD": "9"}, False),  # srun --mpi=pmi2: not hydra
    ({"SLURM_PROCID": "1"}, False),
    ({}, False),
])
def test_when_a_rank_is_guarded(env, expected):
    assert wanted(env) is expected


_RANK = """
import os, signal, sys
from fedsqueeze.launch.guard import guard_worker_rank
first = os.getpid()
guard_worker_rank()
sys.stdout.write(f"{first} {os.getpid()} {os.getppid()}\\n")
sys.stdout.flush()
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
if sys.argv[1] == "usr1":
    signal.signal(signal.SIGUSR1, lambda *_: None)
    os.killpg(os.getpgid(0), signal.SIGUSR1)  # like hydra's notice: the whole group
    sys.exit(5)
sys.exit(int(sys.argv[1]))
"""


def _rank(arg: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "FEDSQUEEZE_RANK"))}
    full.pop("MPI_LOCALRANKID", None)
    full.update(env)
    return subprocess.run([sys.executable, "-c", _RANK, arg], env=full, capture_output=True,
                          text=True, timeout=60, start_new_session=True)


def test_a_guarded_worker_killed_by_a_signal_exits_with_a_code():
    p = _rank("kill", MPI_LOCALRANKID="0", PMI_RANK="2")
    first, pid, parent = map(int, p.stdout.split())
    assert pid != first and parent == first  # the rank is the child of the process started
    assert p.returncode == 128 + signal.SIGKILL  # an exit, not a signal death (-9)
    assert f"worker rank 2 (pid {pid}) was killed by SIGKILL" in p.stderr


def test_the_guard_passes_exit_codes_on_and_ignores_group_signals():
    p = _rank("usr1", MPI_LOCALRANKID="0", PMI_RANK="1")
    assert p.returncode == 5, p.stderr
    p = _rank("0", MPI_LOCALRANKID="0", PMI_RANK="1")
    assert p.returncode == 0 and p.stderr == ""


def test_unguarded_processes_are_left_alone():
    p = _rank("kill", MPI_LOCALRANKID="0", PMI_RANK="0")  # rank 0, the server
    first, pid, _ = map(int, p.stdout.split())
    assert pid == first and p.returncode == -signal.SIGKILL
    p = _rank("kill")  # no launcher at all
    assert p.returncode == -signal.SIGKILL

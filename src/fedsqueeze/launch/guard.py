"""Worker-rank guard under MPICH's ``mpiexec`` (hydra): a worker killed by a signal must not
take the server down with it.

Hydra's per-node proxy (``hydra_pmi_proxy``) ``waitpid``\\ s its children, and when it reaps one
that died *of a signal* it SIGKILLs every other process it started, whether or not
``mpiexec -disable-auto-cleanup`` was given (MPICH 5.0.2 ``pm/hydra/proxy/pmip.c``: the main
loop's ``if (WIFSIGNALED(ret_status)) PMIP_bcast_signal(SIGKILL)``; ``-disable-auto-cleanup``
only changes what happens when the rank's PMI socket closes, which is to send SIGUSR1 instead).
The proxy reaps only when some event wakes it up, so the server was killed either at once (the
dead rank's sockets closing woke the proxy after the kernel had already made it a zombie: the
server vanished within a fraction of a second, log left ``running``, no checkpoint, issue #8),
or, more often, at the server's next write to stdout/stderr (typically the traceback after the
log was closed, so the kill went unnoticed).

So on a hydra launch every *worker* rank starts as a pair: the process the proxy started forks,
the child goes on to be the MPI rank and the parent ``exec``\\ s a tiny watcher (``python -I -S
-c ...``, no fedsqueeze import, ~10 MB) that waits for it and exits ``128 + signal`` when it was
killed, as a shell would. The proxy then sees a normal (non-zero) exit, sends its SIGUSR1 notice
as before and kills nobody; the server notices the lost worker (``fl.worker_timeout_s``, or at
once when a receive fails) and stops cleanly or carries on (``fl.on_worker_loss``).

- The watcher ignores SIGINT/SIGTERM/SIGHUP/SIGUSR1/SIGUSR2/SIGPIPE: hydra signals the process
  group (watcher and rank), SLURM every process of the step, so the rank gets them itself.
- The rank gets SIGKILL if the watcher dies (``PR_SET_PDEATHSIG``); a SIGKILL to the watcher
  itself is therefore still a signal death for the proxy.
- Rank 0 (the server) is not guarded: if it dies of a signal the proxy's cleanup of the
  workers, which would otherwise wait for it forever, is what should happen.
- Only under hydra (``MPI_LOCALRANKID`` and ``PMI_RANK``/``PMI_ID`` set, POSIX); off with
  ``FEDSQUEEZE_RANK_GUARD=0``.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from collections.abc import Mapping

__all__ = ["guard_worker_rank", "wanted"]

_IGNORED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGPIPE")

def _watch(pid: int, rank: str) -> None:
    """Wait for the rank; exit as it did, or ``128 + signal`` (with a line on stderr)."""
    import os
    import signal

    while True:
        try:
            status = os.waitpid(pid, 0)[1]
            break
        except InterruptedError:
            continue
        except ChildProcessError:
            os._exit(1)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        try:
            os.write(2, f"fedsqueeze: worker rank {rank} (pid {pid}) was killed by {name}\n"
                     .encode())
        except OSError:
            pass
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status))


_WATCHER = (inspect.getsource(_watch)
            + "\nimport sys\n_watch(int(sys.argv[1]), sys.argv[2])\n")
"""The watcher's program, run as ``python -I -S -c _WATCHER <pid> <rank>``: :func:`_watch` and
its call, standalone on purpose (no site, no fedsqueeze import); its command line has no ``run``
(tools that look for the rank by its command line find the real one)."""

_MARK = "FEDSQUEEZE_RANK_GUARDED"


def _rank(env: Mapping[str, str]) -> int | None:
    for name in ("PMI_RANK", "PMI_ID"):
        try:
            return int(env[name])
        except (KeyError, ValueError):
            continue
    return None


def wanted(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is a worker rank started by hydra and not guarded yet."""
    env = os.environ if env is None else env
    if os.name != "posix" or not hasattr(os, "fork"):
        return False
    if env.get("FEDSQUEEZE_RANK_GUARD", "1").strip().lower() in ("0", "no", "false", "off"):
        return False
    if _MARK in env or "MPI_LOCALRANKID" not in env:  # MPI_LOCALRANKID: set by hydra's proxy
        return False
    rank = _rank(env)
    return rank is not None and rank != 0


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


def guard_worker_rank() -> None:
    """Call before MPI is initialised (no threads yet). Returns in the process that is to be
    the MPI rank: the caller's own process when no guard is wanted, else a forked child."""
    if not wanted():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.environ[_MARK] = "1"
        _die_with_parent(parent)
        return
    # the watcher: ignore the stop signals now (an ignored disposition survives exec), keep
    # only stdin/stdout/stderr (the rank alone holds its PMI socket), then exec
    for name in _IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    rank = str(_rank(os.environ))
    try:
        os.closerange(3, 65536)
        os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", _WATCHER, str(pid), rank])
    except OSError:  # no exec: watch from here
        _watch(pid, rank)
    os._exit(1)  # not reached

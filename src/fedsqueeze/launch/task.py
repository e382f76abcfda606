"""Start one run's ranks inside an allocation, and see it through preemption.

:func:`run_task` is what ``python -m fedsqueeze sweep-task`` and ``launch`` do, and what the
scripts in ``slurm/`` ``exec``. It

1. skips a run whose HDF5 log already says ``completed`` (a re-submitted sweep re-runs only
   what did not finish);
2. starts ``<launcher> python -m fedsqueeze run <job> --set ... --out ... --name ...
   --resume-if-possible``, where the launcher is ``FEDSQUEEZE_LAUNCHER``: ``srun``
   (``srun --mpi=$FEDSQUEEZE_SRUN_MPI``, default pmi2) or ``mpiexec`` (the one beside this
   Python first, e.g. PyPI MPICH's). ``auto`` (default) picks that bundled ``mpiexec`` when
   there is one, else ``srun`` inside an allocation, else ``mpiexec`` (see
   :func:`launcher_command`);
3. on SIGUSR2, SIGUSR1 or SIGTERM forwards ``FEDSQUEEZE_STOP_SIGNAL`` (default USR1: MPICH's
   ``mpiexec`` and ``srun`` pass it on to every rank, while USR2 would kill ``mpiexec``) and
   waits: the server checkpoints after its current round and exits with code 3;
4. after USR2/USR1 (SLURM's time-limit warning ``--signal=B:USR2@...``, or
   ``scancel --batch --signal=USR2``) requeues its own job, which comes back with
   ``SLURM_RESTART_COUNT`` + 1 and resumes from the checkpoint. After TERM it does not: SLURM
   itself requeues a preempted job, and a cancelled one must stay cancelled.

Workers must survive the stop signal (real preemption sends SIGTERM to every process of the
job): the server stops them once its checkpoint is written.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from ..errors import ConfigError
from .slurm import SbatchError, SlurmEnv, requeue

__all__ = ["LaunchSpec", "launcher_command", "run_command", "run_task", "completed",
           "EXIT_PREEMPTED", "LAUNCHERS"]

EXIT_PREEMPTED = 3
"""Exit code of ``fedsqueeze run`` when it stopped on a signal after writing a checkpoint."""
LAUNCHERS = ("auto", "srun", "mpiexec")
_REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@dataclass(frozen=True)
class LaunchSpec:
    """One run to start: the job file, its ``--set`` arguments, where it logs, on how many ranks."""

    job: Path
    set_args: tuple[str, ...]
    out: Path
    name: str
    ranks: int


def _say(msg: str) -> None:
    print(f"fedsqueeze[{time.strftime('%H:%M:%S')}]: {msg}", file=sys.stderr, flush=True)


def _bundled_mpiexec(python: str) -> str | None:
    """The ``mpiexec`` installed with this Python's MPI (PyPI or conda MPICH), if any."""
    beside = Path(python).parent / "mpiexec"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def _mpiexec(env: Mapping[str, str], python: str) -> str:
    explicit = env.get("FEDSQUEEZE_MPIEXEC")
    if explicit:
        return explicit
    beside = _bundled_mpiexec(python)
    if beside is not None:
        return beside
    found = shutil.which("mpiexec")
    if found is None:
        raise ConfigError("FEDSQUEEZE_LAUNCHER=mpiexec but no mpiexec found (pip install mpich, "
                          "or set FEDSQUEEZE_MPIEXEC)")
    return found


def _is_open_mpi(mpiexec: str) -> bool:
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30,
                             check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = out.stdout + out.stderr
    return "Open MPI" in text or "OpenRTE" in text or "prte" in text.lower()


def launcher_command(ranks: int, *, environ: Mapping[str, str] | None = None,
                     python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The launcher prefix for ``ranks`` ranks, and extra environment variables for it.

    ``auto`` is ``srun`` inside an allocation, unless this Python's environment ships its own
    ``mpiexec`` (PyPI or conda MPICH), which is then used: it starts its proxies through
    ``srun`` anyway, and PyPI MPICH 5.0.2 under ``srun --mpi=pmi2`` hung in ``MPI_Init`` when
    a requeued job (same job id, same PMI job id) started again after its ranks were killed.
    """
    env = os.environ if environ is None else environ
    python = python or sys.executable
    slurm = SlurmEnv.from_environ(env)
    kind = env.get("FEDSQUEEZE_LAUNCHER", "auto") or "auto"
    if kind not in LAUNCHERS:
        raise ConfigError(f"FEDSQUEEZE_LAUNCHER={kind!r}: expected one of {', '.join(LAUNCHERS)}")
    if kind == "auto":
        use_srun = slurm.in_job and shutil.which("srun") and not _bundled_mpiexec(python)
        kind = "srun" if use_srun else "mpiexec"
    extra = shlex.split(env.get("FEDSQUEEZE_LAUNCHER_ARGS", ""))
    if kind == "srun":
        if not slurm.in_job:
            raise ConfigError("FEDSQUEEZE_LAUNCHER=srun outside a SLURM allocation; use sbatch, "
                              "salloc, or FEDSQUEEZE_LAUNCHER=mpiexec")
        cmd = ["srun", f"--mpi={env.get('FEDSQUEEZE_SRUN_MPI') or 'pmi2'}", f"--ntasks={ranks}",
               "--kill-on-bad-exit=1"]
        if slurm.cpus_per_task:  # srun >= 22.05 no longer inherits sbatch's --cpus-per-task
            cmd.append(f"--cpus-per-task={slurm.cpus_per_task}")
        return cmd + extra, {}
    mpiexec = _mpiexec(env, python)
    add: dict[str, str] = {}
    if _is_open_mpi(mpiexec):  # MPICH oversubscribes by itself; Open MPI 5 needs telling
        add["PRTE_MCA_rmaps_default_mapping_policy"] = ":oversubscribe"
        if os.geteuid() == 0:
            add.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return [mpiexec, "-n", str(ranks), *extra], add


def run_command(spec: LaunchSpec, *, python: str | None = None) -> list[str]:
    """``python -m fedsqueeze run ...`` for one rank (the launcher goes in front)."""
    return [python or sys.executable, "-m", "fedsqueeze", "run", str(spec.job), *spec.set_args,
            "--out", str(spec.out), "--name", spec.name, "--resume-if-possible", "--no-progress"]


def completed(h5_files: Sequence[Path]) -> bool:
    """Whether the newest of a run's logs says ``completed``."""
    if not h5_files:
        return False
    from ..log.reader import read_status

    try:
        return read_status(h5_files[-1]).get("state") == "completed"
    except (OSError, KeyError, ValueError):
        return False


class _Forwarder:
    """Signal handlers of the task runner: remember the signal, pass the stop signal on."""

    def __init__(self, stop_signal: signal.Signals) -> None:
        self.stop_signal = stop_signal
        self.received: list[int] = []
        self.child: subprocess.Popen | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Forwarder:
        for s in _STOP_SIGNALS:
            self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        first = not self.received
        self.received.append(signum)
        if first and self.child is not None and self.child.poll() is None:
            # print() is not safe inside a handler that may interrupt another print
            os.write(2, f"fedsqueeze: got {signal.Signals(signum).name}, sending "
                        f"{self.stop_signal.name} to the ranks\n".encode())
            self.child.send_signal(self.stop_signal)

    @property
    def wants_requeue(self) -> bool:
        return any(s in _REQUEUE_SIGNALS for s in self.received) and \
            signal.SIGTERM not in self.received


def _stop_signal(environ: Mapping[str, str]) -> signal.Signals:
    name = (environ.get("FEDSQUEEZE_STOP_SIGNAL") or "USR1").upper().removeprefix("SIG")
    try:
        return signal.Signals[f"SIG{name}"]
    except KeyError:
        raise ConfigError(f"FEDSQUEEZE_STOP_SIGNAL={name!r}: not a signal name") from None


def run_task(spec: LaunchSpec, *, h5_files: Sequence[Path] = (),
             environ: Mapping[str, str] | None = None) -> int:
    """Run ``spec`` under the launcher; returns the exit code for the batch script."""
    env = dict(os.environ if environ is None else environ)
    slurm = SlurmEnv.from_environ(env)
    if completed(h5_files):
        _say(f"{spec.name}: already completed ({h5_files[-1]}); nothing to do")
        return 0
    prefix, add = launcher_command(spec.ranks, environ=env)
    cmd = prefix + run_command(spec)
    _say(f"{spec.name}: attempt {slurm.restart_count + 1} (job {slurm.task_key or '-'}, "
         f"{spec.ranks} ranks): {shlex.join(cmd)}")
    with _Forwarder(_stop_signal(env)) as fwd:
        fwd.child = subprocess.Popen(cmd, env={**env, **add}, stdin=subprocess.DEVNULL)
        if fwd.received:  # a signal that came before the child existed
            fwd.child.send_signal(fwd.stop_signal)
        rc = _wait(fwd.child)
    _say(f"{spec.name}: launcher exited {rc}")
    if rc == 0 or not fwd.received:
        return rc
    if fwd.wants_requeue and slurm.job_id is not None:
        try:
            _say(f"{spec.name}: requeueing job {slurm.job_id} to resume from the checkpoint")
            requeue(slurm.job_id, env=env)
        except SbatchError as exc:
            _say(f"{spec.name}: requeue failed: {exc}")
        else:
            time.sleep(float(env.get("FEDSQUEEZE_REQUEUE_WAIT", "60")))  # SLURM ends us first
    return rc if rc > 0 else 128 - rc


def _wait(child: subprocess.Popen) -> int:
    """``child.wait()`` that keeps waiting when a signal handler interrupted it."""
    while True:
        try:
            return child.wait()
        except InterruptedError:  # pragma: no cover - Python retries wait() itself (PEP 475)
            continue

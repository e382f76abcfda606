"""A private single-node SLURM cluster (slurmctld + slurmd on localhost) for the slurm tests.

Everything lives in one folder: munge key and socket, ``slurm.conf``, state, spool, pid and log
files. The daemons listen on free ports picked at start, so two clusters (say CI and a developer
session) can run on one machine, and only commands given :attr:`LocalCluster.env` (its
``SLURM_CONF``) talk to this one. The recipe is /work/shared/MACHINE.md's (Slurm 22.05, Debian).

Usable without pytest, for development::

    python tests/slurm/cluster.py /tmp/slurm-dev     # start, print the env, wait for Ctrl-C
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["DAEMONS", "ClusterError", "LocalCluster", "install", "missing_binaries"]

#: binaries the cluster needs, by Debian package
DAEMONS = {"slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
           "munged": "munge", "mungekey": "munge"}
_SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class ClusterError(RuntimeError):
    """The cluster did not come up; the message holds the daemon logs."""


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + os.pathsep + os.pathsep.join(_SBIN)
    return shutil.which(name, path=path)


def missing_binaries() -> list[str]:
    """The names in :data:`DAEMONS` that are not installed."""
    return [n for n in DAEMONS if _which(n) is None]


def install(timeout: float = 600.0) -> tuple[bool, str]:
    """``apt-get install slurm-wlm munge`` (with ``apt-get update`` when the first try fails).

    Returns ``(ok, why)``; ``why`` says what was missing or what failed, for a skip reason.
    """
    if os.geteuid() != 0:
        return False, "installing it needs root (apt-get)"
    apt = shutil.which("apt-get")
    if apt is None:
        return False, "apt-get not found (not a Debian-like system)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = [apt, "install", "-y", "-q", "--no-install-recommends", "slurm-wlm", "munge"]
    deadline = time.monotonic() + timeout
    out = ""
    for step in ([cmd], [[apt, "update", "-q"], cmd]):
        for c in step:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, f"apt-get ran out of its {timeout:.0f} s budget"
            try:
                p = subprocess.run(c, env=env, capture_output=True, text=True, timeout=left,
                                   stdin=subprocess.DEVNULL, check=False)
            except subprocess.TimeoutExpired:
                return False, f"{' '.join(c)} timed out after {timeout:.0f} s"
            out = (p.stdout + p.stderr)[-2000:]
            if p.returncode != 0:
                break
        else:
            if not missing_binaries():
                return True, "installed slurm-wlm and munge with apt-get"
    return False, f"apt-get install slurm-wlm munge failed:\n{out}"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _mem_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 1024


SLURM_CONF = """\
# written by tests/slurm/cluster.py: a private one-node cluster
ClusterName=fsqtest
# Job ids start at a random point: with ids restarting at 1 in each new test cluster, PyPI
# MPICH under srun --mpi=pmi2 hung in MPI_Init (likely /dev/shm state of killed jobs, keyed by
# the PMI job id "<job>.<step>"); fresh ids never did.
FirstJobId={first_job_id}
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
# cred_expire: a requeued job waits this long before it may start again (default 120 s)
AuthInfo=socket={munge}/munge.socket.2,cred_expire=30
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
KillWait=10
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=300
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
"""


class LocalCluster:
    """Start, use and stop a one-node SLURM under ``root`` (a private, empty folder).

    ``env`` is ``os.environ`` plus ``SLURM_CONF``; give it to every SLURM command.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.conf = self.root / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self.env.pop("SLURM_JOB_ID", None)  # never inherit an outer allocation
        self._procs: dict[str, subprocess.Popen] = {}
        # munged wants every folder above its socket searchable by all, which pytest's 0700
        # temp folders are not: the key and socket live in a 0711 folder right under /tmp.
        self.munge_dir: Path | None = None

    # -- start ------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> LocalCluster:
        for d in ("state", "spool", "run", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        self.munge_dir = Path(tempfile.mkdtemp(prefix="fsq-munge-", dir="/tmp"))
        os.chmod(self.munge_dir, 0o711)
        try:
            self._start_munge()
            self._write_conf()
            self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
            self._spawn("slurmd", [_which("slurmd"), "-D", "-N", "localhost", "-f",
                                   str(self.conf)])
            self.wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        m = self.munge_dir
        if m is None:
            raise ClusterError("start() creates the munge folder first")
        key = m / "munge.key"
        self._run([_which("mungekey"), "-c", "-k", str(key)], 30)
        os.chmod(key, 0o600)
        self._spawn("munged", [_which("munged"), "--foreground", f"--key-file={key}",
                               f"--socket={m / 'munge.socket.2'}",
                               f"--pid-file={self.root / 'run' / 'munged.pid'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._until(lambda: (m / "munge.socket.2").exists(), 15, "munged socket")

    def _write_conf(self) -> None:
        ctld, slurmd = _free_ports(2)
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
        self.conf.write_text(SLURM_CONF.format(
            root=self.root, munge=self.munge_dir, ctld_port=ctld, slurmd_port=slurmd, user=user,
            first_job_id=random.randrange(1_000_000, 60_000_000),
            cpus=os.cpu_count() or 1, mem=max(256, _mem_mib() - 512)))

    def _spawn(self, name: str, argv: list[str | None]) -> None:
        if None in argv:
            raise ClusterError(f"{name}: binary not found")
        log = open(self.root / "log" / f"{name}.stdout", "ab")  # noqa: SIM115 - kept open
        self._procs[name] = subprocess.Popen(
            [str(a) for a in argv], env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()

    def _run(self, argv: list, timeout: float) -> str:
        p = subprocess.run([str(a) for a in argv], env=self.env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
        if p.returncode != 0:
            raise ClusterError(f"{' '.join(map(str, argv))} exited {p.returncode}:\n"
                               f"{p.stdout}{p.stderr}\n{self.logs()}")
        return p.stdout

    def _until(self, ok, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ok():
                return
            for name, p in self._procs.items():
                if p.poll() is not None:
                    raise ClusterError(f"{name} exited {p.returncode} while waiting for "
                                       f"{what}\n{self.logs()}")
            time.sleep(0.2)
        raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.logs()}")

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait until ``sinfo`` shows the node idle (or mixed/allocated: it takes jobs)."""
        def idle() -> bool:
            p = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env, text=True,
                               capture_output=True, timeout=10, check=False)
            return p.returncode == 0 and p.stdout.strip() in ("idle", "mix", "alloc")

        self._until(idle, timeout, "the node to be idle in sinfo")

    # -- use --------------------------------------------------------------------------------
    def run(self, *argv: str, timeout: float = 60.0) -> str:
        """Run a SLURM command against this cluster; raise with the daemon logs on failure."""
        return self._run(list(argv), timeout)

    def logs(self, tail: int = 40) -> str:
        """The last ``tail`` lines of every daemon log, for failure messages."""
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"----- {f.name} -----\n" + "\n".join(lines))
        return "\n".join(out)

    # -- stop -------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every job, then stop slurmd, slurmctld and munged by their pid files."""
        if "slurmctld" in self._procs and self._procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "--user", str(os.geteuid())], env=self.env,
                           capture_output=True, timeout=30, check=False)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                p = subprocess.run(["squeue", "-h", "-o", "%i"], env=self.env, text=True,
                                   capture_output=True, timeout=10, check=False)
                if p.returncode != 0 or not p.stdout.strip():
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            self._stop_one(name, timeout)
        if self.munge_dir is not None:
            shutil.rmtree(self.munge_dir, ignore_errors=True)
            self.munge_dir = None

    def _stop_one(self, name: str, timeout: float) -> None:
        pid_file = self.root / "run" / f"{name}.pid"
        pids = set()
        if pid_file.exists():
            try:
                pids.add(int(pid_file.read_text().split()[0]))
            except (ValueError, IndexError):
                pass
        proc = self._procs.pop(name, None)
        if proc is not None and proc.poll() is None:
            pids.add(proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + timeout
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        for pid in pids:
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fsq-slurm-dev")
    if root.exists():
        shutil.rmtree(root)
    c = LocalCluster(root).start()
    print(f"export SLURM_CONF={c.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the daemons on kill <pid>
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        c.stop()

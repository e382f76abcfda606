"""A real single-node SLURM for the tests in this folder (marker ``slurm``).

The session fixture :func:`slurm_cluster` installs SLURM and munge when they are missing
(``apt-get``, as root; ``FEDSQUEEZE_INSTALL_SLURM=0`` forbids it), starts slurmctld + slurmd on
localhost in a private folder and stops them at the end. Tests are skipped, with the reason,
only when SLURM is missing and cannot be installed; ``FEDSQUEEZE_REQUIRE_SLURM=1`` (set it in
CI) turns that skip into a failure. A cluster that is installed but does not start fails the
tests, with the daemon logs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .cluster import LocalCluster, install, missing_binaries

ROOT = Path(__file__).resolve().parents[2]


def _unavailable(reason: str) -> None:
    # CI (CI=true) must really run SLURM: a failed install fails the suite instead of skipping
    if os.environ.get("FEDSQUEEZE_REQUIRE_SLURM") == "1" or os.environ.get("CI") == "true":
        pytest.fail(f"SLURM is required here (CI or FEDSQUEEZE_REQUIRE_SLURM=1) but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    missing = missing_binaries()
    if missing:
        if os.environ.get("FEDSQUEEZE_INSTALL_SLURM") == "0":
            _unavailable(f"SLURM is not installed ({', '.join(missing)} missing) and "
                         "FEDSQUEEZE_INSTALL_SLURM=0 forbids installing it")
        t0 = time.monotonic()
        ok, why = install()
        if not ok:
            _unavailable(f"SLURM is not installed ({', '.join(missing)} missing) and cannot be "
                         f"installed here: {why}")
        print(f"\n[slurm] {why} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    t0 = time.monotonic()
    cluster = LocalCluster(tmp_path_factory.mktemp("slurm")).start()
    print(f"\n[slurm] cluster up in {time.monotonic() - t0:.1f} s ({cluster.conf})",
          file=sys.stderr)
    try:
        yield cluster
    finally:
        cluster.stop()


class Sweep:
    """Submit with ``python -m fedsqueeze sweep ... --submit``, wait, explain failures."""

    def __init__(self, cluster: LocalCluster, folder: Path) -> None:
        self.cluster, self.folder = cluster, folder
        self.job_id: str | None = None

    def submit(self, job: str, *args: str, env: dict[str, str] | None = None) -> str:
        p = subprocess.run([sys.executable, "-m", "fedsqueeze", "sweep", job, "--out",
                            str(self.folder), "--submit", *args], cwd=ROOT,
                           env={**self.cluster.env, **(env or {})}, capture_output=True,
                           text=True, timeout=120, check=False, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, f"sweep --submit failed:\n{p.stdout}\n{p.stderr}"
        folder = re.search(r"^sweep folder: (.+)$", p.stdout, re.M)
        job_id = re.search(r"^job id: (\d+)$", p.stdout, re.M)
        assert folder and job_id, p.stdout
        assert Path(folder.group(1)) == self.folder.resolve()
        self.job_id = job_id.group(1)
        return self.job_id

    def states(self) -> dict[str, tuple[str, str]]:
        """``{"<array>_<task>": (JobState, ExitCode)}`` of every task, from scontrol."""
        out = subprocess.run(["scontrol", "-o", "show", "job", str(self.job_id)],
                             env=self.cluster.env, capture_output=True, text=True, timeout=30,
                             check=False).stdout
        states = {}
        for line in out.splitlines():
            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
            key = f"{f.get('ArrayJobId', f.get('JobId'))}_{f.get('ArrayTaskId', '')}"
            states[key] = (f.get("JobState", "?"), f.get("ExitCode", "?"))
        return states

    def wait(self, timeout: float, done=("COMPLETED",)) -> dict[str, tuple[str, str]]:
        """Wait until no task is pending or running; return the final states."""
        deadline = time.monotonic() + timeout
        busy = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "SUSPENDED")
        while True:
            states = self.states()
            if states and not any(s in busy for s, _ in states.values()):
                return states
            if time.monotonic() > deadline:
                pytest.fail(f"job {self.job_id} still busy after {timeout:.0f} s: {states}\n"
                            f"{self.logs()}")
            time.sleep(2)

    def logs(self) -> str:
        """Every task's SLURM output and the daemon logs, for assertion messages."""
        parts = []
        for f in sorted((self.folder / "logs").glob("*.out")):
            parts.append(f"===== {f.name} =====\n{f.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts) + "\n" + self.cluster.logs()


@pytest.fixture
def sweep_in(slurm_cluster, tmp_path):
    """Factory of :class:`Sweep` objects writing below ``tmp_path``."""
    return lambda name="sweep": Sweep(slurm_cluster, tmp_path / name)

"""Running a kernel test script as plain Python (STYLE.md rule 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def assert_runs_without_jit(script: str) -> None:
    """Run ``script`` with ``NUMBA_DISABLE_JIT=1`` and warnings as errors; it must print ``ok``."""
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-W", "error", "-c", script], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]

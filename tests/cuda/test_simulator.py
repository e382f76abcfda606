"""Run the CUDA tier in Numba's simulator when this process cannot launch kernels itself."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .harness import SIMULATOR, cuda_status

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.slow
@pytest.mark.timeout(3000)
@pytest.mark.skipif(SIMULATOR or cuda_status()[0],
                    reason="CUDA is usable in this process: the tier runs in-process")
def test_cuda_tier_in_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000)
    tail = (r.stdout[-6000:] + "\n" + r.stderr[-3000:]).strip()
    assert r.returncode == 0, f"simulated CUDA tier failed (exit {r.returncode}):\n{tail}"
    if " passed" not in r.stdout:
        pytest.skip(f"numba.cuda is unusable even in the simulator:\n{tail}")

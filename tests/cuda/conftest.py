"""CUDA tier (STYLE.md section 6): every CUDA twin matches its CPU kernel bit for bit.

How the tier runs
-----------------
* GPU box: ``pytest tests/cuda`` runs everything in-process.
* CPU box: ``NUMBA_ENABLE_CUDASIM=1 pytest tests/cuda`` runs the kernels in Numba's simulator
  (slow, roughly 5k simulated threads per second: keep inputs to a few thousand elements).
* Plain ``pytest`` on a CPU box: the simulator has to be chosen before Numba is imported, so
  ``numba.cuda`` is unusable in this process. Every test here is then skipped with that reason,
  and ``test_simulator.py`` runs this whole folder again in a subprocess with
  ``NUMBA_ENABLE_CUDASIM=1`` (one test that fails if any simulated test fails).

Writing a CUDA test: see ``tests/cuda/harness.py`` (launch shapes, device copies, byte-exact
comparison) and ``test_quantize_cuda.py`` for a complete example.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import cuda_status

HERE = Path(__file__).resolve().parent
RUNNER = "test_simulator.py"


def pytest_collection_modifyitems(config, items):
    usable, why = cuda_status()
    for item in items:
        path = Path(str(item.path)).resolve()
        if HERE not in path.parents:
            continue
        item.add_marker(pytest.mark.cuda)
        if not usable and path.name != RUNNER:
            item.add_marker(pytest.mark.skip(
                reason=f"{why}; this folder runs in the simulator subprocess of {RUNNER}"))

"""The transport on COMM_SELF, COMM_WORLD and a Dup of it, on 1 to 3 ranks."""

from __future__ import annotations

import pytest

from .conftest import ROOT, run_mpi

pytestmark = pytest.mark.mpi


@pytest.mark.parametrize("n", [1, 2, 3])
def test_transport_on_self_world_and_dup(n):
    run_mpi(n, [str(ROOT / "tests" / "mpi" / "transport_body.py")], timeout=300)

"""Many virtual clients on few ranks: 1,000 clients, per-client error-feedback state on disk."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.log import read_run

from .conftest import fedsqueeze_run

pytestmark = pytest.mark.mpi


def test_1000_clients_with_disk_state(tmp_path):
    fedsqueeze_run(3, "jobs/scale_1k.toml", tmp_path, "k1", "fl.rounds=2",
                   'compress.up={ id = "topk", rho = 0.01, error_feedback = true }',
                   'fl.client_state="disk"', timeout=300)
    r = read_run(tmp_path / "k1.h5")
    assert r.status["state"] == "completed"
    assert list(r.rounds["round"]) == [0, 1]
    assert (r.rounds["n_received"] == 100).all() and (r.rounds["n_missing"] == 0).all()
    trained = np.unique(r.clients.loc[r.clients["status"] == 0, "client"].to_numpy())
    # one residual file per client that has trained, none for the others (the shared store)
    folder = tmp_path / "k1.client_state"
    files = sorted(p.name for p in folder.glob("*.npy"))
    assert files == sorted(f"ef-{c}.npy" for c in trained)
    d = r.model.shape[0]
    assert all(np.load(folder / f).shape == (d,) for f in files[:5])
    assert int(r.rounds["client_state_bytes"].iloc[-1]) == sum(
        (folder / f).stat().st_size for f in files)
    # both workers trained clients: the LPT schedule spread the sampled clients
    assert set(r.clients["rank"]) == {1, 2}
    parts = r.partition()  # /partition holds all 1,000 clients; /clients sizes agree with it
    assert len(parts) == 1000
    np.testing.assert_array_equal(r.clients["samples"].to_numpy(),
                                  [len(parts[c]) for c in r.clients["client"]])

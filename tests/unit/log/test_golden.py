"""Backward compatibility: the committed run log of every released schema still reads.

The files come from ``tests/fixtures/make_h5.py``; the values below are the ones it wrote.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsqueeze.log import KNOWN_VERSIONS, read_run, read_runs, summarize

GOLDEN = Path(__file__).parents[2] / "fixtures" / "h5"


@pytest.fixture(params=["1.0"])
def golden(request):
    path = GOLDEN / f"v{request.param}" / "run.h5"
    assert path.is_file(), f"missing golden file {path}; run tests/fixtures/make_h5.py"
    return read_run(path)


def test_every_known_version_has_a_golden_file():
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(f"v{v}" for _, v in KNOWN_VERSIONS)


def test_golden_root(golden):
    assert golden.schema_version == "1.0"
    assert golden.config == {"seed": 7, "method": "qsgd", "compress": {"id": "qsgd", "bits": 4},
                             "fl": {"rounds": 4, "clients": 3, "per_round": 2},
                             "data": {"dataset": "digits", "partition": "iid"}}
    assert golden.meta["method"] == "qsgd"
    assert golden.meta["run_seed"] == 7
    assert golden.meta["n_ranks"] == 3
    assert golden.meta["git_commit"] == "0" * 40
    assert golden.n_params == 12
    assert golden.status == {"state": "completed", "last_round": 3, "rounds_done": 4,
                             "error": None}


def test_golden_rounds(golden):
    r = golden.rounds
    assert r["round"].tolist() == [0, 1, 2, 3]
    assert r["bytes_up"].tolist() == [80] * 4
    assert r["bytes_down"].tolist() == [144] * 4
    assert r["test_accuracy"].tolist() == [0.25, 0.5, 0.625, 0.75]
    assert r["levels"].tolist() == [2, 3, 4, 5]
    assert r["t_train"].tolist() == [0.5] * 4


def test_golden_tables(golden):
    c = golden.comm
    assert len(c) == 20
    assert int((c["header_bytes"].astype(int) + c["payload_bytes"]).sum()) == 4 * (72 * 3 + 80)
    assert c["physical"].tolist()[:5] == [1, 0, 0, 1, 1]
    assert golden.clients["client"].tolist() == [0, 1, 1, 2, 0, 2, 0, 1]
    assert golden.clients["norm"].tolist() == [2.0, 3.0, 3.0, 4.0, 2.0, 4.0, 2.0, 3.0]
    assert golden.setup["payload_bytes"].tolist() == [16, 16, 16]
    assert golden.system["bytes"].tolist() == [40] * 4
    ev = golden.events
    assert ev["round"].tolist() == [-1, 2]
    assert ev["code"].tolist() == ["start", "update_rejected"]
    assert ev["message"].tolist() == ["golden run, héllo", "client 0: norm above bound"]


def test_golden_model_partition(golden):
    np.testing.assert_array_equal(golden.model, np.arange(12, dtype=np.float32) / 8)
    assert golden.model_layout == [{"name": "fc.weight", "shape": [2, 5], "offset": 0},
                                   {"name": "fc.bias", "shape": [2], "offset": 10}]
    assert golden.checkpoint == "checkpoints/golden.pt"
    parts = golden.partition()
    assert [p.tolist()[:3] for p in parts] == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]
    assert sum(p.size for p in parts) == 30


def test_golden_summaries(golden):
    row = read_runs(golden.path, target_accuracy=0.6).iloc[0]
    assert row["bytes_to_target"] == 3 * 224
    assert row["round_to_target"] == 2
    assert row["bytes_setup"] == 120
    assert "final accuracy   0.75" in summarize(golden.path)

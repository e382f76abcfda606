"""read_run / read_status: version dispatch, committed rows, partial files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from fedsqueeze.errors import LogSchemaError
from fedsqueeze.log import KNOWN_VERSIONS, RunWriter, read_run
from fedsqueeze.log import schema as S
from fedsqueeze.log.reader import read_status


def write_small(path, n_rounds=3):
    with RunWriter(path, config={"a": 1}, meta={"method": "m"}, n_params=2) as w:
        for t in range(n_rounds):
            w.append_round({"round": t, "test_accuracy": t / 10})
            w.append_comm({"round": t, "client": [0, 1], "header_bytes": 24})
            w.event(t, "info", "tick", f"t{t}")
            w.flush()


def test_known_versions():
    assert (S.SCHEMA_NAME, S.SCHEMA_VERSION) in KNOWN_VERSIONS


@pytest.mark.parametrize(("etype", "eversion"), [
    ("fedsqueeze-run", "9.9"), ("fedsqueeze-run", "0.1"), ("anndata", "1.0"), (None, None),
    ("fedsqueeze-run", None),
])
def test_unknown_schema_named(tmp_path, etype, eversion):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w", libver="latest") as f:
        if etype is not None:
            f.attrs["encoding-type"] = etype
        if eversion is not None:
            f.attrs["encoding-version"] = eversion
    for fn in (read_run, read_status):
        with pytest.raises(LogSchemaError) as info:
            fn(path)
        msg = str(info.value)
        assert repr(eversion) in msg and repr(etype) in msg
        assert "fedsqueeze-run 1.0" in msg
    assert isinstance(info.value, ValueError)


def test_old_format_file_without_swmr_superblock(tmp_path):
    """A file in the earliest format still opens (and is rejected for its schema, not I/O)."""
    path = tmp_path / "old.h5"
    with h5py.File(path, "w", libver="earliest") as f:
        f.attrs["encoding-type"] = "fedsqueeze-run"
        f.attrs["encoding-version"] = "0.9"
    with pytest.raises(LogSchemaError, match="0.9"):
        read_run(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        read_run(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(OSError):
        read_run(path)


@pytest.mark.parametrize("extra_rows", [1, 5])
def test_rows_beyond_commit_ignored(tmp_path, extra_rows):
    """Whole rows a killed writer left past the last commit are not shown."""
    path = tmp_path / "run.h5"
    write_small(path)
    with h5py.File(path, "r+", libver="latest") as f:
        for table in ("rounds", "comm", "events"):
            for name in f[table].attrs["column-order"]:
                ds = f[table][name]
                ds.resize((ds.shape[0] + extra_rows,))
                if ds.dtype.kind in "iuf":
                    ds[-extra_rows:] = 1
        f["events/text"].resize((f["events/text"].shape[0] + extra_rows,))
    run = read_run(path)
    assert run.rounds["round"].tolist() == [0, 1, 2]
    assert run.comm["round"].tolist() == [0, 0, 1, 1, 2, 2]
    assert run.events["message"].tolist() == ["t0", "t1", "t2"]
    assert read_status(path) == {"state": "completed", "last_round": 2, "rounds_done": 3,
                                 "error": None}


def test_torn_column_cut_to_shortest(tmp_path):
    path = tmp_path / "run.h5"
    write_small(path)
    with h5py.File(path, "r+", libver="latest") as f:
        f["rounds/wall_s"].resize((2,))
    run = read_run(path)
    assert run.rounds["round"].tolist() == [0, 1]


@pytest.mark.parametrize("n_rounds", [0, 1, 4])
def test_status_and_tables(tmp_path, n_rounds):
    path = tmp_path / "run.h5"
    write_small(path, n_rounds)
    run = read_run(path)
    assert run.status == {"state": "completed", "last_round": n_rounds - 1,
                          "rounds_done": n_rounds, "error": None}
    assert len(run.rounds) == n_rounds
    assert list(run.events.columns) == ["round", "level", "code", "message"]
    assert run.path == path
    assert run.schema_version == "1.0"
    np.testing.assert_allclose(run.rounds["test_accuracy"], np.arange(n_rounds) / 10)

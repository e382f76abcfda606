"""RunWriter: tables, validation, stamping, status, events, partition, model, provenance."""

from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pytest

from fedsqueeze.log import RunWriter, collect_provenance, read_run
from fedsqueeze.log import schema as S
from fedsqueeze.log import writer as writer_mod

CONFIG = {"seed": 3, "compress": {"id": "topk", "k": 10}}


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "run.h5"


def make(path, **kw):
    args = {"config": CONFIG, "meta": {"method": "topk"}, "n_params": 6} | kw
    return RunWriter(path, **args)


def random_columns(rng, columns, n):
    out = {}
    for name, dt in columns:
        if dt.kind == "f":
            out[name] = rng.normal(size=n).astype(dt)
        elif dt.kind == "b":
            out[name] = rng.integers(0, 2, n).astype(bool)
        else:
            hi = min(np.iinfo(dt).max, 2**40)
            out[name] = rng.integers(0, hi, n, dtype=np.int64, endpoint=True).astype(dt)
    return out


@pytest.mark.parametrize("extra", [(), (("s_k", "f8"), ("k_t", "u4"), ("flag", "?"))])
def test_rounds_roundtrip(path, rng, extra):
    with make(path, round_columns=extra) as w:
        cols = S.table_columns("rounds", S.extra_columns("rounds", extra))
        rows = random_columns(rng, cols, 5)
        rows["round"] = np.arange(5, dtype=np.uint32)
        for i in range(5):
            w.append_round({k: v[i] for k, v in rows.items()})
            w.flush()
    df = read_run(path).rounds
    assert list(df.columns) == [n for n, _ in cols]
    for name, dt in cols:
        assert df[name].dtype == dt
        np.testing.assert_array_equal(df[name].to_numpy(), rows[name])


@pytest.mark.parametrize("table", ["clients", "comm", "setup"])
@pytest.mark.parametrize("n", [1, 7, 3000])
def test_array_tables_roundtrip(path, rng, table, n):
    extra = (("norm", "f4"),) if table == "clients" else ()
    cols = S.table_columns(table, S.extra_columns(table, extra))
    data = random_columns(rng, cols, n)
    with make(path, client_columns=extra) as w:
        getattr(w, f"append_{table}")(data)
        getattr(w, f"append_{table}")({k: v[:2] for k, v in data.items()})
    df = getattr(read_run(path), table)
    assert len(df) == n + min(n, 2)
    for name, _ in cols:
        np.testing.assert_array_equal(df[name].to_numpy()[:n], data[name])


def test_scalars_broadcast(path):
    with make(path) as w:
        w.append_comm({"round": 4, "client": [1, 2, 3], "header_bytes": 24})
    df = read_run(path).comm
    assert df["round"].tolist() == [4, 4, 4]
    assert df["header_bytes"].tolist() == [24, 24, 24]


@pytest.mark.parametrize(("table", "column", "fill"), [
    ("rounds", "test_accuracy", np.nan), ("rounds", "bytes_up", 0), ("rounds", "t_wait", np.nan),
    ("clients", "local_loss", np.nan), ("clients", "samples", 0), ("comm", "pad_bytes", 0),
    ("comm", "theoretical_bits", np.nan), ("setup", "physical", 0),
])
def test_missing_columns_filled(path, table, column, fill):
    with make(path) as w:
        if table == "rounds":
            w.append_round({"round": 0})
        else:
            getattr(w, f"append_{table}")({"round": [0, 0], "client": [1, 2]})
    values = getattr(read_run(path), table)[column].to_numpy()
    np.testing.assert_array_equal(values, np.full(values.shape, fill))


@pytest.mark.parametrize("method", ["append_round", "append_clients", "append_comm",
                                    "append_setup"])
def test_unknown_columns_named(path, method):
    with make(path) as w, pytest.raises(ValueError, match=r"bogus.*zzz|zzz.*bogus"):
        getattr(w, method)({"round": 0, "bogus": 1, "zzz": 2})


@pytest.mark.parametrize(("row", "match"), [
    ({"bytes_up": 5}, "needs 'round'"),
    ({"round": -1}, "outside"),
    ({"round": 2**32}, "outside"),
    ({"round": 1.5}, "integers"),
    ({"round": 0, "n_sampled": float("nan")}, "integers"),
    ({"round": 0, "test_accuracy": "high"}, "numbers"),
    ({"round": 0, "bytes_up": [1, 2]}, "scalars"),
])
def test_bad_round_rows(path, row, match):
    with make(path) as w, pytest.raises(ValueError, match=match):
        w.append_round(row)


@pytest.mark.parametrize("rows", [
    {"round": [0, 0], "client": [1, 2, 3]},
    {"round": [[0, 0]], "client": [1, 2]},
    {"round": 0, "step": [70000]},
    {"round": 0, "direction": [-1]},
])
def test_bad_array_rows(path, rows):
    with make(path) as w, pytest.raises(ValueError, match="/comm"):
        w.append_comm(rows)
    assert len(read_run(path).comm) == 0


@pytest.mark.parametrize("extra", [
    [("round", "u4")], [("s_k", "U8")], [("s_k", "f8"), ("s_k", "f4")], [("a/b", "f8")],
    [("", "f8")],
])
def test_bad_method_columns(path, extra):
    with pytest.raises(ValueError, match="method column"):
        make(path, round_columns=extra)
    assert not path.exists()


def test_every_object_stamped(path):
    with make(path) as w:
        w.append_round({"round": 0})
    stamped = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = obj.attrs
            stamped.append((name, attrs.get("encoding-type"), attrs.get("encoding-version")))
        f.visititems(visit)
        assert f.attrs["encoding-type"] == S.SCHEMA_NAME
        assert f.attrs["encoding-version"] == S.SCHEMA_VERSION
    assert len(stamped) > 60
    assert [s for s in stamped if s[1] is None or s[2] != S.SCHEMA_VERSION] == []
    assert {s[0].split("/")[0] for s in stamped} == {
        *S.TABLES, "partition", "model", "status"}


def test_root_attrs(path):
    meta = {"method": "topk", "run_seed": 2**63 + 5, "note": None, "ranks": [1, 2],
            "cfg": {"a": 1}, "ok": True, "lr": 0.5}
    with make(path, meta=meta):
        pass
    run = read_run(path)
    assert run.config == CONFIG
    assert run.meta == {"method": "topk", "run_seed": 2**63 + 5, "note": "", "ranks": "[1, 2]",
                        "cfg": '{"a": 1}', "ok": True, "lr": 0.5}
    assert run.n_params == 6
    with h5py.File(path, "r") as f:
        assert json.loads(f.attrs["config"]) == CONFIG


@pytest.mark.parametrize(("kw", "exc"), [
    ({"meta": {"config": "x"}}, ValueError), ({"meta": {"encoding-version": "2"}}, ValueError),
    ({"meta": {"x": object()}}, ValueError), ({"config": {"x": object()}}, ValueError),
    ({"meta": {"seed": 2**64}}, ValueError), ({"meta": {"x": np.array([1, 2])}}, ValueError),
    ({"config": {"x": float("nan")}}, ValueError), ({"n_params": -1}, ValueError),
    ({"n_params": 2.0}, ValueError),
])
def test_bad_constructor_args(path, kw, exc):
    with pytest.raises(exc):
        make(path, **kw)
    assert not path.exists()


def test_failed_creation_leaves_no_file(path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(writer_mod.S, "create_tree", broken)
    with pytest.raises(OSError, match="disk full"):
        make(path)
    assert not path.exists()


def test_existing_file(path):
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="overwrite"):
        make(path)
    assert path.read_bytes() == b"old"
    with make(path, overwrite=True) as w:
        w.append_round({"round": 0})
    assert len(read_run(path).rounds) == 1


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize(("explicit", "raise_exc", "state"), [
    (None, None, "completed"), (None, Boom("disk on fire"), "failed"),
    ("preempted", None, "preempted"), ("preempted", Boom("x"), "preempted"),
    ("completed", Boom("late"), "failed"), (None, SystemExit(0), "completed"),
    (None, SystemExit(3), "failed"), (None, KeyboardInterrupt(), "failed"),
])
def test_final_status(path, explicit, raise_exc, state):
    def body():
        with make(path) as w:
            for t in range(3):
                w.append_round({"round": t})
                w.flush()
            if explicit:
                w.set_status(explicit)
            if raise_exc is not None:
                raise raise_exc
    if raise_exc is None:
        body()
    else:
        with pytest.raises(type(raise_exc)):
            body()
    run = read_run(path)
    assert run.status["state"] == state
    assert run.status["last_round"] == 2
    failed = state == "failed"
    assert (run.status["error"] is not None) == failed
    clean_exit = raise_exc is None or (isinstance(raise_exc, SystemExit) and raise_exc.code == 0)
    assert (run.events["code"] == "run_failed").sum() == (0 if clean_exit else 1)
    if isinstance(raise_exc, Boom) and failed:
        assert "Boom" in run.status["error"]
        assert "Traceback" in run.events["message"].iloc[-1]


def test_set_status_error_truncated_and_last_round(path):
    with make(path) as w:
        w.set_status("failed", last_round=7, error="é" * 5000)
    run = read_run(path)
    assert run.status["state"] == "failed"
    assert run.status["last_round"] == 7
    assert run.status["error"] == "é" * 2048


def test_set_status_rejects_unknown(path):
    with make(path) as w, pytest.raises(ValueError, match="sleeping"):
        w.set_status("sleeping")


@pytest.mark.parametrize("message", ["", "plain", "ünïcødé ✓", "x" * 20000, "a\nb\x00c"])
def test_events_roundtrip(path, message):
    with make(path) as w:
        w.event(None, "warning", "worker_lost", "first")
        w.event(5, "error", "update_rejected", message)
        w.event(6, "info", "x", "last")
    ev = read_run(path).events
    assert ev["round"].tolist() == [-1, 5, 6]
    assert ev["level"].tolist() == ["warning", "error", "info"]
    assert ev["code"].tolist() == ["worker_lost", "update_rejected", "x"]
    assert ev["message"].tolist() == ["first", message, "last"]


@pytest.mark.parametrize(("level", "code"), [("fatal", "x"), ("info", ""), ("info", "c" * 33)])
def test_bad_events(path, level, code):
    with make(path) as w, pytest.raises(ValueError, match="event"):
        w.event(0, level, code, "m")


@pytest.mark.parametrize("sizes", [[3, 0, 5], [1], [0, 0], [10000, 1]])
def test_partition_roundtrip(path, rng, sizes):
    parts = [rng.choice(10**6, size=s, replace=False) for s in sizes]
    with make(path) as w:
        w.write_partition(parts)
        with pytest.raises(ValueError, match="already"):
            w.write_partition(parts)
    got = read_run(path).partition()
    assert len(got) == len(parts)
    for a, b in zip(got, parts, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("parts", [[np.array([1, -2])], [np.array([0.5])], [np.zeros((2, 2), int)]])
def test_bad_partition(path, parts):
    with make(path) as w, pytest.raises(ValueError, match="partition"):
        w.write_partition(parts)


@pytest.mark.parametrize("n_params", [0, 1, 6, 3_000_000])
def test_model_roundtrip(tmp_path, rng, n_params):
    path = tmp_path / "m.h5"
    weights = rng.normal(size=n_params)
    with make(path, n_params=n_params) as w:
        w.write_model(weights)
        w.set_checkpoint("ck/run_0042.pt")
    run = read_run(path)
    np.testing.assert_array_equal(run.model, weights.astype(np.float32))
    assert run.model.dtype == np.float32
    assert run.model_layout is None
    assert run.checkpoint == "ck/run_0042.pt"


def test_model_layout(path):
    with make(path) as w:
        w.write_model(np.arange(6), names=["w", "b"], shapes=[(2, 2), (2,)])
        w.write_model(np.ones(6), names=["w", "b"], shapes=[(2, 2), (2,)])
        with pytest.raises(ValueError, match="layout"):
            w.write_model(np.ones(6), names=["w", "b"], shapes=[(4,), (2,)])
    run = read_run(path)
    assert run.model_layout == [{"name": "w", "shape": [2, 2], "offset": 0},
                                {"name": "b", "shape": [2], "offset": 4}]
    np.testing.assert_array_equal(run.model, np.ones(6, np.float32))


def test_model_absent(path):
    with make(path):
        pass
    run = read_run(path)
    assert run.model is None
    assert run.checkpoint is None


@pytest.mark.parametrize(("weights", "names", "shapes"), [
    (np.ones(5), None, None), (np.ones(6), ["a"], None), (np.ones(6), ["a"], [(3,), (3,)]),
    (np.ones(6), ["a", "b"], [(3,), (4,)]), (np.array(["x"] * 6), None, None),
])
def test_bad_model(path, weights, names, shapes):
    with make(path) as w, pytest.raises(ValueError):
        w.write_model(weights, names=names, shapes=shapes)


def test_inputs_not_mutated(path, rng):
    comm = {"round": np.array([1, 1]), "client": np.array([3, 4]),
            "payload_bytes": np.array([10.0, 12.0]), "theoretical_bits": np.array([1.5, 2.5])}
    before = {k: v.copy() for k, v in comm.items()}
    weights = rng.normal(size=6)
    w_before = weights.copy()
    parts = [np.array([5, 1, 3])]
    with make(path) as w:
        w.append_comm(comm)
        w.write_model(weights)
        w.write_partition(parts)
    for k, v in comm.items():
        np.testing.assert_array_equal(v, before[k])
        assert v.dtype == before[k].dtype
    np.testing.assert_array_equal(weights, w_before)
    np.testing.assert_array_equal(parts[0], [5, 1, 3])


def test_closed_writer_refuses(path):
    w = make(path)
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.append_round({"round": 0})
    assert read_run(path).status["state"] == "completed"


def test_flush_commits_rows(path):
    with make(path) as w:
        w.append_round({"round": 0})
        w.flush()
        w.append_round({"round": 1})
        with h5py.File(path, "r", libver="latest", swmr=True) as f:
            commit = dict(zip(S.COMMIT_FIELDS, f["status/commit"][()], strict=True))
            assert commit == {"last_round": 0, "rounds": 1, "clients": 0, "comm": 0,
                              "setup": 0, "system": 0, "events": 0}
            assert f["status/state"][0] == b"running"


def test_collect_provenance(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    p = collect_provenance(5, " Open MPI v5.0.3 \n")
    assert p["n_ranks"] == 5
    assert p["mpi_library"] == "Open MPI v5.0.3"
    assert p["slurm_job_id"] == "4242"
    assert p["slurm_array_task_id"] == "7"
    assert p["slurm_array_job_id"] == ""
    assert p["numpy_version"] == np.__version__
    assert p["hdf5_version"] == h5py.version.hdf5_version
    for key in ("fedsqueeze_version", "python_version", "torch_version", "numba_version",
                "mpi4py_version", "host", "git_commit"):
        assert isinstance(p[key], str)
    assert p["git_commit"] == "" or len(p["git_commit"]) == 40


@pytest.mark.parametrize("failure", [OSError("no git"), subprocess.TimeoutExpired("git", 10)])
def test_collect_provenance_without_git(monkeypatch, failure):
    def fail(*args, **kwargs):
        raise failure
    monkeypatch.setattr(writer_mod.subprocess, "run", fail)
    p = collect_provenance(1, "x")
    assert p["git_commit"] == ""
    assert p["git_dirty"] is False


def test_provenance_is_valid_meta(path):
    with make(path, meta=collect_provenance(2, "MPICH")):
        pass
    assert read_run(path).meta["n_ranks"] == 2

"""HDF5 run-log schema ``fedsqueeze-run`` version 1.0 (METHODS.md sections 0.4 and 0.8).

One file per run, written by the server rank only (:class:`fedsqueeze.log.writer.RunWriter`)
and read by :func:`fedsqueeze.log.reader.read_run`. Every object is created before the writer
switches to SWMR mode; afterwards the writer only appends rows to the 1-D column datasets and
overwrites fixed-size datasets, which is all SWMR allows. Hence no variable-length strings and no
attribute changes after creation: text that is only known later lives in ``u8`` datasets
(UTF-8) or fixed-width ``S`` datasets.

The tree (``[attrs]``, ``(dataset dtype)``; dtypes by bit width: u32 = uint32, f64 = float64,
S8 = 8-byte ASCII; every group and dataset also carries the attributes ``encoding-type`` and
``encoding-version``)::

    /                      [encoding-type="fedsqueeze-run", encoding-version="1.0",
                            config (resolved config, JSON), n_params, <meta entries>: versions,
                            n_ranks, git_commit, host, slurm ids, run_seed, method, dataset, ...]
    /rounds                table, one row per round
        round u32, n_sampled u32, C_t f64, bytes_up u64, bytes_down u64,
        up_theo_bits f64, down_theo_bits f64, train_loss f64, test_loss f64,
        test_accuracy f64, wall_s f64, t_train f64, t_encode f64, t_decode f64,
        t_wait f64, t_aggregate f64, t_evaluate f64, + method columns
    /clients               table, one row per (round, sampled client)
        round u32, client u32, rank i32 (-1: no worker reported), samples u32, bytes_up u64, bytes_down u64,
        local_loss f64, t_train f64, t_encode f64, + method columns
    /comm                  table, one row per message
        round u32, client u32, step u16, direction u8 (0 down, 1 up), msg_type u8,
        header_bytes u16, payload_bytes u32, pad_bytes u32, theoretical_bits f64,
        physical u8
    /setup                 table, same columns as /comm, setup messages
    /system                table: round u32, bytes u64 (orchestration traffic)
    /events                table: round i64 (-1 = outside a round), level S8, code S32,
                           msg_end u64; the messages are text[msg_end[i-1]:msg_end[i]]
        text (u8)          UTF-8 of all messages, concatenated
    /partition
        offsets (u64)      client c owns indices[offsets[c]:offsets[c+1]]
        indices (i64)      sample indices
    /model
        weights (f32[n_params])  final global weights (NaN until written)
        written (u8[1])    1 once weights were written
        layout (u8)        UTF-8 JSON [{"name", "shape", "offset"}, ...] or empty
        checkpoint (S4096[1])    checkpoint file name, empty if none
    /status
        state (S16[1])     running | completed | failed | preempted
        error (S4096[1])   error message (truncated; the full text is also an event)
        commit (i64[7])    [attr fields] last_round (-1 before the first) and the rows of
                           rounds, clients, comm, setup, system, events committed by the last
                           flush, written in one go; readers ignore rows beyond them (a SIGKILL
                           may leave those half-written)

Byte accounting (METHODS.md 0.4): a message's length is ``header_bytes + payload_bytes``;
``pad_bytes`` is the part of ``payload_bytes`` that is alignment padding. ``physical = 1`` marks a
message that MPI really carried; ``physical = 0`` a logical per-recipient copy of a broadcast
whose single physical transfer is its own row with ``client = SYSTEM_CLIENT``. Per-client
(logical) traffic is every row with ``client != SYSTEM_CLIENT``; physical traffic is every row
with ``physical = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import h5py
import numpy as np
import numpy.typing as npt

from ..comm.tags import SYSTEM_CLIENT

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "SYSTEM_CLIENT",
    "TABLES",
    "TABLE_CHUNK_ROWS",
    "TIME_COLUMNS",
    "STATES",
    "COMMIT_FIELDS",
    "LEVELS",
    "DIRECTION_DOWN",
    "DIRECTION_UP",
    "ENCODING_TYPES",
    "STATE_DTYPE",
    "TEXT_DTYPE",
    "LEVEL_DTYPE",
    "CODE_DTYPE",
    "COLUMN_DTYPES",
    "ColumnSpec",
    "table_columns",
    "extra_columns",
    "conform_rows",
    "create_tree",
]

SCHEMA_NAME = "fedsqueeze-run"
SCHEMA_VERSION = "1.0"

ColumnSpec = tuple[tuple[str, np.dtype], ...]


def _cols(*pairs: tuple[str, str]) -> ColumnSpec:
    return tuple((name, np.dtype(dt)) for name, dt in pairs)


_COMM = _cols(
    ("round", "u4"), ("client", "u4"), ("step", "u2"), ("direction", "u1"), ("msg_type", "u1"),
    ("header_bytes", "u2"), ("payload_bytes", "u4"), ("pad_bytes", "u4"),
    ("theoretical_bits", "f8"), ("physical", "u1"),
)

TABLES: MappingProxyType[str, ColumnSpec] = MappingProxyType({
    "rounds": _cols(
        ("round", "u4"), ("n_sampled", "u4"), ("C_t", "f8"), ("bytes_up", "u8"),
        ("bytes_down", "u8"), ("up_theo_bits", "f8"), ("down_theo_bits", "f8"),
        ("train_loss", "f8"), ("test_loss", "f8"), ("test_accuracy", "f8"), ("wall_s", "f8"),
        ("t_train", "f8"), ("t_encode", "f8"), ("t_decode", "f8"), ("t_wait", "f8"),
        ("t_aggregate", "f8"), ("t_evaluate", "f8"),
    ),
    "clients": _cols(
        ("round", "u4"), ("client", "u4"), ("rank", "i4"), ("samples", "u4"),
        ("bytes_up", "u8"), ("bytes_down", "u8"), ("local_loss", "f8"), ("t_train", "f8"),
        ("t_encode", "f8"),
    ),
    "comm": _COMM,
    "setup": _COMM,
    "system": _cols(("round", "u4"), ("bytes", "u8")),
    "events": _cols(("round", "i8"), ("level", "S8"), ("code", "S32"), ("msg_end", "u8")),
})
"""Base columns of every table, in order. Tables with method columns extend these."""

TABLE_CHUNK_ROWS = MappingProxyType({
    "rounds": 128, "clients": 512, "comm": 1024, "setup": 256, "system": 128, "events": 64,
})
"""Chunk length (rows) of each table's column datasets."""

TIME_COLUMNS = ("t_train", "t_encode", "t_decode", "t_wait", "t_aggregate", "t_evaluate")
"""Round-time breakdown columns of /rounds (seconds)."""

COMMIT_FIELDS = ("last_round", *TABLES)
"""Entries of ``/status/commit``."""

STATES = ("running", "completed", "failed", "preempted")
LEVELS = ("debug", "info", "warning", "error")
DIRECTION_DOWN = 0
DIRECTION_UP = 1

STATE_DTYPE = np.dtype("S16")
TEXT_DTYPE = np.dtype("S4096")
LEVEL_DTYPE = np.dtype("S8")
CODE_DTYPE = np.dtype("S32")

COLUMN_DTYPES = frozenset(
    np.dtype(d) for d in ("u1", "u2", "u4", "u8", "i1", "i2", "i4", "i8", "f4", "f8", "?")
)
"""dtypes allowed for method columns (``round_columns`` / ``client_columns``)."""

ENCODING_TYPES = MappingProxyType({
    "root": SCHEMA_NAME,
    "table": "fedsqueeze-table",
    "column": "fedsqueeze-column",
    "text": "fedsqueeze-utf8",
    "array": "array",
    "group": "group",
})
"""``encoding-type`` attribute stamped on each kind of object."""


def table_columns(table: str, extra: tuple[tuple[str, np.dtype], ...] = ()) -> ColumnSpec:
    """Columns of ``table``: the base columns of :data:`TABLES` followed by ``extra``.

    >>> [n for n, _ in table_columns("system")]
    ['round', 'bytes']
    """
    return TABLES[table] + tuple(extra)


def extra_columns(table: str, cols: Sequence[tuple[str, str]]) -> ColumnSpec:
    """Validate method columns for ``table``: unique names, no clash, numeric dtypes."""
    base = {n for n, _ in TABLES[table]}
    out: list[tuple[str, np.dtype]] = []
    for name, dt in cols:
        dtype = np.dtype(dt)
        if not name or "/" in name or name in base or name in {n for n, _ in out}:
            raise ValueError(f"/{table} method column {name!r}: empty, has '/', or duplicate")
        if dtype not in COLUMN_DTYPES:
            raise ValueError(f"/{table} method column {name!r}: dtype {dtype} not in "
                             f"{sorted(d.str for d in COLUMN_DTYPES)}")
        out.append((name, dtype))
    return tuple(out)


def _coerce(where: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` as ``dtype``; ValueError if that would change a value (sign, range, fraction)."""
    kind = values.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"{where}: expected numbers, got dtype {values.dtype}")
    if kind == "b":
        values, kind = values.astype(np.uint8), "u"
    if dtype.kind == "f":
        return values.astype(dtype)
    if kind == "f" and (not np.all(np.isfinite(values)) or np.any(values != np.trunc(values))):
        raise ValueError(f"{where}: expected integers for {dtype}, got {values[:8]!r}")
    if dtype.kind == "b":
        if values.size and not np.isin(values, (0, 1)).all():
            raise ValueError(f"{where}: expected 0/1 for a bool column")
        return values.astype(dtype)
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        raise ValueError(f"{where}: values outside [{info.min}, {info.max}] of {dtype}: "
                         f"min {values.min()}, max {values.max()}")
    return values.astype(dtype)


def _blank(dtype: np.dtype, n: int) -> np.ndarray:
    if dtype.kind == "f":
        return np.full(n, np.nan, dtype)
    return np.zeros(n, dtype)


def conform_rows(table: str, columns: ColumnSpec,
                 rows: Mapping[str, npt.ArrayLike]) -> dict[str, np.ndarray]:
    """``rows`` as one array per column of ``columns``, ready to append to ``table``.

    Values are scalars (broadcast) or equal-length 1-D arrays. Missing columns are NaN
    (floats) or 0; unknown names, a missing ``round``, and values the column dtype cannot hold
    exactly raise ``ValueError``.

    >>> c = conform_rows("system", TABLES["system"], {"round": [0, 1]})
    >>> c["bytes"].tolist()
    [0, 0]
    """
    names = [n for n, _ in columns]
    unknown = sorted(set(rows) - set(names))
    if unknown:
        raise ValueError(f"/{table}: unknown column(s) {unknown}; known: {names}")
    if "round" not in rows:
        raise ValueError(f"/{table}: every row needs 'round'")
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    lengths = {a.shape[0] for a in arrays.values() if a.ndim == 1}
    if any(a.ndim > 1 for a in arrays.values()) or len(lengths) > 1:
        shapes = {k: a.shape for k, a in arrays.items()}
        raise ValueError(f"/{table}: columns must be scalars or equal-length 1-D arrays, "
                         f"got shapes {shapes}")
    n = lengths.pop() if lengths else 1
    out = {}
    for name, dtype in columns:
        if name in arrays:
            out[name] = _coerce(f"/{table}/{name}", np.broadcast_to(arrays[name], (n,)), dtype)
        else:
            out[name] = _blank(dtype, n)
    return out


def _stamp(obj: h5py.HLObject, kind: str) -> None:
    obj.attrs["encoding-type"] = ENCODING_TYPES[kind]
    obj.attrs["encoding-version"] = SCHEMA_VERSION


def _fixed(parent: h5py.Group, name: str, dtype: np.dtype, value: Any) -> h5py.Dataset:
    ds = parent.create_dataset(name, data=np.full(1, value, dtype))
    _stamp(ds, "array")
    return ds


def _extendable(parent: h5py.Group, name: str, dtype: np.dtype, chunk: int,
                kind: str = "column") -> h5py.Dataset:
    ds = parent.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=dtype)
    _stamp(ds, kind)
    return ds


def _group(parent: h5py.Group, name: str, kind: str = "group") -> h5py.Group:
    g = parent.create_group(name)
    _stamp(g, kind)
    return g


def create_tree(f: h5py.File, *, config_json: str, meta: Mapping[str, Any],
                columns: Mapping[str, ColumnSpec], n_params: int) -> dict[str, Any]:
    """Create every object of the tree above in the empty file ``f`` (before SWMR starts).

    Returns the datasets the writer fills later: ``tables`` (table -> column -> dataset),
    ``text``, ``offsets``, ``indices``, ``weights``, ``written``, ``layout``, ``checkpoint``,
    ``state``, ``error`` and ``commit``.
    """
    _stamp(f, "root")
    f.attrs["config"] = config_json
    f.attrs["n_params"] = np.int64(n_params)
    for key, value in meta.items():
        f.attrs[key] = value
    h: dict[str, Any] = {"tables": {}}
    for table, cols in columns.items():
        g = _group(f, table, "table")
        g.attrs["column-order"] = [n for n, _ in cols]
        h["tables"][table] = {n: _extendable(g, n, dt, TABLE_CHUNK_ROWS[table]) for n, dt in cols}
    u8 = np.dtype("u1")
    h["text"] = _extendable(f["events"], "text", u8, 1024, "text")
    part = _group(f, "partition")
    h["offsets"] = _extendable(part, "offsets", np.dtype("u8"), 1024, "array")
    h["indices"] = _extendable(part, "indices", np.dtype("i8"), 4096, "array")
    model = _group(f, "model")
    chunks = (min(n_params, 1 << 20),) if n_params else None
    h["weights"] = model.create_dataset("weights", shape=(n_params,), dtype="f4", chunks=chunks,
                                        fillvalue=np.float32(np.nan))
    _stamp(h["weights"], "array")
    h["written"] = _fixed(model, "written", u8, 0)
    h["layout"] = _extendable(model, "layout", u8, 1024, "text")
    h["checkpoint"] = _fixed(model, "checkpoint", TEXT_DTYPE, b"")
    status = _group(f, "status")
    h["state"] = _fixed(status, "state", STATE_DTYPE, b"running")
    h["error"] = _fixed(status, "error", TEXT_DTYPE, b"")
    commit = np.zeros(len(COMMIT_FIELDS), np.int64)
    commit[0] = -1
    h["commit"] = status.create_dataset("commit", data=commit)
    _stamp(h["commit"], "array")
    h["commit"].attrs["fields"] = list(COMMIT_FIELDS)
    return h

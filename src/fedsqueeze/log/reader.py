"""Read fedsqueeze run logs, including a file that is still being written (SWMR read).

:func:`read_run` dispatches on the root attributes ``(encoding-type, encoding-version)``; every
released schema version has a reader here and a golden file in ``tests/fixtures/h5/v<X.Y>/``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ..errors import LogSchemaError
from . import schema as S

__all__ = ["Run", "read_run", "read_status", "open_log", "KNOWN_VERSIONS"]

_ROOT_RESERVED = frozenset({"encoding-type", "encoding-version", "config", "n_params"})


def _py(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python object."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_py(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _text(raw: bytes | np.bytes_) -> str:
    return bytes(raw).decode("utf-8", "replace")


def open_log(path: str | os.PathLike[str], retries: int = 20, delay: float = 0.1) -> h5py.File:
    """Open a run log read-only, SWMR-safe, retrying while the writer holds its creation lock."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no run log at {p}")
    for attempt in range(retries + 1):
        try:
            return h5py.File(p, "r", libver="latest", swmr=True)
        except OSError as e:
            if "lock" in str(e).lower() and attempt < retries:
                time.sleep(delay)
                continue
            if "lock" in str(e).lower():
                raise
            swmr_error = e
            break
    try:  # a file in an older format (no SWMR superblock) opens without the SWMR flag
        return h5py.File(p, "r")
    except OSError:
        raise swmr_error from None


@dataclass(eq=False)
class Run:
    """One run log in memory: tables as DataFrames; the model is read on first access."""

    path: Path
    schema_version: str
    config: dict[str, Any]
    meta: dict[str, Any]
    status: dict[str, Any]
    n_params: int
    rounds: pd.DataFrame
    clients: pd.DataFrame
    comm: pd.DataFrame
    setup: pd.DataFrame
    system: pd.DataFrame
    events: pd.DataFrame
    checkpoint: str | None = None
    model_layout: list[dict[str, Any]] | None = field(default=None)

    @cached_property
    def model(self) -> np.ndarray | None:
        """Final global weights (float32), or None if the run never wrote them."""
        with open_log(self.path) as f:
            if not int(f["model/written"][0]):
                return None
            return np.asarray(f["model/weights"][()], dtype=np.float32)

    def partition(self) -> list[np.ndarray]:
        """Sample indices of each client, as written by ``RunWriter.write_partition``."""
        with open_log(self.path) as f:
            offsets = f["partition/offsets"][()].astype(np.int64)
            indices = f["partition/indices"][: int(offsets[-1]) if offsets.size else 0]
        if offsets.size < 2:
            return []
        return [indices[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]


def _read_table(group: h5py.Group, committed: int | None = None) -> pd.DataFrame:
    """A table group as a DataFrame, cut to the committed rows that every column holds.

    A SWMR reader may see one column a row ahead of another, or rows appended after the last
    flush; only the first ``committed`` rows (and at most the shortest column) are read.
    """
    order = [_py(n) for n in group.attrs.get("column-order", [])]
    names = [n for n in order if isinstance(group.get(n), h5py.Dataset)]
    if not names:
        return pd.DataFrame()
    n_rows = min(group[n].shape[0] for n in names)
    if committed is not None:
        n_rows = min(n_rows, committed)
    data = {}
    for n in names:
        col = group[n][:n_rows]
        data[n] = col.astype(str) if col.dtype.kind == "S" else col
    return pd.DataFrame(data)


def _read_events(group: h5py.Group, committed: int | None = None) -> pd.DataFrame:
    df = _read_table(group, committed)
    text = group["text"][()].tobytes() if "text" in group else b""
    if df.empty:
        return pd.DataFrame({"round": np.zeros(0, np.int64), "level": [], "code": [],
                             "message": []})
    df = df[df["msg_end"] <= len(text)]
    ends = df["msg_end"].to_numpy(np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    df = df.drop(columns="msg_end").assign(
        message=[text[a:b].decode("utf-8", "replace") for a, b in zip(starts, ends, strict=True)])
    return df.reset_index(drop=True)


def _commit_v1_0(f: h5py.File) -> dict[str, int]:
    """The commit record: last_round and the committed rows of each table (one read)."""
    ds = f["status/commit"]
    return dict(zip(_py(ds.attrs["fields"]), (int(n) for n in ds[()]), strict=True))


def _status_v1_0(f: h5py.File, commit: dict[str, int]) -> dict[str, Any]:
    g = f["status"]
    return {
        "state": _text(g["state"][0]),
        "last_round": commit["last_round"],
        "rounds_done": commit["rounds"],
        "error": _text(g["error"][0]) or None,
    }


def _read_v1_0(f: h5py.File, path: Path) -> Run:
    attrs = {k: _py(v) for k, v in f.attrs.items()}
    rows = _commit_v1_0(f)
    rounds = _read_table(f["rounds"], rows["rounds"])
    status = _status_v1_0(f, rows)
    status["rounds_done"] = len(rounds)
    layout_raw = f["model/layout"][()].tobytes()
    checkpoint = _text(f["model/checkpoint"][0])
    return Run(
        path=path,
        schema_version=str(attrs["encoding-version"]),
        config=json.loads(attrs.get("config", "{}")),
        meta={k: v for k, v in attrs.items() if k not in _ROOT_RESERVED},
        status=status,
        n_params=int(attrs.get("n_params", f["model/weights"].shape[0])),
        rounds=rounds,
        clients=_read_table(f["clients"], rows["clients"]),
        comm=_read_table(f["comm"], rows["comm"]),
        setup=_read_table(f["setup"], rows["setup"]),
        system=_read_table(f["system"], rows["system"]),
        events=_read_events(f["events"], rows["events"]),
        checkpoint=checkpoint or None,
        model_layout=json.loads(layout_raw) if layout_raw else None,
    )


def _read_status_v1_0(f: h5py.File, path: Path) -> dict[str, Any]:
    commit = _commit_v1_0(f)
    status = _status_v1_0(f, commit)
    status["rounds_done"] = min(commit["rounds"], f["rounds/round"].shape[0])
    return status


_READERS: dict[tuple[str, str], Callable[[h5py.File, Path], Run]] = {
    (S.SCHEMA_NAME, "1.0"): _read_v1_0,
}
_STATUS_READERS: dict[tuple[str, str], Callable[[h5py.File, Path], dict[str, Any]]] = {
    (S.SCHEMA_NAME, "1.0"): _read_status_v1_0,
}
KNOWN_VERSIONS = tuple(sorted(_READERS))
"""(encoding-type, encoding-version) pairs this reader understands."""


def _dispatch(f: h5py.File, path: Path, table: dict[tuple[str, str], Any]) -> Any:
    key = (_py(f.attrs.get("encoding-type")), _py(f.attrs.get("encoding-version")))
    reader = table.get(key)
    if reader is None:
        known = ", ".join(f"{t} {v}" for t, v in KNOWN_VERSIONS)
        raise LogSchemaError(
            f"{path}: unknown run-log schema encoding-type={key[0]!r}, "
            f"encoding-version={key[1]!r}; known: {known}")
    return reader(f, path)


def read_run(path: str | os.PathLike[str]) -> Run:
    """Read a run log (finished, failed, killed, or still being written).

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    fedsqueeze.errors.LogSchemaError
        The file's ``(encoding-type, encoding-version)`` is not one of :data:`KNOWN_VERSIONS`.
    """
    p = Path(path)
    with open_log(p) as f:
        run: Run = _dispatch(f, p, _READERS)
        return run


def read_status(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Only the status of a run log (state, last_round, rounds_done, error): cheap to poll."""
    p = Path(path)
    with open_log(p) as f:
        status: dict[str, Any] = _dispatch(f, p, _STATUS_READERS)
        return status

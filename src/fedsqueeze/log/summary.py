"""Per-run figures derived from a run log, and the text of ``python -m fedsqueeze info``.

Byte figures follow METHODS.md section 0.4: per-client (logical) totals come from ``/rounds``,
setup bytes from the ``/setup`` rows of real clients, orchestration bytes from ``/system``; the
ratio vs float32 FedAvg compares ``dense_bytes(up) = 24 + 4 + 4(D + D_buf)`` and
``dense_bytes(down) = 24 + 4(D + D_buf)`` per (round, client, direction) with the measured bytes
of the same set. ``D_buf`` is the ``n_buffers`` meta entry (0 when absent).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from . import schema as S
from .reader import Run, read_run

__all__ = ["run_metrics", "run_labels", "read_runs", "summarize", "flatten_config",
           "run_paths", "dense_bytes"]

_NAN = float("nan")


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as ``{"a.b": value}``; lists become strings so the values are hashable.

    >>> flatten_config({"compress": {"id": "qsgd", "bits": 4}, "seed": 1})
    {'compress.id': 'qsgd', 'compress.bits': 4, 'seed': 1}
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{name}."))
        else:
            out[name] = str(value) if isinstance(value, (list, tuple)) else value
    return out


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "")), None)


def run_labels(run: Run) -> dict[str, Any]:
    """Method, compressor and dataset of a run, from meta first, then the config."""
    flat = flatten_config(run.config)
    compressor = _first(flat.get("compress.id"), flat.get("compressor.id"),
                        flat.get("compress.codec"))
    return {
        "method": _first(run.meta.get("method"), flat.get("method"), flat.get("fl.method"),
                         compressor, "unknown"),
        "compressor": compressor,
        "dataset": _first(run.meta.get("dataset"), flat.get("dataset"), flat.get("data.dataset"),
                          flat.get("data.name")),
    }


def dense_bytes(direction: int, n_params: int, n_buffers: int = 0) -> int:
    """Frame bytes of the float32 FedAvg message in ``direction`` (METHODS.md 0.4)."""
    body = 4 * (n_params + n_buffers)
    return 24 + 4 + body if direction == S.DIRECTION_UP else 24 + body


def _ratios(run: Run) -> dict[str, float]:
    """Dense-float32 and paper-style compression ratios per direction (NaN if not derivable)."""
    n_buf = int(run.meta.get("n_buffers", 0) or 0)
    out = {}
    comm = run.comm
    logical = comm[comm["client"] != S.SYSTEM_CLIENT] if len(comm) else comm
    for d, name in ((S.DIRECTION_UP, "up"), (S.DIRECTION_DOWN, "down")):
        ratio = paper = _NAN
        if len(logical) and run.n_params:
            rows = logical[logical["direction"] == d]
            n_sets = len(rows[["round", "client"]].drop_duplicates())
            sent = float((rows["header_bytes"].astype(np.int64)
                          + rows["payload_bytes"].astype(np.int64)).sum())
            theo = float(rows["theoretical_bits"].sum(min_count=1))
            if sent > 0:
                ratio = n_sets * dense_bytes(d, run.n_params, n_buf) / sent
            if theo > 0:
                paper = 32 * (run.n_params + n_buf) * n_sets / theo
        elif len(run.clients) and run.n_params:
            col = run.clients[f"bytes_{name}"].astype(np.int64)
            sent = float(col.sum())
            if sent > 0:
                ratio = int((col > 0).sum()) * dense_bytes(d, run.n_params, n_buf) / sent
        out[f"ratio_{name}"] = ratio
        out[f"paper_ratio_{name}"] = paper
    return out


def run_metrics(run: Run, target_accuracy: float | None = None) -> dict[str, Any]:
    """One summary row for ``run``: labels, accuracy, bytes, bytes to target, times, status."""
    r = run.rounds
    acc = r["test_accuracy"].dropna() if len(r) else pd.Series(dtype=float)
    per_round = (r["bytes_up"].astype(np.int64) + r["bytes_down"].astype(np.int64)
                 if len(r) else pd.Series(dtype=np.int64))
    row: dict[str, Any] = {"name": run.path.stem, "path": str(run.path), **run_labels(run)}
    row.update(state=run.status["state"], rounds_done=len(r),
               last_round=run.status["last_round"])
    row["final_accuracy"] = float(acc.iloc[-1]) if len(acc) else _NAN
    row["best_accuracy"] = float(acc.max()) if len(acc) else _NAN
    row["final_test_loss"] = float(r["test_loss"].dropna().iloc[-1]) \
        if len(r) and r["test_loss"].notna().any() else _NAN
    row["bytes_up"] = int(r["bytes_up"].sum()) if len(r) else 0
    row["bytes_down"] = int(r["bytes_down"].sum()) if len(r) else 0
    setup = run.setup[run.setup["client"] != S.SYSTEM_CLIENT] if len(run.setup) else run.setup
    row["bytes_setup"] = int((setup["header_bytes"].astype(np.int64)
                              + setup["payload_bytes"].astype(np.int64)).sum()) if len(setup) else 0
    row["bytes_system"] = int(run.system["bytes"].sum()) if len(run.system) else 0
    row["bytes_total"] = row["bytes_up"] + row["bytes_down"]
    row["bytes_total_incl_setup"] = row["bytes_total"] + row["bytes_setup"]
    n_clients = run.clients["client"].nunique() if len(run.clients) else 0
    row["n_clients_seen"] = int(n_clients)
    row["bytes_up_per_client"] = row["bytes_up"] / n_clients if n_clients else _NAN
    row["bytes_down_per_client"] = row["bytes_down"] / n_clients if n_clients else _NAN
    row["target_accuracy"] = _NAN if target_accuracy is None else float(target_accuracy)
    row["round_to_target"] = row["bytes_to_target"] = _NAN
    if target_accuracy is not None and len(r):
        hit = np.flatnonzero(r["test_accuracy"].to_numpy(float) >= target_accuracy)
        if hit.size:
            row["round_to_target"] = int(r["round"].iloc[hit[0]])
            row["bytes_to_target"] = int(per_round.iloc[: hit[0] + 1].sum())
    row["mean_round_s"] = float(r["wall_s"].mean()) if len(r) else _NAN
    for col in S.TIME_COLUMNS:
        row[f"mean_{col}"] = float(r[col].mean()) if len(r) else _NAN
    row.update(_ratios(run))
    ev = run.events
    row["n_events"] = len(ev)
    row["n_errors"] = int((ev["level"] == "error").sum()) if len(ev) else 0
    row.update({f"config.{k}": v for k, v in flatten_config(run.config).items()})
    return row


def run_paths(paths_or_folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]
              ) -> list[Path]:
    """Run-log files named by a file, a folder (searched recursively for ``*.h5``) or a list."""
    items = [paths_or_folder] if isinstance(paths_or_folder, (str, os.PathLike)) \
        else list(paths_or_folder)
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(p.rglob("*.h5")))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"no run log or folder at {p}")
    return out


def read_runs(paths_or_folder: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
              *, target_accuracy: float | None = None) -> pd.DataFrame:
    """One :func:`run_metrics` row per run log (config settings as ``config.<key>`` columns)."""
    rows = [run_metrics(read_run(p), target_accuracy) for p in run_paths(paths_or_folder)]
    return pd.DataFrame(rows)


def _fmt_bytes(n: float) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3f} {unit}"
    return f"{int(n)} B"


def _fmt(x: Any, spec: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def summarize(path: str | os.PathLike[str], target_accuracy: float | None = None) -> str:
    """Human-readable summary of one run log (``python -m fedsqueeze info runs/x.h5``)."""
    run = read_run(path)
    m = run_metrics(run, target_accuracy)
    head = [("file", str(run.path)), ("schema", f"{S.SCHEMA_NAME} {run.schema_version}"),
            ("status", m["state"] + (f" ({run.status['error']})" if run.status["error"] else "")),
            ("method", m["method"]), ("compressor", m["compressor"] or "n/a"),
            ("dataset", m["dataset"] or "n/a"), ("parameters D", run.n_params)]
    for key in ("run_seed", "n_ranks", "git_commit", "host", "slurm_job_id",
                "slurm_array_task_id"):
        if run.meta.get(key) not in (None, ""):
            head.append((key, run.meta[key]))
    settings = [(k, v) for k, v in flatten_config(run.config).items()
                if k.split(".")[0] in ("compress", "fl", "data", "seed", "method")]
    results = [("rounds done", m["rounds_done"]), ("last round", m["last_round"]),
               ("final accuracy", _fmt(m["final_accuracy"])),
               ("best accuracy", _fmt(m["best_accuracy"])),
               ("final test loss", _fmt(m["final_test_loss"]))]
    if target_accuracy is not None:
        results += [(f"round to {target_accuracy:g}", _fmt(m["round_to_target"], "")),
                    (f"bytes to {target_accuracy:g}", _fmt_bytes(m["bytes_to_target"]))]
    n_cl = m["n_clients_seen"]
    traffic = [
        ("up", _fmt_bytes(m["bytes_up"]), _fmt_bytes(m["bytes_up_per_client"]),
         _fmt(m["ratio_up"], ".2f"), _fmt(m["paper_ratio_up"], ".2f")),
        ("down", _fmt_bytes(m["bytes_down"]), _fmt_bytes(m["bytes_down_per_client"]),
         _fmt(m["ratio_down"], ".2f"), _fmt(m["paper_ratio_down"], ".2f")),
        ("setup", _fmt_bytes(m["bytes_setup"]), "", "", ""),
        ("total incl. setup", _fmt_bytes(m["bytes_total_incl_setup"]), "", "", ""),
        ("system (not counted)", _fmt_bytes(m["bytes_system"]), "", "", ""),
    ]
    wall = m["mean_round_s"]
    has_wall = not math.isnan(wall) and wall > 0
    times = [(c, _fmt(m[f"mean_{c}"], ".4f"),
              _fmt(100 * m[f"mean_{c}"] / wall if has_wall else _NAN, ".1f"))
             for c in S.TIME_COLUMNS]
    times.append(("wall_s", _fmt(wall, ".4f"), "100.0" if has_wall else "n/a"))
    ev = run.events
    by_level = ev["level"].value_counts().to_dict() if len(ev) else {}
    parts = [
        tabulate(head, tablefmt="plain"),
        "settings\n" + (tabulate(settings, tablefmt="plain") if settings else "(none)"),
        "results\n" + tabulate(results, tablefmt="plain"),
        f"traffic ({n_cl} clients seen)\n" + tabulate(
            traffic, headers=["", "total", "per client", "vs f32 dense", "paper-style"],
            tablefmt="simple"),
        "mean round time (s)\n" + tabulate(times, headers=["", "seconds", "% of wall"],
                                           tablefmt="simple"),
        f"events: {len(ev)}" + (" (" + ", ".join(f"{k} {v}" for k, v in
                                                 sorted(by_level.items())) + ")"
                                if by_level else ""),
    ]
    return "\n\n".join(parts) + "\n"

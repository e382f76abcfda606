"""Report tables and plots over many run logs, and the status of a sweep folder.

Runs are read only through :mod:`fedsqueeze.log` (``read_run``). Plots are drawn on
``matplotlib.figure.Figure`` objects rendered by the Agg canvas, so no pyplot state or global
backend is touched. Megabytes are 10^6 bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tabulate import tabulate

from .errors import LogSchemaError
from .log.reader import Run, read_run, read_status
from .log.schema import TIME_COLUMNS
from .log.summary import run_labels, run_metrics

__all__ = ["report", "status", "load_runs", "plot_data", "STATE_LABELS"]

MB = 1e6
STATE_LABELS = {"completed": "done", "running": "running", "failed": "failed",
                "preempted": "preempted"}
"""How ``status`` names the run-log states."""


def _manifest(folder: Path) -> list[dict[str, Any]] | None:
    path = folder / "manifest.json"
    if not path.is_file():
        return None
    entries = json.loads(path.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "h5" in e
                                                for e in entries):
        raise ValueError(f"{path}: expected a list of {{index, name, h5, overrides}} objects")
    return entries


def _sweep_entries(folder: Path) -> list[dict[str, Any]]:
    """Manifest entries of ``folder`` (h5 resolved against it), or one entry per ``*.h5``."""
    entries = _manifest(folder)
    if entries is None:
        return [{"index": i, "name": p.stem, "h5": p, "overrides": ""}
                for i, p in enumerate(sorted(folder.rglob("*.h5")))]
    out = []
    for i, e in enumerate(entries):
        h5 = Path(e["h5"])
        out.append({"index": e.get("index", i), "name": e.get("name", h5.stem),
                    "h5": h5 if h5.is_absolute() else folder / h5,
                    "overrides": e.get("overrides", "")})
    return out


def load_runs(inputs: Sequence[str | os.PathLike[str]]
              ) -> tuple[list[tuple[str, str, Run]], list[tuple[str, str]]]:
    """``(group, label, Run)`` for every readable run named by ``inputs``, and the skipped ones.

    An input is a run-log file (group: its folder's name) or a folder (group: the folder's
    name; runs from its ``manifest.json`` if present, else every ``*.h5`` below it). Files
    that do not exist yet (pending runs) are left out; unreadable ones are returned as
    ``(path, reason)``.
    """
    runs: list[tuple[str, str, Run]] = []
    skipped: list[tuple[str, str]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            named = [(p.name, str(e["name"]), Path(e["h5"])) for e in _sweep_entries(p)]
        elif p.is_file():
            named = [(p.parent.name, p.stem, p)]
        else:
            raise FileNotFoundError(f"no run log or folder at {p}")
        for group, label, h5 in named:
            if not h5.is_file():
                continue
            try:
                runs.append((group, label, read_run(h5)))
            except (OSError, KeyError, ValueError, LogSchemaError) as e:
                skipped.append((str(h5), f"{type(e).__name__}: {e}"))
    labels = [lab for _, lab, _ in runs]
    if len(set(labels)) < len(labels):
        runs = [(g, f"{g}/{lab}", r) for g, lab, r in runs]
    return runs, skipped


def plot_data(runs: Sequence[tuple[str, str, Run]]) -> dict[str, pd.DataFrame]:
    """The data frames behind each report plot (one row per plotted point or bar)."""
    curves, breakdown, clients = [], [], []
    for group, label, run in runs:
        method = run_labels(run)["method"]
        key = {"group": group, "label": label, "method": method}
        r = run.rounds
        if len(r):
            per_round = r["bytes_up"].to_numpy(np.float64) + r["bytes_down"].to_numpy(np.float64)
            curves.append(pd.DataFrame({**key, "round": r["round"].to_numpy(np.int64),
                                        "cum_mb": np.cumsum(per_round) / MB,
                                        "test_accuracy": r["test_accuracy"].to_numpy(float)}))
            means = {c: float(r[c].mean()) for c in (*TIME_COLUMNS, "wall_s")}
            parts = sum(0.0 if np.isnan(means[c]) else means[c] for c in TIME_COLUMNS)
            means["other"] = max(means["wall_s"] - parts, 0.0) if not np.isnan(
                means["wall_s"]) else 0.0
            breakdown.append({**key, **means})
        c = run.clients
        if len(c):
            per = c.groupby("client")[["bytes_up", "bytes_down"]].sum().reset_index()
            per["bytes_total"] = per["bytes_up"] + per["bytes_down"]
            clients.append(per.assign(**key))
    cols = ["group", "label", "method", "round", "cum_mb", "test_accuracy"]
    acc = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=cols)
    return {
        "accuracy_vs_mb": acc[cols].dropna(subset=["test_accuracy"]).reset_index(drop=True),
        "accuracy_vs_round": acc[["group", "label", "method", "round", "test_accuracy"]]
        .dropna(subset=["test_accuracy"]).reset_index(drop=True),
        "time_breakdown": pd.DataFrame(breakdown, columns=[
            "group", "label", "method", *TIME_COLUMNS, "other", "wall_s"]),
        "client_bytes": (pd.concat(clients, ignore_index=True) if clients else pd.DataFrame(
            columns=["client", "bytes_up", "bytes_down", "bytes_total", "group", "label",
                     "method"]))[["group", "label", "method", "client", "bytes_up",
                                  "bytes_down", "bytes_total"]],
    }


def _colors(methods: Sequence[str]) -> dict[str, Any]:
    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(set(methods)))}


def _save(fig: Figure, path: Path) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return str(path)


def _plot_curves(df: pd.DataFrame, x: str, path: Path, *, logx: bool, xlabel: str) -> str:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(df["method"].tolist())
    for label, d in df.groupby("label", sort=True):
        d = d[d[x] > 0] if logx else d
        ax.plot(d[x], d["test_accuracy"], marker=".", color=colors[d["method"].iloc[0]],
                label=f"{label} ({d['method'].iloc[0]})")
    if logx:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="test accuracy")
    ax.grid(True, alpha=0.3)
    if len(df):
        ax.legend(fontsize="small")
    return _save(fig, path)


def _plot_breakdown(df: pd.DataFrame, path: Path) -> str:
    fig = Figure(figsize=(max(5, 0.6 * len(df) + 3), 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(df))
    bottom = np.zeros(len(df))
    for col in (*TIME_COLUMNS, "other"):
        h = df[col].fillna(0.0).to_numpy(float)
        ax.bar(x, h, bottom=bottom, label=col)
        bottom += h
    ax.set_xticks(x, df["label"].tolist(), rotation=45, ha="right")
    ax.set(ylabel="mean seconds per round")
    if len(df):
        ax.legend(fontsize="small")
    return _save(fig, path)


def _plot_clients(df: pd.DataFrame, path: Path) -> str:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    labels = sorted(df["label"].unique())
    data = [df.loc[df["label"] == lab, "bytes_total"].to_numpy(float) / MB for lab in labels]
    if data:
        ax.boxplot(data, tick_labels=labels)
        ax.tick_params(axis="x", rotation=45)
    ax.set(ylabel="MB per client (up + down, all rounds)")
    return _save(fig, path)


def _markdown(summary: pd.DataFrame, target: float | None) -> str:
    lines = ["# fedsqueeze report", ""]
    if target is not None:
        lines += [f"Target accuracy: {target:g}", ""]
    fixed = ["label", "method", "final_accuracy", "bytes_up_MB", "bytes_down_MB"]
    tail = (["bytes_to_target_MB"] if target is not None else []) + [
        "mean_round_s", *(f"mean_{c}" for c in TIME_COLUMNS), "state"]
    for group, g in summary.groupby("group", sort=True):
        settings = [c for c in g.columns if c.startswith("config.")
                    and g[c].astype(str).nunique() > 1]
        t = g.assign(bytes_up_MB=g["bytes_up"] / MB, bytes_down_MB=g["bytes_down"] / MB,
                     bytes_to_target_MB=g["bytes_to_target"] / MB)
        t = t[fixed[:2] + settings + fixed[2:] + tail]
        t.columns = [c.removeprefix("config.") for c in t.columns]
        lines += [f"## {group}", "", tabulate(t, headers="keys", tablefmt="github",
                                               showindex=False, floatfmt=".4g"), ""]
    return "\n".join(lines)


def report(inputs: list[str], out_dir: str, *, target_accuracy: float | None = None
           ) -> dict[str, Any]:
    """Summary tables and plots for the runs named by ``inputs`` (files or sweep folders).

    Writes ``summary.csv`` (every :func:`fedsqueeze.log.run_metrics` column plus group and
    label), ``summary.md`` (one table per group with the settings that vary in it) and four PNG
    plots into ``out_dir``.

    Returns
    -------
    dict
        ``summary_csv``, ``summary_md``: paths (also under ``tables``); ``plots``: name -> PNG
        path; ``data``: name -> the DataFrame behind that plot; ``summary``: the summary
        DataFrame; ``skipped``: ``(path, reason)`` of unreadable run logs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, skipped = load_runs(inputs)
    rows = [{"group": g, "label": lab, **run_metrics(r, target_accuracy)} for g, lab, r in runs]
    summary = pd.DataFrame(rows)
    if summary.empty:
        summary = pd.DataFrame(columns=["group", "label", "method"])
    csv_path, md_path = out / "summary.csv", out / "summary.md"
    summary.to_csv(csv_path, index=False)
    md_path.write_text(_markdown(summary, target_accuracy) if len(summary)
                       else "# fedsqueeze report\n\nNo readable runs.\n")
    data = plot_data(runs)
    plots = {
        "accuracy_vs_mb": _plot_curves(data["accuracy_vs_mb"], "cum_mb",
                                       out / "accuracy_vs_mb.png", logx=True,
                                       xlabel="cumulative MB (up + down, per-client bytes)"),
        "accuracy_vs_round": _plot_curves(data["accuracy_vs_round"], "round",
                                          out / "accuracy_vs_round.png", logx=False,
                                          xlabel="round"),
        "time_breakdown": _plot_breakdown(data["time_breakdown"], out / "time_breakdown.png"),
        "client_bytes": _plot_clients(data["client_bytes"], out / "client_bytes.png"),
    }
    tables = {"summary_csv": str(csv_path), "summary_md": str(md_path)}
    return {**tables, "tables": tables, "plots": plots, "data": data, "summary": summary,
            "skipped": skipped}


def status(sweep_folder: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run of a sweep folder: done / running / failed / preempted / pending.

    Runs come from ``manifest.json`` (a list of ``{"index", "name", "h5", "overrides"}``) or,
    without one, from the ``*.h5`` files in the folder. A file being written is read through
    SWMR. ``age_s`` is the time since the file last changed: a ``running`` run whose writer
    was killed stays ``running`` with a growing age.
    """
    folder = Path(sweep_folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no sweep folder at {folder}")
    rows = []
    now = time.time()
    for e in _sweep_entries(folder):
        h5 = Path(e["h5"])
        row = {"index": e["index"], "name": e["name"], "h5": str(h5),
               "overrides": e["overrides"] if isinstance(e["overrides"], str)
               else json.dumps(e["overrides"]), "state": "pending", "last_round": None,
               "rounds_done": 0, "error": None, "age_s": None}
        if h5.is_file():
            row["age_s"] = round(now - h5.stat().st_mtime, 1)
            try:
                st = read_status(h5)
            except (OSError, KeyError, ValueError, LogSchemaError) as exc:
                row.update(state="failed", error=f"unreadable: {type(exc).__name__}: {exc}")
            else:
                row.update(state=STATE_LABELS.get(st["state"], st["state"]),
                           last_round=st["last_round"], rounds_done=st["rounds_done"],
                           error=st["error"])
        rows.append(row)
    return pd.DataFrame(rows, columns=["index", "name", "h5", "overrides", "state", "last_round",
                                       "rounds_done", "error", "age_s"])

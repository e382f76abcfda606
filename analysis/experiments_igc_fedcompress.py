"""Measured numbers for the IGC (#5) and FedCompress (#6) issues: runs the jobs, builds the tables.

Suites (each a list of runs = job file + ``--set`` overrides, ``mpiexec -n 3`` each, sequential):

* ``igc_quickstart``: IGC static / ksub (K = 4) / time-varying at d = 256 against FedAvg, top-k +
  EF and count sketch (FetchSGD) byte-matched to the IGC upload, on the quickstart setup
  (digits, DigitsMLP D = 4,810): ``jobs/igc_quickstart*.toml``.
* ``igc_wide``: the same on the 1,034,810-parameter ``cnn1d_wide`` on MNIST-1D at d = 16,384:
  ``jobs/igc_cnn1d_wide*.toml``.
* ``igc``: the METHODS.md 8.2 small target (MNIST-1D MLP, d = 256 and 1024, 200 rounds):
  ``jobs/igc_variants.toml`` and its baselines (not part of ``all``).
* ``fedcompress``: FedAvg (10 and 5 local epochs), client-only clustering and FedCompress on the
  digits setup of ``jobs/fedcompress.toml`` (DigitsCNN); ``fedcompress_diag`` adds Lloyd steps.
* ``fedcompress_wide``: FedAvg (4 epochs), client-only clustering and FedCompress on
  ``cnn1d_wide`` / MNIST-1D: ``jobs/*_cnn1d_wide.toml``.

Every number in the tables is read from the run logs (``fedsqueeze.log.read_run``) or from the
inference benchmark's JSON output; nothing is typed in. A run whose log exists, is completed and
has the requested rounds and seed is not repeated. ``--rounds`` defaults to the job file's.

    python analysis/experiments_igc_fedcompress.py all                 # everything below
    python analysis/experiments_igc_fedcompress.py run igc_quickstart --rounds 30
    python analysis/experiments_igc_fedcompress.py bench fedcompress   # inference speed
    python analysis/experiments_igc_fedcompress.py tables

Outputs (default ``--out /tmp/exp_igc_fc``, outside the repository): ``<suite>/<name>_s<seed>.h5``,
``<suite>_inference.json``, ``igc_results.md``, ``fedcompress_results.md``, ``*_results.csv``.
``tables --update-docs`` also writes the two markdown blocks into ``docs/igc.md`` and
``docs/fedcompress.md`` between ``<!-- results:begin -->`` and ``<!-- results:end -->``.
Run the jobs under ``nice`` on a shared machine: ``nice -n 10 python analysis/...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


# -- run specifications ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """One run: a job file plus ``--set`` overrides; ``label``/``d`` are table keys."""

    name: str
    job: str
    label: str
    d: int | None
    sets: tuple[str, ...] = field(default_factory=tuple)


def igc_specs() -> list[Spec]:
    """METHODS.md 8.2 small target, byte matching as written in the job files."""
    out = []
    for variant in ("static", "ksub", "timevarying"):
        for d, lr in ((256, 2.0), (1024, 0.5)):  # theta'-space lr of jobs/igc_variants.toml
            out.append(Spec(f"igc_{variant}_d{d}", "jobs/igc_variants.toml",
                            f"IGC {variant}" + (" (K = 4)" if variant == "ksub" else ""), d,
                            (f'method.variant="{variant}"', f"method.d={d}", f"method.lr={lr}")))
    out.append(Spec("fedavg", "jobs/igc_topk_ef.toml", "FedAvg (dense f32)", None,
                    ('compress.up={ id = "identity" }',)))
    for d, rho in ((256, 0.0126), (1024, 0.0536)):
        out.append(Spec(f"topk_ef_d{d}", "jobs/igc_topk_ef.toml", f"top-k + EF (rho = {rho})", d,
                        (f'compress.up={{ id = "topk", rho = {rho}, error_feedback = true }}',)))
    for d, cols in ((256, 51), (1024, 204)):
        out.append(Spec(f"countsketch_d{d}", "jobs/igc_countsketch.toml",
                        f"count sketch / FetchSGD (5 x {cols})", d,
                        (f'compress.up={{ id = "countsketch", rows = 5, cols = {cols} }}',)))
    return out


def _igc_setup_specs(prefix: str, d: int, rho: float, cols: int) -> list[Spec]:
    """IGC variants at one d plus FedAvg and the byte-matched baselines of ``jobs/<prefix>*``."""
    out = [Spec(f"igc_{v}_d{d}", f"jobs/{prefix}.toml",
                f"IGC {v}" + (" (K = 4)" if v == "ksub" else ""), d, (f'method.variant="{v}"',))
           for v in ("static", "ksub", "timevarying")]
    out.append(Spec("fedavg", f"jobs/{prefix}_topk_ef.toml", "FedAvg (dense f32)", None,
                    ('compress.up={ id = "identity" }',)))
    out.append(Spec(f"topk_ef_d{d}", f"jobs/{prefix}_topk_ef.toml",
                    f"top-k + EF (rho = {rho})", d))
    out.append(Spec(f"countsketch_d{d}", f"jobs/{prefix}_countsketch.toml",
                    f"count sketch / FetchSGD (5 x {cols})", d))
    return out


def igc_quickstart_specs() -> list[Spec]:
    return _igc_setup_specs("igc_quickstart", 256, 0.0418, 51)


def igc_wide_specs() -> list[Spec]:
    return _igc_setup_specs("igc_cnn1d_wide", 16384, 0.012, 3276)


def fedcompress_specs() -> list[Spec]:
    """METHODS.md 8.3 small target (digits, DigitsCNN)."""
    return [
        Spec("fedavg_e10", "jobs/fedcompress_fedavg.toml", "FedAvg, 10 epochs", None,
             ("train.epochs=10",)),
        Spec("fedavg_e5", "jobs/fedcompress_fedavg.toml", "FedAvg, 5 epochs (released)", None,
             ("train.epochs=5",)),
        Spec("client_clustering", "jobs/client_clustering.toml", "client-only clustering", None),
        Spec("fedcompress", "jobs/fedcompress.toml", "FedCompress", None),
    ]


def fedcompress_wide_specs() -> list[Spec]:
    """cnn1d_wide (D = 1,034,810) on MNIST-1D; FedAvg with the same local compute (4 epochs)."""
    return [
        Spec("fedavg_e4", "jobs/fedcompress_fedavg_cnn1d_wide.toml", "FedAvg, 4 epochs", None),
        Spec("client_clustering", "jobs/client_clustering_cnn1d_wide.toml",
             "client-only clustering", None),
        Spec("fedcompress", "jobs/fedcompress_cnn1d_wide.toml", "FedCompress", None),
    ]


def fedcompress_diag_specs() -> list[Spec]:
    """Diagnostic, not the reference configuration: 10 Lloyd steps after the k-means++ seeding
    (``method.kmeans_iters = 10``) on the clients and the server, to see how much of the
    accuracy gap comes from the single-candidate k-means++ seeding (see docs/fedcompress.md)."""
    return [
        Spec("client_clustering_lloyd10", "jobs/client_clustering.toml",
             "client-only clustering, kmeans_iters = 10 (diagnostic)", None,
             ("method.kmeans_iters=10",)),
        Spec("fedcompress_lloyd10", "jobs/fedcompress.toml",
             "FedCompress, kmeans_iters = 10 (diagnostic)", None, ("method.kmeans_iters=10",)),
    ]


SUITES = {"igc": igc_specs, "igc_quickstart": igc_quickstart_specs, "igc_wide": igc_wide_specs,
          "fedcompress": fedcompress_specs, "fedcompress_wide": fedcompress_wide_specs,
          "fedcompress_diag": fedcompress_diag_specs}
ALL = ("igc_quickstart", "fedcompress", "igc_wide", "fedcompress_wide")
"""The suites ``all`` runs, in this order (the cheap quickstart ones first)."""


def job_rounds(job: str) -> int:
    import tomllib
    with open(ROOT / job, "rb") as f:
        return int(tomllib.load(f)["fl"]["rounds"])


def run_name(spec: Spec, seed: int) -> str:
    return f"{spec.name}_s{seed}"


def _done(path: Path, rounds: int, seed: int) -> bool:
    if not path.is_file():
        return False
    from fedsqueeze.log import read_run
    try:
        run = read_run(path)
    except Exception:  # noqa: BLE001 - a broken log is simply rerun
        return False
    return (run.status["state"] == "completed" and len(run.rounds) == rounds
            and run.config["fl"]["rounds"] == rounds and run.config["seed"] == seed)


def run_suite(suite: str, out: Path, rounds: int | None, seeds: list[int], ranks: int,
              only: list[str] | None, dry: bool) -> int:
    folder = out / suite.removesuffix("_diag")
    folder.mkdir(parents=True, exist_ok=True)
    mpiexec = Path(sys.executable).with_name("mpiexec")
    failures = 0
    for seed in seeds:
        for spec in SUITES[suite]():
            if only and spec.name not in only:
                continue
            name = run_name(spec, seed)
            h5 = folder / f"{name}.h5"
            n_rounds = rounds or job_rounds(spec.job)
            if _done(h5, n_rounds, seed):
                print(f"[skip] {name}: completed log {h5}", flush=True)
                continue
            cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks),
                   sys.executable, "-m", "fedsqueeze", "run", spec.job, "--out", str(folder),
                   "--name", name, "--no-progress", "--overwrite",
                   "--set", f"fl.rounds={n_rounds}", "--set", f"seed={seed}"]
            for s in spec.sets:
                cmd += ["--set", s]
            print(f"[run] {shlex.join(cmd)}", flush=True)
            if dry:
                continue
            t0 = time.time()
            proc = subprocess.run(cmd, cwd=ROOT)
            print(f"[{'ok' if proc.returncode == 0 else 'FAILED'}] {name} "
                  f"({time.time() - t0:.0f} s, exit {proc.returncode})", flush=True)
            failures += proc.returncode != 0
    return failures


def run_bench(suite: str, out: Path, seed: int, runs: int) -> int:
    """Inference benchmark of the final FedCompress model of ``suite`` with its own codebooks.

    ``benchmarks/fedcompress_inference.py`` keeps a tensor's codebook only when it has at most
    ``--k`` distinct values and otherwise re-clusters it to ``--k`` (default 8); the final model
    of a run usually has k > 8, so ``--k`` is set to the run's final k (``k_next`` of the last
    round, at least the largest distinct-value count of a clustered tensor).
    """
    from fedsqueeze.log import read_run
    from fedsqueeze.methods.weight_clustering import model_layout

    h5 = out / suite / f"fedcompress_s{seed}.h5"
    run = read_run(h5)
    k = int(run.rounds["k_next"].iloc[-1])
    from fedsqueeze.data.datasets import load_dataset
    from fedsqueeze.models import build_model
    cfg = run.config
    ds = load_dataset(cfg["data"]["name"], seed=cfg["seed"], path=cfg["data"]["path"],
                      **cfg["data"]["options"])
    model = build_model(cfg["model"]["name"], input_shape=tuple(ds.input_shape),
                        num_classes=int(ds.num_classes), seed=cfg["seed"])
    layers = cfg["method"].get("cluster_layers", "auto")
    pos, w = 0, run.model
    for numel, clustered in model_layout(model, layers):
        if clustered:
            k = max(k, int(np.unique(w[pos:pos + numel]).size))
        pos += numel
    cmd = [sys.executable, "benchmarks/fedcompress_inference.py", "--h5", str(h5), "--json",
           str(out / f"{suite}_inference.json"), "--runs", str(runs), "--k", str(k),
           "--cluster-layers", layers]
    print(f"[bench] {shlex.join(cmd)}", flush=True)
    return subprocess.run(cmd, cwd=ROOT).returncode


# -- tables ---------------------------------------------------------------------------------------
def _load(folder: Path, specs: list[Spec], seeds: list[int], quiet: bool = False):
    from fedsqueeze.log import read_run
    out = []
    for spec in specs:
        for seed in seeds:
            h5 = folder / f"{run_name(spec, seed)}.h5"
            if h5.is_file():
                out.append((spec, seed, read_run(h5)))
            elif not quiet:
                print(f"[missing] {h5}", file=sys.stderr)
    return out


def _frames(run) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-message rows of real clients, split into (up, down); bytes = header + payload."""
    from fedsqueeze.log import schema as S
    c = run.comm[run.comm["client"] != S.SYSTEM_CLIENT].copy()
    c["bytes"] = c["header_bytes"].astype(np.int64) + c["payload_bytes"].astype(np.int64)
    return c[c["direction"] == S.DIRECTION_UP], c[c["direction"] == S.DIRECTION_DOWN]


def _fmt(x, spec=",.0f"):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return format(x, spec)


def _us(seconds: float | None) -> str:
    """Microseconds, or "not measured" for a missing (null) benchmark entry."""
    return "not measured" if seconds is None else _fmt(seconds * 1e6, ".1f")


def _x(ratio: float | None) -> str:
    return "not measured" if ratio is None else _fmt(ratio, ".3f") + "×"


def _md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def _acc_at_budget(run, budget: float) -> tuple[float, int]:
    """Test accuracy after the last round whose cumulative up + down bytes are <= budget."""
    r = run.rounds
    cum = (r["bytes_up"].astype(np.int64) + r["bytes_down"].astype(np.int64)).cumsum().to_numpy()
    ok = np.flatnonzero(cum <= budget)
    if not ok.size:
        return math.nan, 0
    return float(r["test_accuracy"].iloc[ok[-1]]), int(ok[-1]) + 1


def igc_table(suite: str, out: Path, seeds: list[int]) -> tuple[str, pd.DataFrame]:
    from fedsqueeze.log.summary import dense_bytes, run_metrics
    runs = _load(out / suite, SUITES[suite](), seeds)
    if not runs:
        return "(no IGC runs found)\n", pd.DataFrame()
    rows = []
    for spec, seed, run in runs:
        m = run_metrics(run)
        up, down = _frames(run)
        acc = run.rounds["test_accuracy"].to_numpy(float)
        rows.append({
            "name": spec.name, "label": spec.label, "d": spec.d, "seed": seed,
            "rounds": len(run.rounds), "state": run.status["state"], "D": run.n_params,
            "up_msgs": len(up), "up_B_mean": up["bytes"].mean(), "up_B_min": up["bytes"].min(),
            "up_B_max": up["bytes"].max(),
            "up_ratio": m["ratio_up"], "paper_ratio_up": m["paper_ratio_up"],
            "down_B_mean": down["bytes"].mean(), "down_B_min": down["bytes"].min(),
            "down_B_max": down["bytes"].max(), "down_ratio": m["ratio_down"],
            "bytes_up": m["bytes_up"], "bytes_down": m["bytes_down"],
            "bytes_total": m["bytes_total"],
            "final_acc": acc[-1], "last5_acc": acc[-5:].mean(), "best_acc": acc.max(),
            "final_test_loss": m["final_test_loss"],
            "down_full": int(run.rounds["down_full"].sum()) if "down_full" in run.rounds else None,
            "down_replay": (int(run.rounds["down_replay"].sum())
                            if "down_replay" in run.rounds else None),
            "mean_round_s": m["mean_round_s"],
            "dense_up": dense_bytes(1, run.n_params), "dense_down": dense_bytes(0, run.n_params),
        })
    df = pd.DataFrame(rows)
    D = int(df["D"].iloc[0])
    R = int(df["rounds"].max())
    agg = df.groupby(["name"], sort=False).agg(
        label=("label", "first"), d=("d", "first"), n_seeds=("seed", "nunique"),
        up_B=("up_B_mean", "mean"), up_min=("up_B_min", "min"), up_max=("up_B_max", "max"),
        up_ratio=("up_ratio", "mean"), paper_up=("paper_ratio_up", "mean"),
        down_B=("down_B_mean", "mean"),
        down_min=("down_B_min", "min"), down_max=("down_B_max", "max"),
        down_ratio=("down_ratio", "mean"), total=("bytes_total", "mean"),
        final=("final_acc", "mean"), final_sd=("final_acc", "std"), last5=("last5_acc", "mean"),
        best=("best_acc", "mean")).reset_index()

    def bytes_cell(mean, lo, hi):
        return _fmt(mean) if lo == hi else f"{_fmt(mean)} ({_fmt(lo)}–{_fmt(hi)})"

    nseed = sorted(set(df["seed"]))
    acc_note = "mean ± sd over seeds " + ", ".join(map(str, nseed)) if len(nseed) > 1 else \
        f"seed {nseed[0]}"
    t = pd.DataFrame({
        "method": agg["label"],
        "d (matched)": [("–" if pd.isna(v) else int(v)) for v in agg["d"]],
        "upload B/client/round": [bytes_cell(a, b, c) for a, b, c in
                                  zip(agg["up_B"], agg["up_min"], agg["up_max"], strict=True)],
        "upload ratio vs f32": [_fmt(v, ".1f") + "×" for v in agg["up_ratio"]],
        "paper-style up ratio (32D / bits)": [_fmt(v, ".1f") + "×" for v in agg["paper_up"]],
        "download B/client/round": [bytes_cell(a, b, c) for a, b, c in
                                    zip(agg["down_B"], agg["down_min"], agg["down_max"],
                                        strict=True)],
        "download ratio vs f32": [_fmt(v, ".1f") + "×" for v in agg["down_ratio"]],
        "final acc": [(_fmt(a, ".3f") + ("" if pd.isna(s) else f" ± {s:.3f}"))
                      for a, s in zip(agg["final"], agg["final_sd"], strict=True)],
        "mean acc, last 5 rounds": [_fmt(v, ".3f") for v in agg["last5"]],
        "best acc": [_fmt(v, ".3f") for v in agg["best"]],
        "total bytes (up + down, MB)": [_fmt(v / 1e6, ".2f") for v in agg["total"]],
    })
    # equal total bytes: accuracy of every run within the total budget of each IGC static run
    budgets = {f"static d = {int(r.d)}": float(r.total) for r in agg.itertuples()
               if r.name.startswith("igc_static")}
    eq_rows = []
    for name, g in df.groupby("name", sort=False):
        row = {"method": g["label"].iloc[0],
               "d (matched)": "–" if pd.isna(g["d"].iloc[0]) else int(g["d"].iloc[0])}
        for bname, b in budgets.items():
            vals = [_acc_at_budget(run, b) for spec, seed, run in runs if spec.name == name]
            accs = [v[0] for v in vals]
            row[f"acc within {b / 1e6:.2f} MB ({bname} total)"] = (
                "never within budget" if all(math.isnan(a) for a in accs) else
                f"{np.nanmean(accs):.3f} (after {int(np.mean([v[1] for v in vals]))} rounds)")
        eq_rows.append(row)
    eq = pd.DataFrame(eq_rows)

    tv = df[df["name"].str.startswith("igc_timevarying")]
    tv_note = "; ".join(
        f"{r.name} seed {r.seed}: {int(r.down_replay):,} replay and "
        f"{int(r.down_full):,} full-model downloads" for r in tv.itertuples())
    cfg = runs[0][2].config
    text = [
        f"Setup (read from the logs): {cfg['data']['name']}, model {cfg['model']['name']} "
        f"(D = {D:,}), {cfg['data']['clients']} clients, {cfg['data']['partition']} "
        f"alpha = {cfg['data']['alpha']}, fraction {cfg['sampling']['fraction']}, "
        f"{cfg['train']['epochs']} local epoch(s) of {cfg['train']['optimizer']} "
        f"(batch {cfg['train']['batch_size']}, lr {cfg['train']['lr']}), **{R} rounds**, "
        f"{acc_note}, `mpiexec -n 3`. Byte columns are measured frame lengths (24-byte header "
        f"included) from `/comm`, averaged over all messages of the run (min–max in brackets "
        f"when they vary); ratios are `n_messages × dense / Σ bytes` with dense = "
        f"{dense_bytes(1, D):,} B up and {dense_bytes(0, D):,} B down (METHODS.md 0.4). "
        f"Accuracy is centralised test accuracy of the global model ({acc_note}).",
        "",
        _md(t),
        "",
        "Accuracy at equal total bytes (up + down, all clients): the test accuracy after the "
        "last round whose cumulative bytes stay within the total of the IGC static run "
        "(the baselines download a dense model, so they run out of budget early):",
        "",
        _md(eq),
        "",
        f"Time-varying downloads (METHODS.md 2.6, replay or full model, whichever is smaller): "
        f"{tv_note}." if tv_note else "",
        "",
    ]
    return "\n".join(text), df


def fedcompress_table(suite: str, out: Path, seeds: list[int]) -> tuple[str, pd.DataFrame]:
    specs = SUITES[suite]()
    runs = _load(out / suite, specs, seeds)
    if suite == "fedcompress":
        runs += [x for x in _load(out / suite, fedcompress_diag_specs(), seeds, quiet=True)]
    refs = [s.name for s in specs if s.name.startswith("fedavg")]
    ref_label = {s.name: s.label for s in specs}
    if not runs:
        return "(no FedCompress runs found)\n", pd.DataFrame()
    by = {(s.name, seed): run for s, seed, run in runs}
    rows = []
    for spec, seed, run in runs:
        r = run.rounds
        D = run.n_params
        cols = set(r.columns)

        def has(c: str, cols: set = cols) -> bool:
            return c in cols
        wire = int(r["bytes_up"].sum() + r["bytes_down"].sum())
        zipb = (int(r["zip_bytes_up"].sum() + r["zip_bytes_down"].sum())
                if has("zip_bytes_up") else math.nan)
        row = {"name": spec.name, "label": spec.label, "seed": seed, "rounds": len(r), "D": D,
               "state": run.status["state"],
               "bytes_up": int(r["bytes_up"].sum()), "bytes_down": int(r["bytes_down"].sum()),
               "wire_total": wire, "zip_total": zipb,
               "zip_up": int(r["zip_bytes_up"].sum()) if has("zip_bytes_up") else math.nan,
               "zip_down": int(r["zip_bytes_down"].sum()) if has("zip_bytes_down") else math.nan,
               "final_acc": float(r["test_accuracy"].iloc[-1]),
               "last5_acc": float(r["test_accuracy"].iloc[-5:].mean()),
               "best_acc": float(r["test_accuracy"].max()),
               "teacher_final": (float(r["teacher_test_accuracy"].iloc[-1])
                                 if has("teacher_test_accuracy") else math.nan),
               "teacher_last5": (float(r["teacher_test_accuracy"].iloc[-5:].mean())
                                 if has("teacher_test_accuracy") else math.nan),
               "model_bytes": int(r["model_bytes"].iloc[-1]) if has("model_bytes") else 4 * D,
               "model_zip_bytes": (int(r["model_zip_bytes"].iloc[-1]) if has("model_zip_bytes")
                                   else float(r["zip_bytes_down"].iloc[-1]
                                              / r["n_sampled"].iloc[-1])
                                   if has("zip_bytes_down") else math.nan),
               "fedavg_model_zip": (float(r["zip_bytes_down"].iloc[-1] / r["n_sampled"].iloc[-1])
                                    if has("zip_bytes_down") else math.nan),
               "k_traj": ([int(k) for k in r["k_t"]] if has("k_t") else None),
               "k_final_next": int(r["k_next"].iloc[-1]) if has("k_next") else None,
               "mean_round_s": float(r["wall_s"].mean()),
               "t_distill_mean": float(r["t_distill"].mean()) if has("t_distill") else math.nan,
               "up_B_msg": float(r["bytes_up"].sum() / r["n_sampled"].sum()),
               "down_B_msg": float(r["bytes_down"].sum() / r["n_sampled"].sum())}
        rows.append(row)
    df = pd.DataFrame(rows)
    # ratios against FedAvg with the same local compute (refs[0], METHODS.md 3.4 item 7) and
    # any other FedAvg run of the suite, same seed
    r0 = refs[0]
    for ref in refs:
        for col, src in (("ccr_wire", "wire_total"), ("ccr_zip", "zip_total"),
                         ("ccr_up", "bytes_up"), ("ccr_down", "bytes_down"),
                         ("ccr_zip_up", "zip_up"), ("ccr_zip_down", "zip_down")):
            df[f"{col}_vs_{ref}"] = [
                _ref_total(by, ref, s, src, by[(n, s)].rounds["round"]) / v if v else math.nan
                for n, s, v in zip(df["name"], df["seed"], df[src], strict=True)]
    df["mcr_wire"] = 4 * df["D"] / df["model_bytes"]
    zref = {s: by[(r0, s)].rounds for s in seeds if (r0, s) in by}
    df["mcr_zip"] = [(float(zref[s]["zip_bytes_down"].iloc[-1] / zref[s]["n_sampled"].iloc[-1])
                      / z) if s in zref and z == z else math.nan
                     for s, z in zip(df["seed"], df["model_zip_bytes"], strict=True)]

    agg = df.groupby("name", sort=False).mean(numeric_only=True).reset_index()
    labels = {n: lab + ("" if st == "completed" else f" ({st}, {nr} rounds)")
              for n, lab, st, nr in zip(df["name"], df["label"], df["state"], df["rounds"],
                                        strict=True)}
    R = int(df["rounds"].max())
    nseed = sorted(set(df["seed"]))
    seed_note = f"seed {nseed[0]}" if len(nseed) == 1 else f"mean over seeds {nseed}"

    def ratio(v):
        return _fmt(v, ".2f") + "×"

    main = pd.DataFrame({
        "method": [labels[n] for n in agg["name"]],
        "up B/client/round": [_fmt(v) for v in agg["up_B_msg"]],
        "down B/client/round": [_fmt(v) for v in agg["down_B_msg"]],
        "CCR wire (up+down)": [ratio(v) for v in agg[f"ccr_wire_vs_{r0}"]],
        "CCR wire up / down": [f"{ratio(a)} / {ratio(b)}" for a, b in
                               zip(agg[f"ccr_up_vs_{r0}"], agg[f"ccr_down_vs_{r0}"],
                                   strict=True)],
        "CCR zip (up+down)": [ratio(v) for v in agg[f"ccr_zip_vs_{r0}"]],
        "CCR zip up / down": [f"{ratio(a)} / {ratio(b)}" for a, b in
                              zip(agg[f"ccr_zip_up_vs_{r0}"],
                                  agg[f"ccr_zip_down_vs_{r0}"], strict=True)],
        "final model B (wire)": [_fmt(v) for v in agg["model_bytes"]],
        "MCR wire": [ratio(v) for v in agg["mcr_wire"]],
        "final model B (zip)": [_fmt(v) for v in agg["model_zip_bytes"]],
        "MCR zip": [ratio(v) for v in agg["mcr_zip"]],
        "final acc (student / global)": [_fmt(v, ".3f") for v in agg["final_acc"]],
        "acc last 5 rounds": [_fmt(v, ".3f") for v in agg["last5_acc"]],
        "final teacher acc": [_fmt(v, ".3f") for v in agg["teacher_final"]],
        "teacher last 5": [_fmt(v, ".3f") for v in agg["teacher_last5"]],
    })
    vs5 = pd.DataFrame({"method": [labels[n] for n in agg["name"]]})
    for ref in refs[1:]:
        vs5[f"CCR wire vs {ref_label[ref]}"] = [ratio(v) for v in agg[f"ccr_wire_vs_{ref}"]]
        vs5[f"CCR zip vs {ref_label[ref]}"] = [ratio(v) for v in agg[f"ccr_zip_vs_{ref}"]]
    vs5["mean s/round"] = [_fmt(v, ".1f") for v in agg["mean_round_s"]]
    vs5["mean distillation s/round"] = [_fmt(v, ".1f") for v in agg["t_distill_mean"]]
    ktxt = []
    for spec, seed, run in runs:
        if "k_t" in run.rounds:
            ks = [int(k) for k in run.rounds["k_t"]]
            changes = [f"k = {ks[0]} from round 0"] + [
                f"k = {ks[i]} from round {i}" for i in range(1, len(ks)) if ks[i] != ks[i - 1]]
            k_after = int(run.rounds["k_next"].iloc[-1])
            ktxt.append(f"- {spec.label}, seed {seed}: " + "; ".join(changes)
                        + f" (k for the next round after the last: {k_after})")
    cfg = next(run for spec, seed, run in runs if spec.name == "fedcompress").config \
        if any(s.name == "fedcompress" for s, _, _ in runs) else runs[0][2].config
    bench = out / f"{suite}_inference.json"
    btxt = []
    if bench.is_file():
        b = json.loads(bench.read_text())
        bt = pd.DataFrame({
            "batch": [r["batch"] for r in b["rows"]],
            "torch dense µs": [_fmt(r["t_torch_dense_s"] * 1e6, ".1f") for r in b["rows"]],
            "torch clustered µs": [_fmt(r["t_torch_clustered_s"] * 1e6, ".1f") for r in b["rows"]],
            "(i) dense-path ratio": [_fmt(r["ratio_dense_path"], ".3f") + "×" for r in b["rows"]],
            "numba dense µs": [_us(r["t_numba_dense_s"]) for r in b["rows"]],
            "numba LUT µs": [_us(r["t_numba_lut_s"]) for r in b["rows"]],
            "(ii) LUT vs numba dense": [_x(r["ratio_lut_vs_numba_dense"]) for r in b["rows"]],
            "torch dense / LUT": [_x(r["ratio_lut_vs_torch_dense"]) for r in b["rows"]],
        })
        btxt = [f"Inference speed (`benchmarks/fedcompress_inference.py`, final FedCompress model "
                f"of seed {nseed[0]}, clustered tensors k = {b['k']}, median of {b['runs']} runs "
                f"after {b['warmup']} warm-ups, {b['threads']} thread; ratio = t_dense / "
                f"t_clustered, > 1 means the clustered model is faster):", "", _md(bt), ""]
    summary = _fc_summary(agg, bench, r0, ref_label[r0])
    text = [
        f"Setup (read from the logs): {cfg['data']['name']}, model {cfg['model']['name']} "
        f"(D = {int(df['D'].iloc[0]):,}), {cfg['data']['clients']} clients, "
        f"{cfg['data']['partition']}, fraction {cfg['sampling']['fraction']}, "
        f"{cfg['train']['epochs']} + {cfg['method'].get('cluster_epochs', 0)} local epochs, "
        f"clustered layers {cfg['method'].get('cluster_layers', 'auto')}, "
        f"**{R} rounds**, {seed_note}, `mpiexec -n 3`. "
        f"CCR = bytes of \"{ref_label[r0]}\" / method bytes over the same rounds and clients, from "
        "the measured frames (wire) and from the reference's zip-of-HDF5 size of every message "
        "(zip); MCR (wire) = 4·D / ME bytes of the final global model; MCR (zip) = zip size of "
        "the final FedAvg model / zip size of the final model. \"final acc\" is the test "
        "accuracy of the model the server sends (FedCompress: the distilled, clustered "
        "student); \"teacher\" is the FedAvg aggregate before distillation (the reference's "
        "headline accuracy).",
        "",
        summary,
        "",
        "All methods:",
        "",
        _md(main),
        "",
        _md(vs5),
        "",
        "Cluster-count trajectory (`k_t`, the k the clients used in each round):",
        "",
        *ktxt,
        "",
        *btxt,
    ]
    return "\n".join(text), df


# [3P summary of the paper, METHODS.md 3 "Claims"; to be verified against its Table 1]
PAPER = {"ccr": 4.5, "mcr": 4.14, "speed": 1.15}


def _fc_summary(agg: pd.DataFrame, bench: Path, ref: str, ref_label: str) -> str:
    """FedCompress against FedAvg with the same local compute, next to the paper's figures."""
    rows = agg.set_index("name")
    if "fedcompress" not in rows.index or ref not in rows.index:
        return "(FedCompress or FedAvg run missing: no summary)"
    fc, fa = rows.loc["fedcompress"], rows.loc[ref]
    speed = "not measured"
    if bench.is_file():
        b = json.loads(bench.read_text())
        speed = "; ".join(
            f"batch {r['batch']}: dense path {r['ratio_dense_path']:.2f}×"
            + ("" if r["ratio_lut_vs_numba_dense"] is None else
               f", LUT vs Numba dense {r['ratio_lut_vs_numba_dense']:.2f}×, LUT vs torch dense "
               f"{r['ratio_lut_vs_torch_dense']:.2f}×") for r in b["rows"])
    t = pd.DataFrame({
        "quantity": [f"CCR (both directions) vs {ref_label}", "MCR (final model)",
                     "inference speed ratio", "accuracy (mean of the last 5 rounds)"],
        "paper (3P summary, unverified)": [f"≈ {PAPER['ccr']}×", f"≈ {PAPER['mcr']}×",
                                           f"up to {PAPER['speed']}×",
                                           "negligible loss vs FedAvg"],
        "measured, wire": [f"{fc[f'ccr_wire_vs_{ref}']:.2f}×", f"{fc['mcr_wire']:.2f}×",
                           speed, f"student {fc['last5_acc']:.3f}, teacher "
                           f"{fc['teacher_last5']:.3f} vs FedAvg {fa['last5_acc']:.3f} "
                           f"({100 * (fc['last5_acc'] - fa['last5_acc']):+.1f} pp)"],
        "measured, zip (reference metric)": [f"{fc[f'ccr_zip_vs_{ref}']:.2f}×",
                                             f"{fc['mcr_zip']:.2f}×", "–", "–"],
    })
    return f"FedCompress against {ref_label}, next to the paper:\n\n" + _md(t)


def _ref_total(by, ref: str, seed: int, src: str, rounds) -> float:
    """Bytes of the reference run over the rounds ``rounds`` (those of the compared run)."""
    if (ref, seed) not in by:
        return math.nan
    r = by[(ref, seed)].rounds
    r = r[r["round"].isin(rounds)]
    if src == "wire_total":
        return float(r["bytes_up"].sum() + r["bytes_down"].sum())
    if src == "zip_total":
        return float(r["zip_bytes_up"].sum() + r["zip_bytes_down"].sum())
    return float(r[src.replace("zip_up", "zip_bytes_up").replace("zip_down", "zip_bytes_down")]
                 .sum())


def write_docs(doc: Path, block: str) -> None:
    text = doc.read_text()
    body = f"{BEGIN}\n{block.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + body + text[b:]
    else:
        text = text.rstrip() + "\n\n## Results\n\n" + body + "\n"
    doc.write_text(text)


def tables(out: Path, seeds: list[int], update_docs: bool = False,
           notes: dict[str, str | None] | None = None) -> None:
    """Build ``igc_results.md`` / ``fedcompress_results.md`` (+ CSV) from every suite present."""
    out.mkdir(parents=True, exist_ok=True)
    titles = {"igc_quickstart": "Quickstart setup (digits, DigitsMLP)",
              "igc_wide": "1M-parameter model (cnn1d_wide on MNIST-1D)",
              "igc": "METHODS.md 8.2 small target (MNIST-1D MLP)",
              "fedcompress": "Quickstart data (digits, DigitsCNN)",
              "fedcompress_wide": "CNN on MNIST-1D (cnn1d_wide, D = 1,034,810)"}
    for name, suites, fn in (("igc", ("igc_quickstart", "igc_wide", "igc"), igc_table),
                             ("fedcompress", ("fedcompress", "fedcompress_wide"),
                              fedcompress_table)):
        parts, frames = [], []
        for suite in suites:
            if not (out / suite).is_dir():
                continue
            md, df = fn(suite, out, seeds)
            parts.append(f"### {titles[suite]}\n\n{md.strip()}\n")
            if not df.empty:
                frames.append(df.assign(suite=suite))
        md = "\n".join(parts) or "(no runs found)\n"
        if notes and notes.get(name):
            md = md.rstrip() + "\n\n" + Path(notes[name]).read_text().strip() + "\n"
        (out / f"{name}_results.md").write_text(md)
        if frames:
            pd.concat(frames).to_csv(out / f"{name}_results.csv", index=False)
        print(md)
        if update_docs:
            write_docs(ROOT / "docs" / f"{name}.md", md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="/tmp/exp_igc_fc")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a suite's jobs sequentially (mpiexec)")
    r.add_argument("suite", choices=sorted(SUITES))
    r.add_argument("--rounds", type=int, help="default: fl.rounds of each job file")
    r.add_argument("--seeds", type=int, nargs="+", default=[0])
    r.add_argument("--ranks", type=int, default=3)
    r.add_argument("--only", nargs="+", help="spec names (e.g. igc_static_d256 fedavg)")
    r.add_argument("--dry-run", action="store_true")
    b = sub.add_parser("bench", help="inference speed of the final FedCompress model")
    b.add_argument("suite", nargs="?", default="fedcompress",
                   choices=["fedcompress", "fedcompress_wide"])
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--runs", type=int, default=100)
    t = sub.add_parser("tables", help="build the markdown/CSV tables from the logs")
    t.add_argument("--seeds", type=int, nargs="+", default=[0])
    t.add_argument("--update-docs", action="store_true")
    t.add_argument("--notes-igc", help="markdown file appended below the IGC tables")
    t.add_argument("--notes-fedcompress", help="markdown file appended below the FC tables")
    a = sub.add_parser("all", help="run the suites of ALL (job-file rounds), benchmark, tables")
    a.add_argument("--seeds", type=int, nargs="+", default=[0])
    a.add_argument("--ranks", type=int, default=3)
    a.add_argument("--runs", type=int, default=100, help="benchmark repetitions")
    args = ap.parse_args(argv)
    out = Path(args.out)
    os.chdir(ROOT)
    if args.cmd == "run":
        return int(run_suite(args.suite, out, args.rounds, args.seeds, args.ranks, args.only,
                             args.dry_run) > 0)
    if args.cmd == "bench":
        return run_bench(args.suite, out, args.seed, args.runs)
    if args.cmd == "all":
        fails = 0
        for suite in ALL:
            fails += run_suite(suite, out, None, args.seeds, args.ranks, None, False)
            if suite.startswith("fedcompress"):
                fails += run_bench(suite, out, args.seeds[0], args.runs) != 0
        tables(out, args.seeds)
        return int(fails > 0)
    tables(out, args.seeds, args.update_docs,
           {"igc": args.notes_igc, "fedcompress": args.notes_fedcompress})
    return 0


if __name__ == "__main__":
    sys.exit(main())

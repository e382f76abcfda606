"""Many virtual clients on a few ranks: time, memory, disk and load balance at 1k and 10k clients.

    python benchmarks/many_clients.py                # jobs/scale_1k.toml and jobs/scale_10k.toml
    python benchmarks/many_clients.py --ranks 4 --rounds 3
    python benchmarks/many_clients.py --jobs jobs/scale_10k.toml --markdown out.md

Each job runs under MPI through ``benchmarks/profile_round.py``'s per-rank wrapper. Reported:

* setup in this process: ``build_world`` (data, partition, model) CPU time and the time to write
  ``/partition`` and ``/setup`` with ``RunWriter`` (one row per client);
* the round: median wall seconds over rounds 1.., clients trained per second;
* memory: peak RSS of the server rank and its growth from "server constructed" to the end of
  the run (what the rounds cost: aggregation is a streaming mean, so it should not depend on the
  client count), peak RSS of the largest worker;
* per-client state: files and bytes in the shared disk store (``fl.client_state = "disk"``),
  bytes per client, ``client_state_bytes`` as logged;
* load balance of the LPT schedule: per round, the most loaded worker's samples (and
  ``Trainer.train`` CPU seconds) over the mean across workers (1.0 is perfect).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_round import load_avg, run_job  # noqa: E402


def setup_costs(job: str, sets: list[str], tmp: Path) -> dict:
    from fedsqueeze import config as C
    from fedsqueeze.fl.server import setup_rows
    from fedsqueeze.fl.world import build_world
    from fedsqueeze.log.writer import RunWriter

    cfg = C.load(job, C.parse_overrides(sets))
    c0 = time.process_time()
    world = build_world(cfg)
    t_world = time.process_time() - c0
    n = cfg.data.clients
    c0 = time.process_time()
    path = tmp / f"{Path(job).stem}.setup.h5"
    with RunWriter(path, config=cfg.to_dict(), meta={}, n_params=world.n_params,
                   round_columns=[], client_columns=[], overwrite=True) as log:
        log.write_partition(world.parts)
        log.append_setup(setup_rows(n))  # what the server writes at setup
        log.flush()
    t_log = time.process_time() - c0
    return {"cfg": cfg, "world": world, "t_world": t_world, "t_setup_log": t_log,
            "h5_setup_bytes": path.stat().st_size}


def balance(run, ranks: list[dict], samples: np.ndarray) -> tuple[float, float]:
    """Median over rounds of max/mean per-worker samples and train CPU."""
    cl = run.clients[run.clients["status"] == 0]
    s_ratio, t_ratio = [], []
    for t, g in cl.groupby("round"):
        per = g.groupby("rank")["samples"].sum()
        s_ratio.append(per.max() / per.mean())
        cpu = [sum(c for tt, _, _, c in rk["train"] if tt == t) for rk in ranks[1:]]
        cpu = [c for c in cpu if c > 0]
        if cpu:
            t_ratio.append(max(cpu) / statistics.mean(cpu))
    return statistics.median(s_ratio), statistics.median(t_ratio) if t_ratio else float("nan")


def one(job: str, ranks: int, sets: list[str], out: Path) -> list:
    from fedsqueeze.log import read_run

    s = setup_costs(job, sets, out)
    name = Path(job).stem
    res = run_job(job, ranks, out, name, sets)
    run = read_run(res["h5"])
    cfg = s["cfg"]
    rounds = run.rounds[run.rounds["round"] >= 1] if len(run.rounds) > 1 else run.rounds
    wall = float(rounds["wall_s"].median())
    per_round = float(run.rounds["n_received"].median())
    server = res["ranks"][0]
    growth = max(r["rss_mb"] for r in server["rounds"]) - server["rss_server_ready_mb"]
    state = out / f"{name}.client_state"  # fl.run.run_paths(cfg)["state"] with --out, --name
    files = [p for p in state.glob("*.npy")] if state.exists() else []
    disk = sum(p.stat().st_size for p in files)
    sb, tb = balance(run, res["ranks"], s["world"].samples)
    # CPU seconds per round (rounds >= 1): on a shared machine the wall clock mostly measures
    # the neighbours; the CPU time of the ranks does not
    steady = [r for r in server["rounds"] if r["round"] >= 1] or server["rounds"]
    srv_cpu = statistics.median(r["cpu"] for r in steady)
    wk_cpu = statistics.median(
        sum(r["cpu"] for rk in res["ranks"][1:] for r in rk["rounds"] if r["round"] == t)
        for t in {r["round"] for r in steady})
    return [cfg.data.clients, int(per_round), ranks, f"{s['t_world']:.2f}",
            f"{s['t_setup_log']:.2f}", f"{wall:.2f}", f"{per_round / wall:.0f}",
            f"{srv_cpu:.2f}", f"{wk_cpu:.2f}", f"{1e3 * wk_cpu / per_round:.1f}",
            f"{server['rss_start_mb']:.0f} / {server['rss_server_ready_mb']:.0f}",
            f"{server['maxrss_mb']:.0f}", f"{growth:+.1f}",
            f"{max(r['maxrss_mb'] for r in res['ranks'][1:]):.0f}", len(files),
            f"{disk / 2**20:.1f}", f"{disk / max(1, len(files)) / 1024:.1f}",
            f"{int(run.rounds['client_state_bytes'].iloc[-1]) / 2**20:.1f}",
            f"{sb:.3f}", f"{tb:.2f}", f"{res['h5'].stat().st_size / 2**20:.1f}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", nargs="+", default=["jobs/scale_1k.toml", "jobs/scale_10k.toml"])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsq-many-"))
    out.mkdir(parents=True, exist_ok=True)
    sets = [f"fl.rounds={args.rounds}", *args.set]
    load0 = load_avg()
    rows = [one(job, args.ranks, sets, out) for job in args.jobs]
    head = ["clients", "per round", "ranks", "build_world CPU s", "/partition+/setup write s",
            "round wall s (median)", "clients/s", "server CPU s/round",
            "workers CPU s/round (sum)", "worker CPU ms/client",
            "server RSS after imports / server built MiB", "server peak RSS MiB",
            "server RSS growth in rounds MiB", "worker peak RSS MiB", "state files",
            "state MiB", "KiB/client", "client_state_bytes MiB (log)",
            "LPT max/mean samples", "max/mean train CPU", "HDF5 MiB"]
    table = tabulate(rows, headers=head, tablefmt="github")
    env = (f"{' '.join(sets)}; {os.cpu_count()} cores, load average before {load0}, after "
           f"{load_avg()}")
    print(env)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(f"{env}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

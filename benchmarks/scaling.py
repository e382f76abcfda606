"""Strong and weak scaling over MPI ranks on this machine, and a model for multi-node runs.

    python benchmarks/scaling.py                                  # jobs/scale_1k.toml, 2..8 ranks
    python benchmarks/scaling.py --ranks 2 3 5 --rounds 3 --markdown out.md
    python benchmarks/scaling.py --mode strong

* strong: the job as it is (1,000 clients, 100 sampled per round), on 2..8 ranks (1..7 workers).
* weak: the sampled clients per round grow with the workers (``sampling.fraction`` =
  ``--per-worker`` x workers / clients), so each worker trains about the same number of clients
  per round at every rank count.

Every run goes through ``benchmarks/profile_round.py``'s per-rank wrapper. Reported per rank
count: the median round wall time over rounds 1.., the speed-up and parallel efficiency against
2 ranks (one worker), the summed CPU seconds of all ranks per round, and bytes per round.

On a machine with fewer cores than ranks the ranks share cores (oversubscribed): past
``cores + 1`` ranks (the server mostly sleeps) the wall time cannot fall any more, and the table
says how many cores there were and what the load average was.

The multi-node model printed at the end uses the measured per-client training CPU time
(``t_client``), the server's CPU per round (``t_server``, serial) and the bytes per round
(``B``, uplink + downlink, measured ``len(frame)``), all of which converge on rank 0's link::

    T_round(W) ~ max(ceil(m / W) * t_client, B / bandwidth, t_server)        (overlapped)
    T_round(W) <= max(ceil(m / W) * t_client, B / bandwidth) + t_server        (serial bound)

for ``m`` clients per round on ``W`` workers (one core each): transfers overlap with training
(nonblocking sends), the server's link carries all the bytes, and the server decodes and
aggregates each frame while the workers train the next clients (``t_server`` is the server's
CPU per round without the CPU its receive loop burns while waiting).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_round import load_avg, run_job  # noqa: E402


def measure(job: str, ranks: int, sets: list[str], out: Path, name: str) -> dict:
    from fedsqueeze.log import read_run

    res = run_job(job, ranks, out, name, sets)
    run = read_run(res["h5"])
    rr = run.rounds[run.rounds["round"] >= 1] if len(run.rounds) > 1 else run.rounds
    cpu = {}
    for rk in res["ranks"]:
        for r in rk["rounds"]:
            if r["round"] >= 1 or len(run.rounds) == 1:
                cpu[r["round"]] = cpu.get(r["round"], 0.0) + r["cpu"]
    train = [c for rk in res["ranks"][1:] for t, _, _, c in rk["train"] if t >= 1]
    # the server's CPU per round without what waiting for messages burns (the probe back-off
    # grows with the wall time of the wait, i.e. with the machine's load, not with the work)
    server_cpu = [r["cpu"] - r.get("wait_cpu", 0.0) for r in res["ranks"][0]["rounds"]
                  if r["round"] >= 1]
    return {"ranks": ranks, "wall": float(rr["wall_s"].median()),
            "cpu": statistics.median(cpu.values()), "m": float(rr["n_received"].median()),
            "bytes": float((rr["bytes_up"] + rr["bytes_down"]).median()),
            "t_client": statistics.median(train) if train else float("nan"),
            "t_server": statistics.median(server_cpu) if server_cpu else float("nan")}


def table(rows: list[dict]) -> str:
    base = rows[0]
    out = []
    for r in rows:
        w = r["ranks"] - 1
        speed = base["wall"] / r["wall"] * (r["m"] / base["m"])  # work-normalised for weak
        out.append([r["ranks"], w, int(r["m"]), f"{r['wall']:.2f}", f"{speed:.2f}",
                    f"{100 * speed / (w / (base['ranks'] - 1)):.0f}%", f"{r['cpu']:.2f}",
                    f"{r['bytes'] / 1e6:.2f}"])
    return tabulate(out, headers=["ranks", "workers", "clients/round", "round wall s",
                                  "speed-up", "efficiency", "CPU s/round (all ranks)",
                                  "MB/round"], tablefmt="github")


def model(rows: list[dict]) -> str:
    r = rows[0]
    out = []
    for workers in (8, 32, 128, 512):
        for gbit in (10, 100):
            compute = math.ceil(r["m"] / workers) * r["t_client"]
            net = r["bytes"] * 8 / (gbit * 1e9)
            out.append([workers, gbit, f"{compute * 1e3:.1f}", f"{net * 1e3:.2f}",
                        f"{r['t_server'] * 1e3:.1f}",
                        f"{max(compute, net, r['t_server']) * 1e3:.1f}",
                        f"{(max(compute, net) + r['t_server']) * 1e3:.1f}"])
    return tabulate(out, headers=[f"workers (m = {int(r['m'])} clients/round)", "link Gbit/s",
                                  "train ms", "bytes/bandwidth ms", "server busy ms",
                                  "T_round overlapped ms", "T_round serial bound ms"],
                    tablefmt="github")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default="jobs/scale_1k.toml")
    ap.add_argument("--ranks", nargs="+", type=int, default=[2, 3, 4, 5, 6, 8])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mode", choices=["strong", "weak", "both"], default="both")
    ap.add_argument("--per-worker", type=int, default=25,
                    help="weak scaling: sampled clients per worker per round")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    from fedsqueeze import config as C

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsq-scaling-"))
    out.mkdir(parents=True, exist_ok=True)
    sets = [f"fl.rounds={args.rounds}", *args.set]
    n_clients = C.load(args.job, C.parse_overrides(sets)).data.clients
    load0 = load_avg()
    parts = []
    strong = []
    if args.mode in ("strong", "both"):
        strong = [measure(args.job, p, sets, out, f"strong{p}") for p in args.ranks]
        parts.append(f"### Strong scaling ({args.job}, fixed clients per round)\n\n"
                     + table(strong))
    if args.mode in ("weak", "both"):
        weak = [measure(args.job, p, sets + [
            f"sampling.fraction={args.per_worker * (p - 1) / n_clients}"], out, f"weak{p}")
            for p in args.ranks]
        parts.append(f"### Weak scaling ({args.per_worker} sampled clients per worker and "
                     f"round)\n\n" + table(weak))
    base = strong or weak
    parts.append("### Multi-node model (from the 2-rank run's per-client time and bytes)\n\n"
                 + model(base))
    env = (f"{args.job} {' '.join(sets)}; {os.cpu_count()} cores (ranks > {os.cpu_count() + 1} "
           f"are oversubscribed), load average before {load0}, after {load_avg()}")
    text = env + "\n\n" + "\n\n".join(parts) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

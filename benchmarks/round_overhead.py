"""fedsqueeze's own cost per round: a real MPI run against pure local training of the same clients.

    python benchmarks/round_overhead.py                             # quickstart, identity codec
    python benchmarks/round_overhead.py --ranks 2 --set fl.rounds=20
    python benchmarks/round_overhead.py --job jobs/scale_1k.toml --set fl.rounds=3

1. Runs the job under MPI (default 2 ranks: one server, one worker, so the worker trains every
   sampled client one after the other) through ``benchmarks/profile_round.py``'s per-rank
   wrapper, which records the wall and CPU time of every ``Server.run_round`` and
   ``Worker.round`` and of every ``Trainer.train`` call.
2. In this process, trains the same (round, client) pairs with a plain PyTorch loop: the same
   model, the same samples, the same epochs, batch size and optimizer, batches from a NumPy
   permutation, one thread; nothing else (no weight copies in or out, no codec, no messages).
   That is the "pure local training" a round cannot avoid.

The overhead is ``(worker round + server round) / pure training - 1`` per round, median over
rounds 1.. (round 0 carries one-off warm-up: lazy imports, first torch calls). The CPU-time
version counts the server's CPU as if it were on the critical path (an upper bound: the server
mostly waits while the worker trains); the wall-clock version compares the server's round time
with the pure training's wall time, and is as noisy as the machine (the load is printed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_round import load_avg, run_job  # noqa: E402


def pure_training(cfg, pairs: list[tuple[int, int]]) -> dict[int, tuple[float, float]]:
    """CPU and wall seconds per round of a plain torch loop over the same clients."""
    import torch

    from fedsqueeze.fl.world import build_world

    torch.set_num_threads(1)
    world = build_world(cfg)
    x, y = world.tensors("train")
    model = world.model_factory()
    tc = cfg.train
    per_round: dict[int, list[float]] = {}
    for t, c in pairs:
        idx = world.parts[c]
        gen = np.random.default_rng([t, c])
        orders = [torch.from_numpy(idx[gen.permutation(len(idx))]) for _ in range(tc.epochs)]
        c0, w0 = time.process_time(), time.perf_counter()
        model.train()
        if tc.optimizer == "adam":
            opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        else:
            opt = torch.optim.SGD(model.parameters(), lr=tc.lr, momentum=tc.momentum,
                                  weight_decay=tc.weight_decay)
        steps = 0
        for order in orders:
            for i in range(0, len(order), tc.batch_size):
                if tc.max_steps is not None and steps >= tc.max_steps:
                    break
                j = order[i:i + tc.batch_size]
                opt.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x[j]), y[j]).backward()
                opt.step()
                steps += 1
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        acc = per_round.setdefault(t, [0.0, 0.0])
        acc[0] += cpu
        acc[1] += wall
    return {t: (v[0], v[1]) for t, v in per_round.items()}


def analyse(res: dict, cfg, repeat_pure: int = 3) -> dict:
    from fedsqueeze.log import read_run

    run = read_run(res["h5"])
    cl = run.clients[run.clients["status"] == 0]
    pairs = [(int(t), int(c)) for t, c in zip(cl["round"], cl["client"], strict=True)]
    pure = {}
    for _ in range(repeat_pure):  # keep the fastest of a few passes per round (CPU time)
        for t, (cpu, wall) in pure_training(cfg, pairs).items():
            old = pure.get(t)
            pure[t] = (cpu, wall) if old is None else (min(old[0], cpu), min(old[1], wall))
    server = {r["round"]: r for r in res["ranks"][0]["rounds"]}
    workers = [{r["round"]: r for r in rk["rounds"]} for rk in res["ranks"][1:]]
    train_cpu: dict[int, float] = {}
    for rk in res["ranks"][1:]:
        for t, _, _, cpu in rk["train"]:
            train_cpu[t] = train_cpu.get(t, 0.0) + cpu
    rows = []
    for t in sorted(server):
        if t not in pure:
            continue
        w_cpu = sum(w[t]["cpu"] for w in workers if t in w)
        rows.append({"round": t, "pure_cpu": pure[t][0], "pure_wall": pure[t][1],
                     "trainer_cpu": train_cpu.get(t, 0.0), "worker_cpu": w_cpu,
                     "server_cpu": server[t]["cpu"], "server_wall": server[t]["wall"]})
    steady = [r for r in rows if r["round"] >= 1] or rows
    med = {k: statistics.median(r[k] for r in steady) for k in steady[0]}
    rounds = run.rounds[run.rounds["round"] >= 1]
    med_cols = {c: float(rounds[c].median()) for c in
                ("wall_s", "t_train", "t_encode", "t_decode", "t_wait", "t_aggregate",
                 "t_evaluate")}
    return {"rows": rows, "median": med, "log": med_cols, "clients_per_round":
            len(pairs) / max(1, len(set(t for t, _ in pairs)))}


def main(argv=None) -> int:
    from fedsqueeze import config as C

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default="jobs/quickstart.toml")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", default=None)
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsq-overhead-"))
    load0 = load_avg()
    res = run_job(args.job, args.ranks, out, "overhead", args.set)
    cfg = C.load(args.job, C.parse_overrides(args.set))
    a = analyse(res, cfg)
    m, lg = a["median"], a["log"]
    ms = 1e3
    cpu_total = m["worker_cpu"] + m["server_cpu"]
    t1 = tabulate([
        ["pure local training (plain torch loop, this process)", f"{ms * m['pure_cpu']:.1f}",
         f"{ms * m['pure_wall']:.1f}"],
        ["  Trainer.train (fedsqueeze's local training incl. weights in/out)",
         f"{ms * m['trainer_cpu']:.1f}", "-"],
        ["worker round (Worker.round: receive, train, encode, send, metrics)",
         f"{ms * m['worker_cpu']:.1f}", "-"],
        ["server round (Server.run_round: dispatch, receive, decode, aggregate, eval, log)",
         f"{ms * m['server_cpu']:.1f}", f"{ms * m['server_wall']:.1f}"],
        ["overhead: (worker + server) / pure - 1  [CPU]",
         f"{100 * (cpu_total / m['pure_cpu'] - 1):+.1f}%", ""],
        ["overhead: worker / pure - 1  [CPU, server off the critical path]",
         f"{100 * (m['worker_cpu'] / m['pure_cpu'] - 1):+.1f}%", ""],
        ["overhead: server round wall / pure wall - 1  [wall]", "",
         f"{100 * (m['server_wall'] / m['pure_wall'] - 1):+.1f}%"],
    ], headers=[f"per round, median of rounds >= 1 ({a['clients_per_round']:.0f} clients/round)",
                "CPU ms", "wall ms"], tablefmt="github")
    t2 = tabulate([[k, f"{ms * v:.2f}"] for k, v in lg.items()],
                  headers=["/rounds column (median, rounds >= 1)", "ms"], tablefmt="github")
    head = (f"{args.job} {' '.join(args.set)} on {args.ranks} ranks; load average before "
            f"{load0}, after {load_avg()}")
    print(head)
    print(t1)
    print()
    print(t2)
    if args.markdown:
        Path(args.markdown).write_text(f"{head}\n\n{t1}\n\n{t2}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

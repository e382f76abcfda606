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

CPU time of the same code differs between a quiet benchmark process and an MPI rank sharing
busy cores (caches, SMT siblings), so the overhead is taken apart with each ratio measured under
one set of conditions: ``B / A`` (fedsqueeze's ``Trainer.train`` against the plain loop,
interleaved client by client in this process) and ``(W - T + S) / T`` (everything a round does
besides training, CPU of the worker and of the server, against the training CPU measured inside
the same worker). The server is counted as if it were serial to the training (an upper bound:
it decodes while the worker trains the next client). ``Sw``/``Ww`` are the CPU seconds spent
inside ``MPITransport.probe`` (improbe, sched_yield and sleep back-off while waiting for a
message): they grow with the wall time of the wait, so on a loaded machine they measure the
neighbours; the "without waiting" lines leave them out. Medians over rounds 1.. (round 0 carries
one-off warm-up: lazy imports, first torch calls). The wall-clock line compares the server's
round time with the worker's time inside ``Trainer.train`` (2 ranks only).
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


def pure_training(cfg, pairs: list[tuple[int, int]]) -> dict[int, tuple[float, float, float]]:
    """Per round: CPU and wall seconds of a plain torch loop over the same clients, and CPU
    seconds of ``Trainer.train`` on them, client by client in turn (same conditions)."""
    import torch

    from fedsqueeze.fl.train import Trainer
    from fedsqueeze.fl.world import build_world

    torch.set_num_threads(1)
    world = build_world(cfg)
    x, y = world.tensors("train")
    model = world.model_factory()
    trainer = Trainer(world.model_factory(), x, y, world.parts, cfg.train, cfg.seed)
    tc = cfg.train
    per_round: dict[int, list[float]] = {}
    for t, c in pairs:
        c0 = time.process_time()
        trainer.train(world.w0, client=c, round=t)
        tr_cpu = time.process_time() - c0
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
        acc = per_round.setdefault(t, [0.0, 0.0, 0.0])
        acc[0] += cpu
        acc[1] += wall
        acc[2] += tr_cpu
    return {t: (v[0], v[1], v[2]) for t, v in per_round.items()}


def analyse(res: dict, cfg, repeat_pure: int = 3) -> dict:
    from fedsqueeze.log import read_run

    run = read_run(res["h5"])
    cl = run.clients[run.clients["status"] == 0]
    pairs = [(int(t), int(c)) for t, c in zip(cl["round"], cl["client"], strict=True)]
    pure = {}
    for _ in range(repeat_pure):  # keep the fastest of a few passes per round (CPU time)
        for t, v in pure_training(cfg, pairs).items():
            old = pure.get(t)
            pure[t] = v if old is None else tuple(min(a, b) for a, b in zip(old, v, strict=True))
    server = {r["round"]: r for r in res["ranks"][0]["rounds"]}
    workers = [{r["round"]: r for r in rk["rounds"]} for rk in res["ranks"][1:]]
    train_cpu: dict[int, float] = {}
    train_wall: dict[int, float] = {}
    for rk in res["ranks"][1:]:
        for t, _, wall, cpu in rk["train"]:
            train_cpu[t] = train_cpu.get(t, 0.0) + cpu
            train_wall[t] = train_wall.get(t, 0.0) + wall
    rows = []
    for t in sorted(server):
        if t not in pure:
            continue
        w_cpu = sum(w[t]["cpu"] for w in workers if t in w)
        w_wait = sum(w[t].get("wait_cpu", 0.0) for w in workers if t in w)
        rows.append({"round": t, "pure_cpu": pure[t][0], "pure_wall": pure[t][1],
                     "trainer_here_cpu": pure[t][2], "train_wall": train_wall.get(t, 0.0),
                     "trainer_cpu": train_cpu.get(t, 0.0), "worker_cpu": w_cpu,
                     "worker_wait_cpu": w_wait, "server_cpu": server[t]["cpu"],
                     "server_wait_cpu": server[t].get("wait_cpu", 0.0),
                     "server_wall": server[t]["wall"]})
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
    ap.add_argument("--eager-log", action="store_true",
                    help="write each round's HDF5 rows before the next round starts (the old "
                         "order, for before/after numbers)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsq-overhead-"))
    out.mkdir(parents=True, exist_ok=True)
    load0 = load_avg()
    res = run_job(args.job, args.ranks, out, "overhead", args.set,
                  env={"FSQ_EAGER_LOG": "1"} if args.eager_log else None)
    cfg = C.load(args.job, C.parse_overrides(args.set))
    a = analyse(res, cfg)
    m, lg = a["median"], a["log"]
    ms = 1e3
    code = m["trainer_here_cpu"] / m["pure_cpu"] - 1  # Trainer vs plain loop, same process
    extra = (m["worker_cpu"] - m["trainer_cpu"] + m["server_cpu"]) / m["trainer_cpu"]
    extra_w = (m["worker_cpu"] - m["trainer_cpu"]) / m["trainer_cpu"]
    # the same without the CPU burnt while waiting for messages (probe back-off): that part
    # grows with the wall time of the wait (the machine's load), not with fedsqueeze's work
    busy = (m["worker_cpu"] - m["worker_wait_cpu"] - m["trainer_cpu"] + m["server_cpu"]
            - m["server_wait_cpu"]) / m["trainer_cpu"]
    wall = m["server_wall"] / m["train_wall"] - 1 if args.ranks == 2 else float("nan")
    t1 = tabulate([
        ["A  pure local training (plain torch loop, this process)", f"{ms * m['pure_cpu']:.1f}",
         f"{ms * m['pure_wall']:.1f}"],
        ["B  Trainer.train on the same clients (this process, interleaved with A)",
         f"{ms * m['trainer_here_cpu']:.1f}", "-"],
        ["T  Trainer.train inside the MPI worker(s)", f"{ms * m['trainer_cpu']:.1f}",
         f"{ms * m['train_wall']:.1f}"],
        ["W  worker round (Worker.round: receive, train, encode, send, metrics)",
         f"{ms * m['worker_cpu']:.1f}", "-"],
        ["S  server round (Server.run_round: dispatch, receive, decode, aggregate, eval, log)",
         f"{ms * m['server_cpu']:.1f}", f"{ms * m['server_wall']:.1f}"],
        ["Sw, Ww  of which waiting for messages (probe back-off), server / worker",
         f"{ms * m['server_wait_cpu']:.1f} / {ms * m['worker_wait_cpu']:.1f}", "-"],
        ["local-training code: B / A - 1", f"{100 * code:+.1f}%", ""],
        ["framework, worker only: (W - T) / T", f"{100 * extra_w:+.1f}%", ""],
        ["framework, worker + server: (W - T + S) / T  (server counted as serial)",
         f"{100 * extra:+.1f}%", ""],
        ["framework without waiting: (W - Ww - T + S - Sw) / T", f"{100 * busy:+.1f}%", ""],
        ["total: (1 + B/A - 1) (1 + (W - T + S) / T) - 1",
         f"{100 * ((1 + code) * (1 + extra) - 1):+.1f}%", ""],
        ["total without waiting: (1 + B/A - 1) (1 + (W - Ww - T + S - Sw) / T) - 1",
         f"{100 * ((1 + code) * (1 + busy) - 1):+.1f}%", ""],
        ["wall (2 ranks): server round / worker's training time - 1", "",
         f"{100 * wall:+.1f}%"],
    ], headers=[f"per round, median of rounds >= 1 ({a['clients_per_round']:.0f} clients/round)",
                "CPU ms", "wall ms"], tablefmt="github")
    t2 = tabulate([[k, f"{ms * v:.2f}"] for k, v in lg.items()],
                  headers=["/rounds column (median, rounds >= 1)", "ms"], tablefmt="github")
    head = (f"{args.job} {' '.join(args.set)} on {args.ranks} ranks"
            f"{' (--eager-log)' if args.eager_log else ''}; load average before "
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

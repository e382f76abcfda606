"""fedsqueeze against Flower's simulation engine on the same federated job: rounds/s and accuracy.

    python benchmarks/flower_compare.py                         # jobs/quickstart.toml, 30 rounds
    python benchmarks/flower_compare.py --rounds 10 --flower-python /path/to/venv/bin/python

Both sides run the same job (default ``jobs/quickstart.toml``: scikit-learn digits, 20 clients,
Dirichlet(0.5) partition from ``fedsqueeze.data.partition``, the ``digits_mlp`` model with the
same initial weights, 10 clients sampled per round, 2 local epochs of SGD, batch 16, lr 0.1,
sample-weighted FedAvg, server-side test accuracy after every round). Local training on both
sides is the very same code (``fedsqueeze.fl.train.Trainer.train``), so the comparison is between
the frameworks around it:

* fedsqueeze: ``mpiexec -n <ranks> python -m fedsqueeze run`` (1 server + ranks-1 workers).
* Flower: ``flwr.simulation.run_simulation`` with the Ray backend, ``NumPyClient`` clients
  (``client_resources = {"num_cpus": 1}``, so as many concurrent clients as the machine has
  cores), the built-in ``FedAvg`` strategy (``fraction_fit = 10/20``) and an ``evaluate_fn`` on
  the server. Flower samples its own clients (Python ``random``), so the sampled sets differ.
  Ray starts its workers at nice 15 by default; on a shared machine that starves them, so the
  script sets ``RAY_worker_niceness=0`` (the MPI ranks run at nice 0 too).

Flower is an optional benchmark dependency (the ``bench`` extra), never a fedsqueeze
dependency. ``pip install -e ".[bench]"`` (flwr 1.41.0 + ray 2.55.1 on 2026-11-22) goes into the
project venv; it pins ``packaging`` to 25.0 (from 26.3), ``pip check`` stays clean. A separate
venv with fedsqueeze installed editable works as well: the Flower side re-runs this script
with ``--flower-python`` (default ``$FSQ_FLOWER_PYTHON``, else this interpreter if it can import
``flwr``)::

    python -m venv /opt/flower-venv
    /opt/flower-venv/bin/pip install "flwr[simulation]" torch==2.13.0 -e .

Reported: end-to-end seconds (launch to exit, including imports, Ray start-up and data
loading), the steady-state rounds per second (rounds 1..R-1 from the per-round timestamps:
fedsqueeze's ``/rounds`` ``wall_s``, Flower's ``evaluate_fn`` call times), the CPU seconds per
round of all processes (rounds 2..: fedsqueeze's ranks from ``benchmarks/profile_round.py``'s
wrapper, Flower's driver plus every Ray process under it from psutil at each ``evaluate_fn``),
which does not depend on how loaded the machine is, and the final test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# -- the Flower side (runs in the Flower venv) --------------------------------------------------
_WORLD = {}


def _world(job: str, overrides: list[str]):
    key = (job, tuple(overrides))
    if key not in _WORLD:
        import torch

        from fedsqueeze import config as C
        from fedsqueeze.fl.train import Trainer
        from fedsqueeze.fl.world import build_world

        torch.set_num_threads(1)
        cfg = C.load(str(ROOT / job), C.parse_overrides(overrides))
        w = build_world(cfg)
        x, y = w.tensors("train")
        _WORLD[key] = (cfg, w, Trainer(w.model_factory(), x, y, w.parts, cfg.train, cfg.seed))
    return _WORLD[key]


def flower_main(job: str, overrides: list[str], ranks: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    cfg, world, _ = _world(job, overrides)
    n_clients = cfg.data.clients
    per_round = max(1, int(round(cfg.sampling.fraction * n_clients)))
    marks: list[tuple[int, float, float]] = []

    class Client(NumPyClient):
        def __init__(self, cid: int) -> None:
            self.cid = cid

        def fit(self, parameters, config):
            _, w, trainer = _world(job, overrides)
            w_end, stats = trainer.train(np.asarray(parameters[0], np.float32), client=self.cid,
                                         round=int(config["server_round"]) - 1)
            return [w_end], int(w.samples[self.cid]), {"loss": float(stats["loss"])}

    def client_fn(context: Context):
        return Client(int(context.node_config["partition-id"])).to_client()

    def evaluate_fn(server_round, parameters, config):
        from fedsqueeze.fl.train import evaluate, set_flat_params

        _, w, _ = _world(job, overrides)
        model = w.model_factory()
        set_flat_params(model, np.asarray(parameters[0], np.float32))
        x, y = w.tensors("test")
        loss, acc = evaluate(model, x, y)
        marks.append((server_round, time.perf_counter(), acc, _tree_cpu()))
        return loss, {"accuracy": acc}

    def server_fn(context: Context):
        strategy = FedAvg(fraction_fit=per_round / n_clients, fraction_evaluate=0.0,
                          min_fit_clients=per_round, min_evaluate_clients=0,
                          min_available_clients=n_clients,
                          initial_parameters=ndarrays_to_parameters([world.w0]),
                          evaluate_fn=evaluate_fn,
                          on_fit_config_fn=lambda r: {"server_round": r})
        return ServerAppComponents(strategy=strategy,
                                   config=ServerConfig(num_rounds=cfg.fl.rounds))

    t0 = time.perf_counter()
    _start_ray(ranks - 1)
    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn), num_supernodes=n_clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": ranks - 1,
                                                 "include_dashboard": False}})
    total = time.perf_counter() - t0
    marks.sort()
    times = {r: t for r, t, _, _ in marks}
    cpus = {r: c for r, _, _, c in marks}
    rounds = sorted(r for r in times if r >= 1)
    steady = [r for r in rounds if r >= 2 and r - 1 in cpus]
    return {"total_s": total, "round_times": [times[r] - times[r - 1] for r in rounds
                                               if r - 1 in times],
            "round_cpu": [cpus[r] - cpus[r - 1] for r in steady],
            "final_accuracy": marks[-1][2] if marks else float("nan"),
            "rounds": len(rounds)}


def _tree_cpu() -> float:
    """CPU seconds of this process and all its descendants (Ray's GCS, raylet and actors)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system + (t.children_user + t.children_system if p is me else 0)
        except psutil.Error:
            pass
    return total


def _start_ray(num_cpus: int, tries: int = 3) -> None:
    """``ray.init`` as Flower's Ray backend calls it (which then reuses it), retried: on a
    loaded machine the raylet can miss Ray's fixed 30 s start-up deadline."""
    import ray

    pythonpath = os.pathsep.join(sys.path)
    os.environ["PYTHONPATH"] = pythonpath
    for i in range(tries):
        try:
            ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, num_cpus=num_cpus,
                     include_dashboard=False)
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception on the timeout
            print(f"ray.init failed ({i + 1}/{tries}): {exc}", file=sys.stderr)
            ray.shutdown()
    raise RuntimeError(f"Ray did not start in {tries} tries")


# -- the fedsqueeze side ------------------------------------------------------------------------
def fedsqueeze_side(job: str, overrides: list[str], ranks: int, out: Path) -> dict:
    """``mpiexec -n ranks python -m fedsqueeze run`` through profile_round's per-rank wrapper
    (per-round CPU of every rank; the run itself is unchanged)."""
    from fedsqueeze.log import read_run

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from profile_round import run_job

    t0 = time.perf_counter()
    res = run_job(job, ranks, out, "fsq", overrides)
    total = time.perf_counter() - t0
    r = read_run(res["h5"])
    cpu: dict[int, float] = {}
    for rk in res["ranks"]:
        for row in rk["rounds"]:
            cpu[row["round"]] = cpu.get(row["round"], 0.0) + row["cpu"]
    return {"total_s": total, "round_times": list(r.rounds["wall_s"].iloc[1:]),
            "round_cpu": [c for t, c in sorted(cpu.items()) if t >= 2],
            "final_accuracy": float(r.rounds["test_accuracy"].iloc[-1]),
            "rounds": len(r.rounds), "cmd": res["cmd"]}


def flower_python(asked: str | None) -> str | None:
    if asked:
        return asked
    if os.environ.get("FSQ_FLOWER_PYTHON"):
        return os.environ["FSQ_FLOWER_PYTHON"]
    import importlib.util

    return sys.executable if importlib.util.find_spec("flwr") else None


def main(argv=None) -> int:
    from tabulate import tabulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", default="jobs/quickstart.toml")
    ap.add_argument("--rounds", type=int, default=None, help="override fl.rounds")
    ap.add_argument("--ranks", type=int, default=3,
                    help="fedsqueeze ranks (1 server + workers); Flower gets ranks-1 CPUs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--flower-python", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--flower-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    overrides = list(args.set) + ([f"fl.rounds={args.rounds}"] if args.rounds else [])
    if args.flower_worker:  # exit hard: a failed simulation leaves non-daemon threads behind
        try:
            print("FLOWER_RESULT " + json.dumps(flower_main(args.job, overrides, args.ranks)),
                  flush=True)
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        sys.stderr.flush()
        os._exit(0)
    py = flower_python(args.flower_python)
    out = Path(tempfile.mkdtemp(prefix="fsq-vs-flower-"))
    load0 = " ".join(f"{x:.1f}" for x in os.getloadavg())
    fsq = fedsqueeze_side(args.job, overrides, args.ranks, out)
    if py is None:
        flw = None
        why = ("flwr is not importable here; pass --flower-python (a venv with "
               "flwr[simulation] and fedsqueeze) or set FSQ_FLOWER_PYTHON")
    else:
        cmd = [py, str(Path(__file__).resolve()), "--flower-worker", "--job", args.job,
               "--ranks", str(args.ranks)] + [a for s in overrides for a in ("--set", s)]
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                               env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                                        MKL_NUM_THREADS="1", RAY_DEDUP_LOGS="0",
                                        RAY_worker_niceness="0"))
        except subprocess.TimeoutExpired as exc:
            p = subprocess.CompletedProcess(cmd, -9, exc.stdout or "", exc.stderr or "")
        line = [x for x in p.stdout.splitlines() if x.startswith("FLOWER_RESULT ")]
        if p.returncode != 0 or not line:
            flw, why = None, f"Flower run failed ({p.returncode}): {p.stderr[-3000:]}"
        else:
            flw = json.loads(line[-1].split(" ", 1)[1])
            flw["launch_s"] = time.perf_counter() - t0
            why = ""

    def rps(d):
        import statistics

        return 1.0 / statistics.median(d["round_times"]) if d["round_times"] else float("nan")

    def cpr(d):
        import statistics

        return statistics.median(d["round_cpu"]) if d.get("round_cpu") else float("nan")

    rows = [["fedsqueeze (MPI)", fsq["rounds"], f"{fsq['total_s']:.1f}", f"{rps(fsq):.2f}",
             f"{fsq['rounds'] / fsq['total_s']:.3f}", f"{1e3 * cpr(fsq):.0f}",
             f"{fsq['final_accuracy']:.4f}"]]
    if flw:
        rows.append(["Flower simulation (Ray)", flw["rounds"], f"{flw['launch_s']:.1f}",
                     f"{rps(flw):.2f}", f"{flw['rounds'] / flw['launch_s']:.3f}",
                     f"{1e3 * cpr(flw):.0f}", f"{flw['final_accuracy']:.4f}"])
    table = tabulate(rows, headers=["framework", "rounds", "end-to-end s",
                                    "rounds/s (steady, median)", "rounds/s (end-to-end)",
                                    "CPU ms/round (all processes, median)", "final test acc"],
                     tablefmt="github")
    head = (f"{args.job} {' '.join(overrides)}; fedsqueeze on {args.ranks} ranks, Flower with "
            f"{args.ranks - 1} CPUs for clients; load average before {load0}, after "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    ratio = ""
    if flw:
        ratio = (f"speed-up of fedsqueeze: steady {rps(fsq) / rps(flw):.1f}x, end-to-end "
                 f"{(fsq['rounds'] / fsq['total_s']) / (flw['rounds'] / flw['launch_s']):.1f}x, "
                 f"CPU per round {cpr(flw) / cpr(fsq):.1f}x less")
    print(head)
    print(table)
    print(ratio or f"Flower not run: {why}")
    if args.markdown:
        Path(args.markdown).write_text(f"{head}\n\n{table}\n\n{ratio or why}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

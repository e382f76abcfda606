"""Where the time of a round goes: per-rank timers, cProfile and memory of a real MPI run.

Two uses:

1. As the per-rank wrapper of every MPI benchmark here (``--rank-main``): it runs
   ``python -m fedsqueeze run ...`` unchanged, with hooks that record, per rank and round, the
   wall and CPU time of ``Server.run_round`` / ``Worker.round``, the time of every
   ``Trainer.train`` call (local training), the resident memory, and, when ``FSQ_PROFILE=1``,
   a CPU-time cProfile of the rounds >= 1 (not start-up). Results go to
   ``$FSQ_BENCH_DIR/rank<r>.json`` (and ``rank<r>.prof``). ``FSQ_EAGER_LOG=1`` restores the old
   order (a round's HDF5 rows written before the next round starts) for before/after
   comparisons. Nothing in the library changes: the hooks wrap methods from outside::

       FSQ_BENCH_DIR=/tmp/b FSQ_PROFILE=1 mpiexec -n 3 python benchmarks/profile_round.py \\
           --rank-main -- run jobs/quickstart.toml --out /tmp/b --name q --no-progress

2. As a report (default): run a job that way and print the top functions of the server and of
   one worker by own time and by cumulative time, plus the per-round split::

       python benchmarks/profile_round.py                          # quickstart, 3 ranks
       python benchmarks/profile_round.py --job jobs/scale_1k.toml --ranks 3 --set fl.rounds=3

The profile uses the process CPU clock: waiting (the transport's ``time.sleep`` back-off, a
core taken by a neighbour) costs nothing in it, so its shares are those of the CPU a round
burns; the per-round wall split comes from the ``/rounds`` timers.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# -- the per-rank wrapper ---------------------------------------------------------------------
def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def rank_main(argv: list[str]) -> int:
    from mpi4py import MPI

    from fedsqueeze import cli
    from fedsqueeze.fl import server as server_mod
    from fedsqueeze.fl import train as train_mod
    from fedsqueeze.fl import worker as worker_mod

    out = Path(os.environ["FSQ_BENCH_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    rank = MPI.COMM_WORLD.Get_rank()
    rec: dict = {"rank": rank, "rounds": [], "train": [], "rss_start_mb": _rss_mb()}

    prof = None
    if os.environ.get("FSQ_PROFILE"):
        import cProfile

        # CPU-time profile of the rounds only (rounds >= 1: round 0 carries lazy imports and
        # first torch calls; start-up is not a round cost). A process-time clock, so time spent
        # waiting for a core on a shared machine, or sleeping in the transport's back-off, is
        # not charged to the function that happened to be running.
        prof = cProfile.Profile(time.process_time)

    # CPU burnt inside MPITransport.probe (improbe + sched_yield + sleep back-off): what waiting
    # for a message costs; it grows with the wall time of the wait, not with the work
    from fedsqueeze.comm import transport as transport_mod

    waiting = [0.0]
    orig_probe = transport_mod.MPITransport.probe

    def probe(self, *a, **kw):
        c0 = time.process_time()
        try:
            return orig_probe(self, *a, **kw)
        finally:
            waiting[0] += time.process_time() - c0
    transport_mod.MPITransport.probe = probe

    def timed(cls, name, key):
        orig = getattr(cls, name)

        def wrapper(self, *a, **kw):
            t = a[0] if a else kw.get("t", kw.get("task"))
            t = getattr(t, "round", t)
            on = prof is not None and t is not None and int(t) >= 1
            if on:
                prof.enable()
            w0, c0, p0 = time.perf_counter(), time.process_time(), waiting[0]
            try:
                return orig(self, *a, **kw)
            finally:
                if on:
                    prof.disable()
                rec[key].append({"round": int(t) if t is not None else -1,
                                 "wall": time.perf_counter() - w0, "end": time.perf_counter(),
                                 "cpu": time.process_time() - c0, "wait_cpu": waiting[0] - p0,
                                 "rss_mb": _rss_mb()})
        setattr(cls, name, wrapper)

    timed(server_mod.Server, "run_round", "rounds")
    timed(worker_mod.Worker, "round", "rounds")
    # the overlap timeline: when a worker hands an UP_UPDATE to MPI, when the server starts and
    # ends receiving it, and when a round ends (perf_counter is CLOCK_MONOTONIC: one clock for
    # every process on the node)
    from fedsqueeze.comm import wire
    from fedsqueeze.comm.tags import Kind

    rec["sends"], rec["recvs"] = [], []
    orig_isend = transport_mod.MPITransport.isend_frame

    def isend(self, dest, tag, frame):
        n = orig_isend(self, dest, tag, frame)
        if tag == int(Kind.UP_UPDATE):
            if isinstance(frame, wire.Frame):  # header + referenced sections (zero copy)
                rnd, client = frame.round, frame.client
            else:
                hdr = bytes(memoryview(frame)[8:16])
                rnd, client = int.from_bytes(hdr[:4], "little"), int.from_bytes(hdr[4:], "little")
            rec["sends"].append([rnd, client, time.perf_counter()])
        return n
    transport_mod.MPITransport.isend_frame = isend
    orig_recv_update = server_mod.Server._recv_update

    def recv_update(self, t, c, worker, deadline, timers):
        t0 = time.perf_counter()
        got = orig_recv_update(self, t, c, worker, deadline, timers)
        rec["recvs"].append([int(t), int(c), int(worker), t0, time.perf_counter()])
        return got
    server_mod.Server._recv_update = recv_update
    orig_train = train_mod.Trainer.train

    def train(self, w, *, client, round):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return orig_train(self, w, client=client, round=round)
        finally:
            rec["train"].append([round, client, time.perf_counter() - w0,
                                 time.process_time() - c0])
    train_mod.Trainer.train = train
    orig_init = server_mod.Server.__init__

    def init(self, *a, **kw):
        orig_init(self, *a, **kw)
        rec["rss_server_ready_mb"] = _rss_mb()
    server_mod.Server.__init__ = init

    if os.environ.get("FSQ_EAGER_LOG") and hasattr(server_mod.Server, "_flush_log"):
        # the behaviour before the deferred log (for before/after numbers): write a round's
        # HDF5 rows at the end of that round, while the workers wait for the next task list
        orig_log_round = server_mod.Server._log_round

        def eager(self, *a, **kw):
            row = orig_log_round(self, *a, **kw)
            self._flush_log()
            return row
        server_mod.Server._log_round = eager

    c0, w0 = time.process_time(), time.perf_counter()
    try:
        rc = cli.main(argv)
    finally:
        if prof:
            prof.dump_stats(str(out / f"rank{rank}.prof"))
        rec.update(cpu_total=time.process_time() - c0, wall_total=time.perf_counter() - w0,
                   maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        (out / f"rank{rank}.json").write_text(json.dumps(rec))
    return rc


# -- launching --------------------------------------------------------------------------------
def mpi_env(**extra: str) -> dict[str, str]:
    # one BLAS/OpenMP thread per rank, as ``python -m fedsqueeze`` sets them (the wrapper calls
    # ``cli.main`` directly and would otherwise give NumPy's OpenBLAS one thread per core)
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONHASHSEED="0", **extra)
    return env


def mpiexec() -> str:
    exe = shutil.which("mpiexec", path=str(Path(sys.executable).parent) + os.pathsep
                       + os.environ.get("PATH", ""))
    if exe is None:
        raise SystemExit("mpiexec not found (pip install mpich)")
    return exe


def run_job(job: str, ranks: int, out: Path, name: str, sets: list[str] = (), *,
            profile: bool = False, timeout: float = 3600, env: dict | None = None) -> dict:
    """Run ``job`` on ``ranks`` ranks through the wrapper; return ``{"h5", "ranks": [...]}``."""
    bench = out / f"{name}.bench"
    shutil.rmtree(bench, ignore_errors=True)
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, str(Path(__file__).resolve()),
           "--rank-main", "--", "run", job, "--out", str(out), "--name", name, "--no-progress",
           "--overwrite"]
    for s in sets:
        cmd += ["--set", s]
    env = mpi_env(FSQ_BENCH_DIR=str(bench), **({"FSQ_PROFILE": "1"} if profile else {}),
                  **(env or {}))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}\n{p.stderr[-4000:]}")
    recs = [json.loads((bench / f"rank{r}.json").read_text()) for r in range(ranks)]
    return {"h5": out / f"{name}.h5", "ranks": recs, "bench": bench, "wall": wall,
            "cmd": " ".join(cmd)}


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


# -- the report -------------------------------------------------------------------------------
def top(prof: Path, sort: str, n: int) -> list[list]:
    st = pstats.Stats(str(prof))
    rows = []
    for (file, line, func), (_, nc, tt, ct, _) in sorted(
            st.stats.items(), key=lambda kv: kv[1][2 if sort == "tottime" else 3],
            reverse=True)[:n]:
        short = file.split("site-packages/")[-1].split("src/")[-1]
        rows.append([f"{short}:{line}({func})", nc, f"{tt:.3f}", f"{ct:.3f}"])
    return rows


def timeline(ranks: list[dict]) -> list[list]:
    """Per round: the server's tail after the last upload was sent, and how long frames waited
    in MPI's queue for the server (it receives in increasing client id across workers)."""
    sent = {}
    for rk in ranks[1:]:
        for t, c, ts in rk["sends"]:
            sent[(t, c)] = ts
    ends = {r["round"]: r["end"] for r in ranks[0]["rounds"]}
    rows = []
    for t in sorted(ends):
        recvs = [r for r in ranks[0]["recvs"] if r[0] == t and (t, r[1]) in sent]
        if not recvs:
            continue
        last = max(sent[(t, r[1])] for r in recvs)
        queued = [max(0.0, r[3] - sent[(t, r[1])]) for r in recvs]
        latency = [r[4] - sent[(t, r[1])] for r in recvs]
        rows.append([t, len(recvs), f"{1e3 * (ends[t] - last):.1f}",
                     f"{1e3 * statistics.median(latency):.2f}", f"{1e3 * max(latency):.1f}",
                     f"{1e3 * statistics.median(queued):.2f}", f"{1e3 * max(queued):.1f}",
                     sum(q > 1e-3 for q in queued)])
    return rows


TIMELINE_HEAD = ["round", "uploads", "tail: last upload sent -> round end ms",
                 "send -> received median ms", "max ms", "queued before the server asked "
                 "median ms", "max ms", "frames queued > 1 ms"]


def main(argv=None) -> int:
    from tabulate import tabulate

    ap = argparse.ArgumentParser(description="profile a round on every rank")
    ap.add_argument("--job", default="jobs/quickstart.toml")
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--out", default=None, help="keep the run and profiles here")
    ap.add_argument("--no-cprofile", action="store_true",
                    help="timers and timeline only (cProfile slows Python-heavy code ~2x)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="fsq-prof-"))
    res = run_job(args.job, args.ranks, out, "prof", args.set, profile=not args.no_cprofile)
    from fedsqueeze.log import read_run

    r = read_run(res["h5"])
    print(f"{args.job} on {args.ranks} ranks ({' '.join(args.set)}); load average {load_avg()}; "
          f"profiles in {res['bench']}")
    cols = ["wall_s", "t_train", "t_encode", "t_decode", "t_wait", "t_aggregate", "t_evaluate"]
    print(tabulate([[c, f"{r.rounds[c].iloc[1:].median():.4f}"] for c in cols],
                   headers=["/rounds column (median over rounds >= 1)", "s"], tablefmt="github"))
    print("\noverlap timeline (server receives in increasing client id across workers)")
    print(tabulate(timeline(res["ranks"]), headers=TIMELINE_HEAD, tablefmt="github"))
    for rank in () if args.no_cprofile else (0, 1):
        prof = res["bench"] / f"rank{rank}.prof"
        role = "server" if rank == 0 else "worker 1"
        for sort in ("tottime", "cumtime"):
            print(f"\n{role}, top {args.top} by {sort}")
            print(tabulate(top(prof, sort, args.top), headers=["function", "calls", "own s",
                                                               "cum s"], tablefmt="github"))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--rank-main":
        rest = sys.argv[2:]
        if rest and rest[0] == "--":
            rest = rest[1:]
        sys.exit(rank_main(rest))
    sys.exit(main())

"""Command line: ``python -m fedsqueeze run|info|report|status|list|sweep|sweep-task|launch``.

``run`` is started on every rank by ``mpiexec``/``srun``; rank 0 prints the HDF5 path at the end.
Config errors are reported before any training starts, naming the key and what is allowed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ConfigError, LogSchemaError

__all__ = ["main"]


def _cmd_run(args) -> int:
    from .launch.guard import guard_worker_rank

    # under MPICH's mpiexec a worker killed by a signal would make the launcher SIGKILL the
    # server too (see fedsqueeze.launch.guard): workers run under a watcher that turns that
    # death into an exit code. Before MPI is initialised and before any thread exists.
    guard_worker_rank()
    from . import config as C

    overrides = C.parse_overrides(args.set or [])
    if args.out:
        overrides = C.apply_overrides(overrides, {"log": {"out": args.out}})
    if args.name:
        overrides = C.apply_overrides(overrides, {"log": {"name": args.name}})
    if args.no_progress:
        overrides = C.apply_overrides(overrides, {"log": {"progress": False}})
    cfg = C.load(args.job, overrides)

    from mpi4py import MPI

    from .fl.run import run, run_paths

    comm = MPI.COMM_WORLD
    h5 = run_paths(cfg)["h5"]
    resuming = args.resume or args.resume_if_possible
    if h5.exists() and not (args.overwrite or resuming):
        raise ConfigError(f"{h5} exists: pass --overwrite, another --name or --out, or --resume")
    comm.Barrier()  # every rank checked before rank 0 may remove the old file
    if h5.exists() and args.overwrite and comm.Get_rank() == 0:
        h5.unlink()
    if comm.Get_size() < 2:
        print("fedsqueeze run: needs at least 2 MPI ranks (rank 0 serves, the others host "
              f"clients); try: mpiexec -n 4 python -m fedsqueeze run {args.job}", file=sys.stderr)
        return 2
    resume = "required" if args.resume else bool(
        args.resume_if_possible and (run_paths(cfg)["ckpt"] / "server.npz").exists())
    try:
        result = run(cfg, comm, resume=resume, progress=not args.no_progress)
    except SystemExit as exc:
        if exc.code not in (0, None):
            _abort(comm, int(exc.code) if isinstance(exc.code, int) else 1)
        raise
    except BaseException:
        # rank 0 has already closed the HDF5 log with the error recorded; the other ranks may be
        # blocked in a receive that will never complete, so end the whole job now.
        import traceback

        traceback.print_exc()
        _abort(comm, 1)
        raise
    _ignore_stop_signals()
    if comm.Get_rank() == 0:
        h5 = result["h5"]
        final = result.get("final", {})
        print(f"fedsqueeze: {cfg.fl.rounds} rounds in {result['seconds']:.1f} s, "
              f"test accuracy {final.get('test_accuracy', float('nan')):.4f}, "
              f"{result['bytes_up'] / 1e6:.3f} MB up, {result['bytes_down'] / 1e6:.3f} MB down")
        print(f"HDF5 log: {h5}")
        if args.plot:
            from .analysis import report

            out = report([h5], str(Path(h5).with_suffix("")) + "_report")
            png = out.get("plots", {}).get("accuracy_vs_mb") if isinstance(out, dict) else None
            if png:
                print(f"plot: {png}")
    return 0


def _ignore_stop_signals() -> None:
    """The run is over: stop signals are ignored from now on, through interpreter shutdown.

    MPICH's ``mpiexec`` sends SIGUSR1 to the remaining ranks whenever a rank's process exits,
    also at a normal end, and Python restores the default action (terminate) of the signals it
    handles while it shuts down: a rank that got the notice then died of it (exit code 138, and
    hydra SIGKILLs the others). ``SIG_IGN`` is kept through shutdown.
    """
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def _abort(comm, code: int) -> None:
    sys.stderr.flush()
    sys.stdout.flush()
    if comm.Get_size() > 1:
        comm.Abort(code)


def _cmd_info(args) -> int:
    from .log.summary import summarize

    for p in args.files:
        print(summarize(p))
    return 0


def _cmd_report(args) -> int:
    from .analysis import report

    out = report(args.inputs, args.out, target_accuracy=args.target)
    for k, v in (out.get("plots", {}) | out.get("tables", {})).items():
        print(f"{k}: {v}")
    return 0


def _cmd_status(args) -> int:
    from tabulate import tabulate

    from .analysis import status

    df = status(args.folder)
    print(tabulate(df, headers="keys", tablefmt="simple", showindex=False))
    return 0


def _cmd_list(args) -> int:
    from . import compress
    from .fl.strategy import methods

    print("codecs: " + ", ".join(compress.available()))
    print("methods: " + ", ".join(methods()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedsqueeze", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a job (start with mpiexec -n N)")
    r.add_argument("job", help="job file, e.g. jobs/quickstart.toml")
    r.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value (dotted key, TOML value); repeatable")
    r.add_argument("--out", help="output folder for the HDF5 log (default: log.out = runs)")
    r.add_argument("--name", help="run name (file stem); default: log.name or the job name")
    r.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    r.add_argument("--resume-if-possible", action="store_true",
                   help="resume when a checkpoint exists (requeued SLURM tasks)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--overwrite", action="store_true", help="replace an existing run log")
    r.add_argument("--plot", action="store_true", help="write the report and plot at the end")
    r.set_defaults(func=_cmd_run)
    i = sub.add_parser("info", help="summary of run logs")
    i.add_argument("files", nargs="+")
    i.set_defaults(func=_cmd_info)
    rep = sub.add_parser("report", help="tables and plots from many runs")
    rep.add_argument("inputs", nargs="+", help="HDF5 files or folders")
    rep.add_argument("--out", default="report", help="output folder")
    rep.add_argument("--target", type=float, default=None, help="target accuracy for bytes-to")
    rep.set_defaults(func=_cmd_report)
    st = sub.add_parser("status", help="progress of a sweep folder")
    st.add_argument("folder")
    st.set_defaults(func=_cmd_status)
    ls = sub.add_parser("list", help="available codecs and methods")
    ls.set_defaults(func=_cmd_list)
    from .launch import cli_sweep

    cli_sweep.add_parsers(sub)  # sweep, sweep-task, launch
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, LogSchemaError, FileNotFoundError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

"""Subcommands ``sweep``, ``sweep-task`` and ``launch`` (wired into ``fedsqueeze.cli``).

``python -m fedsqueeze sweep jobs/x.toml [--out DIR] [--slurm KEY=VALUE] [--dry-run|--submit]``
    Expand and validate the ``[sweep]`` of a job file. ``--dry-run`` prints the rendered array
    script and writes nothing; otherwise the sweep folder is written (manifest, configs, job
    copy, ``sweep.sbatch``) and, with ``--submit``, handed to ``sbatch``.
``python -m fedsqueeze sweep-task FOLDER [INDEX]``
    Run task INDEX (default ``$SLURM_ARRAY_TASK_ID``) of a sweep folder; what
    ``slurm/sweep.sbatch`` does in every array task.
``python -m fedsqueeze launch JOB [--set ...] [--ranks N]``
    Start one run's ranks with srun or mpiexec (``slurm/run.sbatch``; also outside SLURM).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..config import apply_overrides, load_job, parse_overrides
from ..errors import ConfigError

__all__ = ["add_parsers", "add_sweep_parser", "add_sweep_task_parser", "add_launch_parser",
           "cmd_sweep", "cmd_sweep_task", "cmd_launch"]


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v and "id" not in v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# -- sweep ------------------------------------------------------------------------------------
def cmd_sweep(args: argparse.Namespace) -> int:
    from .slurm import SlurmOptions, render_sbatch, submit, template_path
    from .sweep import expand_sweep, flat_overrides, parse_sweep, write_manifest

    job = load_job(args.job)
    sweep = parse_sweep(job)
    items = expand_sweep(job, base=flat_overrides(args.set or []))
    table = apply_overrides(sweep.slurm, parse_overrides(args.slurm or []))
    options = SlurmOptions.parse(table, source=f"{job.path}: [sweep.slurm]")
    name = str(job.raw.get("name", Path(job.path).stem))
    folder = Path(args.out) if args.out else Path(items[0].config.log.out) / name
    folder = folder.resolve()
    tasks = _task_list(args.tasks, len(items)) if args.tasks else f"0-{len(items) - 1}"
    array = tasks + (f"%{options.max_parallel}" if options.max_parallel else "")
    template = Path(args.template) if args.template else template_path("sweep")
    script = render_sbatch(template.read_text(), options, job_name=name, ntasks=sweep.ranks,
                           output=f"{folder}/logs/{name}-%4a.out", array=array)
    axes = ", ".join(f"{k} ({len(v)})" for k, v in sweep.axes.items()) or "no axes"
    print(f"fedsqueeze sweep: {len(items)} runs of {sweep.ranks} ranks, {sweep.mode} of {axes}",
          file=sys.stderr)
    if args.dry_run:
        for it in items:
            print(f"  {it.index:4d} {it.name}: {json.dumps(it.overrides, sort_keys=True)}",
                  file=sys.stderr)
        sys.stdout.write(script)
        return 0
    write_manifest(folder, items, job=job, sweep=sweep,
                   slurm=options.model_dump(exclude_defaults=True))
    script_path = folder / "sweep.sbatch"
    script_path.write_text(script)
    print(f"sweep folder: {folder}")
    if not args.submit:
        print(f"submit with: sbatch {script_path} {folder}")
        return 0
    env = dict(os.environ)
    env.setdefault("FEDSQUEEZE_PYTHON", sys.executable)
    job_id = submit(script_path, [str(folder)], env=env)
    with open(folder / "jobs.txt", "a") as f:
        f.write(f"{job_id}\n")
    print(f"job id: {job_id}")
    return 0


def _task_list(spec: str, n: int) -> str:
    """Check ``"0,3-5"`` against ``n`` tasks; return it normalised for ``--array``."""
    parts = []
    for part in spec.replace(" ", "").split(","):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"--tasks {spec!r}: expected indices and ranges like 0,3-5") from None
        if not 0 <= a <= b < n:
            raise ConfigError(f"--tasks {spec!r}: {part} is outside the sweep's tasks 0-{n - 1}")
        parts.append(str(a) if a == b else f"{a}-{b}")
    return ",".join(parts)


def add_sweep_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sweep", help="expand a job's [sweep] into a SLURM job array")
    p.add_argument("job", help="job file with a [sweep] table, e.g. jobs/quickstart_sweep.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value in every run (not a swept key); repeatable")
    p.add_argument("--out", help="sweep folder (default: <log.out>/<job name>)")
    p.add_argument("--slurm", action="append", metavar="KEY=VALUE",
                   help="override a [sweep.slurm] option (TOML value); repeatable")
    p.add_argument("--tasks", metavar="LIST",
                   help="submit only these tasks, e.g. 0,3-5 (re-run failed ones)")
    p.add_argument("--template", help="sbatch template (default: slurm/sweep.sbatch)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="print the rendered array script; write and submit nothing")
    mode.add_argument("--submit", action="store_true", help="submit the array with sbatch")
    p.set_defaults(func=_guard(cmd_sweep))
    return p


# -- sweep-task -------------------------------------------------------------------------------
def cmd_sweep_task(args: argparse.Namespace) -> int:
    from .sweep import read_manifest, read_sweep, set_args, task_logs
    from .task import LaunchSpec, run_task

    folder = Path(args.folder).resolve()
    index = args.index if args.index is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    if index is None:
        raise ConfigError("sweep-task: no task index given and SLURM_ARRAY_TASK_ID is unset")
    try:
        index = int(index)
    except ValueError:
        raise ConfigError(f"sweep-task: task index {index!r} is not an integer") from None
    entries = {int(e["index"]): e for e in read_manifest(folder)}
    if index not in entries:
        raise ConfigError(f"{folder}: no task {index} (the sweep has tasks "
                          f"0..{max(entries, default=-1)})")
    entry, meta = entries[index], read_sweep(folder)
    ranks = int(os.environ.get("FEDSQUEEZE_RANKS") or meta.get("ranks", 3))
    spec = LaunchSpec(job=folder / "job.toml", set_args=tuple(set_args(entry["overrides"])),
                      out=folder, name=str(entry["name"]), ranks=ranks)
    _check_config(folder, entry)
    return run_task(spec, h5_files=task_logs(folder, entry))


def _check_config(folder: Path, entry: dict[str, Any]) -> None:
    """Warn when the job copy + overrides no longer give the config recorded at submission
    (a changed fedsqueeze default, say): the run uses the new one."""
    from .sweep import nest

    job = load_job(folder / "job.toml")
    now = job.config(apply_overrides(nest(entry["overrides"]),
                                     {"log": {"out": str(folder), "name": entry["name"]}}))
    try:
        then = json.loads((folder / entry["config"]).read_text())
    except (OSError, json.JSONDecodeError):
        return
    diff = sorted(k for k, v in _flatten(now.to_dict()).items() if _flatten(then).get(k) != v)
    if diff:
        print(f"fedsqueeze: warning: {entry['name']}: config differs from "
              f"{entry['config']} in {', '.join(diff)}", file=sys.stderr)


def add_sweep_task_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sweep-task", help="run one task of a sweep folder (array task)")
    p.add_argument("folder", help="sweep folder written by `fedsqueeze sweep`")
    p.add_argument("index", nargs="?", help="task index (default: $SLURM_ARRAY_TASK_ID)")
    p.set_defaults(func=_guard(cmd_sweep_task))
    return p


# -- launch -----------------------------------------------------------------------------------
def cmd_launch(args: argparse.Namespace) -> int:
    from ..config import load
    from .sweep import task_logs
    from .task import LaunchSpec, run_task

    sets = tuple(x for s in (args.set or []) for x in ("--set", s))
    cfg = load(args.job, args.set or [])  # fail here, before any rank starts
    out = Path(args.out or cfg.log.out).resolve()
    name = args.name or cfg.log.name or cfg.name
    ranks = args.ranks or int(os.environ.get("SLURM_NTASKS") or 0) or 3
    if ranks < 2:
        raise ConfigError(f"--ranks {ranks}: a run needs at least 2 ranks (server + worker)")
    spec = LaunchSpec(job=Path(args.job).resolve(), set_args=sets, out=out, name=name,
                      ranks=ranks)
    return run_task(spec, h5_files=task_logs(out, {"h5": f"{name}.h5"}))


def add_launch_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("launch", help="start a run's ranks with srun/mpiexec")
    p.add_argument("job", help="job file, e.g. jobs/quickstart.toml")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value (dotted key, TOML value); repeatable")
    p.add_argument("--out", help="output folder (default: log.out)")
    p.add_argument("--name", help="run name (default: log.name or the job name)")
    p.add_argument("--ranks", type=int,
                   help="MPI ranks (default: $SLURM_NTASKS inside an allocation, else 3)")
    p.set_defaults(func=_guard(cmd_launch))
    return p


def add_parsers(subparsers: Any) -> None:
    """Register ``sweep``, ``sweep-task`` and ``launch`` on ``subparsers``."""
    add_sweep_parser(subparsers)
    add_sweep_task_parser(subparsers)
    add_launch_parser(subparsers)


def _guard(fn):
    """Report SLURM failures like config errors: one line, exit code 2."""
    def run(args: argparse.Namespace) -> int:
        from .slurm import SbatchError

        try:
            return fn(args)
        except SbatchError as exc:
            print(f"SbatchError: {exc}", file=sys.stderr)
            return 2
    run.__doc__ = fn.__doc__
    return run

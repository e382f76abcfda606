"""Sweeps: the ``[sweep]`` table of a job file, its expansion into runs, and the sweep folder.

A job file declares its axes beside the run config; each key is a dotted config path and each
value the list of values it takes::

    [sweep]
    mode = "product"                    # or "zip": the i-th values of every axis together
    ranks = 3                           # MPI ranks per run (server + workers)
    "compress.up" = [{ id = "identity" }, { id = "fp16" }]
    "data.alpha" = [0.1, 0.5]
    seed = [0, 1]

    [sweep.slurm]                       # sbatch options, see fedsqueeze.launch.slurm.SlurmOptions
    time = "00:30:00"

Nested tables work too (``[sweep.data] alpha = [0.1, 0.5]``). :func:`expand_sweep` validates
every expanded config before anything is written or submitted, and names the axis value and the
task of a config that fails. A sweep folder (:func:`write_manifest`) holds:

- ``manifest.json``: ``[{"index", "name", "h5", "overrides", "config"}, ...]``, one entry per
  array task; ``h5`` and ``config`` are paths relative to the folder;
- ``configs/<name>.json``: each task's resolved config (``log.out``/``log.name`` included);
- ``job.toml``: a copy of the job file, which tasks run (``run job.toml --set ...``), so that
  editing ``jobs/`` after submitting changes nothing;
- ``sweep.json``: the sweep itself (format version, job, mode, axes, ranks, sbatch options).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Job, RunConfig, apply_overrides, from_dict, parse_overrides
from ..errors import ConfigError

__all__ = ["SweepItem", "Sweep", "parse_sweep", "expand_sweep", "flat_overrides", "nest",
           "write_manifest", "read_manifest", "read_sweep", "toml_literal", "set_args",
           "task_logs", "MANIFEST", "SWEEP_FORMAT"]

MANIFEST = "manifest.json"
SWEEP_FORMAT = 1
"""Version of the sweep folder layout (``sweep.json`` ``format``)."""
_RESERVED = ("mode", "ranks", "slurm")
_ERR_SPLIT = re.compile(r"; (?=[A-Za-z_][\w.]*(?: = |: unknown key))")
"""Where ``config.from_dict`` joins the messages of several bad keys."""
_DEFAULT_RANKS = 3


@dataclass(frozen=True)
class SweepItem:
    """One run of a sweep: array index, run name, its axis values and its validated config."""

    index: int
    name: str
    overrides: dict[str, Any]
    """Dotted path -> value, one entry per axis (``{"compress.up": {"id": "fp16"}}``)."""
    config: RunConfig


@dataclass(frozen=True)
class Sweep:
    """The parsed ``[sweep]`` table."""

    axes: dict[str, list[Any]]
    mode: str = "product"
    ranks: int = _DEFAULT_RANKS
    slurm: dict[str, Any] = field(default_factory=dict)
    """The raw ``[sweep.slurm]`` table, validated by ``SlurmOptions``."""

    def size(self) -> int:
        if not self.axes:
            return 1
        lengths = [len(v) for v in self.axes.values()]
        return math.prod(lengths) if self.mode == "product" else lengths[0]


def _flatten(table: Mapping[str, Any], prefix: str, source: str) -> dict[str, list[Any]]:
    axes: dict[str, list[Any]] = {}
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            axes.update(_flatten(value, f"{path}.", source))
        elif isinstance(value, list):
            if not value:
                raise ConfigError(f"{source}: [sweep] {path} = []: an axis needs at least one "
                                  "value")
            axes[path] = value
        else:
            raise ConfigError(f"{source}: [sweep] {path} = {value!r}: expected a list of values "
                              "(an axis), e.g. [1, 2]")
    return axes


def parse_sweep(job: Job) -> Sweep:
    """Check the shape of ``job.sweep`` (mode, ranks, axes as lists, no overlapping paths)."""
    raw, src = dict(job.sweep), job.path
    mode = raw.pop("mode", "product")
    if mode not in ("product", "zip"):
        raise ConfigError(f"{src}: [sweep] mode = {mode!r}: expected 'product' or 'zip'")
    ranks = raw.pop("ranks", _DEFAULT_RANKS)
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 2:
        raise ConfigError(f"{src}: [sweep] ranks = {ranks!r}: expected an integer >= 2 "
                          "(one server rank and at least one worker)")
    slurm = raw.pop("slurm", {})
    if not isinstance(slurm, Mapping):
        raise ConfigError(f"{src}: [sweep] slurm = {slurm!r}: expected a table [sweep.slurm]")
    axes = _flatten(raw, "", src)
    paths = sorted(axes)
    for a, b in itertools.pairwise(paths):
        if b.startswith(a + "."):
            raise ConfigError(f"{src}: [sweep] axes {a!r} and {b!r} overlap; sweep one of them")
    if mode == "zip" and len({len(v) for v in axes.values()}) > 1:
        lens = ", ".join(f"{k} has {len(v)}" for k, v in axes.items())
        raise ConfigError(f"{src}: [sweep] mode = 'zip' needs axes of equal length: {lens}")
    return Sweep(axes=axes, mode=mode, ranks=ranks, slurm=dict(slurm))


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a.c": 2}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        cur = out
        *parents, leaf = path.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = value
    return out


def _points(sweep: Sweep) -> list[dict[str, Any]]:
    keys = list(sweep.axes)
    values = [sweep.axes[k] for k in keys]
    rows = itertools.product(*values) if sweep.mode == "product" else zip(*values, strict=True)
    return [dict(zip(keys, row, strict=True)) for row in rows]


def _ranges(ints: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    out: list[str] = []
    for _, grp in itertools.groupby(enumerate(ints), lambda p: p[1] - p[0]):
        run = [v for _, v in grp]
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def flat_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["fl.rounds=2"]`` -> ``{"fl.rounds": 2}`` (values parsed as by ``--set``)."""
    out: dict[str, Any] = {}
    for item in items:
        parse_overrides([item])  # the same checks and messages as --set
        key, raw = item.split("=", 1)
        out[key.strip()] = parse_overrides([f"v={raw}"])["v"]
    return out


def expand_sweep(job: Job, base: Mapping[str, Any] | None = None) -> list[SweepItem]:
    """Every run of ``job``'s sweep, each config validated; one item if there is no sweep.

    ``base`` (dotted path -> value, e.g. from ``--set``) applies to every run and may not touch
    a swept key. Raises :class:`ConfigError` naming the task and its axis values when any
    config is invalid, and when two tasks resolve to the same config.
    """
    sweep = parse_sweep(job)
    base = dict(base or {})
    for b in base:
        for a in sweep.axes:
            if a == b or a.startswith(b + ".") or b.startswith(a + "."):
                raise ConfigError(f"{job.path}: --set {b} overlaps the sweep axis {a!r}")
    sweep_name = str(job.raw.get("name", Path(job.path).stem))
    items: list[SweepItem] = []
    failed: dict[str, list[int]] = {}  # message -> tasks, so a bad value is named once
    for index, point in enumerate(_points(sweep)):
        flat = {**base, **point}
        try:
            cfg = job.config(nest(flat))
        except ConfigError as exc:
            msg = str(exc).removeprefix(f"{job.path}: ")
            for part in _ERR_SPLIT.split(msg):
                part = part.replace("Value error, ", "")
                axes = [a for a in point if a in part]
                sets = [b for b in base if b in part]
                where = (f"sweep axis {max(axes, key=len)}" if axes else
                         f"--set {max(sets, key=len)}" if sets else "not a sweep axis")
                failed.setdefault(f"{part} [{where}", []).append(index)
            continue
        items.append(SweepItem(index, f"{sweep_name}-{index:04d}", flat, cfg))
    if failed:
        n_bad = sweep.size() - len(items)
        lines = [f"{k}: task{'s' if len(v) > 1 else ''} {_ranges(v)}]" for k, v in failed.items()]
        raise ConfigError(f"{job.path}: [sweep] {n_bad} of {sweep.size()} runs are invalid: "
                          + "; ".join(lines))
    seen: dict[str, int] = {}
    for it in items:
        key = it.config.to_json()
        if key in seen:
            raise ConfigError(f"{job.path}: [sweep] tasks {seen[key]} and {it.index} resolve to "
                              f"the same config ({_show(it.overrides)})")
        seen[key] = it.index
    return items


# -- overrides as --set arguments -------------------------------------------------------------
def toml_literal(value: Any) -> str:
    """``value`` as a TOML inline literal, so that ``parse_overrides`` reads it back unchanged."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for these purposes
    if isinstance(value, Sequence):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_literal(v)}"
                               for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def set_args(overrides: Mapping[str, Any]) -> list[str]:
    """``{"data.alpha": 0.1}`` -> ``["--set", "data.alpha=0.1"]``."""
    out: list[str] = []
    for path, value in overrides.items():
        out += ["--set", f"{path}={toml_literal(value)}"]
    return out


# -- the sweep folder -------------------------------------------------------------------------
def _entry(folder: Path, it: SweepItem) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = from_dict(apply_overrides(it.config.to_dict(),
                                    {"log": {"out": str(folder), "name": it.name}}),
                    source=f"task {it.index}")
    entry = {"index": it.index, "name": it.name, "h5": f"{it.name}.h5",
             "overrides": it.overrides, "config": f"configs/{it.name}.json"}
    return entry, cfg.to_dict()


def write_manifest(folder: str | Path, items: Sequence[SweepItem], *, job: Job | None = None,
                   sweep: Sweep | None = None, slurm: Mapping[str, Any] | None = None) -> Path:
    """Write ``manifest.json`` and ``configs/*.json`` (and, given ``job``, ``job.toml`` and
    ``sweep.json``) into ``folder``; return the manifest path.

    A folder that already holds a manifest is reused only for the same tasks (re-submitting a
    sweep re-runs what did not complete); otherwise :class:`ConfigError`.
    """
    folder = Path(folder).resolve()
    pairs = [_entry(folder, it) for it in items]
    entries = [e for e, _ in pairs]
    path = folder / MANIFEST
    if path.exists():
        old = read_manifest(folder)
        if [(e["name"], e["overrides"]) for e in old] != \
                [(e["name"], json.loads(json.dumps(e["overrides"]))) for e in entries]:
            raise ConfigError(f"{folder} already holds a different sweep ({len(old)} tasks); "
                              "choose another folder with --out or remove it")
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "logs").mkdir(exist_ok=True)
    for entry, cfg in pairs:
        (folder / entry["config"]).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    if job is not None:
        src = Path(job.path)
        if src.resolve() != (folder / "job.toml"):
            shutil.copyfile(src, folder / "job.toml")
        from .. import __version__

        meta = {"format": SWEEP_FORMAT, "fedsqueeze": __version__, "job": str(src),
                "name": str(job.raw.get("name", src.stem)), "n_tasks": len(entries)}
        if sweep is not None:
            meta.update(mode=sweep.mode, ranks=sweep.ranks, axes=sweep.axes)
        meta["slurm"] = dict(slurm if slurm is not None else (sweep.slurm if sweep else {}))
        (folder / "sweep.json").write_text(json.dumps(meta, indent=1) + "\n")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_manifest(folder: str | Path) -> list[dict[str, Any]]:
    """The entries of ``folder/manifest.json`` (:class:`ConfigError` if missing or malformed)."""
    path = Path(folder) / MANIFEST
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no sweep manifest; create the folder with "
                          "`python -m fedsqueeze sweep jobs/<file>.toml`") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON: {exc}") from None
    keys = {"index", "name", "h5", "overrides", "config"}
    if not isinstance(entries, list) or not all(isinstance(e, dict) and keys <= e.keys()
                                                for e in entries):
        raise ConfigError(f"{path}: expected a list of {{{', '.join(sorted(keys))}}} objects")
    return entries


def read_sweep(folder: str | Path) -> dict[str, Any]:
    """``folder/sweep.json`` (format checked)."""
    path = Path(folder) / "sweep.json"
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; not a sweep folder written by "
                          "`python -m fedsqueeze sweep`") from None
    if meta.get("format") != SWEEP_FORMAT:
        raise ConfigError(f"{path}: sweep folder format {meta.get('format')!r}; this fedsqueeze "
                          f"reads format {SWEEP_FORMAT}")
    return meta


def task_logs(folder: str | Path, entry: Mapping[str, Any]) -> list[Path]:
    """Every HDF5 log of one task, oldest first; the last one is the task's current log.

    A resumed run writes ``<name>.h5`` again (rows before its checkpoint carried over) and
    keeps the log of the interrupted attempt beside it as ``<name>.interrupted-<round>.h5``.
    """
    folder = Path(folder)
    current = folder / entry["h5"]
    stem = Path(entry["h5"]).stem

    def round_of(p: Path) -> int:
        tail = p.name[len(stem) + len(".interrupted-"):-len(".h5")]
        return int(tail) if tail.isdigit() else -1

    old = sorted((p for p in folder.glob(f"{stem}.interrupted-*.h5") if round_of(p) >= 0),
                 key=round_of)
    return old + ([current] if current.exists() else [])

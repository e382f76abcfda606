"""SLURM: the job environment, sbatch options, rendering the scripts in ``slurm/``, submitting.

- :class:`SlurmEnv` reads every SLURM variable fedsqueeze uses, in one place.
- :class:`SlurmOptions` is the ``[sweep.slurm]`` table, validated like the run config.
- :func:`render_sbatch` puts sorted ``#SBATCH`` lines into a template (``slurm/*.sbatch``) in
  place of its own; ``slurm/golden/*.sbatch`` are reference renders that a test compares with.
- :func:`submit` calls ``sbatch --parsable`` and returns the job id; :func:`requeue` puts a
  running job back in the queue (``scontrol requeue``).

Preemption: the scripts ask for ``--signal=B:USR2@<grace>`` and ``--requeue``. SLURM sends USR2
to the batch shell (which ``exec``\\ s the task runner, :mod:`fedsqueeze.launch.task`) ``grace``
seconds before the time limit; the runner forwards a stop signal to the ranks, waits for the
server's checkpoint and requeues the task, which resumes from the checkpoint. USR2 rather than
USR1 because NCCL and other libraries may take USR1 (submitit's choice as well).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError
from .sweep import expand_sweep

__all__ = ["SlurmEnv", "SlurmOptions", "render_sbatch", "submit", "requeue", "template_path",
           "expand_sweep", "SbatchError"]

SLURM_DIR = Path(__file__).resolve().parents[3] / "slurm"
"""``slurm/`` of a source checkout (the templates ship with the repository, not the wheel)."""


class SbatchError(RuntimeError):
    """``sbatch`` or ``scontrol`` failed; the message holds its output."""


def _int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class SlurmEnv:
    """The SLURM variables of this process (``None`` when unset, e.g. outside a job).

    Task-level fields (``procid``, ``localid``) describe this process only inside a job step
    (``srun``); see :mod:`fedsqueeze.launch.ranks` for rank discovery under any launcher.
    """

    job_id: str | None = None               # SLURM_JOB_ID: unique, also per array task
    array_job_id: str | None = None         # SLURM_ARRAY_JOB_ID: the %A of the array
    array_task_id: int | None = None        # SLURM_ARRAY_TASK_ID: the %a, our task index
    array_task_count: int | None = None     # SLURM_ARRAY_TASK_COUNT
    step_id: str | None = None              # SLURM_STEP_ID: set inside srun steps only
    procid: int | None = None               # SLURM_PROCID
    localid: int | None = None              # SLURM_LOCALID
    nodeid: int | None = None               # SLURM_NODEID
    ntasks: int | None = None               # SLURM_NTASKS: tasks of the allocation (or step)
    nnodes: int | None = None               # SLURM_JOB_NUM_NODES
    nodelist: str | None = None             # SLURM_JOB_NODELIST (compressed: node[01-04])
    cpus_per_task: int | None = None        # SLURM_CPUS_PER_TASK: srun 22.05+ needs it passed
    gpus_on_node: int | None = None         # SLURM_GPUS_ON_NODE
    restart_count: int = 0                  # SLURM_RESTART_COUNT: > 0 after a requeue
    job_name: str | None = None             # SLURM_JOB_NAME
    partition: str | None = None            # SLURM_JOB_PARTITION
    submit_dir: str | None = None           # SLURM_SUBMIT_DIR
    cluster: str | None = None              # SLURM_CLUSTER_NAME

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SlurmEnv:
        env = os.environ if environ is None else environ
        s = lambda n: env.get(n) or None  # noqa: E731
        return cls(job_id=s("SLURM_JOB_ID") or s("SLURM_JOBID"),
                   array_job_id=s("SLURM_ARRAY_JOB_ID"),
                   array_task_id=_int(env, "SLURM_ARRAY_TASK_ID"),
                   array_task_count=_int(env, "SLURM_ARRAY_TASK_COUNT"),
                   step_id=s("SLURM_STEP_ID") or s("SLURM_STEPID"),
                   procid=_int(env, "SLURM_PROCID"), localid=_int(env, "SLURM_LOCALID"),
                   nodeid=_int(env, "SLURM_NODEID"), ntasks=_int(env, "SLURM_NTASKS"),
                   nnodes=_int(env, "SLURM_JOB_NUM_NODES") or _int(env, "SLURM_NNODES"),
                   nodelist=s("SLURM_JOB_NODELIST") or s("SLURM_NODELIST"),
                   cpus_per_task=_int(env, "SLURM_CPUS_PER_TASK"),
                   gpus_on_node=_int(env, "SLURM_GPUS_ON_NODE"),
                   restart_count=_int(env, "SLURM_RESTART_COUNT") or 0,
                   job_name=s("SLURM_JOB_NAME"), partition=s("SLURM_JOB_PARTITION"),
                   submit_dir=s("SLURM_SUBMIT_DIR"), cluster=s("SLURM_CLUSTER_NAME"))

    @property
    def in_job(self) -> bool:
        """Inside a SLURM allocation (batch script, ``salloc`` shell or step)."""
        return self.job_id is not None

    @property
    def in_step(self) -> bool:
        """Started by ``srun`` (a job step), where the task variables describe this process."""
        return self.step_id is not None and self.step_id != "batch"

    @property
    def task_key(self) -> str | None:
        """``<array job>_<task>`` for array tasks, else the job id: what ``scancel`` takes."""
        if self.array_job_id is not None and self.array_task_id is not None:
            return f"{self.array_job_id}_{self.array_task_id}"
        return self.job_id

    def as_meta(self) -> dict[str, Any]:
        """Non-empty fields, for provenance (the HDF5 root, the task log)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) not in (None, "")}


_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^\d+-\d+$")
_MEM = re.compile(r"^\d+[KMGT]?$")


class SlurmOptions(BaseModel):
    """sbatch options of a run or sweep (the ``[sweep.slurm]`` table).

    ``ntasks`` is the number of SLURM tasks per run (default: the sweep's ``ranks``);
    ``gpus_per_node`` > 0 asks for that many GPUs per node, one rank per GPU;
    ``overcommit`` lets more ranks than cores share a node (small test clusters);
    ``max_parallel`` caps the array tasks running at once (``--array=0-N%max_parallel``);
    ``signal`` is when and how SLURM warns before the time limit (preemption, see module doc);
    ``extra`` holds further options verbatim, e.g. ``["--constraint=a100"]``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "01:00:00"
    nodes: int = Field(1, ge=1)
    ntasks: int | None = Field(None, ge=1)
    ntasks_per_node: int | None = Field(None, ge=1)
    cpus_per_task: int = Field(1, ge=1)
    gpus_per_node: int = Field(0, ge=0)
    mem: str | None = None
    overcommit: bool = False
    max_parallel: int | None = Field(None, ge=1)
    signal: str = "B:USR2@120"
    requeue: bool = True
    extra: list[str] = Field(default_factory=list)

    @field_validator("time")
    @classmethod
    def _time(cls, v: str) -> str:
        if not _TIME.match(v):
            raise ValueError("expected minutes, MM:SS, HH:MM:SS, D-HH or D-HH:MM:SS")
        return v

    @field_validator("mem")
    @classmethod
    def _mem(cls, v: str | None) -> str | None:
        if v is not None and not _MEM.match(v):
            raise ValueError("expected a size such as 4G or 500M")
        return v

    @field_validator("signal")
    @classmethod
    def _signal(cls, v: str) -> str:
        if not re.match(r"^(B:|R:)?(SIG)?[A-Z0-9]+(@\d+)?$", v):
            raise ValueError("expected [B:]SIGNAL[@seconds], e.g. B:USR2@120")
        return v

    @field_validator("extra")
    @classmethod
    def _extra(cls, v: list[str]) -> list[str]:
        for opt in v:
            if not opt.startswith("--") or "\n" in opt or " " in opt.strip():
                raise ValueError(f"{opt!r}: each entry is one long option, e.g. --constraint=a100")
        return v

    @classmethod
    def parse(cls, table: Mapping[str, Any], *, source: str = "[sweep.slurm]") -> SlurmOptions:
        """Validate a table; :class:`ConfigError` names each bad key and value."""
        try:
            return cls.model_validate(dict(table))
        except ValidationError as exc:
            msgs = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"])
                if err["type"] == "extra_forbidden":
                    msgs.append(f"{key}: unknown key (allowed: {', '.join(cls.model_fields)})")
                else:
                    msgs.append(f"{key} = {table.get(str(err['loc'][0]))!r}: {err['msg']}")
            raise ConfigError(f"{source}: " + "; ".join(msgs)) from None

    def sbatch_lines(self, *, job_name: str, output: str, ntasks: int,
                     array: str | None = None) -> list[str]:
        """The ``#SBATCH`` lines, sorted by option name."""
        opts: dict[str, str | None] = {
            "--job-name": job_name, "--output": output, "--time": self.time,
            "--nodes": str(self.nodes), "--ntasks": str(self.ntasks or ntasks),
            "--cpus-per-task": str(self.cpus_per_task), "--open-mode": "append",
            "--signal": self.signal}
        for key, val in (("--partition", self.partition), ("--account", self.account),
                         ("--qos", self.qos), ("--mem", self.mem), ("--array", array)):
            if val is not None:
                opts[key] = val
        if self.ntasks_per_node:
            opts["--ntasks-per-node"] = str(self.ntasks_per_node)
        if self.gpus_per_node:
            opts["--gpus-per-node"] = str(self.gpus_per_node)
        if self.overcommit:
            opts["--overcommit"] = None
        if self.requeue:
            opts["--requeue"] = None
        lines = [f"#SBATCH {k}" if v is None else f"#SBATCH {k}={v}" for k, v in opts.items()]
        lines += [f"#SBATCH {e.strip()}" for e in self.extra]
        return sorted(lines, key=lambda line: line.split("=", 1)[0])


def template_path(name: str) -> Path:
    """``slurm/<name>.sbatch`` of the source tree (``FEDSQUEEZE_SLURM_DIR`` overrides)."""
    root = Path(os.environ.get("FEDSQUEEZE_SLURM_DIR") or SLURM_DIR)
    path = root / f"{name}.sbatch"
    if not path.is_file():
        raise FileNotFoundError(f"no sbatch template {path}; set FEDSQUEEZE_SLURM_DIR to the "
                                "slurm/ folder of a fedsqueeze checkout")
    return path


def render_sbatch(template: str, options: SlurmOptions, *, job_name: str, output: str,
                  ntasks: int, array: str | None = None) -> str:
    """``template`` with its ``#SBATCH`` lines replaced by ``options``' sorted lines.

    The new lines go where the template's first ``#SBATCH`` line was (after the shebang if it
    had none); everything else is kept verbatim.
    """
    lines = template.splitlines()
    if not lines or not lines[0].startswith("#!"):
        raise ValueError("an sbatch template starts with a #! line")
    at = next((i for i, line in enumerate(lines) if line.startswith("#SBATCH")), 1)
    body = [line for line in lines if not line.startswith("#SBATCH")]
    new = options.sbatch_lines(job_name=job_name, output=output, ntasks=ntasks, array=array)
    return "\n".join(body[:at] + new + body[at:]) + "\n"


def _run(argv: Sequence[str], timeout: float, env: Mapping[str, str] | None) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        raise SbatchError(f"{argv[0]} not found: is this a SLURM login node?")
    try:
        p = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=timeout,
                           env=None if env is None else dict(env), check=False,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise SbatchError(f"{' '.join(argv)} did not answer within {timeout:.0f} s") from None
    if p.returncode != 0:
        raise SbatchError(f"{' '.join(argv)} exited {p.returncode}: "
                          f"{(p.stderr or p.stdout).strip()}")
    return p.stdout


def submit(script_path: str | Path, args: Sequence[str] = (), *,
           sbatch_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
           timeout: float = 60.0) -> str:
    """``sbatch --parsable [sbatch_args] script [args]``; returns the job id."""
    out = _run(["sbatch", "--parsable", *sbatch_args, str(script_path), *args], timeout, env)
    job_id = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
    if not job_id.isdigit():
        raise SbatchError(f"sbatch printed no job id: {out!r}")
    return job_id


def requeue(job: str, *, env: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
    """``scontrol requeue <job>``: back to pending; it restarts with SLURM_RESTART_COUNT + 1."""
    _run(["scontrol", "requeue", job], timeout, env)

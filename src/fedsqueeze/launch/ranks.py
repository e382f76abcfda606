"""Rank discovery and device binding from the launcher's environment, before (or without) MPI.

Which variables are trustworthy depends on who started the process:

======================  ==========================================  ============================
launcher                rank / size                                 local rank
======================  ==========================================  ============================
Open MPI ``mpiexec``    ``OMPI_COMM_WORLD_RANK`` / ``_SIZE``        ``OMPI_COMM_WORLD_LOCAL_RANK``
MPICH/Intel ``mpiexec`` ``PMI_RANK`` / ``PMI_SIZE``                 ``MPI_LOCALRANKID``
``srun --mpi=pmix``     ``PMIX_RANK``, ``SLURM_STEP_NUM_TASKS``     ``SLURM_LOCALID``
``srun --mpi=pmi2``     ``PMI_RANK`` / ``PMI_SIZE``                 ``SLURM_LOCALID``
plain ``python``        0 / 1                                       0
======================  ==========================================  ============================

The MPI launcher's own variables win over ``SLURM_*``: inside an allocation MPICH's ``mpiexec``
starts its proxies with ``srun``, so its ranks inherit ``SLURM_PROCID=0``, ``SLURM_LOCALID=0`` and
``SLURM_NTASKS=1`` of that proxy step (measured with Slurm 22.05 and PyPI MPICH 5). ``SLURM_*``
task variables count only inside a job step (``SLURM_STEP_ID`` set): in the batch script itself
``SLURM_PROCID=0`` and ``SLURM_NTASKS`` is the allocation's task count, not this process's world.

Nothing here initialises MPI or CUDA; :func:`bind_device` imports torch only when called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["RankInfo", "discover", "local_rank", "world_rank", "world_size", "bind_device",
           "training_device"]


@dataclass(frozen=True)
class RankInfo:
    """Where this process sits in its job, as its launcher told it.

    ``launcher`` is ``"openmpi"``, ``"hydra"`` (MPICH/Intel ``mpiexec``), ``"srun"`` or
    ``"local"`` (no launcher: a plain ``python`` process).
    """

    rank: int
    size: int
    local_rank: int
    local_size: int
    launcher: str


def _int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set to an integer in ``env``."""
    for n in names:
        raw = env.get(n, "").strip()
        if raw:
            try:
                return int(raw)
            except ValueError:
                continue
    return None


def _slurm_tasks_per_node(env: Mapping[str, str]) -> int | None:
    """This node's task count from ``SLURM_STEP_TASKS_PER_NODE`` (``"2(x3),1"``) and the node id."""
    spec = env.get("SLURM_STEP_TASKS_PER_NODE", "")
    node = _int(env, "SLURM_NODEID") or 0
    counts: list[int] = []
    for part in filter(None, spec.split(",")):
        n, _, rep = part.partition("(x")
        try:
            counts += [int(n)] * (int(rep.rstrip(")")) if rep else 1)
        except ValueError:
            return None
    return counts[node] if node < len(counts) else None


def discover(environ: Mapping[str, str] | None = None) -> RankInfo:
    """This process's rank, world size, local rank and local size, from ``environ``."""
    env = os.environ if environ is None else environ
    if _int(env, "OMPI_COMM_WORLD_RANK") is not None:
        return RankInfo(rank=_int(env, "OMPI_COMM_WORLD_RANK") or 0,
                        size=_int(env, "OMPI_COMM_WORLD_SIZE") or 1,
                        local_rank=_int(env, "OMPI_COMM_WORLD_LOCAL_RANK") or 0,
                        local_size=_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE") or 1,
                        launcher="openmpi")
    if _int(env, "MPI_LOCALRANKID") is not None:
        return RankInfo(rank=_int(env, "PMI_RANK", "PMIX_RANK") or 0,
                        size=_int(env, "PMI_SIZE") or 1,
                        local_rank=_int(env, "MPI_LOCALRANKID") or 0,
                        local_size=_int(env, "MPI_LOCALNRANKS") or 1,
                        launcher="hydra")
    if _int(env, "SLURM_STEP_ID") is not None and _int(env, "SLURM_PROCID") is not None:
        return RankInfo(rank=_int(env, "PMI_RANK", "PMIX_RANK", "SLURM_PROCID") or 0,
                        size=_int(env, "PMI_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS") or 1,
                        local_rank=_int(env, "SLURM_LOCALID", "PMI_LOCAL_RANK") or 0,
                        local_size=_slurm_tasks_per_node(env) or 1,
                        launcher="srun")
    if _int(env, "PMI_RANK", "PMIX_RANK") is not None:  # another PMI launcher
        return RankInfo(rank=_int(env, "PMI_RANK", "PMIX_RANK") or 0,
                        size=_int(env, "PMI_SIZE") or 1,
                        local_rank=_int(env, "PMI_LOCAL_RANK", "PMIX_LOCAL_RANK") or 0,
                        local_size=_int(env, "PMI_LOCAL_SIZE", "PMIX_LOCAL_SIZE") or 1,
                        launcher="pmi")
    return RankInfo(rank=0, size=1, local_rank=0, local_size=1, launcher="local")


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """Rank of this process among the processes of its node (0 without a launcher)."""
    return discover(environ).local_rank


def world_rank(environ: Mapping[str, str] | None = None) -> int:
    """Global rank as the launcher numbered it (equals ``COMM_WORLD`` rank once MPI starts)."""
    return discover(environ).rank


def world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of processes the launcher started (1 without a launcher)."""
    return discover(environ).size


def bind_device(environ: Mapping[str, str] | None = None, *, torch_module: Any = None) -> Any:
    """A ``torch.device``: ``cuda:<local_rank mod visible GPUs>`` if CUDA works, else ``cpu``.

    One rank per GPU: SLURM (``--gpus-per-node``) or the user exposes the node's GPUs, and the
    local rank picks one; when each rank sees a single GPU (``--gpus-per-task``,
    ``CUDA_VISIBLE_DEVICES`` per rank) the modulo maps every rank to ``cuda:0``. The chosen GPU
    is also made torch's current device. ``torch_module`` lets tests pass a stand-in.
    """
    torch = torch_module
    if torch is None:
        import torch  # noqa: PLC0415 - heavy, and only needed here
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n == 0:
        return torch.device("cpu")
    dev = torch.device("cuda", local_rank(environ) % n)
    torch.cuda.set_device(dev)
    return dev


def training_device(setting: str, environ: Mapping[str, str] | None = None, *,
                    torch_module: Any = None) -> Any:
    """The ``torch.device`` a client worker trains on for ``train.device = setting``.

    ``cpu`` never touches CUDA; ``auto`` is :func:`bind_device`; ``cuda`` is :func:`bind_device`
    and raises :class:`~fedsqueeze.errors.ConfigError` on a rank that sees no GPU.
    """
    torch = torch_module
    if torch is None:
        import torch  # noqa: PLC0415 - heavy, and only needed here
    if setting == "cpu":
        return torch.device("cpu")
    if setting not in ("auto", "cuda"):
        raise ConfigError(f"train.device = {setting!r}: expected 'cpu', 'auto' or 'cuda'")
    dev = bind_device(environ, torch_module=torch)
    if setting == "cuda" and str(dev) == "cpu":
        raise ConfigError("train.device = 'cuda': torch sees no CUDA device on rank "
                          f"{world_rank(environ)} (use 'auto' to fall back to the CPU)")
    return dev

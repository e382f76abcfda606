"""Rank discovery from launcher environments (as measured under Slurm 22.05 + PyPI MPICH 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fedsqueeze.config import load
from fedsqueeze.errors import ConfigError
from fedsqueeze.fl.world import build_world
from fedsqueeze.launch.ranks import (
    RankInfo,
    bind_device,
    discover,
    local_rank,
    training_device,
)

ROOT = Path(__file__).resolve().parents[3]

# the batch script of `sbatch -n 3`: task variables describe the allocation, not this process
BATCH = {"SLURM_JOB_ID": "7", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NTASKS": "3",
         "SLURM_NODEID": "0", "SLURM_TASKS_PER_NODE": "3"}
# a rank of MPICH's mpiexec inside that allocation: it inherits the proxy step's SLURM_* values
HYDRA_IN_SLURM = {**BATCH, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "1",
                  "SLURM_STEP_TASKS_PER_NODE": "1", "SLURM_NTASKS": "1", "PMI_RANK": "2",
                  "PMI_SIZE": "3", "MPI_LOCALRANKID": "2", "MPI_LOCALNRANKS": "3",
                  "PMI_FD": "6"}
SRUN_PMI2 = {**BATCH, "SLURM_STEP_ID": "1", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_NTASKS": "6", "SLURM_STEP_NUM_TASKS": "6",
             "SLURM_STEP_TASKS_PER_NODE": "4,2", "PMI_RANK": "5", "PMI_SIZE": "6"}
SRUN_PMIX = {"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "2", "SLURM_PROCID": "3",
             "SLURM_LOCALID": "3", "SLURM_NODEID": "0", "SLURM_STEP_NUM_TASKS": "8",
             "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "PMIX_RANK": "3"}
OPEN_MPI = {**BATCH, "SLURM_STEP_ID": "0", "OMPI_COMM_WORLD_RANK": "4",
            "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "4"}


@pytest.mark.parametrize(("env", "expected"), [
    ({}, RankInfo(0, 1, 0, 1, "local")),
    (BATCH, RankInfo(0, 1, 0, 1, "local")),
    (HYDRA_IN_SLURM, RankInfo(2, 3, 2, 3, "hydra")),
    (SRUN_PMI2, RankInfo(5, 6, 1, 2, "srun")),
    (SRUN_PMIX, RankInfo(3, 8, 3, 4, "srun")),
    (OPEN_MPI, RankInfo(4, 8, 0, 4, "openmpi")),
    ({"PMI_RANK": "1", "PMI_SIZE": "2", "PMI_LOCAL_RANK": "1"}, RankInfo(1, 2, 1, 1, "pmi")),
], ids=["plain", "batch-script", "mpiexec-in-slurm", "srun-pmi2", "srun-pmix", "openmpi", "pmi"])
def test_discover(env, expected):
    assert discover(env) == expected


def test_local_rank_ignores_inherited_slurm_localid():
    # every mpiexec rank inherits SLURM_LOCALID=0; binding by it would stack them on one GPU
    assert local_rank({**HYDRA_IN_SLURM, "MPI_LOCALRANKID": "1"}) == 1
    assert local_rank({**HYDRA_IN_SLURM, "MPI_LOCALRANKID": "2"}) == 2


def test_garbage_values_fall_back():
    assert discover({"PMI_RANK": "x", "SLURM_STEP_ID": "1", "SLURM_PROCID": "oops"}).rank == 0


def _fake_torch(n_gpus: int) -> SimpleNamespace:
    chosen = []
    cuda = SimpleNamespace(is_available=lambda: n_gpus > 0, device_count=lambda: n_gpus,
                           set_device=chosen.append)
    return SimpleNamespace(cuda=cuda, chosen=chosen,
                           device=lambda kind, index=None: f"{kind}:{index}" if index is not None
                           else kind)


@pytest.mark.parametrize(("n_gpus", "env", "expected"), [
    (0, SRUN_PMI2, "cpu"),
    (2, SRUN_PMI2, "cuda:1"),
    (4, SRUN_PMIX, "cuda:3"),
    (1, SRUN_PMIX, "cuda:0"),     # one visible GPU per rank (--gpus-per-task)
    (2, HYDRA_IN_SLURM, "cuda:0"),  # local rank 2 of 3 on a 2-GPU node wraps around
    (2, {}, "cuda:0"),
])
def test_bind_device(n_gpus, env, expected):
    torch = _fake_torch(n_gpus)
    assert bind_device(env, torch_module=torch) == expected
    assert torch.chosen == ([] if expected == "cpu" else [expected])


def test_bind_device_real_torch_on_this_machine():
    torch = pytest.importorskip("torch")
    dev = bind_device({})
    assert dev.type == ("cuda" if torch.cuda.is_available() else "cpu")


PROBE = """
import json, sys
from fedsqueeze.launch.ranks import discover
info = discover()
from mpi4py import MPI
c = MPI.COMM_WORLD
with open(f"{sys.argv[1]}/rank{c.Get_rank()}.json", "w") as f:  # mpiexec interleaves stdout
    json.dump({"mpi": [c.Get_rank(), c.Get_size()], "env": [info.rank, info.size,
               info.local_rank, info.local_size], "launcher": info.launcher}, f)
"""


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


@pytest.mark.mpi
@pytest.mark.skipif(_mpiexec() is None, reason="no mpiexec (pip install mpich)")
def test_discover_matches_mpi_under_mpiexec(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI", "OMPI_"))}
    p = subprocess.run([_mpiexec(), "-n", "3", sys.executable, "-c", PROBE, str(tmp_path)],
                       env=env,
                       capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL,
                       check=False)
    assert p.returncode == 0, p.stderr
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert [r["mpi"] for r in rows] == [[0, 3], [1, 3], [2, 3]]
    for r in rows:
        assert r["launcher"] == "hydra" and r["env"][:2] == r["mpi"]
        assert r["env"][3] == 3 and 0 <= r["env"][2] < 3
    assert sorted(r["env"][2] for r in rows) == [0, 1, 2]


@pytest.mark.parametrize(("setting", "n_gpus", "expected"), [
    ("cpu", 2, "cpu"),     # never touches CUDA, even where GPUs exist
    ("auto", 0, "cpu"),
    ("auto", 2, "cuda:1"),
    ("cuda", 4, "cuda:3"),
])
def test_training_device(setting, n_gpus, expected):
    torch = _fake_torch(n_gpus)
    env = SRUN_PMIX if n_gpus == 4 else SRUN_PMI2
    assert training_device(setting, env, torch_module=torch) == expected
    assert torch.chosen == ([] if expected == "cpu" else [expected])


def test_training_device_cuda_without_a_gpu_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.device = 'cuda'.*no CUDA device"):
        training_device("cuda", SRUN_PMI2, torch_module=_fake_torch(0))


def test_a_cpu_only_method_rejects_a_gpu_device():
    cfg = load(ROOT / "jobs/fedcompress.toml", ['train.device="auto"'])
    with pytest.raises(ConfigError, match=r"train\.device = 'auto'.*'fedcompress'.*CPU only"):
        build_world(cfg)

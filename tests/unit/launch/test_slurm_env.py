"""SlurmEnv parsing and sbatch option validation."""

from __future__ import annotations

import pytest

from fedsqueeze.errors import ConfigError
from fedsqueeze.launch.slurm import SlurmEnv, SlurmOptions

ARRAY_TASK = {"SLURM_JOB_ID": "1043", "SLURM_ARRAY_JOB_ID": "1040", "SLURM_ARRAY_TASK_ID": "3",
              "SLURM_ARRAY_TASK_COUNT": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
              "SLURM_NODEID": "0", "SLURM_NTASKS": "3", "SLURM_JOB_NUM_NODES": "1",
              "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_CPUS_PER_TASK": "2",
              "SLURM_RESTART_COUNT": "2", "SLURM_JOB_NAME": "sweep",
              "SLURM_JOB_PARTITION": "debug", "SLURM_SUBMIT_DIR": "/home/u"}


def test_outside_slurm():
    env = SlurmEnv.from_environ({})
    assert not env.in_job and not env.in_step
    assert env.task_key is None and env.restart_count == 0
    assert env.as_meta() == {"restart_count": 0}


def test_array_task():
    env = SlurmEnv.from_environ(ARRAY_TASK)
    assert env.in_job and not env.in_step
    assert env.job_id == "1043" and env.task_key == "1040_3"
    assert (env.array_task_id, env.array_task_count, env.restart_count) == (3, 8, 2)
    assert (env.ntasks, env.nnodes, env.cpus_per_task) == (3, 1, 2)
    assert env.nodelist == "node[01-02]"
    assert env.as_meta()["partition"] == "debug"


def test_step_and_old_names():
    env = SlurmEnv.from_environ({"SLURM_JOBID": "9", "SLURM_STEPID": "0",
                                 "SLURM_NODELIST": "n1", "SLURM_NNODES": "1"})
    assert env.job_id == "9" and env.in_step and env.task_key == "9"
    assert env.nodelist == "n1" and env.nnodes == 1


def test_bad_integers_read_as_unset():
    env = SlurmEnv.from_environ({"SLURM_JOB_ID": "5", "SLURM_ARRAY_TASK_ID": "x"})
    assert env.array_task_id is None and env.task_key == "5"


def test_options_defaults_sorted_lines():
    lines = SlurmOptions().sbatch_lines(job_name="j", output="o.out", ntasks=3)
    assert lines == sorted(lines)
    assert "#SBATCH --ntasks=3" in lines and "#SBATCH --requeue" in lines
    assert "#SBATCH --signal=B:USR2@120" in lines
    assert not any("gpus" in x or "partition" in x or "array" in x for x in lines)


def test_options_ntasks_overrides_ranks():
    lines = SlurmOptions(ntasks=1, overcommit=True).sbatch_lines(job_name="j", output="o",
                                                                  ntasks=3)
    assert "#SBATCH --ntasks=1" in lines and "#SBATCH --overcommit" in lines


@pytest.mark.parametrize(("table", "match"), [
    ({"time": "tomorrow"}, r"time = 'tomorrow'"),
    ({"mem": "lots"}, r"mem = 'lots'"),
    ({"nodes": 0}, r"nodes = 0"),
    ({"gpus": 1}, r"gpus: unknown key \(allowed: partition"),
    ({"signal": "USR2 now"}, r"signal"),
    ({"extra": ["-C v100"]}, r"extra"),
])
def test_options_errors_name_the_key(table, match):
    with pytest.raises(ConfigError, match=match):
        SlurmOptions.parse(table, source="x.toml: [sweep.slurm]")


@pytest.mark.parametrize("t", ["30", "10:00", "01:00:00", "2-00", "1-12:00:00"])
def test_options_time_formats(t):
    assert SlurmOptions.parse({"time": t}).time == t

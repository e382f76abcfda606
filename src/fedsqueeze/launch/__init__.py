"""fedsqueeze.launch: running on clusters.

- :mod:`~fedsqueeze.launch.ranks`: rank discovery (srun, mpiexec, plain runs) and device binding;
- :mod:`~fedsqueeze.launch.sweep`: ``[sweep]`` tables, their expansion and the sweep folder;
- :mod:`~fedsqueeze.launch.slurm`: ``SlurmEnv``, sbatch options, rendering and submitting;
- :mod:`~fedsqueeze.launch.task`: one run's ranks inside an allocation, through preemption;
- :mod:`~fedsqueeze.launch.cli_sweep`: the ``sweep``, ``sweep-task`` and ``launch`` commands.

Importing this package imports none of them.
"""

"""Hot loops only: no validation, no allocation policy, no MPI. See ``dispatch`` for the CPU/CUDA choice."""

#!/usr/bin/env bash
# Set up (once) and run the whole test suite: unit, MPI (mpiexec subprocesses on 2-5 ranks,
# oversubscribed), CUDA kernels under the Numba simulator, no-JIT kernel bodies, and a real
# single-node SLURM cluster (installed and started by the tests; skipped only where impossible).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export PYTHONHASHSEED=0 OMP_NUM_THREADS=1
python -m pytest tests "$@"

#!/usr/bin/env bash
# Set up (once) and run the quickstart job on 4 MPI ranks; prints where the HDF5 log and plot are.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec mpiexec -n "${RANKS:-4}" python -m fedsqueeze run jobs/quickstart.toml --plot "$@"

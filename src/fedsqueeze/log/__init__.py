"""fedsqueeze.log: the HDF5 run log (schema in ``log/schema.py``).

``RunWriter`` is used on the server rank only; ``read_run`` / ``read_runs`` / ``summarize``
are for analysis and the ``info`` command. Importing this package opens no file.
"""

from __future__ import annotations

from .reader import KNOWN_VERSIONS, Run, read_run
from .schema import SCHEMA_NAME, SCHEMA_VERSION
from .summary import read_runs, run_metrics, summarize
from .writer import RunWriter, collect_provenance

__all__ = [
    "SCHEMA_NAME",
    "SCHEMA_VERSION",
    "KNOWN_VERSIONS",
    "Run",
    "RunWriter",
    "collect_provenance",
    "read_run",
    "read_runs",
    "run_metrics",
    "summarize",
]

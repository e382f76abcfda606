"""fedsqueeze: communication-efficient federated learning over MPI with measured wire bytes.

Importing the package starts nothing: no MPI initialisation, no CUDA probing, no threads.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]

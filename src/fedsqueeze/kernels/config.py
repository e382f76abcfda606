"""Kernel compilation settings: the only place where Numba flags live.

fastmath stays off so that a frame encoded on the CPU decodes bit-identically on a GPU and back.
Tests lower ``THREADS_PER_BLOCK`` (through :func:`threads_per_block`) to force multi-block paths.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

NJIT = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}
"""Keyword arguments of every ``numba.njit`` in ``kernels/cpu``."""

_state = {"threads_per_block": 256, "max_blocks": 1024}


def threads_per_block() -> int:
    """Threads per CUDA block for grid-stride kernels."""
    return _state["threads_per_block"]


def max_blocks() -> int:
    """Upper bound on blocks per launch (grid-stride loops cover the rest)."""
    return _state["max_blocks"]


@contextlib.contextmanager
def launch_limits(threads: int, blocks: int) -> Iterator[None]:
    """Temporarily change the launch shape (tests use tiny values to exercise grid-stride loops)."""
    old = dict(_state)
    _state.update(threads_per_block=threads, max_blocks=blocks)
    try:
        yield
    finally:
        _state.update(old)

"""Small helpers for CUDA-twin tests (a pattern to copy for new kernels).

A CUDA test builds seeded inputs on the host, runs the CPU kernel and its ``kernels.cuda``
twin under each of :data:`SHAPES` (one block, and a grid-stride loop over several tiny blocks),
and compares the outputs byte for byte::

    @shapes
    def test_pack_twin(limits):
        codes = np.random.default_rng(0).integers(0, 8, 100).astype(np.uint16)
        want = np.zeros(38, np.uint8)
        cpu.pack_bits(codes, 3, want)
        got = cuda.device_array(38, np.uint8)
        with grid(limits):
            gpu.pack_bits(cuda.to_device(codes), 3, got)
        assert_same_bytes(want, got)

Float element-wise maps must be bit-identical too (fastmath is off and the shared element
functions avoid multiply-add contraction); only reductions whose order is not fixed may differ,
and those tests say so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import pytest

from fedsqueeze.kernels.config import launch_limits

__all__ = ["SIMULATOR", "SHAPES", "shapes", "cuda_status", "grid", "host", "assert_same_bytes"]

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
SHAPES = [(32, 1), (8, 3)]
"""``(threads per block, max blocks)``: a single block, and a grid-stride loop over 3 blocks."""

shapes = pytest.mark.parametrize("limits", SHAPES, ids=["1x32", "3x8"])


def cuda_status() -> tuple[bool, str]:
    """``(usable, reason)``: can this process launch CUDA kernels (GPU or simulator)?"""
    try:
        from numba import cuda
    except Exception as exc:  # pragma: no cover - broken installs
        return False, f"numba.cuda cannot be imported ({exc})"
    if cuda.is_available():
        return True, ""
    return False, "no CUDA GPU in this process and NUMBA_ENABLE_CUDASIM is not set"


@contextlib.contextmanager
def grid(limits: tuple[int, int]) -> Iterator[None]:
    """Launch with ``limits`` = (threads per block, max blocks) and synchronise on exit."""
    from numba import cuda

    with launch_limits(*limits):
        yield
    cuda.synchronize()


def host(a) -> np.ndarray:
    """A host copy of a device array (NumPy arrays pass through)."""
    return a if isinstance(a, np.ndarray) else a.copy_to_host()


def assert_same_bytes(expected, got, what: str = "") -> None:
    """Equal dtype, shape and bytes; on a mismatch name the first differing element."""
    e, g = host(expected), host(got)
    assert e.dtype == g.dtype and e.shape == g.shape, (
        f"{what}: {e.dtype}{e.shape} vs {g.dtype}{g.shape}")
    if e.tobytes() != g.tobytes():
        diff = np.flatnonzero(e.reshape(-1).view(np.uint8) != g.reshape(-1).view(np.uint8))
        i = int(diff[0]) // e.itemsize
        raise AssertionError(f"{what}: {diff.size} bytes differ; first at element {i}: "
                             f"expected {e.reshape(-1)[i]!r}, got {g.reshape(-1)[i]!r}")

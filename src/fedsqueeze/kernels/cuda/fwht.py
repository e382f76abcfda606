"""CUDA twin of :mod:`fedsqueeze.kernels.cpu.fwht` (same names, same arguments, device arrays).

One launch per butterfly stage ``h = 1, 2, ..., L/2``; each grid-stride item is one butterfly
``(x_j, x_{j+h}) <- (x_j + x_{j+h}, x_j - x_{j+h})`` of one row. Every element sees the same
float32 additions in the same order as on the CPU, so results are bit-identical. Launches go to
the default stream in order; synchronise before reading results on the host.

On a device (or under ``NUMBA_ENABLE_CUDASIM=1``)::

    x = cuda.to_device(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], np.float32))
    fwht_batch(x)   # x.copy_to_host() -> [[1, 1, 1, 1], [1, -1, 1, -1]]

>>> from fedsqueeze.kernels.config import launch_limits
>>> with launch_limits(32, 4):
...     launch_shape(1000)
(4, 32)
"""

from __future__ import annotations

from numba import cuda

from .. import config as _config

__all__ = ["launch_shape", "fwht", "fwht_batch"]


def launch_shape(work: int) -> tuple[int, int]:
    """``(blocks, threads)`` for ``work`` grid-stride items within ``kernels.config`` limits."""
    threads = _config.threads_per_block()
    blocks = max(1, min(_config.max_blocks(), (work + threads - 1) // threads))
    return blocks, threads


@cuda.jit
def _stage(x, h):  # pragma: no cover - compiled
    half = x.shape[1] // 2
    total = x.shape[0] * half
    for u in range(cuda.grid(1), total, cuda.gridsize(1)):
        r = u // half
        q = u - r * half
        i = (q // h) * 2 * h + (q - (q // h) * h)
        a = x[r, i]
        b = x[r, i + h]
        x[r, i] = a + b
        x[r, i + h] = a - b


def fwht_batch(x) -> None:
    """In-place FWHT of every row of a 2-D device array (row length a power of two)."""
    n = x.shape[1]
    blocks, threads = launch_shape(x.shape[0] * max(1, n // 2))
    h = 1
    while h < n:
        _stage[blocks, threads](x, h)
        h *= 2


def fwht(x) -> None:
    """In-place FWHT of a 1-D device array whose length is a power of two."""
    fwht_batch(x.reshape(1, x.shape[0]))

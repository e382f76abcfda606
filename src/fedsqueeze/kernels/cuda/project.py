"""CUDA twin of :mod:`fedsqueeze.kernels.cpu.project`: ``forward_cached`` / ``transpose_cached``.

Same names and argument order as the CPU kernels, on device arrays; the random blocks
``(bits, perm, gauss, scales)`` are generated on the CPU
(:func:`~fedsqueeze.kernels.cpu.project.fill_cache`) and copied over, as METHODS.md section 0.7
asks. The one difference: the workspaces ``work`` and ``work2`` are 2-D ``(chunk, L)`` float32,
so ``chunk`` blocks are transformed per pass (memory ``8 chunk L`` bytes).

Operations per element equal the CPU's: sign flip, float32 butterflies, float32 ``G * x``,
``float32(float64(y) * c_b)`` for forward rows, and the transpose adds ``float64(y_j) * (+-c_b)``
into ``acc[j]`` in increasing block order (one thread per ``j``). Under the simulator the
results are bit-identical to the CPU; on a GPU the compiler may fuse that multiply-add into an
FMA, so transposes are compared with a tolerance there.
"""

from __future__ import annotations

from numba import cuda, float32, float64

from .fwht import fwht_batch, launch_shape

__all__ = ["forward_cached", "transpose_cached"]


@cuda.jit(device=True)
def _negative(bits, b, i):  # pragma: no cover - compiled
    return (bits[b, i >> 3] >> (i & 7)) & 1


@cuda.jit
def _load_x(x, bits, work, s):  # pragma: no cover - compiled
    b0, rows = s
    n = work.shape[1]
    d = x.shape[0]
    for u in range(cuda.grid(1), rows * n, cuda.gridsize(1)):
        r = u // n
        i = u - r * n
        v = float32(0.0)
        if i < d:
            v = x[i]
            if _negative(bits, b0 + r, i):
                v = -v
        work[r, i] = v


@cuda.jit
def _gather(work, perm, gauss, work2, s):  # pragma: no cover - compiled
    b0, rows = s
    n = work.shape[1]
    for u in range(cuda.grid(1), rows * n, cuda.gridsize(1)):
        r = u // n
        i = u - r * n
        work2[r, i] = gauss[b0 + r, i] * work[r, perm[b0 + r, i]]


@cuda.jit
def _store(work2, scales, out, s):  # pragma: no cover - compiled
    b0, rows, add = s
    n = work2.shape[1]
    D = out.shape[0]
    for u in range(cuda.grid(1), rows * n, cuda.gridsize(1)):
        r = u // n
        i = u - r * n
        row = (b0 + r) * n + i
        if row < D:
            v = float32(float64(work2[r, i]) * scales[b0 + r])
            if add:
                out[row] = out[row] + v
            else:
                out[row] = v


@cuda.jit
def _load_g(g, work, s):  # pragma: no cover - compiled
    b0, rows = s
    n = work.shape[1]
    D = g.shape[0]
    for u in range(cuda.grid(1), rows * n, cuda.gridsize(1)):
        r = u // n
        i = u - r * n
        row = (b0 + r) * n + i
        work[r, i] = g[row] if row < D else float32(0.0)


@cuda.jit
def _scatter(work, perm, gauss, work2, s):  # pragma: no cover - compiled
    b0, rows = s
    n = work.shape[1]
    for u in range(cuda.grid(1), rows * n, cuda.gridsize(1)):
        r = u // n
        i = u - r * n
        work2[r, perm[b0 + r, i]] = gauss[b0 + r, i] * work[r, i]


@cuda.jit
def _reduce(work2, bits, scales, acc, s):  # pragma: no cover - compiled
    b0, rows = s
    for j in range(cuda.grid(1), acc.shape[0], cuda.gridsize(1)):
        a = acc[j]
        for r in range(rows):
            c = scales[b0 + r]
            if _negative(bits, b0 + r, j):
                c = -c
            a += float64(work2[r, j]) * c
        acc[j] = a


def _chunks(nb: int, chunk: int):
    for b0 in range(0, nb, chunk):
        yield b0, min(chunk, nb - b0)


def forward_cached(x, bits, perm, gauss, scales, work, work2, out, p) -> None:
    """``out = A x`` (``+=`` when ``p[6]``); ``work``, ``work2``: f32 ``(chunk, L)`` on device."""
    chunk, n = work.shape
    for b0, rows in _chunks(scales.shape[0], chunk):
        grid = launch_shape(rows * n)
        _load_x[grid](x, bits, work, (b0, rows))
        fwht_batch(work[:rows])
        _gather[grid](work, perm, gauss, work2, (b0, rows))
        fwht_batch(work2[:rows])
        _store[grid](work2, scales, out, (b0, rows, int(p[6])))


def transpose_cached(g, bits, perm, gauss, scales, work, work2, acc) -> None:
    """``acc += A^T g`` (float64 ``acc`` of length d) with the same chunked workspaces."""
    chunk, n = work.shape
    for b0, rows in _chunks(scales.shape[0], chunk):
        grid = launch_shape(rows * n)
        _load_g[grid](g, work, (b0, rows))
        fwht_batch(work[:rows])
        _scatter[grid](work, perm, gauss, work2, (b0, rows))
        fwht_batch(work2[:rows])
        _reduce[launch_shape(acc.shape[0])](work2, bits, scales, acc, (b0, rows))

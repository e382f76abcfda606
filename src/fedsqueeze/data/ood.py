"""Out-of-distribution inputs for server-side distillation (METHODS.md section 3.4 item 4).

Procedural "dead leaves" noise (Baradad et al., NeurIPS 2021): sample ``i`` is drawn from Philox
with purpose OOD_GEN, stream ``start + i``, round 0, so any rank regenerates any slice of the set
without communication. Uniforms are ``uniform53`` (sub_id 0) and Gaussians ``normal`` (sub_id 1),
two independent counter spaces.

Image ``H x W x C`` (values in [0, 1]): background colour, then ``S`` shapes painted in order
(later ones occlude), ``S = max(8, round(64 H W / 1024))``. Per shape, in draw order: radius
``r = (a^-2 - u (a^-2 - b^-2))^-1/2`` with ``a = 1``, ``b = min(H, W) / 2`` (density ``∝ r^-3``
on [a, b]); centre ``cx = -r + u (W + 2r)``, ``cy = -r + u (H + 2r)``; shape a disk
(``u < 0.5``) or an axis-aligned square of half-side ``r``; colour ``U[0, 1]^C``. Pixel
``(row, col)`` has centre ``(col + 0.5, row + 0.5)``.

1-D signal of length ``L``: background level and 12 interval levels ``~ N(0, 1)``, intervals of
half-width ``r`` (same law on [1, 20]) centred at ``U[-r, L + r]``, then a Gaussian filter
(``sigma = 2``, truncated at ``4 sigma``, reflected edges) and per-signal standardisation.
Tabular rows are ``N(0, I_d)``.

>>> imgs = dead_leaves_images(2, 8, 8, 1, seed=0)
>>> imgs.shape, bool(imgs.min() >= 0.0 and imgs.max() <= 1.0)
((2, 8, 8, 1), True)
"""

from __future__ import annotations

import numpy as np

from .. import rng
from .datasets import Dataset

__all__ = ["dead_leaves_images", "dead_leaves_1d", "gaussian_rows", "ood_like", "num_shapes"]

_UNIFORM, _NORMAL = 0, 1  # sub_ids


def num_shapes(height: int, width: int) -> int:
    """Shapes per image: 64 for 32 x 32, scaled with the area, at least 8."""
    return max(8, int(round(64 * height * width / 1024)))


def _radius(u: np.ndarray, a: float, b: float) -> np.ndarray:
    return (a ** -2 - u * (a ** -2 - b ** -2)) ** -0.5


def _check(n: int, start: int, seed: int) -> None:
    if n < 0 or start < 0:
        raise ValueError(f"n = {n} and start = {start} must be >= 0")
    rng.key_of(seed)  # validates the seed range


def dead_leaves_images(n: int, height: int, width: int, channels: int, *, seed: int,
                       start: int = 0) -> np.ndarray:
    """``n`` dead-leaves images, float32 ``(n, height, width, channels)`` in [0, 1].

    Image ``i`` uses stream ``start + i``, so ``dead_leaves_images(n, ..., start=s)[i]`` equals
    image ``s + i`` of any longer call.
    """
    _check(n, start, seed)
    if min(height, width, channels) < 1:
        raise ValueError(f"image shape {(height, width, channels)} must be positive")
    s = num_shapes(height, width)
    per_shape = 4 + channels
    cols = np.arange(width, dtype=np.float64) + 0.5
    rows = np.arange(height, dtype=np.float64)[:, None] + 0.5
    out = np.empty((n, height, width, channels), dtype=np.float32)
    for i in range(n):
        u = rng.uniform53(seed, purpose=rng.Purpose.OOD_GEN, stream=start + i, sub_id=_UNIFORM,
                          n=channels + s * per_shape)
        background, shapes = u[:channels], u[channels:].reshape(s, per_shape)
        r = _radius(shapes[:, 0], 1.0, min(height, width) / 2.0)
        cx = -r + shapes[:, 1] * (width + 2 * r)
        cy = -r + shapes[:, 2] * (height + 2 * r)
        dx = cols[None, None, :] - cx[:, None, None]
        dy = rows[None, :, :] - cy[:, None, None]
        rr = r[:, None, None]
        disk = dx * dx + dy * dy <= rr * rr
        square = (np.abs(dx) <= rr) & (np.abs(dy) <= rr)
        cover = np.where((shapes[:, 3] < 0.5)[:, None, None], disk, square)  # (S, H, W)
        top = s - 1 - np.argmax(cover[::-1], axis=0)  # last shape covering each pixel
        colours = shapes[:, 4:]
        out[i] = np.where(cover.any(axis=0)[..., None], colours[top], background)
    return out


def _gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    half = int(4 * sigma + 0.5)
    t = np.arange(-half, half + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, ((0, 0), (half, half)), mode="symmetric")
    windows = np.lib.stride_tricks.sliding_window_view(padded, len(k), axis=1)
    return windows @ k


def dead_leaves_1d(n: int, length: int = 40, *, seed: int, start: int = 0,
                   intervals: int = 12, sigma: float = 2.0) -> np.ndarray:
    """``n`` smoothed, standardised 1-D dead-leaves signals, float32 ``(n, length)``."""
    _check(n, start, seed)
    if length < 2 or intervals < 1:
        raise ValueError(f"length = {length} (>= 2) and intervals = {intervals} (>= 1)")
    pos = np.arange(length, dtype=np.float64) + 0.5
    raw = np.empty((n, length), dtype=np.float64)
    for i in range(n):
        key = {"purpose": rng.Purpose.OOD_GEN, "stream": start + i}
        u = rng.uniform53(seed, sub_id=_UNIFORM, n=2 * intervals, **key).reshape(intervals, 2)
        levels = rng.normal(seed, sub_id=_NORMAL, n=intervals + 1, **key).astype(np.float64)
        r = _radius(u[:, 0], 1.0, 20.0)
        c = -r + u[:, 1] * (length + 2 * r)
        cover = np.abs(pos[None, :] - c[:, None]) <= r[:, None]  # (intervals, length)
        top = intervals - 1 - np.argmax(cover[::-1], axis=0)
        raw[i] = np.where(cover.any(axis=0), levels[1:][top], levels[0])
    smooth = _gaussian_filter(raw, sigma)
    mean = smooth.mean(axis=1, keepdims=True)
    std = smooth.std(axis=1, keepdims=True)
    return ((smooth - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)


def gaussian_rows(n: int, dim: int, *, seed: int, start: int = 0) -> np.ndarray:
    """``n`` rows ``x ~ N(0, I_dim)``, float32 ``(n, dim)``; row ``i`` from stream ``start + i``."""
    _check(n, start, seed)
    out = np.empty((n, dim), dtype=np.float32)
    for i in range(n):
        out[i] = rng.normal(seed, purpose=rng.Purpose.OOD_GEN, stream=start + i,
                            sub_id=_NORMAL, n=dim)
    return out


def ood_like(dataset: Dataset, n: int, *, seed: int, start: int = 0) -> np.ndarray:
    """OOD inputs shaped and preprocessed like ``dataset.x_train`` (float32 ``(n, *shape)``).

    Images ``(C, H, W)``: dead leaves moved to channel-first; ``digits`` rounds to multiples of
    1/16 (its pixels are integers 0..16 divided by 16), ``cifar10`` applies the dataset's
    ``meta`` mean/std, other image sets keep [0, 1]. ``(1, L)`` signals: the 1-D variant.
    Flat vectors ``(d,)``: Gaussian rows. Token datasets raise ``ValueError``.
    """
    shape = dataset.input_shape
    if dataset.x_train.dtype != np.float32:
        raise ValueError(f"{dataset.name}: no OOD generator for token inputs")
    if len(shape) == 3:
        c, h, w = shape
        x = dead_leaves_images(n, h, w, c, seed=seed, start=start).transpose(0, 3, 1, 2)
        if dataset.name == "digits":
            x = np.round(x * np.float32(16.0)) / np.float32(16.0)
        elif "mean" in dataset.meta and "std" in dataset.meta:
            mean = np.asarray(dataset.meta["mean"], np.float64)[:, None, None]
            std = np.asarray(dataset.meta["std"], np.float64)[:, None, None]
            x = (x - mean) / std
        return np.ascontiguousarray(x, dtype=np.float32)
    if len(shape) == 2 and shape[0] == 1:
        return dead_leaves_1d(n, shape[1], seed=seed, start=start)[:, None, :]
    if len(shape) == 1:
        return gaussian_rows(n, shape[0], seed=seed, start=start)
    raise ValueError(f"{dataset.name}: no OOD generator for input shape {shape}")

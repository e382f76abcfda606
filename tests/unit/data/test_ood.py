"""Dead-leaves OOD generators: determinism, slicing by stream, painter's order, ranges."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.data import Dataset, load_dataset
from fedsqueeze.data.ood import (
    dead_leaves_1d,
    dead_leaves_images,
    gaussian_rows,
    num_shapes,
    ood_like,
)


def _paint_one(seed, stream, h, w, c):
    """Plain painter's algorithm, one pixel and one shape at a time (the oracle)."""
    s = num_shapes(h, w)
    u = rng.uniform53(seed, purpose=rng.Purpose.OOD_GEN, stream=stream, n=c + s * (4 + c))
    img = np.tile(u[:c], (h, w, 1))
    b = min(h, w) / 2.0
    for k in range(s):
        ur, ux, uy, ushape, *colour = u[c + k * (4 + c): c + (k + 1) * (4 + c)]
        r = 1.0 / np.sqrt(1.0 - ur * (1.0 - b ** -2))
        cx, cy = -r + ux * (w + 2 * r), -r + uy * (h + 2 * r)
        for row in range(h):
            for col in range(w):
                dx, dy = col + 0.5 - cx, row + 0.5 - cy
                inside = (dx * dx + dy * dy <= r * r) if ushape < 0.5 else (
                    abs(dx) <= r and abs(dy) <= r)
                if inside:
                    img[row, col] = colour
    return img.astype(np.float32)


@pytest.mark.parametrize(("h", "w", "c", "seed"), [(8, 8, 1, 0), (12, 10, 3, 7), (5, 9, 2, 3)])
def test_images_match_painter_oracle(h, w, c, seed):
    imgs = dead_leaves_images(3, h, w, c, seed=seed, start=4)
    for i in range(3):
        np.testing.assert_array_equal(imgs[i], _paint_one(seed, 4 + i, h, w, c))


@pytest.mark.parametrize(("h", "w", "expect"), [(8, 8, 8), (32, 32, 64), (28, 28, 49),
                                                (64, 64, 256)])
def test_num_shapes(h, w, expect):
    assert num_shapes(h, w) == expect


@pytest.mark.parametrize("start", [0, 3])
def test_images_slice_by_stream_and_seed(start):
    full = dead_leaves_images(6, 8, 8, 3, seed=1)
    part = dead_leaves_images(2, 8, 8, 3, seed=1, start=start)
    np.testing.assert_array_equal(part, full[start:start + 2])
    other = dead_leaves_images(2, 8, 8, 3, seed=2, start=start)
    assert not np.array_equal(part, other)
    assert full.dtype == np.float32 and 0.0 <= full.min() and full.max() < 1.0


@pytest.mark.parametrize(("length", "seed"), [(40, 0), (64, 5)])
def test_1d_standardised_and_sliceable(length, seed):
    x = dead_leaves_1d(5, length, seed=seed)
    assert x.shape == (5, length) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(dead_leaves_1d(2, length, seed=seed, start=3), x[3:])
    # smoothing with sigma = 2 leaves neighbouring samples strongly correlated
    assert np.mean(x[:, 1:] * x[:, :-1]) > 0.7


@pytest.mark.parametrize("start", [0, 2])
def test_gaussian_rows(start):
    rows = gaussian_rows(4, 60, seed=1, start=start)
    expect = rng.normal(1, purpose=rng.Purpose.OOD_GEN, stream=start + 1, sub_id=1, n=60)
    np.testing.assert_array_equal(rows[1], expect)


def test_ood_like_digits_keeps_sixteenths():
    ds = load_dataset("digits", seed=0)
    x = ood_like(ds, 10, seed=0)
    assert x.shape == (10, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x * 16, np.round(x * 16))
    assert 0.0 <= x.min() and x.max() <= 1.0


@pytest.mark.parametrize(("shape", "dtype", "result"), [
    ((60,), np.float32, (3, 60)), ((1, 40), np.float32, (3, 1, 40)),
    ((3, 4, 4), np.float32, (3, 3, 4, 4)), ((5,), np.int64, ValueError)])
def test_ood_like_shapes(shape, dtype, result):
    ds = Dataset(np.zeros((2, *shape), dtype), np.zeros(2, np.int64), np.zeros((1, *shape), dtype),
                 np.zeros(1, np.int64), 2, shape, "t", meta={"mean": [0.5] * 3, "std": [0.25] * 3})
    if result is ValueError:
        with pytest.raises(ValueError, match="token inputs"):
            ood_like(ds, 3, seed=0)
        return
    x = ood_like(ds, 3, seed=0)
    assert x.shape == result
    if len(shape) == 3:  # normalised with meta mean/std: raw values in [0, 1] -> [-2, 2]
        raw = dead_leaves_images(3, 4, 4, 3, seed=0).transpose(0, 3, 1, 2)
        np.testing.assert_allclose(x, (raw - 0.5) / 0.25, rtol=1e-6)

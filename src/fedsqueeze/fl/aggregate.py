"""Pure aggregation functions: streaming weighted mean (float64, O(model) memory) and robust rules."""

from __future__ import annotations

import numpy as np

__all__ = ["StreamingMean", "weighted_mean", "coordinate_median", "trimmed_mean"]


class StreamingMean:
    """``sum_i w_i x_i / sum_i w_i`` accumulated in float64, rounded to float32 once.

    Adding in a fixed order (increasing client id) makes the result independent of message
    arrival order and of the number of ranks.
    """

    def __init__(self, n: int) -> None:
        self.acc = np.zeros(n, dtype=np.float64)
        self.weight = 0.0
        self.count = 0

    def add(self, x: np.ndarray, weight: float) -> None:
        self.acc += np.float64(weight) * x.astype(np.float64, copy=False)
        self.weight += float(weight)
        self.count += 1

    def result(self) -> np.ndarray | None:
        if self.count == 0 or self.weight <= 0:
            return None
        return (self.acc / self.weight).astype(np.float32)


def weighted_mean(xs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Non-streaming reference of :class:`StreamingMean`."""
    m = StreamingMean(xs[0].shape[0])
    for x, w in zip(xs, weights, strict=True):
        m.add(x, w)
    return m.result()


def coordinate_median(xs: list[np.ndarray]) -> np.ndarray:
    """Coordinate-wise median (robust to up to half faulty clients); O(clients x model) memory."""
    return np.median(np.stack(xs), axis=0).astype(np.float32)


def trimmed_mean(xs: list[np.ndarray], trim_fraction: float) -> np.ndarray:
    """Coordinate-wise mean after dropping the ``floor(trim_fraction * m)`` largest and smallest."""
    a = np.sort(np.stack(xs), axis=0)
    k = int(np.floor(trim_fraction * a.shape[0]))
    if 2 * k >= a.shape[0]:
        k = (a.shape[0] - 1) // 2
    return a[k:a.shape[0] - k].mean(axis=0, dtype=np.float64).astype(np.float32)

"""The two halves of the model, built identically on every rank from the run config.

``world.model_factory()`` builds the full model with Philox weights (METHODS.md 0.7), and
:func:`fedsqueeze.models.split.split_model` cuts it at ``method.cut``. Prefix parameters come
first in the full model's flat order, so ``w = concat(w_prefix, w_suffix)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from ..errors import ConfigError
from ..fl.train import flat_params
from ..models.split import split_model

__all__ = ["Parts", "build_parts"]


@dataclass
class Parts:
    """A full model and its split: ``suffix(prefix(x)) == model(x)``; the modules are shared."""

    model: nn.Module
    prefix: nn.Sequential
    suffix: nn.Sequential
    d_a: int
    d_c: int  # prefix parameters
    d_s: int  # suffix parameters

    def prefix_weights(self) -> np.ndarray:
        return flat_params(self.prefix)

    def suffix_weights(self) -> np.ndarray:
        return flat_params(self.suffix)


def build_parts(world, cut: str | int) -> Parts:
    """Full model + prefix + suffix of ``world``'s model at ``cut`` (``ConfigError`` naming
    ``method.cut`` when the model has no such cut)."""
    model = world.model_factory()
    try:
        prefix, suffix = split_model(model, cut)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"method.cut = {cut!r}: {exc}") from None
    d_c = sum(p.numel() for p in prefix.parameters())
    d_s = sum(p.numel() for p in suffix.parameters())
    if d_c == 0:
        raise ConfigError(f"method.cut = {cut!r}: the prefix has no trainable parameters")
    if d_c + d_s != world.n_params:
        raise ConfigError(f"method.cut = {cut!r}: prefix ({d_c}) + suffix ({d_s}) parameters "
                          f"differ from the model's {world.n_params}")
    return Parts(model, prefix, suffix, int(prefix.d_a), int(d_c), int(d_s))

"""fedsqueeze.models: small model definitions, deterministic init, split-learning cuts.

>>> from fedsqueeze.models import build_model, flat_params
>>> flat_params(build_model("mlr", input_shape=(60,), num_classes=10, seed=0)).shape
(610,)
"""

from __future__ import annotations

from .init import flat_params, init_params, num_params, set_flat_params
from .small import SequentialModel, available_models, build_model
from .split import split_model

__all__ = ["SequentialModel", "build_model", "available_models", "init_params", "flat_params",
           "set_flat_params", "num_params", "split_model"]

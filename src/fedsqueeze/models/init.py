"""Deterministic model initialisation and flat parameter vectors (METHODS.md section 0.7).

Parameter ``i`` (in ``model.parameters()`` order) is drawn from Philox with purpose INIT,
stream ``i``, round 0, so every rank and process builds bit-identical weights from the run
seed without communication and without touching any global RNG:

=====================================  ==================================================
layer                                  values (float32)
=====================================  ==================================================
Linear, Conv (weight and bias)         ``b * (2 u24 - 1)``, ``b = float32(1 / sqrt(fan_in))``
                                       (torch's default Kaiming-uniform bounds)
Embedding                              ``normal`` (Box-Muller, as torch's N(0, 1));
                                       the ``padding_idx`` row is zero
GRU, LSTM, RNN                         ``b * (2 u24 - 1)``, ``b = float32(1 / sqrt(hidden))``
BatchNorm, GroupNorm, LayerNorm        weight 1, bias 0; running statistics reset
=====================================  ==================================================

``fan_in = weight.shape[1] * prod(weight.shape[2:])``; ``2 u24 - 1`` is exact in float32, so each
value is one float32 rounding of ``b`` times it. Any other module holding parameters raises
``TypeError``: a new layer type must be given a rule here first.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import rng

__all__ = ["init_params", "flat_params", "set_flat_params", "num_params"]

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _uniform(seed: int, stream: int, n: int, bound: float) -> np.ndarray:
    u = rng.uniform24(seed, purpose=rng.Purpose.INIT, stream=stream, round=0, n=n)
    return np.float32(bound) * (np.float32(2.0) * u - np.float32(1.0))


def _values(module: nn.Module, name: str, p: torch.Tensor, seed: int, stream: int) -> np.ndarray:
    n = p.numel()
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        w = module.weight
        fan_in = w.shape[1] * math.prod(w.shape[2:])
        return _uniform(seed, stream, n, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0)
    if isinstance(module, nn.RNNBase):
        return _uniform(seed, stream, n, 1.0 / math.sqrt(module.hidden_size))
    if isinstance(module, nn.Embedding):
        v = rng.normal(seed, purpose=rng.Purpose.INIT, stream=stream, round=0, n=n)
        if module.padding_idx is not None:
            v.reshape(p.shape)[module.padding_idx] = 0.0
        return v
    if isinstance(module, _NORMS):
        return np.full(n, 1.0 if name == "weight" else 0.0, dtype=np.float32)
    raise TypeError(f"no deterministic init rule for {type(module).__name__}.{name}; "
                    "add one to fedsqueeze.models.init")


@torch.no_grad()
def init_params(model: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter (and reset norm buffers) of ``model`` in place; returns it.

    Parameters
    ----------
    model : nn.Module
        On the CPU, float32 parameters.
    seed : int
        Run seed in ``[0, 2**64)``.
    """
    stream_of = {id(p): i for i, p in enumerate(model.parameters())}
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if p.dtype != torch.float32:
                raise TypeError(f"{type(module).__name__}.{name} is {p.dtype}, expected float32")
            v = _values(module, name, p, seed, stream_of[id(p)])
            p.copy_(torch.from_numpy(v.reshape(tuple(p.shape))))
        if isinstance(module, nn.modules.batchnorm._NormBase):
            module.reset_running_stats()
    return model


def num_params(model: nn.Module) -> int:
    """Number of parameter elements ``D`` (buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def flat_params(model: nn.Module) -> np.ndarray:
    """All parameters as one new float32 vector, in registration order, each in C order."""
    parts = [p.detach().to("cpu", torch.float32).reshape(-1).numpy() for p in model.parameters()]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@torch.no_grad()
def set_flat_params(model: nn.Module, vec: np.ndarray) -> None:
    """Copy ``vec`` (length :func:`num_params`, any float dtype) into the parameters in place.

    Raises
    ------
    ValueError
        If ``vec`` is not 1-D of exactly the model's parameter count.
    """
    vec = np.asarray(vec)
    n = num_params(model)
    if vec.ndim != 1 or vec.shape[0] != n:
        raise ValueError(f"flat vector of shape {vec.shape}, expected ({n},)")
    src = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float32))
    offset = 0
    for p in model.parameters():
        k = p.numel()
        p.copy_(src[offset:offset + k].view(p.shape))
        offset += k

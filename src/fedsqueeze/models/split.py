"""Cut a :class:`~fedsqueeze.models.small.SequentialModel` for split learning (METHODS.md 5.1).

The prefix ``g_c`` runs the first stages and flattens its activation to ``(B, d_a)``; the suffix
``f_s`` unflattens ``(B, d_a)`` and runs the rest, so ``suffix(prefix(x)) == model(x)``.
Named cuts (``model.cuts``) of the small models:

============  ==========  ==============================  =======
model         cut         activation                      d_a
============  ==========  ==============================  =======
digits_cnn    ``conv1``   conv1 + ReLU, 16 x 8 x 8        1,024
cnn1d         ``conv1``   conv1 + ReLU, 32 x 40           1,280
char_gru      ``embedding``  seq_len x 16                 512 (seq_len 32)
femnist_cnn   ``conv2``   conv2 + ReLU + pool, 64 x 7 x 7  3,136
============  ==========  ==============================  =======

The two parts share their modules (and so their parameters) with the model they were cut from;
``copy.deepcopy`` them when the two roles must own separate weights.

>>> prefix, suffix = split_model("digits_cnn", "conv1", input_shape=(1, 8, 8), num_classes=10,
...                              seed=0)
>>> prefix.d_a
1024
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import nn

from ..errors import ConfigError
from .small import SequentialModel, build_model

__all__ = ["split_model"]


def _cut_index(model: SequentialModel, cut: str | int) -> int:
    if isinstance(cut, str):
        if cut not in model.cuts:
            raise ConfigError(f"unknown cut {cut!r} for {type(model).__name__}; known: "
                              f"{', '.join(sorted(model.cuts)) or 'none'}")
        return model.cuts[cut]
    if isinstance(cut, bool) or not isinstance(cut, int) or not 1 <= cut < len(model):
        raise ConfigError(f"cut = {cut!r}: an integer cut is the number of leading stages, "
                          f"expected 1..{len(model) - 1}")
    return cut


@torch.no_grad()
def _activation_shape(stages: nn.Sequential, model: SequentialModel) -> tuple[int, ...]:
    was_training = stages.training
    stages.eval()  # batch of one through norm layers
    try:
        x = torch.zeros((1, *model.input_shape), dtype=model.input_dtype)
        return tuple(stages(x).shape[1:])
    finally:
        stages.train(was_training)


def split_model(
    name_or_model: str | SequentialModel, cut: str | int, *,
    input_shape: tuple[int, ...] | None = None, num_classes: int | None = None, seed: int = 0,
) -> tuple[nn.Sequential, nn.Sequential]:
    """Split a model into a client prefix and a server suffix.

    Parameters
    ----------
    name_or_model : str or SequentialModel
        A model, or a name for :func:`~fedsqueeze.models.small.build_model` (then
        ``input_shape``, ``num_classes`` and ``seed`` are passed to it).
    cut : str or int
        A name in ``model.cuts``, or the number of leading stages in the prefix.

    Returns
    -------
    prefix, suffix : nn.Sequential
        ``prefix`` maps a batch of inputs to ``(B, d_a)``; ``suffix`` maps ``(B, d_a)`` to
        logits. Both carry ``d_a`` and ``activation_shape``; ``prefix`` also ``input_shape``
        and ``input_dtype``.
    """
    if isinstance(name_or_model, str):
        if input_shape is None or num_classes is None:
            raise ConfigError("split_model by name needs input_shape and num_classes")
        model = build_model(name_or_model, input_shape=input_shape, num_classes=num_classes,
                            seed=seed)
    elif isinstance(name_or_model, SequentialModel):
        model = name_or_model
    else:
        raise TypeError(f"expected a model name or SequentialModel, got "
                        f"{type(name_or_model).__name__}")
    k = _cut_index(model, cut)
    stages = list(model.named_children())
    head = nn.Sequential(OrderedDict(stages[:k]))
    shape = _activation_shape(head, model)
    d_a = math.prod(shape)
    prefix = nn.Sequential(OrderedDict([*stages[:k], ("to_flat", nn.Flatten(1))]))
    suffix = nn.Sequential(OrderedDict([("from_flat", nn.Unflatten(1, shape)), *stages[k:]]))
    for part in (prefix, suffix):
        part.d_a, part.activation_shape = d_a, shape
    prefix.input_shape, prefix.input_dtype = model.input_shape, model.input_dtype
    return prefix, suffix

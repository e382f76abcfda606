"""Model definitions (METHODS.md sections 7.8 and 7.9) and the :func:`build_model` registry.

Every model is a :class:`SequentialModel`: an ``nn.Sequential`` of named stages that also
knows its ``input_shape``, its input dtype and its named cut points, so that
:func:`fedsqueeze.models.split.split_model` can cut it for split learning. Models are built on
the ``meta`` device (no global torch RNG is touched) and then filled by the deterministic
Philox initialiser of :mod:`fedsqueeze.models.init`.

==================  ==============================================  ============  ===========
name                layers                                          example input D
==================  ==============================================  ============  ===========
digits_mlp          64-64-10                                        (1, 8, 8)     4,810
digits_cnn          conv3 16, conv3 32, GAP "embedding", fc         (1, 8, 8)     5,130
mlp1d               40-100-100-10                                   (1, 40)       15,210
cnn1d               conv5 32, conv3/2 32, conv3/2 32, GAP, fc       (1, 40)       6,730
cnn1d_wide          conv5 32, conv3 64, flatten, fc 400, fc         (1, 40)       1,034,810
mlr                 linear                                          (60,)         610
mnist_2nn           784-200-200-10                                  (1, 28, 28)   199,210
mnist_cnn           conv5 32, pool, conv5 64, pool, fc 512, fc      (1, 28, 28)   1,663,370
femnist_cnn         as mnist_cnn with fc 2048 (LEAF), 62 classes    (1, 28, 28)   6,603,710
char_gru            embedding 16, GRU 64, fc                        (32,) tokens  23,925 (101)
shakespeare_lstm    embedding 8, 2-layer LSTM 256, fc (LEAF)        (80,) tokens  820,185 (81)
resnet20            He et al. CIFAR ResNet-20, option-A shortcuts   (3, 32, 32)   269,722
==================  ==============================================  ============  ===========

Token models take int64 indices in ``[0, num_classes)``: their vocabulary is the class set.

>>> m = build_model("digits_mlp", input_shape=(1, 8, 8), num_classes=10, seed=0)
>>> sum(p.numel() for p in m.parameters())
4810
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import nn

from ..errors import ConfigError
from .init import init_params

__all__ = ["SequentialModel", "build_model", "available_models", "MODELS"]


class SequentialModel(nn.Sequential):
    """Named stages run in order, plus what split learning and data loaders need to know.

    Attributes
    ----------
    input_shape : tuple of int
        Shape of one sample (without the batch dimension).
    input_dtype : torch.dtype
        ``torch.float32``, or ``torch.int64`` for token models.
    cuts : mapping of str to int
        Cut name -> number of leading stages that form the split-learning prefix.
    """

    def __init__(self, stages: list[tuple[str, nn.Module]], *, input_shape: tuple[int, ...],
                 cuts: Mapping[str, int], input_dtype: torch.dtype = torch.float32) -> None:
        super().__init__(OrderedDict(stages))
        self.input_shape = tuple(input_shape)
        self.input_dtype = input_dtype
        self.cuts = MappingProxyType(dict(cuts))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the stage named ``embedding`` (the pooled features before the classifier)."""
        if "embedding" not in self._modules:
            raise AttributeError(f"{type(self).__name__} has no 'embedding' stage")
        for name, stage in self.named_children():
            x = stage(x)
            if name == "embedding":
                return x
        raise AssertionError("unreachable")


class LastGRU(nn.GRU):
    """A batch-first GRU that returns the output at the last time step, ``(B, hidden)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0][:, -1]


class LastLSTM(nn.LSTM):
    """A batch-first LSTM that returns the output at the last time step, ``(B, hidden)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x)[0][:, -1]


class BasicBlock(nn.Module):
    """ResNet basic block with the parameter-free option-A shortcut (He et al. 2016, CIFAR)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride, self.pad = stride, c_out - c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.pad:
            short = nn.functional.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return torch.relu(out + short)


def _need(name: str, input_shape: tuple[int, ...], ndim: int, what: str) -> None:
    if len(input_shape) != ndim or min(input_shape) < 1:
        raise ConfigError(f"model {name!r} needs input_shape {what}, got {input_shape}")


def _mlp(name: str, hidden: tuple[int, ...]):
    def build(input_shape, num_classes):
        sizes = (math.prod(input_shape), *hidden, num_classes)
        stages: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten(1))]
        cuts = {}
        for i in range(len(sizes) - 1):
            stages.append((f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1])))
            if i < len(sizes) - 2:
                stages.append((f"relu{i + 1}", nn.ReLU()))
                cuts[f"fc{i + 1}"] = len(stages)
        return SequentialModel(stages, input_shape=input_shape, cuts=cuts)
    build.__name__ = name
    return build


def _digits_cnn(input_shape, num_classes):
    _need("digits_cnn", input_shape, 3, "(C, H, W)")
    stages = [("conv1", nn.Conv2d(input_shape[0], 16, 3, padding=1)), ("relu1", nn.ReLU()),
              ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()),
              ("embedding", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))),
              ("fc", nn.Linear(32, num_classes))]
    return SequentialModel(stages, input_shape=input_shape,
                           cuts={"conv1": 2, "conv2": 4, "embedding": 5})


def _cnn1d(input_shape, num_classes):
    _need("cnn1d", input_shape, 2, "(C, L)")
    stages = [("conv1", nn.Conv1d(input_shape[0], 32, 5, padding=2)), ("relu1", nn.ReLU()),
              ("conv2", nn.Conv1d(32, 32, 3, stride=2, padding=1)), ("relu2", nn.ReLU()),
              ("conv3", nn.Conv1d(32, 32, 3, stride=2, padding=1)), ("relu3", nn.ReLU()),
              ("embedding", nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(1))),
              ("fc", nn.Linear(32, num_classes))]
    return SequentialModel(stages, input_shape=input_shape,
                           cuts={"conv1": 2, "conv2": 4, "conv3": 6, "embedding": 7})


def _cnn1d_wide(input_shape, num_classes):
    """A >= 1M-parameter 1-D CNN (no pooling; the fc layer holds 99% of the weights)."""
    _need("cnn1d_wide", input_shape, 2, "(C, L)")
    c, length = input_shape
    stages = [("conv1", nn.Conv1d(c, 32, 5, padding=2)), ("relu1", nn.ReLU()),
              ("conv2", nn.Conv1d(32, 64, 3, padding=1)), ("relu2", nn.ReLU()),
              ("flatten", nn.Flatten(1)),
              ("fc1", nn.Linear(64 * length, 400)), ("relu3", nn.ReLU()),
              ("fc2", nn.Linear(400, num_classes))]
    return SequentialModel(stages, input_shape=input_shape, cuts={"conv1": 2, "conv2": 4})


def _two_conv(name: str, hidden: int):
    def build(input_shape, num_classes):
        _need(name, input_shape, 3, "(C, H, W) with H, W divisible by 4")
        c, h, w = input_shape
        if h % 4 or w % 4:
            raise ConfigError(f"model {name!r} needs H, W divisible by 4, got {input_shape}")
        stages = [("conv1", nn.Conv2d(c, 32, 5, padding=2)), ("relu1", nn.ReLU()),
                  ("pool1", nn.MaxPool2d(2)),
                  ("conv2", nn.Conv2d(32, 64, 5, padding=2)), ("relu2", nn.ReLU()),
                  ("pool2", nn.MaxPool2d(2)), ("flatten", nn.Flatten(1)),
                  ("fc1", nn.Linear(64 * (h // 4) * (w // 4), hidden)), ("relu3", nn.ReLU()),
                  ("fc2", nn.Linear(hidden, num_classes))]
        return SequentialModel(stages, input_shape=input_shape, cuts={"conv1": 3, "conv2": 6})
    build.__name__ = name
    return build


def _recurrent(name: str, cell: type[nn.Module], emb: int, hidden: int, layers: int):
    def build(input_shape, num_classes):
        _need(name, input_shape, 1, "(seq_len,) of token indices")
        stages = [("embedding", nn.Embedding(num_classes, emb)),
                  ("rnn", cell(emb, hidden, num_layers=layers, batch_first=True)),
                  ("fc", nn.Linear(hidden, num_classes))]
        return SequentialModel(stages, input_shape=input_shape, input_dtype=torch.int64,
                               cuts={"embedding": 1})
    build.__name__ = name
    return build


def _resnet20(input_shape, num_classes):
    _need("resnet20", input_shape, 3, "(C, H, W)")
    stem = nn.Sequential(OrderedDict(conv=nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False),
                                     bn=nn.BatchNorm2d(16), relu=nn.ReLU()))
    stages: list[tuple[str, nn.Module]] = [("stem", stem)]
    c_in = 16
    for i, c in enumerate((16, 32, 64)):
        blocks = [BasicBlock(c_in if b == 0 else c, c, 2 if (b == 0 and i > 0) else 1)
                  for b in range(3)]
        stages.append((f"layer{i + 1}", nn.Sequential(*blocks)))
        c_in = c
    stages += [("embedding", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))),
               ("fc", nn.Linear(64, num_classes))]
    return SequentialModel(stages, input_shape=input_shape,
                           cuts={"stem": 1, "layer1": 2, "layer2": 3, "embedding": 5})


MODELS: Mapping[str, Callable[[tuple[int, ...], int], SequentialModel]] = MappingProxyType({
    "digits_mlp": _mlp("digits_mlp", (64,)),
    "digits_cnn": _digits_cnn,
    "mlp1d": _mlp("mlp1d", (100, 100)),
    "cnn1d": _cnn1d,
    "cnn1d_wide": _cnn1d_wide,
    "mlr": _mlp("mlr", ()),
    "mnist_2nn": _mlp("mnist_2nn", (200, 200)),
    "mnist_cnn": _two_conv("mnist_cnn", 512),
    "femnist_cnn": _two_conv("femnist_cnn", 2048),
    "char_gru": _recurrent("char_gru", LastGRU, 16, 64, 1),
    "shakespeare_lstm": _recurrent("shakespeare_lstm", LastLSTM, 8, 256, 2),
    "resnet20": _resnet20,
})
"""Model name -> builder ``(input_shape, num_classes) -> SequentialModel`` (uninitialised)."""


def available_models() -> list[str]:
    """Sorted names accepted by :func:`build_model`."""
    return sorted(MODELS)


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int,
                seed: int) -> SequentialModel:
    """Build model ``name`` with deterministic Philox weights (:func:`~.init.init_params`).

    Parameters
    ----------
    name : str
        One of :func:`available_models`.
    input_shape : tuple of int
        One sample's shape, e.g. ``Dataset.input_shape``.
    num_classes : int
        Output classes (and the vocabulary size of token models).
    seed : int
        Run seed; equal seeds give bit-identical weights on every rank and process.

    Returns
    -------
    SequentialModel
        On the CPU, in training mode.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(available_models())}")
    if num_classes < 1:
        raise ConfigError(f"num_classes = {num_classes}, expected >= 1")
    input_shape = tuple(int(s) for s in input_shape)
    # torch's default init draws from the global generator: fork it, so the caller's stream is
    # untouched (the "meta" device would skip the draws, but its first use imports SymPy and
    # torch's meta registrations, ~1 s per rank at start-up)
    with torch.random.fork_rng(devices=[]):
        model = MODELS[name](input_shape, int(num_classes))
    init_params(model, seed)
    return model

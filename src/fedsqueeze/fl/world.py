"""Everything a rank builds from the resolved config, identically on every rank, without
communication: dataset, partition, model, initial weights, codecs and the method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import compress
from ..config import RunConfig
from ..errors import ConfigError
from .strategy import get_method

__all__ = ["World", "build_world"]


@dataclass
class World:
    cfg: RunConfig
    dataset: Any
    parts: list[np.ndarray]
    samples: np.ndarray
    model_factory: Any
    n_params: int
    w0: np.ndarray
    up: compress.Compressor
    down: compress.Compressor
    strategy_cls: type
    program_cls: type
    options: Any

    def tensors(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        d = self.dataset
        x, y = (d.x_train, d.y_train) if split == "train" else (d.x_test, d.y_test)
        return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y,
                                                                                       np.int64))


def build_world(cfg: RunConfig) -> World:
    """Load data, partition it, build the model and codecs. Raises ConfigError naming keys."""
    from ..data.datasets import load_dataset
    from ..data.partition import partition
    from ..models import build_model, num_params
    from .train import flat_params

    torch.set_num_threads(1)  # bit-identical training on any rank; ranks are the parallelism
    d = cfg.data
    try:
        ds = load_dataset(d.name, seed=cfg.seed, path=d.path, **d.options)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise ConfigError(f"data.name = {d.name!r}: {exc}") from None
    if d.partition == "natural":
        if not getattr(ds, "train_groups", None):
            raise ConfigError(f"data.partition = 'natural': dataset {d.name!r} has no natural "
                              "client groups (allowed for it: iid, iid_uniform, dirichlet, shards)")
        parts = [np.asarray(g, dtype=np.int64) for g in ds.train_groups]
        if len(parts) != d.clients:
            raise ConfigError(f"data.clients = {d.clients}: dataset {d.name!r} has {len(parts)} "
                              "natural clients")
    else:
        if d.clients > len(ds.y_train):
            raise ConfigError(f"data.clients = {d.clients}: more clients than the "
                              f"{len(ds.y_train)} training samples")
        parts = partition(np.asarray(ds.y_train), d.clients, d.partition, seed=cfg.seed,
                          alpha=d.alpha, shards_per_client=d.shards_per_client,
                          min_size=d.min_size)
    samples = np.array([p.shape[0] for p in parts], dtype=np.int64)

    def model_factory() -> torch.nn.Module:
        return build_model(cfg.model.name, input_shape=tuple(ds.input_shape),
                           num_classes=int(ds.num_classes), seed=cfg.seed)

    try:
        model = model_factory()
        with torch.no_grad():  # the model must accept the dataset's inputs
            model.eval()
            model(torch.from_numpy(np.ascontiguousarray(ds.x_train[:2])))
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"model.name = {cfg.model.name!r} does not fit data.name = "
                          f"{d.name!r} (input shape {tuple(ds.input_shape)}, "
                          f"{ds.num_classes} classes): {exc}") from None
    n_params = int(num_params(model))
    w0 = flat_params(model)
    shapes = [list(p.shape) for p in model.parameters()]
    up = _codec(cfg.compress.up, cfg.seed, shapes)
    down = _codec(cfg.compress.down, cfg.seed, shapes)
    strategy_cls, program_cls, options = get_method(cfg.fl.method, cfg.method)
    if cfg.train.device != "cpu" and "cuda" not in getattr(program_cls, "devices", ("cpu",)):
        raise ConfigError(f"train.device = {cfg.train.device!r}: method {cfg.fl.method!r} "
                          "trains on the CPU only; allowed: 'cpu'")
    return World(cfg, ds, parts, samples, model_factory, n_params, w0, up, down, strategy_cls,
                 program_cls, options)


def check_ranks(world: World, n_ranks: int) -> None:
    """A run needs 1 server rank and at most one worker per client."""
    workers = n_ranks - 1
    if workers > world.cfg.data.clients:
        raise ConfigError(f"more ranks than needed: {n_ranks} ranks give {workers} workers for "
                          f"data.clients = {world.cfg.data.clients}; use at most "
                          f"{world.cfg.data.clients + 1} ranks")


def _codec(config: dict, seed: int, shapes: list[list[int]]) -> compress.Compressor:
    """Build a codec, filling run-level arguments the config leaves out: shared randomness
    (``hash_seed``, ``init_seed``) from the run seed, and the model layout (``shapes``, or
    ``segments`` = tensor sizes) for codecs that work per tensor."""
    import inspect

    cfg = dict(config)
    cls = compress.get_class(cfg["id"])
    params = inspect.signature(cls).parameters
    fill = {"hash_seed": seed, "init_seed": seed, "shapes": shapes,
            "segments": [int(np.prod(s)) for s in shapes]}
    for key, value in fill.items():
        if key in params and cfg.get(key) is None:
            cfg[key] = value
    try:
        return cls.from_config(cfg)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"compress = {cfg['id']!r}: {exc}") from None

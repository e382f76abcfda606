"""FedCompress options, payload helpers and the client programs (METHODS.md 3.1, 3.4, 3.5).

The client half of :mod:`fedsqueeze.methods.fedcompress` (which holds the servers and registers
the methods ``fedcompress``, ``client_clustering`` and ``fedavg_zip``): the ``[method]`` option
models, the cluster-count growth test :func:`should_grow`, the reference's zip size metric
:func:`zip_size`, and :class:`FedCompressClient` / :class:`ClientClusteringClient` (local CE
training, k-means++ weight clustering, fine-tuning, clustered upload). Payload layouts are in the
docstring of :mod:`fedsqueeze.methods.fedcompress`.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from .. import rng
from ..comm.wire import SectionReader
from ..compress.clustering import K_MAX, K_MIN, decode_parts, encode_parts, read_parts
from ..data.partition import validation_split
from ..errors import ConfigError, WireFormatError
from ..fl.strategy import (
    UP_PRE,
    ClientProgram,
    Upload,
)
from ..fl.train import evaluate, flat_params, set_flat_params
from .weight_clustering import (
    WeightSharing,
    clustered_mask,
    effective_rank,
    embeddings,
    model_layout,
)

__all__ = ["ControllerOptions", "KDOptions", "OODOptions", "ClusteringOptions",
           "FedCompressOptions", "ZipOptions", "should_grow", "zip_size", "FedCompressClient",
           "ClientClusteringClient"]

_K_PRE = struct.Struct("<B3x")
_UP_SCALAR = struct.Struct("<Iff")
_UP_EMB = struct.Struct("<IfHH")


class _Opts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ControllerOptions(_Opts):
    """Cluster-count controller (METHODS.md 3.2; defaults = the reference's ``run.py``)."""

    k_init: int = Field(8, ge=K_MIN, le=K_MAX)
    k_max: int = Field(30, ge=K_MIN, le=K_MAX)
    step: int = Field(1, ge=1)
    init_rounds: int = Field(3, ge=1)
    window: int = Field(3, ge=1)
    patience: int = Field(4, ge=1)
    limit: float = Field(0.01, ge=0)
    base: float = Field(2.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> ControllerOptions:
        if self.k_max < self.k_init:
            raise ValueError(f"k_max = {self.k_max} < k_init = {self.k_init}")
        return self


class KDOptions(_Opts):
    """Server distillation: Adam, ``KL(teacher || student)`` at temperature ``T``."""

    epochs: int = Field(10, ge=0)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-4, gt=0)
    temperature: float = Field(2.0, gt=0)
    t2: bool = False


class OODOptions(_Opts):
    """Distillation data: ``"dead_leaves"`` (Philox OOD_GEN) or ``"folder:<path>"``."""

    source: str = "dead_leaves"
    size: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _src(self) -> OODOptions:
        if self.source != "dead_leaves" and not (self.source.startswith("folder:")
                                                 and len(self.source) > 7):
            raise ValueError(f"source = {self.source!r}, expected 'dead_leaves' or 'folder:<path>'")
        return self


class ClusteringOptions(_Opts):
    """Client side (and ``client_clustering``): options under ``[method]``."""

    controller: ControllerOptions = Field(default_factory=ControllerOptions)
    cluster_layers: Literal["auto", "conv", "conv+linear"] = "auto"
    cluster_epochs: int = Field(5, ge=0)
    cluster_lr: float = Field(5e-4, gt=0)
    kmeans_iters: int = Field(0, ge=0, le=1000)
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    score: Literal["scalar", "embeddings"] = "scalar"
    zip_metric: bool = True


class FedCompressOptions(ClusteringOptions):
    """``fedcompress``: the client options plus distillation and OOD data."""

    kd: KDOptions = Field(default_factory=KDOptions)
    ood: OODOptions = Field(default_factory=OODOptions)


class ZipOptions(_Opts):
    """``fedavg_zip``."""

    zip_metric: bool = True


# -- pure helpers -------------------------------------------------------------------------------
def should_grow(history: Sequence[tuple[float, float, int]], c: ControllerOptions) -> bool:
    """METHODS.md 3.2: grow ``k`` after round ``n`` of ``history`` rows ``(acc, score, k)``?"""
    n = len(history)
    if n < max(c.init_rounds, 2):
        return False
    k_n = history[-1][2]
    if k_n >= c.k_max or sum(1 for h in history if h[2] == k_n) < c.patience:
        return False

    def rolling(col: int, j: int) -> float:  # pandas rolling(window, min_periods=1).mean()
        vals = [history[i][col] for i in range(max(0, j - c.window + 1), j + 1)]
        vals = [v for v in vals if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    da = rolling(0, n - 1) - rolling(0, n - 2)
    ds = rolling(1, n - 1) - rolling(1, n - 2)
    den = c.base * (k_n - c.k_init)
    den = 1.0 if den == 0 else den
    return bool(da <= c.limit / den and ds <= 10 * c.limit / den)


def zip_size(w: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> int:
    """Reference size metric (METHODS.md 3.4 item 2): zip-DEFLATE bytes of an HDF5 file with one
    uncompressed float32 dataset per tensor."""
    import h5py

    bio, pos = io.BytesIO(), 0
    with h5py.File(bio, "w") as f:
        for i, s in enumerate(shapes):
            n = math.prod(s)
            f.create_dataset(f"t{i:04d}", data=np.asarray(w[pos:pos + n], np.float32).reshape(s))
            pos += n
    zb = io.BytesIO()
    with zipfile.ZipFile(zb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(zipfile.ZipInfo("model.h5", (1980, 1, 1, 0, 0, 0)), bio.getvalue(),
                   compress_type=zipfile.ZIP_DEFLATED)
    return len(zb.getvalue())


def _read_k(r: SectionReader, what: str) -> int:
    pre = r.bytes(4, f"{what} k_next")
    (k,) = _K_PRE.unpack(pre)
    if not K_MIN <= k <= K_MAX or pre[1:].tobytes() != b"\0\0\0":
        raise WireFormatError(f"{what}: k_next = {k} (expected {K_MIN}..{K_MAX}, zero padding)")
    return k


def _client_factory(ctx: Any):
    """The run's model builder on a worker (``ctx.model_factory`` if the FL layer provides it)."""
    f = getattr(ctx, "model_factory", None)
    if f is not None:
        return f

    def build() -> nn.Module:
        from ..data.datasets import load_dataset
        from ..models import build_model

        d, seed = ctx.cfg.data, ctx.cfg.seed
        ds = load_dataset(d.name, seed=seed, path=d.path, **d.options)
        return build_model(ctx.cfg.model.name, input_shape=tuple(ds.input_shape),
                           num_classes=int(ds.num_classes), seed=seed)
    return build


# -- client -------------------------------------------------------------------------------------
class FedCompressClient(ClientProgram):
    """Receive (clustered or dense) model and ``k``; train, cluster, fine-tune; upload ME."""

    devices = ("cpu",)  # NumPy inside the training loop

    down_clustered: ClassVar[bool] = True

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.opts = ctx.options
        self._factory = _client_factory(ctx)
        self._layout: tuple | None = None
        self._mask: list[bool] | None = None
        self._k: dict[int, int] = {}
        self._pending: dict[int, dict[str, Any]] = {}

    def _ensure_layout(self, model: nn.Module | None = None) -> None:
        if self._layout is None:
            m = model if model is not None else self._factory()
            self._mask = clustered_mask(m, self.opts.cluster_layers)
            self._layout = model_layout(m, self.opts.cluster_layers)
            if sum(n for n, _ in self._layout) != self.ctx.n_params:
                raise ConfigError(f"model has {sum(n for n, _ in self._layout)} parameters, "
                                  f"the run {self.ctx.n_params}")

    def receive(self, t: int, client: int, flags: int, payload) -> np.ndarray:
        self._ensure_layout()
        r = SectionReader(payload, "DOWN_MODEL")
        k = _read_k(r, "DOWN_MODEL")
        if self.down_clustered:
            parts, _ = read_parts(r, self._layout, k=k)
            w = decode_parts(parts, self._layout, np.empty(self.ctx.n_params, np.float32))
        else:
            w = r.array("<f4", self.ctx.n_params, "weights").copy()
        r.finish()
        self._k[client] = k
        return w

    def _fit(self, forward, model, trainer, idx, client, t, epochs, sub0, opt) -> tuple[float, int]:
        model.train()
        cfg = trainer.cfg
        steps, last = 0, math.nan
        for e in range(epochs):
            order = rng.permutation(self.ctx.cfg.seed, idx.shape[0],
                                    purpose=rng.Purpose.DATA_SHUFFLE, stream=client, round=t,
                                    sub_id=sub0 + e)
            sel = torch.from_numpy(idx[order])
            total, seen = 0.0, 0
            for i in range(0, idx.shape[0], cfg.batch_size):
                if cfg.max_steps is not None and steps >= cfg.max_steps:
                    break
                j = sel[i:i + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(forward(trainer.x[j]), trainer.y[j])
                loss.backward()
                opt.step()
                total += float(loss.detach()) * j.shape[0]
                seen += j.shape[0]
                steps += 1
            if seen:
                last = total / seen
        return last, steps

    def train(self, t: int, client: int, trainer, w: np.ndarray):
        model = trainer.model
        self._ensure_layout(model)
        if client not in self._k:
            raise RuntimeError(f"client {client}: train() before receive()")
        k = self._k.pop(client)
        o, seed = self.opts, self.ctx.cfg.seed
        set_flat_params(model, w)
        trainer.seed_framework(client, t)
        tr, va = validation_split(trainer.parts[client], o.validation_fraction, seed, client)
        e1 = trainer.cfg.epochs
        loss, s1 = self._fit(model, model, trainer, tr, client, t, e1, 0,
                             trainer.make_optimizer(model.parameters()))
        ws = WeightSharing(model, self._mask, k, seed=seed, stream=client, round=t,
                           iters=o.kmeans_iters)
        opt = trainer.make_optimizer(ws.parameters(), lr=o.cluster_lr)
        loss2, s2 = self._fit(ws, model, trainer, tr, client, t, o.cluster_epochs, e1, opt)
        parts = ws.strip()
        iv = torch.from_numpy(va)
        acc = evaluate(model, trainer.x[iv], trainer.y[iv])[1] if va.size else 0.0
        emb = embeddings(model, trainer.x[iv]) if va.size else np.zeros((0, 0), np.float32)
        self._pending[client] = {"parts": parts, "k": k, "n_val": int(va.size), "acc": acc,
                                 "score": effective_rank(emb), "emb": emb}
        return flat_params(model), {"loss": loss2 if s2 else loss, "steps": s1 + s2,
                                    "samples": int(tr.size)}

    def encode(self, t: int, client: int, update, n: int) -> Upload:
        p = self._pending.pop(client)
        me, bits = encode_parts(p["parts"], self._layout)
        if self.opts.score == "scalar":
            head: tuple = (UP_PRE.pack(n), _UP_SCALAR.pack(p["n_val"], p["acc"], p["score"]))
        else:
            emb = np.ascontiguousarray(p["emb"], dtype="<f4")
            f = emb.shape[1] if emb.ndim == 2 else 0
            head = (UP_PRE.pack(n), _UP_EMB.pack(p["n_val"], p["acc"], f, 0), emb.reshape(-1))
        return Upload(head + tuple(me), bits, {"k": float(p["k"]), "val_accuracy": p["acc"]})


class ClientClusteringClient(FedCompressClient):
    """Client of ``client_clustering``: the downlink is dense (plus ``k``)."""

    down_clustered = False

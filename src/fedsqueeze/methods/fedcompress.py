"""FedCompress (Tsouvalas et al., ICASSP 2024): client weight clustering, server distillation of
the FedAvg aggregate into a clustered student on OOD data, adaptive cluster count (METHODS.md 3).

Registered methods (``fl.method``), all with ``[method]`` options validated below:

``fedcompress``        client: local CE training, k-means++ weight clustering and fine-tuning,
                       clustered upload; server: FedAvg, distillation into a k-clustered student,
                       clustered downlink, the cluster-count controller of METHODS.md 3.2.
``client_clustering``  the same clients; the server only averages (no distillation) and
                       sends the dense average (METHODS.md 3.3, the reference's ``client``).
``fedavg_zip``         plain FedAvg that also logs the reference's zip size metric.

Payloads (METHODS.md 3.5; ``ME`` is :mod:`fedsqueeze.compress.clustering`)::

    DOWN fedcompress        u8 k_next | u8[3] 0 | ME(w)
    DOWN client_clustering  u8 k_next | u8[3] 0 | f32[D]       (k must reach the clients)
    UP  (score = scalar)    u32 n_i | u32 n_val | f32 val_acc | f32 score | ME(w_i)
    UP  (embeddings)        u32 n_i | u32 n_val | f32 val_acc | u16 F | u16 0 | f32[n_val F]
                            | ME(w_i)

``n_i`` is the client's whole sample count (the FL layer checks it); the server weights the
average by ``n_i - n_val``, the training split, as the reference. Non-trainable buffers are not
sent (``D_buf = 0``; the framework's flat vector holds parameters only). Theoretical bits are
those of ``ME`` (or ``32 D`` for a dense model).

This module holds the servers and the registrations; the options, the payload helpers and the
client programs live in :mod:`fedsqueeze.methods.fedcompress_client` and are re-exported here.
"""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

import numpy as np
import torch

from .. import rng
from ..comm.tags import SYSTEM_CLIENT, Flag
from ..comm.wire import SectionReader, pad4
from ..compress.clustering import decode_parts, encode_parts, read_parts
from ..errors import ConfigError, WireFormatError
from ..fl.aggregate import StreamingMean
from ..fl.strategy import (
    Downlink,
    FedAvg,
    FedAvgClient,
    Strategy,
    register_method,
)
from ..fl.train import set_flat_params
from .fedcompress_client import (
    _K_PRE,
    _UP_EMB,
    _UP_SCALAR,
    ClientClusteringClient,
    ClusteringOptions,
    ControllerOptions,
    FedCompressClient,
    FedCompressOptions,
    KDOptions,
    OODOptions,
    ZipOptions,
    should_grow,
    zip_size,
)
from .weight_clustering import (
    WeightSharing,
    clustered_mask,
    distill,
    effective_rank,
    embeddings,
    model_layout,
)

__all__ = ["ControllerOptions", "KDOptions", "OODOptions", "ClusteringOptions",
           "FedCompressOptions", "ZipOptions", "should_grow", "zip_size", "FedCompress",
           "FedCompressClient", "ClientClustering", "ClientClusteringClient", "FedAvgZip",
           "effective_rank", "embeddings"]

# -- server -------------------------------------------------------------------------------------
class FedCompress(Strategy):
    """Server of ``fedcompress``: FedAvg of clustered models, controller, distillation."""

    distill: ClassVar[bool] = True
    round_columns: ClassVar[list[tuple[str, str]]] = [
        ("k_t", "u2"), ("k_next", "u2"), ("val_accuracy", "f8"), ("val_score", "f8"),
        ("teacher_test_loss", "f8"), ("teacher_test_accuracy", "f8"), ("distill_loss", "f8"),
        ("t_distill", "f8"), ("model_bytes", "u8"), ("model_zip_bytes", "u8"),
        ("zip_bytes_up", "u8"), ("zip_bytes_down", "u8")]

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        if ctx.model_factory is None:
            raise ConfigError(f"{type(self).__name__} needs ServerContext.model_factory")
        self.opts = ctx.options
        template = ctx.model_factory()
        self.shapes = [tuple(p.shape) for p in template.parameters()]
        self.mask = clustered_mask(template, self.opts.cluster_layers)
        self.layout = model_layout(template, self.opts.cluster_layers)
        if sum(n for n, _ in self.layout) != ctx.n_params:
            raise ConfigError(f"model has {sum(n for n, _ in self.layout)} parameters, "
                              f"the run {ctx.n_params}")
        self.k = self.opts.controller.k_init
        self.history: list[tuple[float, float, int]] = []
        self.parts: list | None = None  # ME parts of self.w while it is clustered
        self._ood: torch.Tensor | None = None
        self._distill_info = (math.nan, 0.0)

    # -- distillation -----------------------------------------------------------------------
    def ood_data(self) -> torch.Tensor:
        """The distillation set, generated (or read) once per run."""
        if self._ood is None:
            from ..data.datasets import load_dataset
            from .fedcompress_ood import ood_inputs

            cfg = self.ctx.cfg
            ds = getattr(self.ctx, "dataset", None) or load_dataset(
                cfg.data.name, seed=cfg.seed, path=cfg.data.path, **cfg.data.options)
            self._ood = torch.from_numpy(ood_inputs(ds, self.opts.ood.source,
                                                    self.opts.ood.size, seed=cfg.seed))
        return self._ood

    def compress(self, w: np.ndarray, k: int, r: int) -> tuple[np.ndarray, list]:
        """SELF_COMPRESS: distil ``w`` into a ``k``-clustered student (keys: round ``r``)."""
        t0 = time.perf_counter()
        cfg, kd = self.ctx.cfg, self.opts.kd
        teacher, student = self.ctx.model_factory(), self.ctx.model_factory()
        set_flat_params(teacher, w)
        set_flat_params(student, w)
        for p in teacher.parameters():
            p.requires_grad_(False)
        ws = WeightSharing(student, self.mask, k, seed=cfg.seed, stream=SYSTEM_CLIENT, round=r,
                           iters=self.opts.kmeans_iters)
        x = self.ood_data()
        loss = distill(teacher, ws, x, epochs=kd.epochs, batch_size=kd.batch_size,
                       make_optimizer=lambda p: torch.optim.Adam(p, lr=kd.lr),
                       temperature=kd.temperature, t2=kd.t2,
                       order=lambda e: rng.permutation(cfg.seed, x.shape[0],
                                                       purpose=rng.Purpose.DATA_SHUFFLE,
                                                       stream=SYSTEM_CLIENT, round=r, sub_id=e))
        parts = ws.strip()
        self._distill_info = (loss, time.perf_counter() - t0)
        return decode_parts(parts, self.layout, np.empty(self.ctx.n_params, np.float32)), parts

    # -- round ------------------------------------------------------------------------------
    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        if self.distill and self.parts is None:  # round 0: the reference compresses w_0 too
            self.w, self.parts = self.compress(self.w, self.k, t)
        self._round_dl = None
        self._k_round = self.k
        self._mean = StreamingMean(self.ctx.n_params)
        self._val = [0.0, 0.0, 0.0, 0.0]  # sum n_val acc, sum n_val, sum n_val score, its weight
        self._emb: list[np.ndarray] = []
        self._zip_up = 0
        self._n_down = 0
        self._zip_down_one = 0

    def downlink(self, t: int, client: int) -> Downlink:
        if self._round_dl is None:
            pre = _K_PRE.pack(self._k_round)
            if self.parts is not None:
                me, bits = encode_parts(self.parts, self.layout)
                self._round_dl = Downlink((pre, *me), bits, flags=Flag.FULL_MODEL)
            else:
                self._round_dl = Downlink((pre, self.w), 32.0 * self.ctx.n_params,
                                          flags=Flag.FULL_MODEL)
            if self.opts.zip_metric:
                self._zip_down_one = zip_size(self.w, self.shapes)
        self._n_down += 1
        return self._round_dl

    def accumulate(self, t: int, client: int, n: int, payload) -> dict[str, float]:
        r = SectionReader(payload, f"UP_UPDATE client {client}")
        emb = None
        if self.opts.score == "scalar":
            n_val, acc, score = r.struct(_UP_SCALAR, "n_val, val_acc, score")
        else:
            n_val, acc, f, zero = r.struct(_UP_EMB, "n_val, val_acc, F")
            if zero:
                raise WireFormatError(f"{r.what}: non-zero reserved u16 {zero}")
            emb = r.array("<f4", n_val * f, "embeddings").reshape(n_val, f)
            score = math.nan
        if n_val >= n or not 0.0 <= acc <= 1.0:
            raise WireFormatError(f"{r.what}: n_val = {n_val} of n_i = {n}, val_acc = {acc}")
        parts, _ = read_parts(r, self.layout, k=self._k_round)
        r.finish()
        w_i = decode_parts(parts, self.layout, np.empty(self.ctx.n_params, np.float32))
        delta = w_i - self.w
        self.check_update(delta)
        norm = float(np.linalg.norm(delta.astype(np.float64)))
        self.sampler.observe(client, norm)
        self._mean.add(w_i, n - n_val)
        if n_val:
            self._val[0] += n_val * acc
            self._val[1] += n_val
            if not math.isnan(score):
                self._val[2] += n_val * score
                self._val[3] += n_val
            if emb is not None and emb.size:
                self._emb.append(emb)
        if self.opts.zip_metric:
            self._zip_up += zip_size(w_i, self.shapes)
        return {"update_norm": norm}

    def end_round(self, t: int) -> dict[str, float]:
        cols: dict[str, float] = {
            "k_t": self._k_round, "k_next": self.k, "zip_bytes_up": self._zip_up,
            "zip_bytes_down": self._zip_down_one * self._n_down}
        w_bar = self._mean.result()
        if w_bar is None:
            return cols
        lr = self.ctx.cfg.fl.server_lr
        if lr != 1.0:
            w_bar = (self.w + np.float32(lr) * (w_bar - self.w)).astype(np.float32)
        acc = self._val[0] / self._val[1] if self._val[1] else math.nan
        if self.opts.score == "scalar":
            score = self._val[2] / self._val[3] if self._val[3] else math.nan
        else:
            score = effective_rank(np.concatenate(self._emb)) if self._emb else math.nan
        if self.ctx.evaluate is not None:
            cols["teacher_test_loss"], cols["teacher_test_accuracy"] = self.ctx.evaluate(w_bar)
        self.history.append((acc, score, self._k_round))
        if should_grow(self.history, self.opts.controller):
            self.k = min(self.k + self.opts.controller.step, self.opts.controller.k_max)
        if self.distill:
            self.w, self.parts = self.compress(w_bar, self.k, t + 1)
            cols["distill_loss"], cols["t_distill"] = self._distill_info
            cols["model_bytes"] = sum(pad4(memoryview(s).nbytes)
                                      for s in encode_parts(self.parts, self.layout)[0])
        else:
            self.w, self.parts = w_bar, None
            cols["model_bytes"] = 4 * self.ctx.n_params
        if self.opts.zip_metric:
            cols["model_zip_bytes"] = zip_size(self.w, self.shapes)
        cols.update(k_next=self.k, val_accuracy=acc, val_score=score)
        return cols

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d["fc.k"] = np.array(self.k)
        d["fc.history"] = np.array(self.history, np.float64).reshape(-1, 3)
        for i, part in enumerate(self.parts or []):
            if isinstance(part, tuple):
                d[f"fc.cb{i}"], d[f"fc.ids{i}"] = part[0].copy(), part[1].copy()
        return d

    def load_state_dict(self, d) -> None:
        super().load_state_dict(d)
        self.k = int(d["fc.k"])
        self.history = [(float(a), float(s), int(k)) for a, s, k in np.asarray(d["fc.history"])]
        self.parts = None
        if self.distill and any(key.startswith("fc.cb") for key in d):
            offsets = np.cumsum([0] + [n for n, _ in self.layout])
            self.parts = [(np.asarray(d[f"fc.cb{i}"], np.float32),
                           np.asarray(d[f"fc.ids{i}"], np.uint8)) if c
                          else self.w[offsets[i]:offsets[i + 1]].copy()
                          for i, (_, c) in enumerate(self.layout)]


class ClientClustering(FedCompress):
    """Server of ``client_clustering``: FedAvg + controller, dense downlink, no distillation."""

    distill = False


class FedAvgZip(FedAvg):
    """FedAvg that logs the reference's zip size of every message (for zip-based CCR)."""

    round_columns: ClassVar[list[tuple[str, str]]] = [("zip_bytes_up", "u8"),
                                                      ("zip_bytes_down", "u8")]

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.shapes = ([tuple(p.shape) for p in ctx.model_factory().parameters()]
                       if ctx.model_factory is not None else [(ctx.n_params,)])

    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        super().begin_round(t, clients, n)
        self._zip = [0, 0, zip_size(self.w, self.shapes) if self.ctx.options.zip_metric else 0]

    def downlink(self, t: int, client: int) -> Downlink:
        self._zip[1] += self._zip[2]
        return super().downlink(t, client)

    def accumulate(self, t: int, client: int, n: int, payload) -> dict[str, float]:
        out = super().accumulate(t, client, n, payload)
        if self.ctx.options.zip_metric:
            delta = self._stack[-1] if self._stack else self.decode_update(t, client, payload)
            self._zip[0] += zip_size(self.w + delta, self.shapes)
        return out

    def end_round(self, t: int) -> dict[str, float]:
        cols = super().end_round(t)
        return {**cols, "zip_bytes_up": self._zip[0], "zip_bytes_down": self._zip[1]}


register_method("fedcompress", FedCompress, FedCompressClient, FedCompressOptions)
register_method("client_clustering", ClientClustering, ClientClusteringClient, ClusteringOptions)
register_method("fedavg_zip", FedAvgZip, FedAvgClient, ZipOptions)

"""Weight sharing for torch models, as tfmot ``cluster_weights`` (METHODS.md 3.1, 3.4 item 5).

Every clustered parameter ``W`` keeps a trainable *shadow* copy and ``k`` trainable centroids
``c``. At every forward pass the ids are recomputed, ``idx = argmin_j |W - c_j|`` (the Numba
kernel :func:`fedsqueeze.kernels.cpu.kmeans.assign_1d`; ties to the lowest id), and the layer
uses ``c[idx] + (W - stop_grad(W))``: each centroid receives the sum of its members' gradients
and ``W`` the same gradient straight through. :meth:`WeightSharing.strip` writes ``c[idx]`` into
the model and returns the codebooks and ids that the ME encoder sends.

The model's own parameter objects are never replaced (the forward pass goes through
:func:`torch.func.functional_call`), so ``flat_params`` order is unaffected. Also here:
distillation (:func:`distill`, :func:`kd_loss`) and the representation score of FedCompress's
cluster-count controller (:func:`embeddings`, :func:`effective_rank`).

>>> import torch
>>> from torch import nn
>>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2, 3))
>>> clustered_mask(m, "auto")
[True, False, False, False]
>>> ws = WeightSharing(m, clustered_mask(m, "auto"), k=4, seed=0)
>>> _ = ws(torch.zeros(1, 1, 3, 3)).sum().backward()
>>> parts = ws.strip()
>>> len(torch.unique(m[0].weight)) <= 4, parts[0][1].dtype.name
(True, 'uint8')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..compress.clustering import Layout, kmeans_1d
from ..kernels.cpu import kmeans as _k

__all__ = ["CLUSTER_MODES", "clustered_mask", "model_layout", "WeightSharing", "kd_loss",
           "distill", "embeddings", "effective_rank"]

CLUSTER_MODES = ("auto", "conv", "conv+linear")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def clustered_mask(model: nn.Module, mode: str = "auto") -> list[bool]:
    """Which of ``model.parameters()`` are clustered.

    ``"conv"``: convolution weights; ``"conv+linear"``: those and every ``nn.Linear`` weight;
    ``"auto"``: ``"conv"`` when the model has a convolution, else ``"conv+linear"``.
    Biases, norms, embeddings and recurrent weights are never clustered.
    """
    if mode not in CLUSTER_MODES:
        raise ValueError(f"cluster_layers = {mode!r}, expected one of {CLUSTER_MODES}")
    if mode == "auto":
        has_conv = any(isinstance(m, _CONV) for m in model.modules())
        mode = "conv" if has_conv else "conv+linear"
    kinds = _CONV + ((nn.Linear,) if mode == "conv+linear" else ())
    chosen = {id(m.weight) for m in model.modules()
              if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), nn.Parameter)}
    return [id(p) in chosen for p in model.parameters()]


def model_layout(model: nn.Module, mode: str = "auto") -> Layout:
    """ME layout ``((numel, clustered), ...)`` of ``model`` in parameter order."""
    mask = clustered_mask(model, mode)
    return tuple((int(p.numel()), c) for p, c in zip(model.parameters(), mask, strict=True))


class WeightSharing:
    """A weight-sharing view of ``model`` (see the module docstring).

    Parameters
    ----------
    model : nn.Module
        Its current weights seed the clustering; non-clustered parameters train in place.
    mask : list of bool
        Per parameter of ``model.parameters()``, from :func:`clustered_mask`.
    k : int
        Centroids per clustered tensor (``[2, 255]``).
    seed, stream, round : int
        Philox keys of the k-means++ seeding (KMEANS_INIT; ``sub_id`` = parameter index).
    iters : int
        Lloyd steps after seeding (0 = k-means++ only, as tfmot's KMEANS_PLUS_PLUS).
    """

    def __init__(self, model: nn.Module, mask: Sequence[bool], k: int, *, seed: int,
                 stream: int = 0, round: int = 0, iters: int = 0) -> None:
        params = list(model.named_parameters())
        if len(mask) != len(params):
            raise ValueError(f"mask has {len(mask)} entries, the model {len(params)} parameters")
        self.model, self.k = model, int(k)
        self.names: list[str] = []
        self.shadow: list[nn.Parameter] = []
        self.centroids: list[nn.Parameter] = []
        self._ids: list[np.ndarray] = []
        self._index: list[int] = []
        for i, ((name, p), on) in enumerate(zip(params, mask, strict=True)):
            if not on:
                continue
            w = p.detach().to("cpu", torch.float32).reshape(-1).numpy()
            codebook, ids = kmeans_1d(w, k, seed=seed, stream=stream, round=round, sub_id=i,
                                      iters=iters)
            self.names.append(name)
            self._index.append(i)
            self.shadow.append(nn.Parameter(p.detach().clone()))
            self.centroids.append(nn.Parameter(torch.from_numpy(codebook).to(p.device)))
            self._ids.append(ids)
        self._others = [p for (_, p), on in zip(params, mask, strict=True) if not on]

    def parameters(self) -> list[nn.Parameter]:
        """What the optimiser trains: unclustered model parameters, shadows and centroids."""
        return self._others + self.shadow + self.centroids

    def _assign(self, j: int) -> torch.Tensor:
        w, c = self.shadow[j].detach(), self.centroids[j].detach()
        if w.device.type == "cpu":
            _k.assign_1d(w.reshape(-1).numpy(), c.numpy(), self._ids[j])
            return torch.from_numpy(self._ids[j].astype(np.int64))
        idx = (w.reshape(-1, 1) - c.reshape(1, -1)).abs().argmin(dim=1)
        self._ids[j] = idx.to("cpu", torch.uint8).numpy()
        return idx

    def effective(self) -> dict[str, torch.Tensor]:
        """Clustered weights of this forward pass (ids recomputed), by parameter name."""
        out = {}
        for j, name in enumerate(self.names):
            idx = self._assign(j).to(self.shadow[j].device)
            w = self.shadow[j]
            out[name] = self.centroids[j][idx].view_as(w) + (w - w.detach())
        return out

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.effective(), (x,))

    @torch.no_grad()
    def strip(self) -> list[Any]:
        """Final assignment; write ``c[idx]`` into the model. Returns ME parts in parameter
        order: ``(codebook f32[k], ids u8[numel])`` for clustered tensors, float32 arrays else."""
        params = list(self.model.parameters())
        parts: list[Any] = [p.detach().to("cpu", torch.float32).reshape(-1).numpy().copy()
                            for p in params]
        for j, i in enumerate(self._index):
            idx = self._assign(j)
            codebook = self.centroids[j].detach().to("cpu", torch.float32).numpy().copy()
            params[i].copy_(torch.from_numpy(codebook[idx.cpu().numpy()]).view_as(params[i]))
            parts[i] = (codebook, self._ids[j].copy())
        return parts


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float,
            t2: bool = False) -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T))`` summed over classes, batch mean; ``* T^2`` if ``t2``."""
    T = float(temperature)
    loss = nn.functional.kl_div(torch.log_softmax(student_logits / T, dim=1),
                                torch.log_softmax(teacher_logits / T, dim=1),
                                reduction="batchmean", log_target=True)
    return loss * (T * T) if t2 else loss


def distill(teacher: nn.Module, student: WeightSharing, x: torch.Tensor, *, epochs: int,
            batch_size: int, make_optimizer: Callable[[Iterable], torch.optim.Optimizer],
            temperature: float, t2: bool, order: Callable[[int], np.ndarray]) -> float:
    """Distil ``teacher`` (frozen, inference mode) into the weight-sharing ``student``.

    The teacher's logits on the unlabelled ``x`` are computed once. Each epoch visits
    ``order(epoch)`` (a permutation of ``range(len(x))``) in batches of ``batch_size``, dropping
    the remainder (the reference's ``drop_remainder``; a set smaller than one batch is one batch).
    The student model stays in training mode. Returns the mean loss of the last epoch.
    """
    teacher.eval()
    with torch.no_grad():
        t_logits = torch.cat([teacher(x[i:i + 1024]) for i in range(0, x.shape[0], 1024)])
    b = min(batch_size, x.shape[0])
    opt = make_optimizer(student.parameters())
    student.model.train()
    last = float("nan")
    for e in range(epochs):
        perm = torch.from_numpy(np.asarray(order(e), dtype=np.int64))
        total, steps = 0.0, 0
        for s in range(0, x.shape[0] - b + 1, b):
            j = perm[s:s + b]
            opt.zero_grad(set_to_none=True)
            loss = kd_loss(student(x[j]), t_logits[j], temperature, t2)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        last = total / max(1, steps)
    return last


def effective_rank(e: np.ndarray) -> float:
    """Roy-Vetterli effective rank of the L2-normalised rows (reference ``compute_score``).

    ``NaN`` for an empty or all-zero matrix; ``0 log 0`` counts as 0."""
    e = np.asarray(e, dtype=np.float64)
    if e.ndim != 2 or e.size == 0:
        return math.nan
    e = e / np.sqrt(np.maximum((e * e).sum(axis=1, keepdims=True), 1e-12))
    s = np.linalg.svd(e, compute_uv=False)
    if s.sum() <= 0:
        return math.nan
    p = s / s.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


@torch.no_grad()
def embeddings(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> np.ndarray:
    """Pooled features: the ``embedding`` stage, else the input of the last ``nn.Linear``."""
    model.eval()
    if "embedding" in model._modules and hasattr(model, "embed"):
        fn = model.embed
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"{type(model).__name__}: no 'embedding' stage and no nn.Linear")

        def fn(xb: torch.Tensor) -> torch.Tensor:
            got: list[torch.Tensor] = []
            h = linears[-1].register_forward_pre_hook(lambda _m, a: got.append(a[0]))
            try:
                model(xb)
            finally:
                h.remove()
            return got[-1].reshape(xb.shape[0], -1)
    outs = [fn(x[i:i + batch]) for i in range(0, x.shape[0], batch)]
    return torch.cat(outs).numpy().astype(np.float32) if outs else np.zeros((0, 0), np.float32)

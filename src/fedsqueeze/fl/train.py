"""Local training of virtual clients: one reusable torch model per worker rank.

Everything a client's training depends on is keyed by (seed, round, client): the batch order
comes from Philox (DATA_SHUFFLE), the framework seed from Philox (FRAMEWORK_SEED). Torch runs
single-threaded per rank, so the result is bit-identical whichever rank trains the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import rng

__all__ = ["Trainer", "flat_params", "set_flat_params", "evaluate"]


def flat_params(model: nn.Module, params: list | None = None) -> np.ndarray:
    """Trainable parameters in registration order, each row-major, as one float32 vector.

    ``params`` is ``list(model.parameters())`` when the caller keeps it (it saves the walk)."""
    ps = list(model.parameters()) if params is None else params
    out = np.empty(sum(p.numel() for p in ps), dtype=np.float32)
    t = torch.from_numpy(out)
    pos = 0
    with torch.no_grad():
        for p in ps:  # one copy per parameter, straight into the vector
            n = p.numel()
            t[pos:pos + n].copy_(p.detach().reshape(-1))
            pos += n
    return out


def set_flat_params(model: nn.Module, vec: np.ndarray, params: list | None = None) -> None:
    """Write a flat float32 vector into the model's parameters (inverse of :func:`flat_params`)."""
    t = torch.from_numpy(np.ascontiguousarray(vec, dtype=np.float32))
    ps = list(model.parameters()) if params is None else params
    total = sum(p.numel() for p in ps)
    if total != t.numel():
        raise ValueError(f"vector has {t.numel()} values, the model {total}")
    pos = 0
    with torch.no_grad():
        for p in ps:
            n = p.numel()
            p.copy_(t[pos:pos + n].view_as(p))
            pos += n


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1024
             ) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, x.shape[0], batch):
        out = model(x[i:i + batch])
        loss += float(nn.functional.cross_entropy(out, y[i:i + batch], reduction="sum"))
        correct += int((out.argmax(1) == y[i:i + batch]).sum())
    n = max(1, x.shape[0])
    return loss / n, correct / n


class Trainer:
    """Trains one virtual client at a time on a shared model instance.

    Parameters
    ----------
    model : the worker's model (its weights are overwritten for every client)
    x, y : the full training set as tensors; ``parts[c]`` are client ``c``'s sample indices
    train_cfg : ``RunConfig.train``
    seed : the run seed
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 parts: list[np.ndarray], train_cfg: Any, seed: int,
                 device: torch.device | None = None) -> None:
        self.device = torch.device("cpu") if device is None else device
        # the data stays in host memory; each mini-batch is copied to the device
        self._on_device = self.device.type != "cpu"
        if self._on_device:
            model = model.to(self.device)
        self.model, self.x, self.y, self.parts = model, x, y, parts
        self.cfg, self.seed = train_cfg, seed
        # per-client fixed costs (benchmarks/profile_round.py, 10k clients of one mini-batch):
        # the parameter list is walked once, and one optimizer is kept and reset per client
        self._params = list(model.parameters()) if model is not None else []  # split: no model
        self._opt: torch.optim.Optimizer | None = None

    def _to_device(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._on_device:
            return xb, yb
        return (xb.pin_memory().to(self.device, non_blocking=True),
                yb.pin_memory().to(self.device, non_blocking=True))

    def num_samples(self, client: int) -> int:
        return int(self.parts[client].shape[0])

    def client_data(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.parts[client])
        return self._to_device(self.x[idx], self.y[idx])

    def batches(self, client: int, round: int, epochs: int | None = None,
                batch_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches for ``epochs`` epochs, shuffled by Philox (seed, round, client, epoch)."""
        idx = self.parts[client]
        n = idx.shape[0]
        b = batch_size or self.cfg.batch_size
        steps = 0
        for e in range(epochs or self.cfg.epochs):
            order = rng.permutation(self.seed, n, purpose=rng.Purpose.DATA_SHUFFLE, stream=client,
                                    round=round, sub_id=e)
            sel = torch.from_numpy(idx[order])
            for i in range(0, n, b):
                if self.cfg.max_steps is not None and steps >= self.cfg.max_steps:
                    return
                j = sel[i:i + b]
                steps += 1
                yield self._to_device(self.x[j], self.y[j])

    def make_optimizer(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        c = self.cfg
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=lr or c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=lr or c.lr, momentum=c.momentum,
                               weight_decay=c.weight_decay)

    def seed_framework(self, client: int, round: int) -> None:
        """Seed torch's generator for dropout/augmentation from (seed, round, client).

        The CPU generator is seeded (what ``torch.manual_seed`` does for the CPU), and the CUDA
        generators once CUDA is in use (``train.device``). ``torch.manual_seed`` itself also
        queues a lazy seeding call for every accelerator backend (CUDA, XPU, MTIA) and formats a stack trace for each, which
        cost more than a small client's training step (benchmarks/profile_round.py).
        """
        s = rng.derive_seed(self.seed, purpose=rng.Purpose.FRAMEWORK_SEED, stream=client,
                            round=round) & (2**63 - 1)
        torch.default_generator.manual_seed(s)
        if torch.cuda.is_initialized():  # a model moved to the GPU draws from CUDA generators
            torch.cuda.manual_seed_all(s)

    def _fresh_optimizer(self) -> torch.optim.Optimizer:
        """The worker's optimizer with its state cleared: the same as a new one (SGD momentum
        buffers and Adam moments and step counts all live in ``state``)."""
        if self._opt is None:
            self._opt = self.make_optimizer(self._params)
        self._opt.state.clear()
        return self._opt

    def train(self, w: np.ndarray, *, client: int, round: int) -> tuple[np.ndarray, dict]:
        """E epochs of mini-batch SGD (or Adam) from ``w``, with the optional FedProx term."""
        params = self._params
        set_flat_params(self.model, w, params)
        self.seed_framework(client, round)
        model = self.model
        model.train()
        opt = self._fresh_optimizer()
        mu = self.cfg.prox_mu
        anchor = [p.detach().clone() for p in params] if mu > 0 else None
        total, steps, seen = 0.0, 0, 0
        for xb, yb in self.batches(client, round):
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(xb), yb)
            obj = loss
            if anchor is not None:
                obj = loss + 0.5 * mu * sum(((p - a) ** 2).sum()
                                           for p, a in zip(params, anchor, strict=True))
            obj.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
            seen += xb.shape[0]
            steps += 1
        return flat_params(model, params), {"loss": total / max(1, seen), "steps": steps,
                                            "samples": self.num_samples(client)}

    def local_loss(self, w: np.ndarray, client: int) -> float:
        """Mean training loss of ``w`` on the client's data (one pass, no gradient)."""
        set_flat_params(self.model, w, self._params)
        x, y = self.client_data(client)
        return evaluate(self.model, x, y)[0]

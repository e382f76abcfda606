"""The server's maths of split learning (METHODS.md 5.1): one shared suffix trained on decoded
activations, and SplitFed averaging of the client prefixes. Never touches the transport.

Per local step the role calls :meth:`SplitStrategy.begin_step`, then :meth:`~SplitStrategy.serve`
once per participating client in increasing id (forward and backward through the suffix; the
suffix gradients add up in that fixed order), then :meth:`~SplitStrategy.end_step`, which divides
them by the number of clients (the mean over clients of their batch-mean losses) and takes one
optimiser step. At the end of a round the prefixes are averaged weighted by ``n_c`` in float64,
in increasing id: ``w_c <- w_c + fl.server_lr * sum_c p_c (w_c' - w_c)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..comm.tags import Flag
from ..errors import UpdateRejected
from ..fl.aggregate import StreamingMean
from ..fl.strategy import Downlink, Strategy
from ..fl.train import flat_params, set_flat_params
from .parts import build_parts

__all__ = ["SplitStrategy", "make_optimizer"]


def make_optimizer(params, train_cfg, *, lr: float | None = None,
                   kind: str | None = None) -> torch.optim.Optimizer:
    """SGD or Adam with ``train``'s momentum and weight decay (``lr``/``kind`` override)."""
    lr = train_cfg.lr if lr is None else lr
    kind = train_cfg.optimizer if kind is None else kind
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=train_cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=train_cfg.momentum,
                           weight_decay=train_cfg.weight_decay)


class SplitStrategy(Strategy):
    """Suffix training and prefix averaging; ``weights`` is the full model ``[prefix | suffix]``."""

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        opts = ctx.options
        self.parts = build_parts(ctx, opts.cut)
        self.suffix: nn.Module = self.parts.suffix
        self.suffix.train()
        d_c = self.parts.d_c
        set_flat_params(self.suffix, ctx.w0[d_c:])
        self.prefix_w = ctx.w0[:d_c].astype(np.float32, copy=True)
        self.opt = make_optimizer(self.suffix.parameters(), ctx.cfg.train, lr=opts.server_lr,
                                  kind=opts.server_optimizer)
        self._mean = StreamingMean(d_c)
        self._clients = 0

    # -- prefixes ---------------------------------------------------------------------------
    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        self._mean = StreamingMean(self.parts.d_c)
        self._round_dl = None

    def downlink(self, t: int, client: int) -> Downlink:
        """The round's prefix, one object shared by every client (dense float32)."""
        if self._round_dl is None:
            self._round_dl = Downlink((self.prefix_w,), 32.0 * self.parts.d_c,
                                      flags=Flag.FULL_MODEL)
        return self._round_dl

    def accumulate_prefix(self, t: int, client: int, n: int, w: np.ndarray) -> dict[str, float]:
        """Add client ``client``'s trained prefix (call in increasing client id)."""
        delta = np.asarray(w, np.float32) - self.prefix_w
        self.check_update(delta)
        self._mean.add(delta, n)
        return {"update_norm": float(np.sqrt(np.sum(np.square(delta, dtype=np.float64))))}

    def end_round(self, t: int) -> dict[str, float]:
        agg = self._mean.result()
        if agg is not None:
            self.prefix_w = (self.prefix_w + np.float32(self.ctx.cfg.fl.server_lr) * agg
                             ).astype(np.float32)
        self._round_dl = None
        return {}

    # -- the suffix -------------------------------------------------------------------------
    def begin_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self._clients = 0

    def serve(self, z: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
        """Forward and backward of one client's batch: ``(dl/dz, loss)`` with ``l`` the batch
        mean cross-entropy; the suffix gradients are added to the step's sum."""
        zt = torch.from_numpy(np.array(z, dtype=np.float32)).requires_grad_(True)
        loss = nn.functional.cross_entropy(self.suffix(zt), torch.from_numpy(labels))
        if not torch.isfinite(loss):
            raise UpdateRejected(f"suffix loss is {float(loss)}")
        loss.backward()
        self._clients += 1
        assert zt.grad is not None
        return zt.grad.numpy(), float(loss.detach())

    def end_step(self) -> None:
        """One optimiser step on the mean of the step's suffix gradients."""
        if self._clients == 0:
            return
        with torch.no_grad():
            for p in self.suffix.parameters():
                if p.grad is not None:
                    p.grad.div_(self._clients)
        self.opt.step()

    # -- the global model -------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        return np.concatenate([self.prefix_w, flat_params(self.suffix)])

    def state_dict(self) -> dict[str, Any]:
        d = {"w": self.weights}
        d.update({f"sampler.{k}": v for k, v in self.sampler.state_dict().items()})
        for i, st in self.opt.state_dict()["state"].items():
            for k, v in st.items():
                d[f"opt.{i}.{k}"] = np.asarray(v.detach().numpy() if torch.is_tensor(v) else v)
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        w = np.asarray(d["w"], dtype=np.float32)
        self.prefix_w = w[:self.parts.d_c].copy()
        set_flat_params(self.suffix, w[self.parts.d_c:])
        self.sampler.load_state_dict({k[8:]: v for k, v in d.items() if k.startswith("sampler.")})
        opt = self.opt.state_dict()
        state: dict[int, dict[str, torch.Tensor]] = {}
        for key, v in d.items():
            if key.startswith("opt."):
                _, i, name = key.split(".", 2)
                state.setdefault(int(i), {})[name] = torch.as_tensor(np.array(v))
        opt["state"] = state
        self.opt.load_state_dict(opt)

"""FetchSGD (Rothchild et al., ICML 2020), METHODS.md 6.9: momentum and error in sketch space.

Clients are stateless FedAvg clients whose uplink codec is the count sketch
(:class:`~fedsqueeze.compress.countsketch.CountSketch`). The server sums the ``p_i``-weighted
sketches ``S`` and keeps two sketches of the same shape::

    S_u <- rho S_u + S                    # momentum
    S_e <- S_e + eta S_u                  # error accumulation (eta = method.eta * fl.server_lr)
    x   =  query(S_e) for all D coordinates
    Delta = top_k(|x|) with the values of x          (k = ceil(k_fraction D), ties: smaller index)
    zero the buckets (j, h_j(i)) of every i in nz(Delta) in S_u and S_e
    w   <- w + Delta

Only the plain single-round variant is implemented (no second round to fetch exact values).

Example (the hooks driven by hand, as ``fl/server.py`` would)::

    >>> import numpy as np
    >>> from fedsqueeze import config
    >>> from fedsqueeze.compress.countsketch import CountSketch
    >>> from fedsqueeze.fl.strategy import ServerContext, UP_PRE
    >>> cfg = config.from_dict({"compress": {"up": {"id": "countsketch", "cols": 64}},
    ...                         "fl": {"method": "fetchsgd"}})
    >>> codec = CountSketch(cols=64)
    >>> ctx = ServerContext(cfg, FetchSGDOptions(k_fraction=0.01), 200, np.zeros(200, np.float32),
    ...                     codec, codec, 4, np.ones(4))
    >>> s = FetchSGD(ctx)
    >>> s.begin_round(0, np.array([0]), np.array([1]))
    >>> d = np.zeros(200, np.float32); d[[5, 17]] = [3.0, -1.0]
    >>> payload = codec.encode(d, seed=0)[0].payload()
    >>> _ = s.accumulate(0, 0, 1, payload)
    >>> cols = s.end_round(0)
    >>> cols["k_t"], float(s.weights[5])   # k = ceil(0.01 * 200) = 2 coordinates applied
    (2, 3.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..compress.countsketch import CountSketch
from ..compress.sparse import select_topk
from ..errors import ConfigError, UpdateRejected
from ..fl.strategy import ClientContext, FedAvgClient, ServerContext, Strategy, register_method

__all__ = ["FetchSGD", "FetchSGDClient", "FetchSGDOptions"]


class FetchSGDOptions(BaseModel):
    """``[method]`` options of ``fl.method = "fetchsgd"``.

    rho : momentum of ``S_u`` (0.9); eta : step applied to ``S_e`` (1.0, times ``fl.server_lr``);
    k_fraction : ``k = max(1, ceil(k_fraction D))`` coordinates applied per round (0.01).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rho: float = Field(0.9, ge=0, lt=1)
    eta: float = Field(1.0, gt=0)
    k_fraction: float = Field(0.01, gt=0, le=1)


def _sketch_codec(ctx: ServerContext | ClientContext) -> CountSketch:
    if not isinstance(ctx.up, CountSketch):
        raise ConfigError(f"fl.method = 'fetchsgd' needs compress.up.id = 'countsketch', "
                          f"got {ctx.up.codec_id!r}")
    return ctx.up


class FetchSGD(Strategy):
    """Server of FetchSGD: sketch-space momentum and error accumulation, top-k unsketching."""

    round_columns = [("k_t", "u4"), ("delta_norm", "f8"), ("sketch_e_norm", "f8")]

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.codec = _sketch_codec(ctx)
        if ctx.cfg.fl.aggregator != "mean":
            raise ConfigError(f"fl.aggregator = {ctx.cfg.fl.aggregator!r}: fetchsgd sums sketches "
                              "and supports only 'mean'")
        d = ctx.n_params
        self.shape = (self.codec.rows, self.codec.cols_for(d))
        self.k = max(1, math.ceil(ctx.options.k_fraction * d))
        self.s_u = np.zeros(self.shape, dtype=np.float32)  # momentum sketch, persists over rounds
        self.s_e = np.zeros(self.shape, dtype=np.float32)  # error sketch, persists over rounds
        self._acc = np.zeros(self.shape, dtype=np.float64)  # sum_i n_i S_i of the current round
        self._weight = 0.0

    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        self._round_dl = None
        self._acc.fill(0.0)
        self._weight = 0.0

    def accumulate(self, t: int, client: int, n: int, payload) -> dict[str, float]:
        """Parse one sketch and add it with weight ``n`` (called in increasing client id).

        The update norm is estimated from the sketch, ``sqrt(sum S^2 / r)`` (each row's squared
        norm is an unbiased estimate of ``||Delta_i||^2``); ``fl.max_update_norm`` bounds it.
        """
        enc = self.codec.parse(payload, self.ctx.n_params)
        tab = self.codec.table(enc).astype(np.float64)
        if not np.isfinite(tab).all():
            raise UpdateRejected(f"sketch has {int((~np.isfinite(tab)).sum())} NaN/Inf buckets")
        norm = float(np.sqrt(np.sum(tab * tab) / self.shape[0]))
        bound = self.ctx.cfg.fl.max_update_norm
        if bound is not None and norm > bound:
            raise UpdateRejected(f"sketched update norm {norm:.4g} exceeds "
                                 f"fl.max_update_norm = {bound}")
        self.sampler.observe(client, norm)
        self._acc += np.float64(n) * tab
        self._weight += float(n)
        return {"update_norm": norm}

    def end_round(self, t: int) -> dict[str, float]:
        """Momentum, error accumulation, unsketch the top-k, zero their buckets, apply."""
        if self._weight <= 0:
            return {"k_t": 0, "delta_norm": 0.0, "sketch_e_norm": _norm(self.s_e)}
        opts = self.ctx.options
        s = (self._acc / self._weight).astype(np.float32)
        eta = np.float32(opts.eta * self.ctx.cfg.fl.server_lr)
        self.s_u = (np.float32(opts.rho) * self.s_u + s).astype(np.float32)
        self.s_e = (self.s_e + eta * self.s_u).astype(np.float32)
        d = self.ctx.n_params
        est = self.codec.query(self.s_e, d)
        idx = select_topk(est, self.k)
        vals = est[idx]
        nz = idx[vals != 0]
        vals = vals[vals != 0]
        if nz.size:
            buckets, _ = self.codec.hashes(nz, d)
            rows = np.arange(self.shape[0])[:, None]
            self.s_u[rows, buckets] = 0.0
            self.s_e[rows, buckets] = 0.0
            self.w = self.w.copy()  # the round's Downlink may still hold the old array
            self.w[nz] += vals
        return {"k_t": int(nz.size), "delta_norm": _norm(vals), "sketch_e_norm": _norm(self.s_e)}

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d.update({"s_u": self.s_u.copy(), "s_e": self.s_e.copy()})
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        super().load_state_dict(d)
        for key in ("s_u", "s_e"):
            a = np.asarray(d[key], dtype=np.float32)
            if a.shape != self.shape:
                raise ValueError(f"checkpoint {key} has shape {a.shape}, expected {self.shape}")
            setattr(self, key, a.copy())


class FetchSGDClient(FedAvgClient):
    """FetchSGD client: a stateless FedAvg client that uploads the count sketch of its update."""

    def __init__(self, ctx: ClientContext) -> None:
        _sketch_codec(ctx)
        super().__init__(ctx)


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, dtype=np.float64)))


register_method("fetchsgd", FetchSGD, FetchSGDClient, FetchSGDOptions)

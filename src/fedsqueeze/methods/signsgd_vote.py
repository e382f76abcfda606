"""signSGD with majority vote (METHODS.md 6.6): ``w <- w + eta_s sign(sum_i sign(Delta_i))``.

Clients are plain FedAvg clients whose uplink codec sends signs (``compress.up.id =
"signsgd"``, which decodes to ``+-1``). The server counts one unweighted vote per client and
coordinate, ``v = sum_i sign(Delta_hat_i)`` (a decoded 0 casts no vote), and applies
``eta_s sign(v)`` with ``sign(0) = 0``; ``eta_s`` replaces ``fl.server_lr``. Round columns:
``voters`` and ``vote_ties`` (fraction of coordinates with ``v = 0``).

Example (hooks driven by hand)::

    >>> import numpy as np
    >>> from fedsqueeze import config
    >>> from fedsqueeze.compress.sign import SignSGD
    >>> from fedsqueeze.fl.strategy import ServerContext
    >>> cfg = config.from_dict({"compress": {"up": {"id": "signsgd"}},
    ...                         "fl": {"method": "signsgd_vote"}})
    >>> ctx = ServerContext(cfg, SignVoteOptions(eta_s=0.5), 3, np.zeros(3, np.float32),
    ...                     SignSGD(), SignSGD(), 3, np.ones(3))
    >>> s = SignSGDVote(ctx)
    >>> s.begin_round(0, np.arange(3), np.ones(3))
    >>> for c, d in enumerate([[1, -1, 1], [1, -1, -1], [-1, 1, 0]]):
    ...     _ = s.accumulate(0, c, 1, SignSGD().encode(np.float32(d), seed=0)[0].payload())
    >>> s.end_round(0)["vote_ties"], s.weights.tolist()
    (0.0, [0.5, -0.5, 0.5])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..fl.strategy import FedAvgClient, ServerContext, Strategy, register_method

__all__ = ["SignVoteOptions", "SignSGDVote"]


class SignVoteOptions(BaseModel):
    """``[method]`` options of ``fl.method = "signsgd_vote"``: server step ``eta_s`` (1e-3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eta_s: float = Field(1e-3, gt=0)


class SignSGDVote(Strategy):
    """Server of signSGD with majority vote: unweighted sign votes, ``eta_s``-sized steps."""

    round_columns = [("voters", "u4"), ("vote_ties", "f8")]

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.eta_s = np.float32(ctx.options.eta_s)
        self._votes = np.zeros(ctx.n_params, dtype=np.int32)
        self._voters = 0

    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        super().begin_round(t, clients, n)
        self._votes[:] = 0
        self._voters = 0

    def accumulate(self, t: int, client: int, n: int, payload) -> dict[str, float]:
        """Decode, check, and add ``sign(Delta_hat)`` to the vote (the weight ``n`` is unused)."""
        delta = self.decode_update(t, client, payload)
        self.check_update(delta)
        self._votes += np.sign(delta).astype(np.int32)
        self._voters += 1
        norm = float(np.linalg.norm(delta.astype(np.float64)))
        self.sampler.observe(client, norm)
        return {"update_norm": norm}

    def aggregate(self) -> np.ndarray | None:
        """``sign(v)`` as float32 (``sign(0) = 0``), or ``None`` before any vote."""
        if self._voters == 0:
            return None
        return np.sign(self._votes).astype(np.float32)

    def end_round(self, t: int) -> dict[str, Any]:
        step = self.aggregate()
        if step is not None:
            self.w = (self.w + self.eta_s * step).astype(np.float32)
        ties = float(np.mean(self._votes == 0)) if self._voters and self._votes.size else 0.0
        return {"voters": self._voters, "vote_ties": ties}


register_method("signsgd_vote", SignSGDVote, FedAvgClient, SignVoteOptions)

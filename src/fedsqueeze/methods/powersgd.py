"""PowerSGD in FL (METHODS.md section 6.8): one uplink per client, alternating P and Q rounds.

The server keeps the orthonormal shared factor ``F_t`` of every compressed tensor and sends it
with the model, in one downlink shared by all sampled clients::

    DOWN: f32[D] model | f32 factors F_t          (Q blocks in even rounds, P blocks in odd)

Clients compress ``M_i = Delta_i + e_i`` with the :class:`~fedsqueeze.compress.powersgd.PowerSGD`
codec against ``F_t`` and keep the residual ``e_i <- M_i - P Q^T`` in their state store. The server
averages the uploaded factors with weights ``p_i`` (float64, rounded once), rebuilds
``Delta = P Q^T``, applies ``w <- w + server_lr Delta`` and orthonormalises the average
(modified Gram-Schmidt) into ``F_{t+1}``. ``F_0`` comes from Philox ``POWERSGD_INIT`` keyed by the
run seed. A round without any update leaves the model alone; the next round then starts its phase
from fresh Philox factors (keyed by that round).

The codec needs the model's tensor shapes (``compress.up.shapes``), in parameter order.

Example (the hooks driven by hand, as ``fl/server.py`` and ``fl/worker.py`` would)::

    >>> import numpy as np
    >>> from fedsqueeze import config
    >>> from fedsqueeze.compress.powersgd import PowerSGD
    >>> from fedsqueeze.fl.strategy import ClientContext, NoOptions, ServerContext, UP_PRE
    >>> up = {"id": "powersgd", "rank": 1, "shapes": [[8, 6], [3]]}
    >>> cfg = config.from_dict({"compress": {"up": up}, "fl": {"method": "powersgd"}})
    >>> codec, w0 = PowerSGD.from_config(up), np.zeros(51, np.float32)
    >>> server = PowerSGDStrategy(ServerContext(cfg, NoOptions(), 51, w0, codec, codec, 1,
    ...                                         np.ones(1)))
    >>> client = PowerSGDClient(ClientContext(cfg, NoOptions(), 51, w0, codec, codec, {}))
    >>> delta = np.concatenate([np.outer(np.arange(8), np.ones(6)).ravel(), [1, 2, 3]])
    >>> for t in (0, 1):   # the same rank-1 update twice: P round, then Q round
    ...     server.begin_round(t, np.array([0]), np.array([1]))
    ...     dl = server.downlink(t, 0)
    ...     w = client.receive(t, 0, dl.flags, b"".join(bytes(memoryview(s)) for s in dl.sections))
    ...     up = client.encode(t, 0, delta.astype(np.float32), 1)
    ...     _ = server.accumulate(t, 0, 1, b"".join(bytes(s) for s in up.sections)[4:])
    ...     _ = server.end_round(t)
    >>> bool(np.allclose(server.weights, 2 * delta, atol=1e-4))   # nothing lost, nothing left over
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..comm.tags import Flag
from ..comm.wire import SectionReader
from ..compress.powersgd import PowerSGD, PowerSGDState
from ..errors import ConfigError, UpdateRejected, WireFormatError
from ..fl.strategy import (
    UP_PRE,
    ClientContext,
    ClientProgram,
    Downlink,
    ServerContext,
    Strategy,
    Upload,
    message_seed,
    register_method,
)

__all__ = ["PowerSGDStrategy", "PowerSGDClient"]


def _codec(ctx: ServerContext | ClientContext) -> PowerSGD:
    c = ctx.up
    if not isinstance(c, PowerSGD):
        raise ConfigError(f"fl.method = 'powersgd' needs compress.up.id = 'powersgd', "
                          f"got {c.codec_id!r}")
    if c.shapes is None:
        raise ConfigError("fl.method = 'powersgd' needs compress.up.shapes: the model's "
                          "trainable tensor shapes in parameter order")
    try:
        c.layout(ctx.n_params)
    except ValueError as exc:
        raise ConfigError(f"compress.up.shapes: {exc}") from None
    return c


class PowerSGDStrategy(Strategy):
    """Server of PowerSGD: keeps, broadcasts and updates the orthonormal shared factors."""

    round_columns = [("phase", "u1"), ("update_norm", "f8")]

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.codec = _codec(ctx)
        if ctx.cfg.fl.aggregator != "mean":
            raise ConfigError(f"fl.aggregator = {ctx.cfg.fl.aggregator!r}: powersgd averages "
                              "factors and supports only 'mean'")
        self.layout = self.codec.layout(ctx.n_params)
        # F_t: the shared factors of the coming round (phase 0: Q blocks, phase 1: P blocks)
        self.state = self.codec.initial_state(ctx.n_params, seed=ctx.cfg.seed, phase=0, round=0)
        self._acc = np.zeros(0, dtype=np.float64)  # sum_i n_i [factors_i, dense_i] of the round
        self._weight = 0.0

    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        self._round_dl = None
        if self.state.phase != t % 2:  # the previous round applied nothing: restart the phase
            self.state = self.codec.initial_state(self.ctx.n_params, seed=self.ctx.cfg.seed,
                                                  phase=t % 2, round=t)
        ph = self.state.phase
        self._acc = np.zeros(self.layout.upload_len(ph) + self.layout.dense_len, np.float64)
        self._weight = 0.0

    def downlink(self, t: int, client: int) -> Downlink:
        """``model f32[D] | factors f32``, one object for every client of the round."""
        if self._round_dl is None:
            f = self.state.factors
            self._round_dl = Downlink((self.w, f), 32.0 * (self.ctx.n_params + f.shape[0]),
                                      flags=Flag.FULL_MODEL)
        return self._round_dl

    def accumulate(self, t: int, client: int, n: int, payload) -> dict[str, float]:
        """Parse one upload and add its factors and dense tensors with weight ``n``.

        The reported norm is that of the payload's floats, which equals ``||P Q^T||`` plus the
        dense part because the shared factor has orthonormal columns.
        """
        enc = self.codec.parse(payload, self.ctx.n_params)
        if enc.meta["phase"] != self.state.phase:
            raise WireFormatError(f"powersgd: round {t} upload has phase {enc.meta['phase']}, "
                                  f"expected {self.state.phase}")
        up, dense = self.codec.uploads(enc)
        vec = np.concatenate([up, dense]).astype(np.float64)
        if not np.isfinite(vec).all():
            raise UpdateRejected(f"update has {int((~np.isfinite(vec)).sum())} NaN/Inf values")
        norm = float(np.linalg.norm(vec))
        bound = self.ctx.cfg.fl.max_update_norm
        if bound is not None and norm > bound:
            raise UpdateRejected(f"update norm {norm:.4g} exceeds fl.max_update_norm = {bound}")
        self.sampler.observe(client, norm)
        self._acc += np.float64(n) * vec
        self._weight += float(n)
        return {"update_norm": norm}

    def end_round(self, t: int) -> dict[str, float]:
        """Rebuild and apply the averaged update; orthonormalise the new factors."""
        ph = self.state.phase
        if self._weight <= 0:
            return {"phase": ph, "update_norm": 0.0}
        mean = (self._acc / self._weight).astype(np.float32)
        k = self.layout.upload_len(ph)
        up, dense = mean[:k], mean[k:]
        d = self.ctx.n_params
        delta = self.codec.reconstruct(ph, up, dense, self.state.factors, d)
        self.w = (self.w + np.float32(self.ctx.cfg.fl.server_lr) * delta).astype(np.float32)
        self.state = self.codec.orthonormal_state(d, 1 - ph, up, seed=self.ctx.cfg.seed,
                                                  round=t + 1)
        return {"phase": ph, "update_norm": float(np.linalg.norm(delta.astype(np.float64)))}

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d.update({"powersgd.phase": np.int64(self.state.phase),
                  "powersgd.factors": self.state.factors.copy()})
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        super().load_state_dict(d)
        ph = int(d["powersgd.phase"])
        f = np.asarray(d["powersgd.factors"], dtype=np.float32)
        if ph not in (0, 1) or f.shape != (self.layout.factor_len(ph),):
            raise ValueError(f"checkpoint factors: phase {ph}, shape {f.shape}")
        self.state = PowerSGDState(ph, f.copy())


class PowerSGDClient(ClientProgram):
    """Client of PowerSGD: reads the model and the shared factors, uploads its own factors."""

    def __init__(self, ctx: ClientContext) -> None:
        super().__init__(ctx)  # keeps the residual e_i in ctx.store when error_feedback is on
        self.codec = _codec(ctx)
        self.layout = self.codec.layout(ctx.n_params)
        self._shared: dict[int, tuple[int, PowerSGDState]] = {}  # client -> (round, F_t)

    def receive(self, t: int, client: int, flags: int, payload) -> np.ndarray:
        rd = SectionReader(payload, "DOWN_MODEL")
        w = rd.array("<f4", self.ctx.n_params, "weights")
        ph = t % 2
        f = rd.array("<f4", self.layout.factor_len(ph), "factors")
        rd.finish()
        self._shared[client] = (t, PowerSGDState(ph, np.array(f, dtype=np.float32)))
        return w

    def encode(self, t: int, client: int, update: np.ndarray, n: int) -> Upload:
        """``M = Delta + e``; upload ``M Q`` or ``M^T P``; keep ``e <- M - P Q^T``."""
        got = self._shared.pop(client, None)
        if got is None or got[0] != t:
            raise RuntimeError(f"powersgd: client {client} encodes round {t} without its downlink")
        state = got[1]
        m = self.ef.compensate(client, update) if self.ef is not None else update
        m = np.ascontiguousarray(m, dtype=np.float32)
        enc, _ = self.codec.encode(m, seed=message_seed(self.ctx.cfg.seed, t, client), state=state)
        x_hat = self.codec.decode(enc, state=state)
        if self.ef is not None:
            self.ef.update(client, m, x_hat)
        diag = self.codec.diagnostics(enc)
        nv = float(np.linalg.norm(m.astype(np.float64)))
        diag["distortion"] = float(np.linalg.norm((m - x_hat).astype(np.float64))) / nv if nv \
            else 0.0
        return Upload((UP_PRE.pack(n),) + tuple(enc.sections), self.codec.theoretical_bits(enc),
                      diag)


register_method("powersgd", PowerSGDStrategy, PowerSGDClient)

"""AdaQuantFL, sync mode (METHODS.md 4.2-4.4): the QSGD level count follows the training loss.

Per round ``k``, after the dense model downlink::

    client  UP_CTRL    u32 n_i | f32 F_i          F_i = loss of the received w_k on its data
    server             F_k = sum_i p_i F_i  (p_i = n_i / sum n);  F_0 = F_k in the first round
                       s_k = min(s_max, max(1, ceil(s0 sqrt(F_0 / max(F_k, 1e-12)))))
    server  DOWN_CTRL  u16 s_k | u16 0            one shared Downlink for every client
    client  UP_UPDATE  adaquant codec with state {"s": s_k}

The uplink codec must be ``adaquant`` (:class:`~fedsqueeze.compress.adaquant.AdaQuant`); an
update quantised with another ``s`` is rejected. Round columns: ``s_k`` and ``F_k``.

Example (hooks driven by hand, as ``fl/server.py`` would)::

    >>> import numpy as np
    >>> from fedsqueeze import config
    >>> from fedsqueeze.compress.adaquant import AdaQuant
    >>> from fedsqueeze.fl.strategy import ServerContext
    >>> cfg = config.from_dict({"compress": {"up": {"id": "adaquant"}},
    ...                         "fl": {"method": "adaquant"}})
    >>> ctx = ServerContext(cfg, AdaQuantOptions(), 10, np.zeros(10, np.float32),
    ...                     AdaQuant(), AdaQuant(), 2, np.ones(2))
    >>> s = AdaQuantFL(ctx)
    >>> s.begin_round(0, np.array([0, 1]), np.array([1, 1]))
    >>> dl = s.control(0, {0: CTRL_UP.pack(1, 2.0), 1: CTRL_UP.pack(3, 2.0)})
    >>> CTRL_DOWN.unpack(dl[0].sections[0]), dl[0] is dl[1]
    ((2, 0), True)
    >>> level_for(2.0, 0.5, s0=2, s_max=255)       # loss fell 4x: twice the levels
    4
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..comm.tags import Kind
from ..comm.wire import SectionReader
from ..compress.adaquant import AdaQuant
from ..compress.qsgd import MAX_LEVELS
from ..errors import ConfigError, UpdateRejected, WireFormatError
from ..fl.strategy import (
    ClientContext,
    ClientProgram,
    Downlink,
    ServerContext,
    Strategy,
    register_method,
)

__all__ = ["AdaQuantOptions", "AdaQuantFL", "AdaQuantClient", "level_for", "CTRL_UP",
           "CTRL_DOWN"]

CTRL_UP = struct.Struct("<If")  # u32 n_i | f32 F_i
CTRL_DOWN = struct.Struct("<HH")  # u16 s_k | u16 0


class AdaQuantOptions(BaseModel):
    """``[method]`` options of ``fl.method = "adaquant"``: ``s0`` (2) and ``s_max`` (255)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s0: int = Field(2, ge=1, le=MAX_LEVELS)
    s_max: int = Field(255, ge=1, le=MAX_LEVELS)

    @model_validator(mode="after")
    def _order(self) -> AdaQuantOptions:
        if self.s0 > self.s_max:
            raise ValueError(f"s0 = {self.s0} exceeds s_max = {self.s_max}")
        return self


def level_for(f0: float, fk: float, *, s0: int, s_max: int) -> int:
    """``s_k = min(s_max, max(1, ceil(s0 sqrt(F_0 / max(F_k, 1e-12)))))`` (METHODS.md 4.2)."""
    ratio = max(f0, 0.0) / max(fk, 1e-12)
    return int(min(s_max, max(1, math.ceil(s0 * math.sqrt(ratio)))))


def _codec(ctx: ServerContext | ClientContext, opts: AdaQuantOptions) -> AdaQuant:
    if not isinstance(ctx.up, AdaQuant):
        raise ConfigError(f"fl.method = 'adaquant' needs compress.up.id = 'adaquant', "
                          f"got {ctx.up.codec_id!r}")
    if opts.s_max > ctx.up.s_max:
        raise ConfigError(f"method.s_max = {opts.s_max} exceeds the codec's "
                          f"compress.up.s_max = {ctx.up.s_max}")
    return ctx.up


class AdaQuantFL(Strategy):
    """Server: weighted loss from the control replies, level ``s_k``, FedAvg of the updates."""

    uses_control = True
    round_columns = [("s_k", "u2"), ("F_k", "f8")]

    def __init__(self, ctx: ServerContext) -> None:
        super().__init__(ctx)
        self.opts: AdaQuantOptions = ctx.options
        self.codec = _codec(ctx, self.opts)
        self.f0: float | None = None  # F(w_0): set by the first round's replies
        self.fk = math.nan
        self.s_k = self.opts.s0

    def control(self, t: int, replies: Mapping[int, Any]) -> dict[int, Downlink]:
        """Parse every ``u32 n_i | f32 F_i``, compute ``F_k`` and ``s_k``, answer all clients.

        Replies with a non-finite or negative loss, or ``n_i = 0``, or that do not parse (the
        server logged those), do not enter ``F_k``; if no reply is usable the previous level is
        kept. Every client gets the level.
        """
        num = den = 0.0
        for c in sorted(replies):
            try:
                r = SectionReader(replies[c], f"UP_CTRL client {c}")
                n_i, f_i = r.struct(CTRL_UP, "n_i | F_i")
                r.finish()
            except WireFormatError:
                continue
            if n_i > 0 and math.isfinite(f_i) and f_i >= 0:
                num += float(n_i) * float(f_i)
                den += float(n_i)
        if den > 0:
            self.fk = num / den
            if self.f0 is None:
                self.f0 = self.fk
            self.s_k = level_for(self.f0, self.fk, s0=self.opts.s0, s_max=self.opts.s_max)
        dl = Downlink((CTRL_DOWN.pack(self.s_k, 0),), 16.0, kind=Kind.DOWN_CTRL)
        return {c: dl for c in replies}

    def decode_update(self, t: int, client: int, payload) -> np.ndarray:
        enc = self.codec.parse(payload, self.ctx.n_params)
        if enc.meta["s"] != self.s_k:
            raise UpdateRejected(f"update quantised with s = {enc.meta['s']}, the round's "
                                 f"level is s_k = {self.s_k}")
        return self.codec.decode(enc)

    def end_round(self, t: int) -> dict[str, float]:
        cols = super().end_round(t) or {}
        cols.update({"s_k": self.s_k, "F_k": self.fk})
        return cols

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d.update({"adaquant.f0": np.nan if self.f0 is None else self.f0,
                  "adaquant.s_k": self.s_k})
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        super().load_state_dict({k: v for k, v in d.items() if not k.startswith("adaquant.")})
        f0 = float(d.get("adaquant.f0", np.nan))
        self.f0 = None if math.isnan(f0) else f0
        self.s_k = int(d.get("adaquant.s_k", self.opts.s0))


class AdaQuantClient(ClientProgram):
    """Client: reports ``(n_i, F_i)``, takes ``s_k`` from DOWN_CTRL, encodes with it."""

    uses_control = True

    def __init__(self, ctx: ClientContext) -> None:
        super().__init__(ctx)
        _codec(ctx, ctx.options)
        self._levels: dict[tuple[int, int], int] = {}

    def control_payload(self, t: int, client: int, trainer, w: np.ndarray):
        loss = float(trainer.local_loss(w, client))
        return (CTRL_UP.pack(int(trainer.num_samples(client)), loss),)

    def on_control(self, t: int, client: int, payload) -> None:
        r = SectionReader(payload, f"DOWN_CTRL client {client}")
        s_k, zero = r.struct(CTRL_DOWN, "s_k | 0")
        r.finish()
        if zero != 0 or not 1 <= s_k <= self.ctx.up.s_max:
            raise WireFormatError(f"DOWN_CTRL s_k = {s_k}, pad = {zero}: expected "
                                  f"1..{self.ctx.up.s_max} and 0")
        self._levels[(t, client)] = int(s_k)

    def codec_state(self, t: int, client: int):
        try:
            return {"s": self._levels.pop((t, client))}
        except KeyError:
            raise RuntimeError(f"adaquant: no DOWN_CTRL level for client {client} in round {t}"
                               ) from None


register_method("adaquant", AdaQuantFL, AdaQuantClient, AdaQuantOptions)

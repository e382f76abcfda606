"""Downlink policies (METHODS.md 0.6): what the server sends a sampled client at round start.

``dense``: the down codec applied to the model itself (``identity`` = float32 FedAvg; ``fp16`` or
``bf16`` halve it), one shared payload per round. ``delta``: clients are stateful; the server
keeps their view ``w~`` and a ring of encoded broadcast updates ``U_r = C_down(w_r - w~_{r-1})``
(``w~_r = w~_{r-1} + decode(U_r)``: server-side error feedback, errors never accumulate). A client
last synchronised at ``r_c`` gets ``U_{r_c+1} .. U_t`` when that is smaller than the dense view
and all are still buffered, else the dense ``w~_t`` (flag FULL_MODEL).

Replay payload: ``u32 count | count x (u32 round | u32 nbytes | U_r payload, pad4)``.
"""

from __future__ import annotations

import collections
import struct

import numpy as np

from ..comm.tags import Flag
from ..comm.wire import SectionReader, pad4
from ..compress.base import Compressor, decode_payload, require_finite
from ..errors import WireFormatError
from .strategy_types import Downlink, message_seed

__all__ = ["DenseDownlink", "DeltaDownlink", "DownlinkReceiver", "make_downlink"]

_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct("<II")
SYSTEM_STREAM = 0xFFFFFFFF


class DenseDownlink:
    """The down codec applied to ``w_t``; one shared payload per round."""

    def __init__(self, codec: Compressor, n: int, seed: int) -> None:
        self.codec, self.n, self.seed = codec, n, seed
        self._cache: tuple[int, Downlink] | None = None

    def for_client(self, t: int, client: int, w: np.ndarray) -> Downlink:
        if self._cache is None or self._cache[0] != t:
            enc, _ = self.codec.encode(w, seed=message_seed(self.seed, t, SYSTEM_STREAM,
                                                            self.codec))
            self._cache = (t, Downlink(tuple(enc.sections), self.codec.theoretical_bits(enc),
                                       flags=Flag.FULL_MODEL))
        return self._cache[1]

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, d) -> None:
        return None


class DeltaDownlink:
    """Stateful clients, ring buffer of encoded updates, server-side error feedback."""

    def __init__(self, codec: Compressor, n: int, seed: int, num_clients: int, ring: int,
                 w0: np.ndarray) -> None:
        self.codec, self.n, self.seed, self.ring = codec, n, seed, ring
        self.view = w0.astype(np.float32, copy=True)  # w~: what synchronised clients hold
        self.view_round = -1
        self.last_sync = np.full(num_clients, -1, dtype=np.int64)
        self.buffer: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._round_cache: dict = {}

    def _advance(self, t: int, w: np.ndarray) -> None:
        if self.view_round == t:
            return
        enc, _ = self.codec.encode((w - self.view).astype(np.float32),
                                   seed=message_seed(self.seed, t, SYSTEM_STREAM, self.codec))
        self.view += self.codec.decode(enc)
        self.buffer[t] = enc.payload()
        self._bits = getattr(self, "_bits", {})
        self._bits[t] = self.codec.theoretical_bits(enc)
        while len(self.buffer) > self.ring:
            old, _ = self.buffer.popitem(last=False)
            self._bits.pop(old, None)
        self.view_round = t
        self._round_cache = {}

    def for_client(self, t: int, client: int, w: np.ndarray) -> Downlink:
        self._advance(t, w)
        r_c = int(self.last_sync[client])
        self.last_sync[client] = t
        if r_c in self._round_cache:
            return self._round_cache[r_c]
        dense = 4 * self.n
        rounds = list(range(r_c + 1, t + 1))
        replay_bytes = 4 + sum(8 + pad4(len(self.buffer.get(r, b""))) for r in rounds)
        if r_c >= 0 and all(r in self.buffer for r in rounds) and replay_bytes < dense:
            sections = [_COUNT.pack(len(rounds))]
            for r in rounds:
                sections += [_ENTRY.pack(r, len(self.buffer[r])), self.buffer[r]]
            dl = Downlink(tuple(sections), float(sum(self._bits[r] for r in rounds)),
                          flags=Flag.REPLAY)
        else:
            dl = Downlink((self.view.copy(),), 32.0 * self.n, flags=Flag.FULL_MODEL)
        self._round_cache[r_c] = dl
        return dl

    def state_dict(self) -> dict:
        d = {"view": self.view.copy(), "view_round": np.int64(self.view_round),
             "last_sync": self.last_sync.copy(),
             "ring_rounds": np.array(list(self.buffer), dtype=np.int64)}
        for r, b in self.buffer.items():
            d[f"ring_{r}"] = np.frombuffer(b, dtype=np.uint8).copy()
            d[f"ringbits_{r}"] = np.float64(self._bits[r])
        return d

    def load_state_dict(self, d) -> None:
        self.view = np.asarray(d["view"], np.float32).copy()
        self.view_round = int(d["view_round"])
        self.last_sync = np.asarray(d["last_sync"], np.int64).copy()
        self.buffer = collections.OrderedDict(
            (int(r), bytes(np.asarray(d[f"ring_{int(r)}"]))) for r in d["ring_rounds"])
        self._bits = {int(r): float(d[f"ringbits_{int(r)}"]) for r in d["ring_rounds"]}


def make_downlink(policy: str, codec: Compressor, n: int, seed: int, num_clients: int,
                  ring: int, w0: np.ndarray):
    if policy == "delta":
        return DeltaDownlink(codec, n, seed, num_clients, ring, w0)
    return DenseDownlink(codec, n, seed)


class DownlinkReceiver:
    """Client side: turns a downlink payload into the model to start from."""

    def __init__(self, codec: Compressor, n: int, policy: str, store, seed: int) -> None:
        self.codec, self.n, self.policy, self.store, self.seed = codec, n, policy, store, seed

    def _decode(self, payload, t: int) -> np.ndarray:
        seed = message_seed(self.seed, t, SYSTEM_STREAM, self.codec)
        return decode_payload(self.codec, payload, self.n, seed)

    def receive(self, t: int, client: int, flags: int, payload) -> np.ndarray:
        if self.policy == "dense":
            return self._decode(payload, t)
        if flags & Flag.FULL_MODEL:
            r = SectionReader(payload, "DOWN_MODEL")
            w = r.array("<f4", self.n, "model")
            r.finish()
            require_finite(w, "DOWN_MODEL: model")
            w = w.copy()
        elif flags & Flag.REPLAY:
            w = self.store.get(("view", client))
            if w is None:
                raise WireFormatError(f"replay downlink for client {client} that has no view")
            w = w.copy()
            r = SectionReader(payload, "DOWN_MODEL replay")
            (count,) = r.struct(_COUNT, "count")
            if count > 1 << 20:
                raise WireFormatError(f"replay count {count} is implausible")
            for _ in range(count):
                rnd, nbytes = r.struct(_ENTRY, "entry")
                body = r.bytes(nbytes, "update")
                w += self._decode(body, rnd)
            r.finish()
        else:
            raise WireFormatError(f"downlink flags {flags:#x}: neither full model nor replay")
        self.store[("view", client)] = w
        return w

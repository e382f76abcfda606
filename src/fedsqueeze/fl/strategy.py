"""Methods as a pair of pure objects: the server's ``Strategy`` and the worker's ``ClientProgram``.

Neither touches the transport. ``fl/server.py`` and ``fl/worker.py`` own MPI and call these hooks
in a fixed order each round::

    server                                   worker (per sampled client, in increasing id)
    ------                                   --------------------------------------------
    clients = strategy.sample(t)
    strategy.begin_round(t, clients, n)
    strategy.downlink(t, c) -> Downlink  ->  w = program.receive(t, c, flags, payload)
    [uses_control]                           ctrl = program.control_payload(t, c, trainer, w)
    strategy.control(t, {c: ctrl}) -> {c: Downlink}  ->  program.on_control(t, c, payload)
                                             w_end, stats = program.train(t, c, trainer, w)
                                             up = program.encode(t, c, w_end - w, n)
    strategy.accumulate(t, c, n, payload) <- UP_UPDATE (u32 n | codec payload)
    strategy.end_round(t) -> round columns

A method registers the pair with :func:`register_method`; ``fl.method`` in the config names it
and ``[method]`` options are validated by its ``Options`` model (pydantic, ``extra="forbid"``).
Identical downlinks must be the *same* ``Downlink`` object: the server then sends one physical
frame per worker and counts it once per recipient client (METHODS.md 0.4 rule 2).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from ..comm.tags import Flag, Kind
from ..comm.wire import SectionReader
from ..compress.base import Compressor, Encoded, ErrorFeedback, decode_payload
from ..errors import ConfigError, UpdateRejected, WireFormatError
from .. import rng
from .aggregate import StreamingMean, coordinate_median, trimmed_mean
from .downlink import DownlinkReceiver, make_downlink
from .sampling import Sampler
from .strategy_types import UP_PRE, Downlink, Upload, message_seed

__all__ = [
    "Downlink", "Upload", "ServerContext", "ClientContext", "Strategy", "ClientProgram",
    "FedAvg", "FedAvgClient", "register_method", "get_method", "methods", "NoOptions",
    "UP_PRE", "message_seed",
]

class NoOptions(BaseModel):
    """A method without ``[method]`` options."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class ServerContext:
    """Everything a strategy may read: config, sizes, the initial model and the codecs."""

    cfg: Any  # RunConfig
    options: Any  # the method's validated Options
    n_params: int
    w0: np.ndarray
    up: Compressor
    down: Compressor
    num_clients: int
    samples: np.ndarray  # training samples per client
    evaluate: Any = None  # callable(weights) -> (loss, accuracy), for server-side methods
    model_factory: Any = None  # callable() -> torch module, for server-side training
    dataset: Any = None  # the run's Dataset (shapes, preprocessing; test set for evaluation)


@dataclass
class ClientContext:
    cfg: Any
    options: Any
    n_params: int
    w0: np.ndarray
    up: Compressor
    down: Compressor
    store: Any  # mutable mapping for per-client state (memory or disk)
    model_factory: Any = None  # callable() -> torch module with the run's architecture
    dataset: Any = None  # the run's Dataset


class Strategy:
    """Server side of a method. The base class is FedAvg with dense (or delta) downlinks."""

    round_columns: ClassVar[list[tuple[str, str]]] = []
    uses_control: ClassVar[bool] = False

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        cfg = ctx.cfg
        s = cfg.sampling
        self.sampler = Sampler(cfg.seed, ctx.num_clients, mode=s.mode, fraction=s.fraction,
                               dynamic=s.dynamic, beta=s.beta, c_min=s.c_min, epsilon=s.epsilon)
        self.w = ctx.w0.astype(np.float32, copy=True)
        self.down = make_downlink(cfg.compress.downlink, ctx.down, ctx.n_params, cfg.seed,
                                  ctx.num_clients, cfg.compress.ring, ctx.w0)

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, t: int) -> np.ndarray:
        return self.sampler.sample(t)

    def fraction(self, t: int) -> float:
        return self.sampler.fraction(t)

    # -- downlink ---------------------------------------------------------------------------
    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        agg = self.ctx.cfg.fl.aggregator
        self._mean = StreamingMean(self.ctx.n_params)
        self._stack: list[np.ndarray] | None = [] if agg != "mean" else None

    def downlink(self, t: int, client: int) -> Downlink:
        """The policy's payload (``compress.downlink``): dense (down codec applied to the
        model, one shared payload per round) or delta (stateful clients, replay or full)."""
        return self.down.for_client(t, client, self.w)

    def control(self, t: int, replies: Mapping[int, memoryview]) -> dict[int, Downlink]:
        raise NotImplementedError(f"{type(self).__name__} does not use control messages")

    # -- uplink -----------------------------------------------------------------------------
    def decode_update(self, t: int, client: int, payload) -> np.ndarray:
        """Parse, decode and check (finite) an uplink payload (after the u32 n_i) with the uplink
        codec; a malformed or non-finite payload raises ``WireFormatError``."""
        up = self.ctx.up
        seed = message_seed(self.ctx.cfg.seed, t, client, up)
        return decode_payload(up, payload, self.ctx.n_params, seed)

    def accumulate(self, t: int, client: int, n: int, payload) -> dict[str, float]:
        """Decode, check and add one update (called in increasing client id)."""
        delta = self.decode_update(t, client, payload)
        self.check_update(delta)
        norm = float(np.linalg.norm(delta.astype(np.float64)))
        self.sampler.observe(client, norm)
        if self._stack is not None:
            self._stack.append(delta)
        self._mean.add(delta, n)
        return {"update_norm": norm}

    def check_update(self, delta: np.ndarray) -> None:
        """Reject non-finite updates and norms beyond ``fl.max_update_norm``."""
        if not np.isfinite(delta).all():
            raise UpdateRejected(f"update has {int((~np.isfinite(delta)).sum())} NaN/Inf values")
        bound = self.ctx.cfg.fl.max_update_norm
        if bound is not None:
            norm = float(np.linalg.norm(delta.astype(np.float64)))
            if norm > bound:
                raise UpdateRejected(f"update norm {norm:.4g} exceeds fl.max_update_norm = {bound}")

    def aggregate(self) -> np.ndarray | None:
        fl = self.ctx.cfg.fl
        if self._stack is not None and self._stack:
            if fl.aggregator == "median":
                return coordinate_median(self._stack)
            return trimmed_mean(self._stack, fl.trim_fraction)
        return self._mean.result()

    def end_round(self, t: int) -> dict[str, float]:
        """Apply ``w <- w + server_lr * aggregate``; return method columns for the log."""
        agg = self.aggregate()
        if agg is not None:
            self.w = (self.w + np.float32(self.ctx.cfg.fl.server_lr) * agg).astype(np.float32)
        return {}

    @property
    def weights(self) -> np.ndarray:
        """The current global model (what the server evaluates)."""
        return self.w

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        d = {"w": self.w.copy()}
        d.update({f"sampler.{k}": v for k, v in self.sampler.state_dict().items()})
        d.update({f"down.{k}": v for k, v in self.down.state_dict().items()})
        return d

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        self.w = np.asarray(d["w"], dtype=np.float32).copy()
        self.sampler.load_state_dict({k[8:]: v for k, v in d.items() if k.startswith("sampler.")})
        self.down.load_state_dict({k[5:]: v for k, v in d.items() if k.startswith("down.")})


class ClientProgram:
    """Worker side of a method: receive, (control), train, encode. The base class is FedAvg."""

    uses_control: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    """True if the program keeps per-client state in ``ctx.store`` beyond error feedback and
    delta downlinks (the worker then picks a disk store when clients move between workers)."""
    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    """Where the program's training can run (``train.device``); programs that move tensors
    through NumPy inside the training loop stay on the CPU."""

    def __init__(self, ctx: ClientContext) -> None:
        self.ctx = ctx
        self.ef = ErrorFeedback(_Prefixed(ctx.store, "ef")) if ctx.up.error_feedback else None
        self.down = DownlinkReceiver(ctx.down, ctx.n_params, ctx.cfg.compress.downlink, ctx.store,
                                     ctx.cfg.seed)

    def receive(self, t: int, client: int, flags: int, payload) -> np.ndarray:
        """The model to start from (decoded per the downlink policy)."""
        return self.down.receive(t, client, flags, payload)

    def control_payload(self, t: int, client: int, trainer, w: np.ndarray):
        raise NotImplementedError

    def on_control(self, t: int, client: int, payload) -> None:
        raise NotImplementedError

    def train(self, t: int, client: int, trainer, w: np.ndarray):
        """Local training from ``w``; returns ``(w_end, stats)``."""
        return trainer.train(w, client=client, round=t)

    def codec_state(self, t: int, client: int):
        return None

    def encode(self, t: int, client: int, update: np.ndarray, n: int) -> Upload:
        """Encode ``update`` with the uplink codec, through error feedback when enabled."""
        codec = self.ctx.up
        seed = message_seed(self.ctx.cfg.seed, t, client, codec)
        v = self.ef.compensate(client, update) if self.ef is not None else update
        enc, _ = codec.encode(v, seed=seed, state=self.codec_state(t, client))
        diag = codec.diagnostics(enc)
        if self.ef is not None or _wants_distortion(self.ctx.cfg):
            x_hat = codec.decode(enc)
            if self.ef is not None:
                self.ef.update(client, v, x_hat)
            nv = float(np.linalg.norm(v.astype(np.float64)))
            diag["distortion"] = float(np.linalg.norm((v - x_hat).astype(np.float64))) / nv if nv else 0.0
        return Upload((UP_PRE.pack(n),) + tuple(enc.sections), codec.theoretical_bits(enc), diag)


def _wants_distortion(cfg) -> bool:
    return True


class _Prefixed:
    """A view of a state store under a key prefix (``("ef", client)``)."""

    def __init__(self, store, prefix: str) -> None:
        self.store, self.prefix = store, prefix

    def get(self, key, default=None):
        return self.store.get((self.prefix, key), default)

    def __setitem__(self, key, value) -> None:
        self.store[(self.prefix, key)] = value

    def nbytes(self) -> int:
        return int(self.store.nbytes()) if hasattr(self.store, "nbytes") else 0


class FedAvg(Strategy):
    """Sample-weighted FedAvg with any uplink codec."""


class FedAvgClient(ClientProgram):
    """FedAvg client: dense downlink, codec uplink (with error feedback if the codec asks)."""


# -- registry ---------------------------------------------------------------------------------
_METHODS: dict[str, tuple[type, type, type]] = {}
_ROLES: dict[str, tuple[type, type]] = {}


def register_method(name: str, strategy: type | None, program: type | None,
                    options: type = NoOptions, *, roles: tuple[type, type] | None = None) -> None:
    """Register a method's (Strategy, ClientProgram, Options) under ``name``.

    Methods with their own protocol (split learning) pass ``roles = (ServerRole, WorkerRole)``,
    classes with the constructors of :class:`fedsqueeze.fl.server.Server` and
    :class:`fedsqueeze.fl.worker.Worker`; the default roles are those two.
    """
    if name in _METHODS and _METHODS[name] != (strategy, program, options):
        raise ValueError(f"method {name!r} registered twice")
    _METHODS[name] = (strategy, program, options)
    if roles is not None:
        _ROLES[name] = roles


def get_roles(name: str) -> tuple[type, type]:
    """``(server role class, worker role class)`` of a method."""
    methods()
    if name in _ROLES:
        return _ROLES[name]
    from .server import Server
    from .worker import Worker

    return Server, Worker


def methods() -> list[str]:
    from . import methods as _m  # noqa: F401  (registers the built-in methods)
    return sorted(_METHODS)


def get_method(name: str, options: Mapping[str, Any]):
    """``(Strategy, ClientProgram, validated options)`` for ``fl.method = name``."""
    known = methods()
    if name not in _METHODS:
        raise ConfigError(f"fl.method = {name!r}: unknown method; available: {', '.join(known)}")
    strategy, program, opt_cls = _METHODS[name]
    try:
        opts = opt_cls.model_validate(dict(options))
    except Exception as exc:  # pydantic.ValidationError
        errs = getattr(exc, "errors", None)
        if errs is None:
            raise
        msg = "; ".join(f"method.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs())
        raise ConfigError(f"fl.method = {name!r}: {msg}") from None
    return strategy, program, opts


register_method("fedavg", FedAvg, FedAvgClient)

"""FL method ``igc``: Intrinsic Gradient Compression, three variants (METHODS.md section 2).

Clients train ``theta'`` in a random subspace: ``theta = base + A theta'``; each step takes the
full-space gradient ``g`` from torch autograd, steps an SGD/Adam optimiser on ``theta'`` with
``A^T g`` and moves ``theta`` by ``A delta``; at the end ``theta = base + A theta'`` is recomputed.
Uplink ``u32 n_i | f32[d] dtheta'``. The server averages in subspace coordinates (float64,
increasing client id), which equals averaging the decoded updates because ``A`` is linear.

=============  =================  ==========================================================
variant        server state       downlink (section 2.7; flags from ``comm.tags.Flag``)
=============  =================  ==========================================================
static         ``theta'``         ``f32[d] theta'`` (FULL_MODEL)
ksub           ``theta'_0..K-1``  ``u16 K_sent | u16 0 | K_sent x (u32 k | f32[d])``: all K
                                  (stateless, FULL_MODEL) or those changed since the client's
                                  last sync (stateful, REPLAY unless all K)
timevarying    ``theta_t`` and    ``u8 mode | u8[3] 0 | u32 count`` + ``count x (u32 r |
               the replay buffer  f32[d] U_r)`` (REPLAY) or ``f32[D] theta_t`` (FULL_MODEL),
                                  whichever is smaller, ties to replay (section 2.6)
=============  =================  ==========================================================

``U_r = server_lr * mean dtheta'_r`` in float32, so a client replays ``theta += A_r U_r``
exactly like the server. Rounds without any accepted update have no entry. Time-varying workers
keep one ``theta`` per rank (section 2.6); a client whose last sync is newer than its rank's
view cannot be replayed there (``fl.schedule = "home"`` prevents that).

>>> opts = IGCOptions(variant="timevarying", d=256)
>>> (opts.K, opts.client_state, opts.projection)
(4, 'stateful', 'fastfood')
>>> 24 + TV_PRE.size + 3 * (U32.size + 4 * opts.d)   # bytes of a 3-round replay download
3116
"""

from __future__ import annotations

import hashlib
import struct
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..comm.tags import Flag
from ..comm.wire import SectionReader
from ..compress.subspace import IGCKSub, IGCStatic, IGCTimeVarying
from ..errors import ConfigError, WireFormatError
from ..fl.aggregate import StreamingMean
from ..fl.strategy import UP_PRE, ClientProgram, Downlink, Strategy, Upload, register_method
from ..fl.train import set_flat_params

__all__ = ["IGCOptions", "IGCStrategy", "IGCClient", "build_codec"]

KSUB_PRE = struct.Struct("<HH")
TV_PRE = struct.Struct("<B3xI")
U32 = struct.Struct("<I")
MODE_REPLAY, MODE_FULL = 0, 1
_CODECS = {"static": IGCStatic, "ksub": IGCKSub, "timevarying": IGCTimeVarying}


class IGCOptions(BaseModel):
    """``[method]`` options of ``fl.method = "igc"`` (defaults: METHODS.md section 2.8)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    variant: Literal["static", "ksub", "timevarying"] = "static"
    d: int = Field(1024, ge=1, lt=2**28)
    K: int = Field(4, ge=1, le=65535)
    select: Literal["mod", "philox"] = "mod"
    projection: Literal["fastfood", "dense"] = "fastfood"
    block_log2: int | None = Field(None, ge=0, le=30)
    scope: Literal["global", "per_layer"] = "global"
    layer_sizes: list[int] | None = None
    """Tensor sizes for ``per_layer``; default: read from the context's ``model_factory``."""
    client_state: Literal["stateful", "stateless"] = "stateful"
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float | None = Field(None, gt=0)
    """Learning rate in theta'-space; ``None`` uses ``train.lr``."""
    cache_budget_mb: float = Field(256.0, ge=0)


def _layout(ctx) -> list[int] | None:
    o = ctx.options
    if o.scope == "global":
        return None
    factory = getattr(ctx, "model_factory", None)
    if o.layer_sizes is not None:
        sizes = list(o.layer_sizes)
    elif factory is not None:
        sizes = [int(p.numel()) for p in factory().parameters()]
    else:
        raise ConfigError("method.scope = 'per_layer': set method.layer_sizes (the model's "
                          "tensor sizes); this rank has no model to read them from")
    if sum(sizes) != ctx.n_params:
        raise ConfigError(f"method.layer_sizes sums to {sum(sizes)}, the model has "
                          f"{ctx.n_params} parameters")
    return sizes


def build_codec(ctx) -> IGCStatic:
    """The variant's codec keyed by the run seed (its projections are the method's ``A``)."""
    o = ctx.options
    kw = {"K": o.K, "select": o.select} if o.variant == "ksub" else {}
    codec = _CODECS[o.variant](d=o.d, projection=o.projection, block_log2=o.block_log2,
                               scope=o.scope, layout=_layout(ctx), hash_seed=ctx.cfg.seed, **kw)
    codec.cache_budget = int(o.cache_budget_mb * 2**20)
    return codec


def _ksub_sum(codec, w0: np.ndarray, vecs: np.ndarray, skip: int = -1) -> np.ndarray:
    """``w0 + sum_{k != skip} A_k vecs[k]`` (zero vectors skipped), in increasing ``k``."""
    out = w0.astype(np.float32, copy=True)
    for k in range(vecs.shape[0]):
        if k != skip and vecs[k].any():
            codec.projection(out.shape[0], k).forward(vecs[k], out, add=True)
    return out


class IGCStrategy(Strategy):
    """Server side: aggregates ``dtheta'`` and builds the variant's downlinks."""

    round_columns = [("d", "u4"), ("subspace", "u4"), ("down_full", "u4"),
                     ("down_replay", "u4"), ("down_vectors", "u4")]

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.o, self.codec, self.D = ctx.options, build_codec(ctx), ctx.n_params
        self.w0 = ctx.w0.astype(np.float32, copy=True)
        nsub = self.o.K if self.o.variant == "ksub" else 1
        self.theta_p = [np.zeros(self.o.d, np.float32) for _ in range(nsub)]
        self.last_mod = np.full(nsub, -1, np.int64)  # last round whose aggregate changed theta'_k
        self.last_sync: dict[int, int] = {}  # client -> round of its last downlink (-1: unknown)
        self.update_rounds: list[int] = []  # time-varying rounds with an update (all of them)
        self.replay: dict[int, np.ndarray] = {}  # the newest max_replay U_r
        self.max_replay = (4 * self.D) // (4 + 4 * self.o.d)
        self._k = 0

    def begin_round(self, t: int, clients: np.ndarray, n: np.ndarray) -> None:
        # not super(): its accumulator has D entries, ours has d
        self._k = self.codec.subspace_for(t)
        self._mean = StreamingMean(self.o.d)
        self._stack = [] if self.ctx.cfg.fl.aggregator != "mean" else None
        self._sent: dict[int, Downlink] = {}
        self._shared: dict[object, Downlink] = {}
        self._cols = {"down_full": 0, "down_replay": 0, "down_vectors": 0}

    def _dl(self, key, make) -> Downlink:
        if key not in self._shared:
            self._shared[key] = make()
        return self._shared[key]

    def downlink(self, t: int, client: int) -> Downlink:
        if client in self._sent:
            return self._sent[client]
        o, d = self.o, self.o.d
        r_c = -1 if o.client_state == "stateless" else self.last_sync.get(client, 0)
        if o.variant == "static":
            dl = self._dl("static", lambda: Downlink((self.theta_p[0],), 32.0 * d,
                                                     flags=Flag.FULL_MODEL))
            full, vecs = True, 1
        elif o.variant == "ksub":
            ids = tuple(k for k in range(o.K) if r_c < 0 or self.last_mod[k] >= r_c)
            full, vecs = len(ids) == o.K, len(ids)
            dl = self._dl(ids, lambda: Downlink(
                (KSUB_PRE.pack(len(ids), 0),) + tuple(
                    s for k in ids for s in (U32.pack(k), self.theta_p[k])),
                32.0 * d * len(ids), flags=Flag.FULL_MODEL if full else Flag.REPLAY))
        else:
            rounds = [r for r in self.update_rounds if r >= r_c] if r_c >= 0 else None
            full = rounds is None or len(rounds) > self.max_replay
            if full:
                vecs = 0
                dl = self._dl("full", lambda: Downlink((TV_PRE.pack(MODE_FULL, 0), self.w),
                                                       32.0 * self.D, flags=Flag.FULL_MODEL))
            else:
                vecs = len(rounds)
                dl = self._dl(("replay", r_c), lambda: Downlink(
                    (TV_PRE.pack(MODE_REPLAY, len(rounds)),) + tuple(
                        s for r in rounds for s in (U32.pack(r), self.replay[r])),
                    32.0 * d * len(rounds), flags=Flag.REPLAY))
        self._cols["down_full" if full else "down_replay"] += 1
        self._cols["down_vectors"] += vecs
        self.last_sync[client] = t
        self._sent[client] = dl
        return dl

    def decode_update(self, t: int, client: int, payload) -> np.ndarray:
        """``dtheta'`` (float32[d]) of one uplink payload (after ``u32 n_i``)."""
        enc = self.codec.parse(payload, self.D, subspace=self._k)
        return np.frombuffer(enc.sections[0], dtype="<f4").astype(np.float32)

    def end_round(self, t: int) -> dict[str, float]:
        agg = self.aggregate()
        if agg is not None:
            u = (np.float32(self.ctx.cfg.fl.server_lr) * agg).astype(np.float32)
            if self.o.variant == "timevarying":
                w = self.w.copy()
                self.codec.projection(self.D, t).forward(u, w, add=True)
                self.w = w
                self.update_rounds.append(t)
                self.replay[t] = u
                for r in self.update_rounds[:max(0, len(self.update_rounds) - self.max_replay)]:
                    self.replay.pop(r, None)
            else:
                self.theta_p[self._k] = self.theta_p[self._k] + u
                self.last_mod[self._k] = t
                self.w = _ksub_sum(self.codec, self.w0, np.stack(self.theta_p))
        return {"d": self.o.d, "subspace": self._k, **self._cols}

    def state_dict(self):
        d = super().state_dict()
        rr = sorted(self.replay)
        d.update({"igc.theta_p": np.stack(self.theta_p), "igc.last_mod": self.last_mod.copy(),
                  "igc.sync": np.array(sorted(self.last_sync.items()), np.int64).reshape(-1, 2),
                  "igc.update_rounds": np.array(self.update_rounds, np.int64),
                  "igc.replay_rounds": np.array(rr, np.int64),
                  "igc.replay": np.array([self.replay[r] for r in rr], np.float32).reshape(
                      len(rr), self.o.d)})
        return d

    def load_state_dict(self, d) -> None:
        super().load_state_dict({k: v for k, v in d.items() if not k.startswith("igc.")})
        self.theta_p = [np.array(v, np.float32) for v in d["igc.theta_p"]]
        self.last_mod = np.array(d["igc.last_mod"], np.int64)
        # time-varying workers lose their cached theta on restart: force one full download
        tv = self.o.variant == "timevarying"
        self.last_sync = {int(c): (-1 if tv else int(r)) for c, r in np.asarray(d["igc.sync"])}
        self.update_rounds = [int(r) for r in d["igc.update_rounds"]]
        self.replay = {int(r): np.array(v, np.float32)
                       for r, v in zip(d["igc.replay_rounds"], d["igc.replay"], strict=True)}


class IGCClient(ClientProgram):
    """Worker side: rebuilds its view from the downlink, trains ``theta'``, uploads ``dtheta'``."""

    devices = ("cpu",)  # NumPy inside the training loop

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.ef = None
        self.o, self.D = ctx.options, ctx.n_params
        self.codec = build_codec(ctx)
        self.w0 = ctx.w0.astype(np.float32, copy=True)
        self._pending: dict[tuple[int, int], dict] = {}
        self._shared: tuple[object, np.ndarray, np.ndarray] | None = None
        self._tv_theta: np.ndarray | None = None  # one cached theta per rank (section 2.6)
        self._tv_round = 0

    def _view(self, key, make) -> tuple[np.ndarray, np.ndarray]:
        """``(base, w)`` shared by every client of this rank that holds the same state."""
        if self._shared is None or self._shared[0] != key:
            base, w = make()
            base.flags.writeable = w.flags.writeable = False
            self._shared = (key, base, w)
        return self._shared[1], self._shared[2]

    def receive(self, t: int, client: int, flags: int, payload) -> np.ndarray:
        self._pending = {k: v for k, v in self._pending.items() if k[0] == t}
        o, d = self.o, self.o.d
        r = SectionReader(payload, f"igc {o.variant} DOWN_MODEL")
        k = self.codec.subspace_for(t)
        if o.variant == "static":
            z0 = r.array("<f4", d, "theta'").astype(np.float32)
            r.finish()
            key = (t, hashlib.blake2b(z0.tobytes(), digest_size=16).digest())
            base, w = self._view(key, lambda: (self.w0, _ksub_sum(self.codec, self.w0,
                                                                  z0[None, :])))
        elif o.variant == "ksub":
            n_sent, zero = r.struct(KSUB_PRE, "K_sent")
            if zero or n_sent > o.K:
                raise WireFormatError(f"igc ksub: K_sent = {n_sent} (K = {o.K}), pad = {zero}")
            skey = ("igc.ksub", client)
            stored = self.ctx.store.get(skey) if o.client_state == "stateful" else None
            vecs = np.zeros((o.K, d), np.float32) if stored is None else np.array(stored)
            for _ in range(n_sent):
                (sid,) = r.struct(U32, "subspace id")
                if sid >= o.K:
                    raise WireFormatError(f"igc ksub: subspace id {sid} >= K = {o.K}")
                vecs[sid] = r.array("<f4", d, "theta'_k")
            r.finish()
            if o.client_state == "stateful":
                self.ctx.store[skey] = vecs
            z0 = vecs[k].copy()
            key = (t, hashlib.blake2b(vecs.tobytes(), digest_size=16).digest())
            base, w = self._view(key, lambda: self._ksub_view(vecs, k))
        else:
            base = w = self._tv_receive(t, client, flags, r)
            z0 = np.zeros(d, np.float32)
        self._pending[(t, client)] = {"k": k, "base": base, "z0": z0}
        return w

    def _ksub_view(self, vecs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        base = _ksub_sum(self.codec, self.w0, vecs, skip=k)
        w = base.copy()
        self.codec.projection(self.D, k).forward(vecs[k], w, add=True)
        return base, w

    def _tv_receive(self, t: int, client: int, flags: int, r: SectionReader) -> np.ndarray:
        mode, count = r.struct(TV_PRE, "mode/count")
        if mode not in (MODE_REPLAY, MODE_FULL) or bool(flags & Flag.FULL_MODEL) != (
                mode == MODE_FULL) or (mode == MODE_FULL and count):
            raise WireFormatError(f"igc timevarying: mode = {mode}, count = {count}, "
                                  f"flags = {flags}")
        if mode == MODE_FULL:
            theta = r.array("<f4", self.D, "theta_t").astype(np.float32)
            r.finish()
            self._tv_theta = theta
        else:
            entries = []
            for _ in range(count):
                (rid,) = r.struct(U32, "round")
                if rid >= t or (entries and rid <= entries[-1][0]):
                    raise WireFormatError(f"igc timevarying: replay round {rid} out of order "
                                          f"at round {t}")
                entries.append((rid, r.array("<f4", self.o.d, "U_r")))
            r.finish()
            synced = self.ctx.store.get(("igc.sync", client))
            r_c = 0 if synced is None else int(synced[0])
            if self._tv_theta is None:
                if r_c:
                    raise RuntimeError(f"igc timevarying: client {client} last synced at round "
                                       f"{r_c}, but this rank holds no model view")
                self._tv_theta, self._tv_round = self.w0.copy(), 0
            elif r_c > self._tv_round:
                raise RuntimeError(
                    f"igc timevarying: client {client} last synced at round {r_c}, after this "
                    f"rank's view (round {self._tv_round}); clients must not move between ranks "
                    "(use fl.schedule = 'home')")
            for rid, u in entries:
                if rid >= self._tv_round:
                    self.codec.projection(self.D, rid).forward(u, self._tv_theta, add=True)
        self._tv_round = t
        if self.o.client_state == "stateful":
            self.ctx.store[("igc.sync", client)] = np.array([t], np.int64)
        view = self._tv_theta.view()
        view.flags.writeable = False
        return view

    def train(self, t: int, client: int, trainer, w: np.ndarray):
        """Local steps on ``theta'`` (gradients via autograd in full space, mapped by ``A^T``)."""
        pend = self._pending[(t, client)]
        A = self.codec.projection(self.D, pend["k"])
        model = trainer.model
        params = list(model.parameters())
        if self.codec.layout is not None and [p.numel() for p in params] != self.codec.layout:
            raise ConfigError(f"per_layer layout {self.codec.layout} does not match the model's "
                              f"tensors {[p.numel() for p in params]}")
        theta = np.array(w, dtype=np.float32)
        set_flat_params(model, theta)
        trainer.seed_framework(client, t)
        model.train()
        z = torch.from_numpy(pend["z0"].copy()).requires_grad_(True)
        lr = self.o.lr or trainer.cfg.lr
        opt = (torch.optim.Adam([z], lr=lr) if self.o.optimizer == "adam"
               else torch.optim.SGD([z], lr=lr, momentum=trainer.cfg.momentum))
        mu = trainer.cfg.prox_mu
        total, seen, steps = 0.0, 0, 0
        for xb, yb in trainer.batches(client, t):
            for p in params:
                p.grad = None
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            g = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                           for p in params]).numpy().astype(np.float32)
            if mu > 0:
                g += np.float32(mu) * (theta - w)
            old = z.detach().numpy().copy()
            z.grad = torch.from_numpy(A.transpose(g))
            opt.step()
            A.forward(z.detach().numpy() - old, theta, add=True)
            set_flat_params(model, theta)
            total += float(loss.detach()) * xb.shape[0]
            seen += xb.shape[0]
            steps += 1
        zf = z.detach().numpy().astype(np.float32)
        theta = np.array(pend["base"], dtype=np.float32)
        A.forward(zf, theta, add=True)  # recompute once to remove drift
        pend["dz"] = (zf - pend["z0"]).astype(np.float32)
        return theta, {"loss": total / max(1, seen), "steps": steps,
                       "samples": trainer.num_samples(client)}

    def encode(self, t: int, client: int, update, n: int) -> Upload:
        """Uplink ``u32 n_i | f32[d] dtheta'`` (``update``, the full-space change, is unused)."""
        pend = self._pending.pop((t, client))
        dz = pend["dz"].astype("<f4", copy=False)
        return Upload((UP_PRE.pack(n), dz), 32.0 * self.o.d,
                      {"subspace": float(pend["k"]),
                       "dtheta_norm": float(np.linalg.norm(dz.astype(np.float64)))})


register_method("igc", IGCStrategy, IGCClient, IGCOptions)

"""The client worker rank of split learning: hosts the prefixes of its virtual clients.

Per round a worker receives the global prefix once, gives each of its participating clients a
copy (plus an optimiser of ``train``), and runs the lockstep schedule of
:mod:`fedsqueeze.split.schedule`: for every local step it forwards all its clients of that step
to the cut, quantises (FedLite) and sends each SPLIT_ACT at once, then takes each client's
SPLIT_GRAD in increasing id, applies the gradient correction
``g + (lambda / B)(z - z_tilde)`` (METHODS.md 5.3) and back-propagates into the prefix. At the end
of the round every client sends ``u32 n_c | f32 prefix``. The k-means centroids of a client's last
batch are its state (``("gpq", client)`` in the worker's store), so warm starts survive the
rounds in which the client is not sampled.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..comm import wire
from ..comm.tags import SYSTEM_CLIENT, Kind
from ..comm.wire import pack_frame
from ..fl import protocol as P
from ..fl.state import DiskStore, MemoryStore
from ..fl.train import Trainer, flat_params, set_flat_params
from .parts import build_parts
from .payloads import (
    act_sections,
    grad_payload_nbytes,
    label_width,
    parse_grad,
    parse_prefix_down,
    prefix_up_sections,
)
from .schedule import RoundPlan
from .strategy import make_optimizer

__all__ = ["PrefixClient", "SplitWorker"]


def _relative_error(z: np.ndarray, zt: np.ndarray) -> float:
    """``|z - zt| / |z|`` in float64 (plain sums: no BLAS thread pool on the data path)."""
    nz = float(np.sum(np.square(z, dtype=np.float64)))
    err = float(np.sum(np.square(z - zt, dtype=np.float64)))
    return float(np.sqrt(err / nz)) if nz > 0 else 0.0


class PrefixClient:
    """One virtual client during one round: its prefix copy, optimiser and batch stream."""

    def __init__(self, prefix: torch.nn.Module, w: np.ndarray, batches: Iterator, *, client: int,
                 round: int, worker: SplitWorker) -> None:  # noqa: A002
        self.prefix = prefix
        set_flat_params(self.prefix, w)
        self.prefix.train()
        cfg = worker.cfg
        self.opt = make_optimizer(self.prefix.parameters(), cfg.train)
        self.batches = batches
        self.client, self.round, self.host = client, round, worker
        self.state = worker.store.get(("gpq", client))
        self.stats = {"t_train": 0.0, "t_encode": 0.0, "t_decode": 0.0, "steps": 0,
                      "distortion": 0.0, "kmeans_steps": 0.0}
        self._z: torch.Tensor | None = None

    def forward(self, step: int) -> tuple:
        """Forward one batch to the cut; returns the SPLIT_ACT sections."""
        w = self.host
        xb, yb = next(self.batches)
        t0 = time.perf_counter()
        self._z = self.prefix(xb)
        z = self._z.detach().numpy()
        t1 = time.perf_counter()
        labels = yb.numpy()
        if w.gpq is None:
            self._code, self._zt = None, z
            sections = act_sections(step=step, labels=labels, label_bits=w.label_bits,
                                    d_a=w.parts.d_a, dense=z)
        else:
            self._code, self.state = w.gpq.encode(z, seed=w.cfg.seed, client=self.client,
                                                  round=self.round, state=self.state)
            self._zt = w.gpq.decode(self._code)
            sections = act_sections(step=step, labels=labels, label_bits=w.label_bits,
                                    d_a=w.parts.d_a, code=self._code)
            self.stats["distortion"] += _relative_error(z, self._zt)
            self.stats["kmeans_steps"] += self._code.kmeans_steps
        self.stats["t_train"] += t1 - t0
        self.stats["t_encode"] += time.perf_counter() - t1
        self.stats["steps"] += 1
        return sections

    def expected_grad_nbytes(self) -> int:
        g = None if self._code is None else self._code.geometry
        B = self._zt.shape[0]
        return grad_payload_nbytes(self.host.backward, B, self.host.parts.d_a, g)

    def backward(self, payload) -> None:
        """Apply the server's gradient (with the FedLite correction) and step the prefix."""
        w = self.host
        t0 = time.perf_counter()
        z = self._z.detach().numpy()
        B = z.shape[0]
        g = parse_grad(payload, w.backward, B=B, d_a=w.parts.d_a, code=self._code)
        if self._code is not None and w.lam > 0:
            g += np.float32(w.lam / B) * (z - self._zt)
        t1 = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        self._z.backward(torch.from_numpy(g))
        self.opt.step()
        self._z = None
        self.stats["t_decode"] += t1 - t0
        self.stats["t_train"] += time.perf_counter() - t1

    def row(self, sent: int) -> dict:
        st = self.stats
        k = max(1, st["steps"])
        diag = {} if self.host.gpq is None else {"distortion": st["distortion"] / k,
                                                "kmeans_steps": st["kmeans_steps"] / k}
        return {"client": self.client, "loss": float("nan"), "steps": st["steps"],
                "t_train": st["t_train"], "t_encode": st["t_encode"], "t_decode": st["t_decode"],
                "sent_bytes": sent, "pad_bytes": 0, "theoretical_bits": float("nan"),
                "diag": diag}


class SplitWorker:
    """Rank >= 1 for the split methods (constructor of ``fl.worker.Worker``)."""

    def __init__(self, world, transport, *, state_dir: Path, ckpt_dir: Path | None = None) -> None:
        self.world, self.tx = world, transport
        self.cfg = world.cfg
        self.rank = transport.rank
        # clients always live on their home worker (split.schedule.placement), so memory suffices;
        # fl.client_state = "disk" keeps the warm starts in the shared folder that checkpoints
        # copy, so that a run can resume on another number of ranks
        self.store = (DiskStore(state_dir) if self.cfg.fl.client_state == "disk"
                      else MemoryStore())
        self.ckpt_dir = ckpt_dir
        opts = world.options
        self.parts = build_parts(world, opts.cut)
        self.gpq = opts.make_gpq()
        self.backward = opts.backward
        self.lam = float(getattr(opts, "lambda_", 0.0))
        self.label_bits = label_width(int(world.dataset.num_classes))
        x, y = world.tensors("train")
        self.trainer = Trainer(self.parts.prefix, x, y, world.parts, self.cfg.train, self.cfg.seed)

    def _recv(self, kind: Kind, max_payload: int):
        header, payload, _, _ = self.tx.recv_frame(0, int(kind), timeout=None,
                                                   max_payload=max_payload)
        return header, payload

    def run(self) -> None:
        header, payload = self._recv(Kind.SETUP, 64 << 20)
        setup = P.parse_json(payload, "SETUP")
        if setup["config"] != self.cfg.to_dict():
            raise RuntimeError("SETUP config differs from this rank's config")
        while True:
            header, payload = self._recv(Kind.CONTROL, 64 << 20)
            task = P.TaskList.parse(payload, self.cfg.data.clients)
            if task.cmd == P.Cmd.STOP:
                break
            if task.cmd == P.Cmd.CHECKPOINT:
                self._checkpoint(task.round)
                continue
            self.round(task)
        self.tx.wait_sends()

    def _checkpoint(self, t: int) -> None:
        if self.ckpt_dir is not None and isinstance(self.store, MemoryStore):
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            self.store.snapshot(self.ckpt_dir / f"rank{self.rank}.state.npz")
        ack = P.json_payload({"checkpoint": t, "rank": self.rank})
        self.tx.send_frame(0, int(Kind.METRICS), pack_frame(Kind.METRICS, ack, round=t,
                                                      client=SYSTEM_CLIENT))

    def round(self, task: P.TaskList) -> None:
        t, cfg = task.round, self.cfg
        w0 = None
        if task.n_down:
            header, payload = self._recv(Kind.DOWN_MODEL, 4 * self.parts.d_c)
            w0 = parse_prefix_down(payload, self.parts.d_c)
        tr = cfg.train
        plan = RoundPlan.build([c for c, d in zip(task.clients, task.drop, strict=True) if not d],
                               samples=self.world.samples, batch=tr.batch_size,
                               epochs=tr.epochs, max_steps=tr.max_steps)
        clients = {int(c): PrefixClient(copy.deepcopy(self.parts.prefix), w0,
                                        self.trainer.batches(int(c), t), client=int(c),
                                        round=t, worker=self) for c in plan.clients}
        sent = dict.fromkeys(clients, 0)
        for s in range(1, plan.n_steps + 1):
            active = [int(c) for c in plan.active(s)]
            for c in active:
                sent[c] += self.tx.isend_frame(0, int(Kind.SPLIT_ACT), wire.frame(
                    Kind.SPLIT_ACT, clients[c].forward(s), round=t, client=c))
            for c in active:
                header, payload = self._recv(Kind.SPLIT_GRAD, clients[c].expected_grad_nbytes())
                if header.round != t or header.client != c:
                    raise RuntimeError(f"SPLIT_GRAD for client {header.client} round "
                                       f"{header.round}, expected client {c} round {t}")
                clients[c].backward(payload)
        rows = []
        for c, pc in clients.items():
            up = prefix_up_sections(int(self.world.samples[c]), flat_params(pc.prefix))
            sent[c] += self.tx.isend_frame(0, int(Kind.UP_UPDATE),
                                           wire.frame(Kind.UP_UPDATE, up, round=t, client=c))
            if pc.state is not None:
                self.store[("gpq", c)] = pc.state
            rows.append(pc.row(sent[c]))
        metrics = P.json_payload({"round": t, "rank": self.rank, "clients": rows,
                                  "state_bytes": self.store.nbytes()})
        self.tx.isend_frame(0, int(Kind.METRICS), pack_frame(Kind.METRICS, metrics, round=t,
                                                       client=SYSTEM_CLIENT))
        self.tx.wait_sends()


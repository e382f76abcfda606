"""A client worker rank: hosts many virtual clients and trains the ones it is given each round.

Each update is sent (nonblocking) as soon as it is encoded, and the next client trains meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..comm import wire
from ..comm.tags import SYSTEM_CLIENT, Kind
from ..comm.wire import HEADER_SIZE, pack_frame, pad4
from ..launch.ranks import training_device
from . import faults
from . import protocol as P
from .state import DiskStore, MemoryStore
from .strategy import ClientContext
from .train import Trainer

__all__ = ["Worker", "make_store"]


def make_store(cfg, n_workers: int, folder: Path, stateful: bool):
    """Memory, or disk when clients move between workers and carry state (``client_state``)."""
    mode = cfg.fl.client_state
    if mode == "auto":
        mode = "disk" if stateful and n_workers > 1 and cfg.fl.schedule == "balanced" else "memory"
    return DiskStore(folder) if mode == "disk" else MemoryStore()


class Worker:
    """Rank >= 1."""

    def __init__(self, world, transport, *, state_dir: Path, ckpt_dir: Path | None = None) -> None:
        self.world, self.tx = world, transport
        self.cfg = world.cfg
        self.rank = transport.rank
        stateful = (world.up.error_feedback or self.cfg.compress.downlink == "delta"
                    or getattr(world.program_cls, "stateful", False))
        self.store = make_store(self.cfg, transport.size - 1, state_dir, stateful=stateful)
        self.ckpt_dir = ckpt_dir
        ctx = ClientContext(self.cfg, world.options, world.n_params, world.w0, world.up,
                            world.down, self.store, model_factory=world.model_factory,
                            dataset=world.dataset)
        self.program = world.program_cls(ctx)
        x, y = world.tensors("train")
        self.device = training_device(self.cfg.train.device)
        self.trainer = Trainer(world.model_factory(), x, y, world.parts, self.cfg.train,
                               self.cfg.seed, device=self.device)
        self.timeout = self.cfg.fl.worker_timeout_s * 4
        self.codec_indices = tuple(range(P.N_CODECS))  # replaced by the SETUP frame's table

    def _recv(self, kind: Kind, max_payload: int):
        header, payload, _, _ = self.tx.recv_frame(0, int(kind), timeout=None,
                                                   max_payload=max_payload)
        return header, payload

    def run(self) -> None:
        header, payload = self._recv(Kind.SETUP, 64 << 20)
        setup = P.parse_json(payload, "SETUP")
        if setup["config"] != self.cfg.to_dict():
            raise RuntimeError("SETUP config differs from this rank's config")
        self.codec_indices = tuple(range(len(setup.get("codecs", ()))))  # the SETUP codec table
        max_down = 8 * self.world.n_params + (64 << 20)
        while True:
            header, payload = self._recv(Kind.CONTROL, 64 << 20)
            task = P.TaskList.parse(payload, self.cfg.data.clients)
            if task.cmd == P.Cmd.STOP:
                break
            if task.cmd == P.Cmd.CHECKPOINT:
                self._checkpoint(task.round)
                continue
            self.round(task, max_down)
        self.tx.wait_sends()

    def _checkpoint(self, t: int) -> None:
        # a shared disk store is copied by the server once every worker has acknowledged
        if self.ckpt_dir is not None and isinstance(self.store, MemoryStore):
            self.store.snapshot(self.ckpt_dir / f"rank{self.rank}.state.npz")
        ack = P.json_payload({"checkpoint": t, "rank": self.rank})
        self.tx.send_frame(0, int(Kind.METRICS), pack_frame(Kind.METRICS, ack, round=t,
                                                      client=SYSTEM_CLIENT))

    def round(self, task: P.TaskList, max_down: int) -> None:
        t, prog = task.round, self.program
        downs = [self._recv_any_down(max_down) for _ in range(task.n_down)]
        starts = {}
        for c, j in zip(task.clients, task.down_index):
            h, payload = downs[j]
            starts[int(c)] = prog.receive(t, int(c), h.flags, payload)
        active = [int(c) for c, d in zip(task.clients, task.drop) if not d]
        if prog.uses_control:
            for c in active:
                sections = prog.control_payload(t, c, self.trainer, starts[c])
                self.tx.isend_frame(0, int(Kind.UP_CTRL), pack_frame(Kind.UP_CTRL, sections, round=t,
                                                               client=c))
            for c in active:
                h, payload = self._recv(Kind.DOWN_CTRL, 1 << 20)
                prog.on_control(t, int(h.client), payload)
        rows = []
        for c in active:
            t0 = time.perf_counter()
            w_end, stats = prog.train(t, c, self.trainer, starts[c])
            t1 = time.perf_counter()
            update = (w_end - starts[c]).astype(np.float32) if w_end is not None else None
            fault = faults.pick(self.cfg, t, c)
            if fault in ("nan", "inf", "scale"):
                update = faults.corrupt_update(update, fault, self.cfg.fl.fault_scale)
            up = prog.encode(t, c, update, int(self.world.samples[c]))
            sections = faults.corrupt_payload(up.sections, fault, self.cfg.seed, t, c)
            # zero copy: the sections are this client's own arrays, kept until wait_sends
            sent = self.tx.isend_frame(0, int(Kind.UP_UPDATE),
                                       wire.frame(Kind.UP_UPDATE, sections, round=t, client=c))
            t2 = time.perf_counter()
            pad = sum(pad4(memoryview(s).nbytes) - memoryview(s).nbytes for s in up.sections)
            rows.append({"client": c, "loss": float(stats.get("loss", np.nan)),
                         "steps": int(stats.get("steps", 0)), "t_train": t1 - t0,
                         "t_encode": t2 - t1, "sent_bytes": sent, "pad_bytes": pad,
                         "theoretical_bits": float(up.theoretical_bits),
                         "diag": {k: float(v) for k, v in up.diagnostics.items()}})
        metrics = P.json_payload({"round": t, "rank": self.rank, "clients": rows,
                                  "state_bytes": _nbytes(self.store),
                                  "state_shared": isinstance(self.store, DiskStore)})
        self.tx.isend_frame(0, int(Kind.METRICS), pack_frame(Kind.METRICS, metrics, round=t,
                                                       client=SYSTEM_CLIENT))
        self.tx.wait_sends()
        del starts, downs

    def _recv_any_down(self, max_down: int):
        # downlink frames of one round come in the order of the task list (one source: in order)
        header, payload, _, _ = self.tx.recv_frame(0, -1, timeout=None, max_payload=max_down)
        if header.kind not in (Kind.DOWN_MODEL, Kind.DOWN_CTRL):
            raise RuntimeError(f"expected a downlink frame, got {header.kind!r}")
        P.check_codec_index(header, self.codec_indices, f"{header.kind.name} from rank 0")
        return header, payload


def _nbytes(store: Any) -> int:
    return int(store.nbytes()) if hasattr(store, "nbytes") else 0

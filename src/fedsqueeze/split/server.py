"""The split server rank (METHODS.md 5.1): holds the suffix, serves every client's batches in
lockstep, and averages the prefixes. The transport is used only here; the maths is
:class:`~fedsqueeze.split.strategy.SplitStrategy`.

One round::

    server -> worker     CONTROL task list (system), DOWN_MODEL prefix (one physical frame per
                         worker, logged once per recipient client)
    for s = 1 .. max tau_c:                       (lockstep; clients in increasing id)
        worker -> server SPLIT_ACT(t, c, s)       received from c's home worker, validated
        server           decode, suffix forward/backward (suffix gradients summed)
        server -> worker SPLIT_GRAD(t, c, s)      sent at once, so c back-propagates while the
                                                  server serves the next client
        server           one optimiser step on the mean suffix gradient
    worker -> server     UP_UPDATE u32 n_c | f32 prefix, in increasing id; METRICS (system)
    server               prefix FedAvg, evaluation of suffix o prefix without the quantiser

Workers forward all their clients of a step before waiting for gradients, so several workers
compute concurrently while the order of service (and so every number) is fixed by client ids.
Every message gets a ``/comm`` row (``step`` = local step, 0 for round-level messages).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np
import torch

from ..comm import wire
from ..comm.tags import SYSTEM_CLIENT, Kind
from ..comm.wire import HEADER_SIZE
from ..errors import WireFormatError
from ..fl import protocol as P
from ..fl.server import Server
from ..fl.train import set_flat_params
from .payloads import (
    ActSpec,
    act_payload_nbytes,
    grad_sections,
    grad_theoretical_bits,
    parse_act,
    parse_prefix_up,
    sections_pad,
)
from .schedule import RoundPlan, placement

__all__ = ["SplitServer"]

_BYTE_COLS = ("act_bytes", "label_bytes", "grad_bytes", "prefix_down_bytes", "prefix_up_bytes")


class _Ledger:
    """Per-client byte and bit counts of one round, by message category."""

    def __init__(self) -> None:
        self.bytes: dict[str, dict[int, int]] = {k: defaultdict(int) for k in _BYTE_COLS}
        self.dense = defaultdict(int)  # sum 4 B d_a: the uncompressed activation bytes
        self.act_bits = defaultdict(float)
        self.grad_bits = defaultdict(float)
        self.loss = defaultdict(float)  # sum over steps of loss * B
        self.seen = defaultdict(int)
        self.steps = defaultdict(int)

    def total(self, key: str) -> int:
        return int(sum(self.bytes[key].values()))


class SplitServer(Server):
    """Rank 0 for ``fl.method = "split"`` and ``"fedlite"`` (``fl.server.Server``'s constructor)."""

    extra_round_columns = [
        ("act_bytes", "u8"), ("label_bytes", "u8"), ("grad_bytes", "u8"),
        ("prefix_down_bytes", "u8"), ("prefix_up_bytes", "u8"), ("act_dense_bytes", "u8"),
        ("act_ratio", "f8"), ("act_theo_ratio", "f8"), ("split_ratio", "f8"),
        ("split_steps", "u4"), ("kmeans_steps", "f8"), ("t_suffix", "f8"),
        ("test_accuracy_quantized", "f8")]
    """``act_ratio = sum 4 B d_a / sum SPLIT_ACT frame bytes`` (labels and headers included);
    ``act_theo_ratio`` the paper's bit ratio; ``split_ratio`` the same with the gradients
    (``sum 8 B d_a / sum (SPLIT_ACT + SPLIT_GRAD)``); ``test_accuracy_quantized`` (FedLite, last
    round only) evaluates through the quantiser, ``test_accuracy`` without it."""
    extra_client_columns = [
        ("act_bytes", "u8"), ("label_bytes", "u8"), ("grad_bytes", "u8"),
        ("prefix_down_bytes", "u8"), ("prefix_up_bytes", "u8"), ("act_dense_bytes", "u8"),
        ("act_ratio", "f8"), ("split_steps", "u4")]

    def __init__(self, world, transport, writer, **kw) -> None:
        super().__init__(world, transport, writer, **kw)
        opts = world.options
        self.parts = self.strategy.parts
        self.gpq = opts.make_gpq()
        self.spec = ActSpec(self.parts.d_a, int(world.dataset.num_classes), self.gpq)
        self.backward = opts.backward

    # -- one round --------------------------------------------------------------------------
    def run_round(self, t: int) -> dict[str, Any]:
        cfg, st, W = self.cfg, self.strategy, self.world
        t0 = time.perf_counter()
        timers: dict[str, float] = defaultdict(float)
        sys_bytes: list[int] = []
        self.round_start_state = (t, st.state_dict())  # what a failure checkpoint saves
        clients = st.sample(t)
        drop = self._dropouts(t, clients)
        st.begin_round(t, clients, W.samples[clients])
        homes = placement(clients, self.workers, exclude=self.lost)
        owner = {int(c): w for w, cs in homes.items() for c in cs}
        led = _Ledger()
        self._send_prefixes(t, homes, clients, drop, led, sys_bytes)
        tr = cfg.train
        plan = RoundPlan.build([c for c, d in zip(clients, drop, strict=True) if not d],
                               samples=W.samples,
                               batch=tr.batch_size, epochs=tr.epochs, max_steps=tr.max_steps)
        for s in range(1, plan.n_steps + 1):
            st.begin_step()
            for c in plan.active(s):
                c = int(c)
                self._serve(t, s, c, owner[c], plan.batch_at(c, s), led, timers)
            ts = time.perf_counter()
            st.end_step()
            timers["t_suffix"] += time.perf_counter() - ts
        received = [self._recv_prefix(t, int(c), owner[int(c)], led, timers)
                    for c in plan.clients]
        metrics = self._recv_metrics(t, homes, timers, sys_bytes)
        ta = time.perf_counter()
        cols = st.end_round(t) or {}
        timers["t_aggregate"] = time.perf_counter() - ta
        te = time.perf_counter()
        last = t == cfg.fl.rounds - 1
        quantized = bool(getattr(W.options, "eval_quantized", False))
        if t % cfg.fl.eval_every == 0 or last:
            test_loss, test_acc = self.evaluate_split(quantized)
        else:
            test_loss = test_acc = float("nan")
        if self.gpq is not None and last:
            cols["test_accuracy_quantized"] = (test_acc if quantized
                                               else self.evaluate_split(True)[1])
        timers["t_evaluate"] = time.perf_counter() - te
        self.tx.wait_sends(timeout=cfg.fl.worker_timeout_s)
        return self._log_split_round(t, clients, plan, received, metrics, led, cols, timers,
                                     sys_bytes, test_loss, test_acc, time.perf_counter() - t0)

    def _send_prefixes(self, t, homes, clients, drop, led, sys_bytes) -> None:
        dl = self.strategy.downlink(t, -1)
        pad = sections_pad(dl.sections)
        body = wire.payload(list(dl.sections))  # shared by every worker's frame, CRC32 once
        for w, cs in homes.items():
            task = P.TaskList(P.Cmd.ROUND, t, np.asarray(cs, np.int64),
                              np.zeros(len(cs), np.int64),
                              drop[np.searchsorted(clients, cs)] if len(cs) else np.zeros(0, bool),
                              1 if len(cs) else 0)
            self._system(t, w, Kind.CONTROL, task.sections(), sys_bytes)
            if not len(cs):
                continue
            first = int(cs[0])
            n = self.tx.send_frame(w, int(dl.kind), wire.frame(dl.kind, body, round=t,
                                                                client=first, flags=dl.flags))
            for c in cs:
                self.comm.add(round=t, client=int(c), direction=0, kind=dl.kind,
                              payload=n - HEADER_SIZE, pad=pad, bits=dl.theoretical_bits,
                              physical=int(c) == first)
                led.bytes["prefix_down_bytes"][int(c)] += n

    def _serve(self, t: int, s: int, c: int, worker: int, B: int, led: _Ledger, timers) -> None:
        """Receive client ``c``'s step-``s`` activations, run the suffix, send the gradient."""
        g = self.spec.geometry(B)
        d_a = self.parts.d_a
        tw = time.perf_counter()
        header, payload, _, nbytes = self.tx.recv_frame(
            worker, int(Kind.SPLIT_ACT), timeout=self.cfg.fl.worker_timeout_s,
            max_payload=act_payload_nbytes(B, d_a, self.spec.label_bits, g))
        timers["t_wait"] += time.perf_counter() - tw
        td = time.perf_counter()
        try:
            if header.round != t or header.client != c:
                raise WireFormatError(f"SPLIT_ACT for client {header.client} round "
                                      f"{header.round}, expected client {c} round {t}")
            msg = parse_act(payload, self.spec, B=B, step=s)
        except WireFormatError as exc:
            self.log.event(t, "error", "frame_rejected", f"client {c} step {s}: {exc}")
            raise
        z = msg.dense if msg.code is None else self.gpq.decode(msg.code)  # type: ignore[union-attr]
        timers["t_decode"] += time.perf_counter() - td
        ts = time.perf_counter()
        grad, loss = self.strategy.serve(z, msg.labels)
        sections = grad_sections(self.backward, grad, msg.code)
        timers["t_suffix"] += time.perf_counter() - ts
        n = self.tx.isend_frame(worker, int(Kind.SPLIT_GRAD),
                                wire.frame(Kind.SPLIT_GRAD, sections, round=t, client=c))
        gbits = grad_theoretical_bits(self.backward, B, d_a, g)
        self.comm.add(round=t, client=c, direction=1, kind=Kind.SPLIT_ACT,
                      payload=nbytes - HEADER_SIZE, pad=msg.pad_bytes,
                      bits=msg.theoretical_bits, physical=True, step=s)
        self.comm.add(round=t, client=c, direction=0, kind=Kind.SPLIT_GRAD,
                      payload=n - HEADER_SIZE, pad=sections_pad(sections), bits=gbits,
                      physical=True, step=s)
        led.bytes["act_bytes"][c] += nbytes - msg.label_nbytes
        led.bytes["label_bytes"][c] += msg.label_nbytes
        led.bytes["grad_bytes"][c] += n
        led.dense[c] += 4 * B * d_a
        led.act_bits[c] += msg.theoretical_bits
        led.grad_bits[c] += gbits
        led.loss[c] += loss * B
        led.seen[c] += B
        led.steps[c] += 1

    def _recv_prefix(self, t: int, c: int, worker: int, led: _Ledger, timers) -> int:
        d_c = self.parts.d_c
        tw = time.perf_counter()
        header, payload, _, nbytes = self.tx.recv_frame(
            worker, int(Kind.UP_UPDATE), timeout=self.cfg.fl.worker_timeout_s,
            max_payload=4 + 4 * d_c)
        timers["t_wait"] += time.perf_counter() - tw
        if header.round != t or header.client != c:
            raise WireFormatError(f"UP_UPDATE for client {header.client} round {header.round}, "
                                  f"expected client {c} round {t}")
        w = parse_prefix_up(payload, d_c, int(self.world.samples[c]))
        self.strategy.accumulate_prefix(t, c, int(self.world.samples[c]), w)
        self.comm.add(round=t, client=c, direction=1, kind=Kind.UP_UPDATE,
                      payload=nbytes - HEADER_SIZE, pad=0, bits=32.0 * d_c, physical=True)
        led.bytes["prefix_up_bytes"][c] += nbytes
        return c

    # -- evaluation -------------------------------------------------------------------------
    def evaluate_split(self, quantized: bool = False) -> tuple[float, float]:
        """Test loss and accuracy of suffix o prefix, by default without the quantiser (3P
        behaviour); ``quantized``: through it, k-means++ per test batch of ``train.batch_size``
        (Philox stream ``SYSTEM_CLIENT``, the batch offset as the round)."""
        if self.gpq is None or not quantized:
            return self.evaluate(self.strategy.weights)
        prefix, suffix = self.parts.prefix, self.parts.suffix
        w = self.strategy.weights
        set_flat_params(prefix, w[:self.parts.d_c])
        set_flat_params(suffix, w[self.parts.d_c:])
        b = self.cfg.train.batch_size
        loss, correct = 0.0, 0
        with torch.no_grad():
            for i in range(0, self.x_test.shape[0], b):
                z = prefix(self.x_test[i:i + b]).numpy()
                code, _ = self.gpq.encode(z, seed=self.cfg.seed, client=SYSTEM_CLIENT, round=i)
                out = suffix(torch.from_numpy(self.gpq.decode(code)))
                y = self.y_test[i:i + b]
                loss += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
                correct += int((out.argmax(1) == y).sum())
        n = max(1, self.x_test.shape[0])
        return loss / n, correct / n

    # -- logging ----------------------------------------------------------------------------
    def _log_split_round(self, t, clients, plan, received, metrics, led, cols, timers,
                         sys_bytes, test_loss, test_acc, wall) -> dict[str, Any]:
        comm = self.comm.take()
        act_frames = led.total("act_bytes") + led.total("label_bytes")
        grad_frames = led.total("grad_bytes")
        dense = int(sum(led.dense.values()))
        act_bits = float(sum(led.act_bits.values()))
        up = act_frames + led.total("prefix_up_bytes")
        down = grad_frames + led.total("prefix_down_bytes")
        self.total_up += up
        self.total_down += down
        seen = sum(led.seen.values())
        d_c = self.parts.d_c
        dist = [metrics[c]["diag"]["distortion"] for c in received
                if "distortion" in metrics.get(c, {}).get("diag", {})]
        ksteps = [metrics[c]["diag"]["kmeans_steps"] for c in received
                  if "kmeans_steps" in metrics.get(c, {}).get("diag", {})]
        act_ratio = dense / act_frames if act_frames else float("nan")
        prefix_bits = 32.0 * d_c * len(led.bytes["prefix_down_bytes"])
        row = {"round": t, "n_sampled": len(clients), "C_t": self.strategy.fraction(t),
               "bytes_up": up, "bytes_down": down,
               "up_theo_bits": act_bits + 32.0 * d_c * len(received),
               "down_theo_bits": float(sum(led.grad_bits.values())) + prefix_bits,
               "train_loss": sum(led.loss.values()) / seen if seen else float("nan"),
               "test_loss": test_loss, "test_accuracy": test_acc, "wall_s": wall,
               "t_train": sum(m.get("t_train", 0.0) for m in metrics.values()),
               "t_encode": sum(m.get("t_encode", 0.0) for m in metrics.values()),
               "t_decode": timers["t_decode"], "t_wait": timers["t_wait"],
               "t_aggregate": timers["t_aggregate"], "t_evaluate": timers["t_evaluate"],
               "n_received": len(received), "n_rejected": 0,
               "n_missing": len(plan.clients) - len(received),
               "distortion": float(np.mean(dist)) if dist else float("nan"),
               "compression_ratio": act_ratio,
               **{k: led.total(k) for k in _BYTE_COLS},
               "act_dense_bytes": dense, "act_ratio": act_ratio,
               "act_theo_ratio": 32.0 * dense / 4 / act_bits if act_bits else float("nan"),
               "split_ratio": 2 * dense / (act_frames + grad_frames) if act_frames
               else float("nan"),
               "split_steps": plan.n_steps,
               "kmeans_steps": float(np.mean(ksteps)) if ksteps else float("nan"),
               "t_suffix": timers["t_suffix"]}
        row.update(cols)
        self.log.append_round(row)
        ids = sorted(int(c) for c in clients)
        n = self.world.samples

        def col(key: str) -> np.ndarray:
            return np.array([led.bytes[key].get(c, 0) for c in ids], np.int64)

        by = {k: col(k) for k in _BYTE_COLS}
        dense_c = np.array([led.dense.get(c, 0) for c in ids], np.int64)
        act_c = by["act_bytes"] + by["label_bytes"]
        status = {c: 0 for c in received}
        crow = {"round": np.full(len(ids), t), "client": np.asarray(ids, np.int64),
                "rank": np.array([metrics.get(c, {}).get("rank", -1) for c in ids]),
                "samples": n[ids] if ids else np.zeros(0),
                "bytes_up": act_c + by["prefix_up_bytes"],
                "bytes_down": by["grad_bytes"] + by["prefix_down_bytes"],
                "local_loss": np.array([led.loss[c] / led.seen[c] if led.seen.get(c) else np.nan
                                        for c in ids]),
                "t_train": np.array([metrics.get(c, {}).get("t_train", np.nan) for c in ids]),
                "t_encode": np.array([metrics.get(c, {}).get("t_encode", np.nan) for c in ids]),
                "sent_bytes": np.array([metrics.get(c, {}).get("sent_bytes", 0) for c in ids]),
                "status": np.array([status.get(c, 2) for c in ids]),
                **by, "act_dense_bytes": dense_c,
                "act_ratio": np.where(act_c > 0, dense_c / np.maximum(act_c, 1), np.nan),
                "split_steps": np.array([led.steps.get(c, 0) for c in ids])}
        self.log.append_clients(crow)
        if len(comm):
            self.log.append_comm(comm)
        self.log.append_system(t, int(sum(sys_bytes)))
        self.log.flush()
        return row

"""The server rank: the round loop. Owns the transport and the HDF5 writer; the method's
``Strategy`` owns the maths (STYLE.md rule 9).

Uplinks are received in increasing client id, each from the worker that trains it (MPI keeps
messages from one source in order), so aggregation is independent of arrival order and of the
number of ranks, while workers keep sending without waiting (nonblocking sends).
"""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import rng
from ..comm import wire
from ..comm.tags import SYSTEM_CLIENT, Kind
from ..comm.transport import TimeoutExpired
from ..comm.wire import HEADER_SIZE, pack_frame, pad4
from ..errors import UpdateRejected, WireFormatError, WorkerLost
from . import protocol as P
from .schedule import assign
from .strategy import ServerContext
from .train import evaluate, set_flat_params

__all__ = ["Server", "Preempted"]


class Preempted(Exception):
    """Raised inside the round loop when SLURM asked us to stop (SIGTERM/SIGUSR1/SIGUSR2)."""


@dataclass
class _CommLog:
    """Rows of /comm for one round (one per logical message)."""

    cols: dict[str, list] = field(default_factory=lambda: defaultdict(list))

    def add(self, *, round: int, client: int, direction: int, kind: int, payload: int,
            pad: int, bits: float, physical: bool, step: int = 0) -> None:
        c = self.cols
        c["round"].append(round)
        c["client"].append(client)
        c["step"].append(step)
        c["direction"].append(direction)
        c["msg_type"].append(int(kind))
        c["header_bytes"].append(HEADER_SIZE)
        c["payload_bytes"].append(payload)
        c["pad_bytes"].append(pad)
        c["theoretical_bits"].append(bits)
        c["physical"].append(int(physical))

    def take(self) -> dict[str, np.ndarray]:
        out = {k: np.asarray(v) for k, v in self.cols.items()}
        self.cols = defaultdict(list)
        return out


def _pad_of(sections) -> int:
    return sum(pad4(memoryview(s).nbytes) - memoryview(s).nbytes for s in sections)


class Server:
    """Rank 0. ``run()`` returns a summary dict; the caller handles the writer's lifetime."""

    def __init__(self, world, transport, writer, *, progress=None, start_round: int = 0,
                 strategy_state: dict | None = None, checkpoint=None) -> None:
        self.world, self.tx, self.log = world, transport, writer
        self.cfg = world.cfg
        self.workers = list(range(1, transport.size))
        self.progress = progress
        self.start_round = start_round
        self.checkpoint = checkpoint  # callable(round, strategy) -> path, or None
        self._stop_signal: int | None = None
        self._round = self._signal_round = self._signal_rounds = 0
        self._lost_round: dict[int, int] = {}  # worker -> round in which it was found lost
        self.model = world.model_factory()
        self.x_test, self.y_test = world.tensors("test")
        ctx = ServerContext(self.cfg, world.options, world.n_params, world.w0, world.up,
                            world.down, self.cfg.data.clients, world.samples,
                            evaluate=self.evaluate, model_factory=world.model_factory,
                            dataset=world.dataset)
        self.strategy = world.strategy_cls(ctx)
        if strategy_state is not None:
            self.strategy.load_state_dict(strategy_state)
        self.comm = _CommLog()
        self.max_up = max(world.up.max_nbytes(world.n_params), 4 * world.n_params) + 4096
        self.total_up = 0
        self.total_down = 0
        self.lost: set[int] = set()
        # the previous round's HDF5 rows, written once the next round's work is out (see
        # _flush_log): the writer's ~50 dataset appends and flush then overlap with training
        self._pending_log: list = []

    # -- helpers ----------------------------------------------------------------------------
    def evaluate(self, w: np.ndarray) -> tuple[float, float]:
        set_flat_params(self.model, w)
        return evaluate(self.model, self.x_test, self.y_test)

    def _system(self, t: int, dest: int, kind: Kind, sections, system_bytes: list[int]) -> None:
        frame = pack_frame(kind, sections, round=t, client=SYSTEM_CLIENT)
        system_bytes.append(self.tx.isend_frame(dest, int(kind), frame))

    def _handle_signal(self, signum, _frame) -> None:
        self._stop_signal = signum
        self._signal_round = self._round  # the round in progress when the signal came
        self._signal_rounds = 0

    def _preempted(self, t: int) -> bool:
        """Whether a stop signal asks for preemption after round ``t``.

        MPICH's ``mpiexec -disable-auto-cleanup`` (which lets the server outlive a dead worker)
        also sends SIGUSR1 to every live rank when a process dies. A SIGUSR1 is therefore decided
        one round later: if a worker was found lost in the round before the signal, the round of
        the signal or the next one (a dead worker stalls the round that needs it until
        ``fl.worker_timeout_s``; a receive it broke off fails at once, possibly before the
        launcher's notice arrives), it was that notice and the run goes on (or aborts, per
        ``fl.on_worker_loss``); otherwise it is a preemption. Checkpointing at once would also
        send to the dead rank, which can take the server down with it.
        """
        if self._stop_signal is None:
            return False
        if self._stop_signal != signal.SIGUSR1:
            return True
        if any(r >= self._signal_round - 1 for r in self._lost_round.values()):
            self.log.event(t, "info", "failure_notice",
                           "SIGUSR1 taken as mpiexec's notice of the lost worker, not preemption")
            self._stop_signal = None
            return False
        self._signal_rounds += 1
        return self._signal_rounds > 1

    def install_signal_handlers(self) -> None:
        for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
            signal.signal(s, self._handle_signal)

    # -- setup ------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg_json = self.cfg.to_json()
        chash = P.config_hash(cfg_json)
        body = P.json_payload({"config": json.loads(cfg_json), "config_hash": chash,
                               "codecs": [self.world.up.get_config(),
                                          self.world.down.get_config()],
                               "codec_versions": [self.world.up.codec_version,
                                                  self.world.down.codec_version],
                               "start_round": self.start_round})
        sys_bytes: list[int] = []
        for w in self.workers:
            self._system(self.start_round, w, Kind.SETUP, body, sys_bytes)
        # the logical per-client setup message of a real deployment: run_seed + config hash
        n = self.cfg.data.clients
        per = HEADER_SIZE + P.SETUP_PER_CLIENT.size
        self.setup_bytes = per * n
        self.log.append_system(self.start_round, sum(sys_bytes))
        if self.start_round > 0:
            return  # a resumed run carried the per-client setup rows over
        self.log.append_setup(setup_rows(n))

    # -- one round --------------------------------------------------------------------------
    def run_round(self, t: int) -> dict[str, Any]:
        self._round = t
        cfg, st, W = self.cfg, self.strategy, self.world
        t0 = time.perf_counter()
        timers = defaultdict(float)
        sys_bytes: list[int] = []
        self.round_start_state = (t, st.state_dict())  # what a failure checkpoint saves
        clients = st.sample(t)
        drop = self._dropouts(t, clients)
        st.begin_round(t, clients, W.samples[clients])
        plan = assign(clients, W.samples, self.workers, cfg.fl.schedule, exclude=self.lost)
        owner = {int(c): w for w, cs in plan.items() for c in cs}
        down_bytes = defaultdict(int)
        # one payload (sections + CRC32) per distinct downlink, shared by every worker's frame:
        # nothing is copied, and the CRC32 is computed once per round, not once per worker
        payloads: dict[int, tuple] = {}
        # task lists and downlinks, one physical frame per distinct payload per worker
        for w, cs in plan.items():
            dls, index = [], []
            for c in cs:
                dl = st.downlink(t, int(c))
                for i, d in enumerate(dls):
                    if d is dl:
                        index.append(i)
                        break
                else:
                    index.append(len(dls))
                    dls.append(dl)
            task = P.TaskList(P.Cmd.ROUND, t, np.asarray(cs, np.int64), np.asarray(index),
                              drop[np.searchsorted(clients, cs)] if len(cs) else np.zeros(0, bool),
                              len(dls))
            self._system(t, w, Kind.CONTROL, task.sections(), sys_bytes)
            frames = []
            for j, dl in enumerate(dls):
                first = int(cs[index.index(j)])
                body = payloads.setdefault(id(dl), (dl, wire.payload(list(dl.sections))))[1]
                n = self.tx.isend_frame(w, int(dl.kind), wire.frame(
                    dl.kind, body, round=t, client=first, flags=dl.flags, codec=dl.codec))
                frames.append((n, _pad_of(dl.sections), first))
            for c, j in zip(cs, index):
                nbytes, pad, first = frames[j]
                self.comm.add(round=t, client=int(c), direction=0, kind=dls[j].kind,
                              payload=nbytes - HEADER_SIZE, pad=pad,
                              bits=dls[j].theoretical_bits, physical=int(c) == first)
                down_bytes[int(c)] += nbytes
        active = [int(c) for c, d in zip(clients, drop) if not d and int(c) in owner]
        self._flush_log()  # round t-1's rows, while the workers train round t
        if st.uses_control:
            self._control_exchange(t, active, owner, down_bytes, timers)
        # uplinks, in increasing client id
        up_bytes, received, rejected, missing = {}, [], [], []
        deadline = None if cfg.fl.deadline_s is None else time.monotonic() + cfg.fl.deadline_s
        diag_rows = {}
        for c in active:
            if owner[c] in self.lost:
                missing.append(c)
                continue
            try:
                got = self._recv_update(t, c, owner[c], deadline, timers)
            except WorkerLost as exc:
                self._worker_lost(t, owner[c], exc)
                missing.append(c)
                continue
            if got is None:
                missing.append(c)
                continue
            header, payload, nbytes = got
            up_bytes[c] = nbytes
            td = time.perf_counter()
            try:
                n, body = P.uplink_body(header, payload)  # kind, codec index, u32 n_i
                if n != W.samples[c]:
                    raise WireFormatError(f"n_i = {n}, client {c} holds {W.samples[c]} samples")
                diag_rows[c] = st.accumulate(t, c, n, body)
                received.append(c)
            except (WireFormatError, UpdateRejected) as exc:
                rejected.append(c)
                self.log.event(t, "warning", "update_rejected", f"client {c}: {exc}")
            timers["t_decode"] += time.perf_counter() - td
            self.comm.add(round=t, client=c, direction=1, kind=Kind.UP_UPDATE,
                          payload=nbytes - HEADER_SIZE, pad=0, bits=np.nan, physical=True)
        if missing:
            self.log.event(t, "warning", "clients_missing",
                           f"no update in time from clients {missing}")
        metrics = self._recv_metrics(t, plan, timers, sys_bytes)
        ta = time.perf_counter()
        cols = st.end_round(t) or {}
        timers["t_aggregate"] = time.perf_counter() - ta
        te = time.perf_counter()
        last = t == cfg.fl.rounds - 1
        if t % cfg.fl.eval_every == 0 or last:
            test_loss, test_acc = self.evaluate(st.weights)
        else:
            test_loss = test_acc = float("nan")
        timers["t_evaluate"] = time.perf_counter() - te
        return self._log_round(t, clients, active, received, rejected, missing, metrics,
                               up_bytes, down_bytes, cols, diag_rows, timers, sys_bytes,
                               test_loss, test_acc, time.perf_counter() - t0)

    def _dropouts(self, t: int, clients: np.ndarray) -> np.ndarray:
        p = self.cfg.fl.dropout
        if p <= 0 or clients.size == 0:
            return np.zeros(clients.shape[0], dtype=bool)
        u = np.array([rng.uniform53(self.cfg.seed, purpose=rng.Purpose.SAMPLING, stream=int(c),
                                    round=t, sub_id=1, n=1)[0] for c in clients])
        return u < p

    def _timeout(self, deadline: float | None) -> float:
        base = self.cfg.fl.worker_timeout_s
        if deadline is None:
            return base
        return max(0.0, deadline - time.monotonic())

    def _recv_update(self, t, c, worker, deadline, timers):
        """The next UP_UPDATE of client ``c`` from its worker; stale frames are dropped."""
        while True:
            tw = time.perf_counter()
            try:
                header, payload, src, nbytes = self.tx.recv_frame(
                    worker, int(Kind.UP_UPDATE), timeout=self._timeout(deadline),
                    max_payload=self.max_up)
            except TimeoutExpired:
                timers["t_wait"] += time.perf_counter() - tw
                if deadline is not None:
                    return None
                raise WorkerLost(f"worker rank {worker} sent nothing for "
                                 f"{self.cfg.fl.worker_timeout_s} s (fl.worker_timeout_s)") from None
            except WireFormatError as exc:
                timers["t_wait"] += time.perf_counter() - tw
                self.log.event(t, "warning", "frame_rejected", f"from rank {worker}: {exc}")
                return None
            timers["t_wait"] += time.perf_counter() - tw
            if header.round < t:
                self.log.event(t, "info", "late_update",
                               f"client {header.client} round {header.round} arrived late")
                continue
            if header.round != t or header.client != c:
                self.log.event(t, "warning", "frame_rejected",
                               f"expected client {c} round {t}, got client {header.client} "
                               f"round {header.round}")
                return None
            return header, payload, nbytes

    def _control_exchange(self, t, active, owner, down_bytes, timers) -> None:
        replies = {}
        for c in active:
            tw = time.perf_counter()
            try:
                header, payload, _, nbytes = self.tx.recv_frame(
                    owner[c], int(Kind.UP_CTRL), timeout=self.cfg.fl.worker_timeout_s,
                    max_payload=1 << 20)
            except WireFormatError as exc:  # logged; the strategy skips b"", the client is answered
                timers["t_wait"] += time.perf_counter() - tw
                self.log.event(t, "warning", "frame_rejected",
                               f"UP_CTRL from rank {owner[c]}: {exc}")
                replies[c] = b""
                continue
            timers["t_wait"] += time.perf_counter() - tw
            if header.client != c or header.round != t:  # logged; the strategy skips b""
                self.log.event(t, "warning", "frame_rejected",
                               f"UP_CTRL from rank {owner[c]} for client {header.client} round "
                               f"{header.round}, expected client {c} round {t}")
                payload = b""
            replies[c] = payload
            self.comm.add(round=t, client=c, direction=1, kind=Kind.UP_CTRL,
                          payload=nbytes - HEADER_SIZE, pad=0, bits=np.nan, physical=True)
            self._ctrl_up = getattr(self, "_ctrl_up", defaultdict(int))
            self._ctrl_up[c] += nbytes
        answers = self.strategy.control(t, replies)
        for c in active:
            dl = answers[c]
            n = self.tx.isend_frame(owner[c], int(dl.kind), wire.frame(
                dl.kind, dl.sections, round=t, client=c, flags=dl.flags, codec=dl.codec))
            self.comm.add(round=t, client=c, direction=0, kind=dl.kind, payload=n - HEADER_SIZE,
                          pad=_pad_of(dl.sections), bits=dl.theoretical_bits, physical=True)
            down_bytes[c] += n

    def _worker_lost(self, t: int, worker: int, exc: Exception) -> None:
        """Abort the run (default) or carry on without ``worker`` (``fl.on_worker_loss``)."""
        self.log.event(t, "error", "worker_lost", f"rank {worker}: {exc}")
        self.log.flush()
        if self.cfg.fl.on_worker_loss == "abort":
            raise WorkerLost(f"worker rank {worker} lost in round {t}: {exc}")
        self.lost.add(worker)
        self._lost_round.setdefault(worker, t)
        self.tx.abandon(worker)
        if len(self.lost) == len(self.workers):
            raise WorkerLost("every worker rank is lost")

    def _recv_metrics(self, t, plan, timers, sys_bytes) -> dict[int, dict]:
        rows: dict[int, dict] = {}
        self._state_bytes = 0
        for w in plan:
            if w in self.lost:
                continue
            tw = time.perf_counter()
            try:
                header, payload, _, nbytes = self.tx.recv_frame(
                    w, int(Kind.METRICS), timeout=self.cfg.fl.worker_timeout_s,
                    max_payload=64 << 20)
            except WorkerLost as exc:
                self._worker_lost(t, w, exc)
                continue
            timers["t_wait"] += time.perf_counter() - tw
            sys_bytes.append(nbytes)
            try:
                data, got = _metric_rows(P.parse_json(payload, "METRICS"), plan[w])
            except WireFormatError as exc:  # logged; this worker's clients get no metrics
                self.log.event(t, "warning", "frame_rejected", f"METRICS from rank {w}: {exc}")
                continue
            nb = data["state_bytes"]
            # a shared disk store is reported whole by every worker: count it once
            self._state_bytes = (max(self._state_bytes, nb) if data["state_shared"]
                                 else self._state_bytes + nb)
            for c, r in got.items():
                rows[c] = r | {"rank": w}
        return rows

    def _log_round(self, t, clients, active, received, rejected, missing, metrics, up_bytes,
                   down_bytes, cols, diag_rows, timers, sys_bytes, test_loss, test_acc, wall):
        ctrl_up = getattr(self, "_ctrl_up", {})
        self._ctrl_up = defaultdict(int)
        comm = self.comm.take()
        ups = comm["direction"] == 1
        bytes_up = int(sum(up_bytes.values()) + sum(ctrl_up.values()))
        bytes_down = int(sum(down_bytes.values()))
        self.total_up += bytes_up
        self.total_down += bytes_down
        n = self.world.samples
        losses = [metrics[c]["loss"] for c in received if c in metrics]
        weights = [n[c] for c in received if c in metrics]
        train_loss = float(np.average(losses, weights=weights)) if losses else float("nan")
        down_bits = float(np.nansum(comm["theoretical_bits"][~ups])) if len(ups) else 0.0
        up_bits = float(sum(metrics[c].get("theoretical_bits", 0.0) for c in received
                            if c in metrics))
        row = {"round": t, "n_sampled": len(clients), "C_t": self.strategy.fraction(t),
               "bytes_up": bytes_up, "bytes_down": bytes_down, "up_theo_bits": up_bits,
               "down_theo_bits": down_bits, "train_loss": train_loss, "test_loss": test_loss,
               "test_accuracy": test_acc, "wall_s": wall,
               "t_train": sum(metrics[c]["t_train"] for c in metrics),
               "t_encode": sum(metrics[c]["t_encode"] for c in metrics),
               "t_decode": timers["t_decode"], "t_wait": timers["t_wait"],
               "t_aggregate": timers["t_aggregate"], "t_evaluate": timers["t_evaluate"],
               "n_received": len(received), "n_rejected": len(rejected),
               "n_missing": len(missing), "client_state_bytes": self._state_bytes}
        for key in ("distortion", "kept_fraction", "compression_ratio"):
            vals = [metrics[c]["diag"].get(key) for c in received
                    if c in metrics and key in metrics[c].get("diag", {})]
            row[key] = float(np.mean(vals)) if vals else float("nan")
        row["compression_ratio"] = (
            float(np.mean([4 * self.world.n_params / max(1, up_bytes[c] - HEADER_SIZE - 4)
                           for c in received])) if received else float("nan"))
        row.update(cols)
        ids = sorted(set(active) | set(int(c) for c in clients))
        crow = {"round": np.full(len(ids), t), "client": np.asarray(ids),
                "rank": np.array([metrics.get(c, {}).get("rank", -1) for c in ids]),
                "samples": n[ids] if ids else np.zeros(0),
                "bytes_up": np.array([up_bytes.get(c, 0) + ctrl_up.get(c, 0) for c in ids]),
                "bytes_down": np.array([down_bytes.get(c, 0) for c in ids]),
                "local_loss": np.array([metrics.get(c, {}).get("loss", np.nan) for c in ids]),
                "t_train": np.array([metrics.get(c, {}).get("t_train", np.nan) for c in ids]),
                "t_encode": np.array([metrics.get(c, {}).get("t_encode", np.nan) for c in ids]),
                "sent_bytes": np.array([metrics.get(c, {}).get("sent_bytes", 0) for c in ids]),
                "status": np.array([0 if c in received else 1 if c in rejected else 2
                                    for c in ids])}
        if len(comm):
            up_bits_by_client = {c: metrics[c].get("theoretical_bits", np.nan) for c in metrics}
            for i in np.nonzero(ups & (comm["msg_type"] == int(Kind.UP_UPDATE)))[0]:
                comm["theoretical_bits"][i] = up_bits_by_client.get(int(comm["client"][i]), np.nan)
                comm["pad_bytes"][i] = metrics.get(int(comm["client"][i]), {}).get("pad_bytes", 0)
        system = int(sum(sys_bytes))

        def write() -> None:
            self.log.append_round(row)
            self.log.append_clients(crow)
            if len(comm):
                self.log.append_comm(comm)
            self.log.append_system(t, system)
            self.log.flush()

        self._pending_log.append(write)
        self.tx.wait_sends(timeout=self.cfg.fl.worker_timeout_s)
        return row

    # -- the whole run ----------------------------------------------------------------------
    def stop_workers(self, t: int) -> None:
        for w in self.workers:
            if w in self.lost:
                continue
            task = P.TaskList(P.Cmd.STOP, t, np.zeros(0, np.int64), np.zeros(0, np.int64),
                              np.zeros(0, bool), 0)
            self.tx.isend_frame(w, int(Kind.CONTROL), pack_frame(Kind.CONTROL, task.sections(),
                                                           round=t, client=SYSTEM_CLIENT))
        self.tx.wait_sends(timeout=self.cfg.fl.worker_timeout_s)

    def _flush_log(self) -> None:
        """Write the rows of finished rounds that are still held back (one flush per round).

        A round's rows are written at the start of the next round, after its task lists and
        downlinks are sent, so that HDF5 writing overlaps the workers' training instead of
        idling them; the run loop writes them before a checkpoint, at the end and on any error,
        so the file's content is the same as writing them at once.
        """
        pending, self._pending_log = self._pending_log, []
        for write in pending:
            write()

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        self.install_signal_handlers()
        self.setup()
        row = {}
        t = self.start_round
        try:
            for t in range(self.start_round, cfg.fl.rounds):
                row = self.run_round(t)
                if self.progress is not None:
                    self.progress(t, row, self.total_up + self.total_down)
                every = cfg.log.checkpoint_every
                if self.checkpoint is not None and every and (t + 1) % every == 0:
                    self._flush_log()
                    self.checkpoint(t + 1, self)
                if self._preempted(t):
                    self._flush_log()
                    if self.checkpoint is not None and t + 1 < cfg.fl.rounds:
                        path = self.checkpoint(t + 1, self)
                        self.log.event(t, "warning", "preempted",
                                       f"signal {self._stop_signal}: checkpoint {path}")
                    raise Preempted(f"stopped by signal {self._stop_signal} after round {t}")
        finally:
            self._flush_log()
        return {"rounds": cfg.fl.rounds, "final": row, "bytes_up": self.total_up,
                "bytes_down": self.total_down}


_METRIC_NUMBERS = ("loss", "steps", "t_train", "t_encode", "t_decode", "sent_bytes",
                   "pad_bytes", "theoretical_bits")


def _metric_rows(data: Any, assigned) -> tuple[dict, dict[int, dict]]:
    """Check a worker's METRICS JSON: per-client rows for clients it was assigned, numbers only.

    Returns ``({"state_bytes", "state_shared"}, {client: row})``; anything else raises
    :class:`WireFormatError` (the server logs it and carries on without those metrics).
    """
    def number(v: Any, what: str) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise WireFormatError(f"{what} = {v!r:.40}: expected a number")
        return v

    if not isinstance(data, dict) or not isinstance(data.get("clients"), list):
        raise WireFormatError("expected an object with a list 'clients'")
    allowed = {int(c) for c in assigned}
    rows: dict[int, dict] = {}
    for r in data["clients"]:
        if not isinstance(r, dict) or isinstance(r.get("client"), bool) \
                or not isinstance(r.get("client"), int) or r["client"] not in allowed:
            raise WireFormatError(f"client row {r!r:.60} is not one of this worker's clients")
        diag = r.get("diag", {})
        if not isinstance(diag, dict):
            raise WireFormatError(f"client {r['client']}: 'diag' is not an object")
        row = {k: number(r[k], f"client {r['client']} {k}") for k in _METRIC_NUMBERS if k in r}
        row["client"] = r["client"]
        row["diag"] = {str(k): float(number(v, f"client {r['client']} diag {k}"))
                       for k, v in diag.items()}
        rows[r["client"]] = row
    nb = number(data.get("state_bytes", 0), "state_bytes")
    if nb < 0 or nb != int(nb):
        raise WireFormatError(f"state_bytes = {nb}: expected a count")
    return {"state_bytes": int(nb), "state_shared": bool(data.get("state_shared"))}, rows


def setup_rows(n: int) -> dict[str, np.ndarray]:
    """``/setup`` rows of the logical per-client setup message (run seed + config hash) of a
    real deployment, one per client; not sent here (the SETUP frame goes once per worker)."""
    return {"round": np.zeros(n, np.uint32), "client": np.arange(n), "step": np.zeros(n),
            "direction": np.zeros(n), "msg_type": np.full(n, int(Kind.SETUP)),
            "header_bytes": np.full(n, HEADER_SIZE),
            "payload_bytes": np.full(n, P.SETUP_PER_CLIENT.size), "pad_bytes": np.zeros(n),
            "theoretical_bits": np.full(n, 128.0), "physical": np.zeros(n)}

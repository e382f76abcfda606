"""Transports: the only code that talks to MPI. Byte counting happens here, at the send call.

``MPITransport(comm)`` sends frames with uppercase ``Send``/``Isend`` on byte buffers and receives
with ``Mprobe`` -> ``Get_count(BYTE)`` -> one buffer -> ``Recv`` (size before allocating); waits
back off instead of spinning and honour a timeout. ``LoopbackTransport`` is an in-process twin for
unit tests. Nothing here pickles.
"""

from __future__ import annotations

import collections
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import WireFormatError, WorkerLost
from .wire import HEADER_SIZE, unpack_frame

__all__ = ["SendRecord", "MPITransport", "LoopbackTransport", "ANY_SOURCE", "TimeoutExpired"]

ANY_SOURCE = -1


class TimeoutExpired(WorkerLost):
    """No matching message arrived within the timeout."""


@dataclass
class SendRecord:
    """What was handed to MPI: destination, tag and the frame length (the logged byte count)."""

    dest: int
    tag: int
    nbytes: int


@dataclass
class _Counters:
    sent_bytes: int = 0
    sent_msgs: int = 0
    recv_bytes: int = 0
    recv_msgs: int = 0
    log: list[SendRecord] = field(default_factory=list)


class MPITransport:
    """Frames over an mpi4py communicator (any communicator: WORLD, a Dup, a split)."""

    def __init__(self, comm: Any, *, keep_log: bool = False, poll_min: float = 1e-5,
                 poll_max: float = 1e-3, poll_spin: float = 1e-4) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.counters = _Counters()
        self.keep_log = keep_log
        # waiting: first ``poll_spin`` seconds of Improbe + sched_yield (a reply that is already
        # on its way costs no sleep), then sleeps from ``poll_min`` doubling up to ``poll_max``
        self.poll_min, self.poll_max, self.poll_spin = poll_min, poll_max, poll_spin
        self._pending: list[tuple[Any, Any]] = []

    # -- sending ----------------------------------------------------------------------------
    def _count(self, dest: int, tag: int, frame) -> int:
        n = memoryview(frame).nbytes
        c = self.counters
        c.sent_bytes += n
        c.sent_msgs += 1
        if self.keep_log:
            c.log.append(SendRecord(dest, tag, n))
        return n

    def send_frame(self, dest: int, tag: int, frame: np.ndarray) -> int:
        """Blocking send of one frame; returns the bytes handed to MPI."""
        n = self._count(dest, tag, frame)
        self.comm.Send([frame, n, self.MPI.BYTE], dest=dest, tag=tag)
        return n

    def isend_frame(self, dest: int, tag: int, frame: np.ndarray) -> int:
        """Nonblocking send; the frame is kept alive until :meth:`wait_sends`."""
        n = self._count(dest, tag, frame)
        req = self.comm.Isend([frame, n, self.MPI.BYTE], dest=dest, tag=tag)
        self._pending.append((req, frame, dest))
        self._reap()
        return n

    def _reap(self) -> None:
        if len(self._pending) > 64:
            self._pending = [p for p in self._pending if not p[0].Test()]

    def abandon(self, dest: int) -> None:
        """Forget pending sends to a rank that is gone (best effort cancel)."""
        keep = []
        for req, frame, d in self._pending:
            if d == dest:
                try:
                    req.Cancel()
                except self.MPI.Exception:
                    pass
            else:
                keep.append((req, frame, d))
        self._pending = keep

    def wait_sends(self, timeout: float | None = None) -> None:
        """Complete every pending :meth:`isend_frame`; :class:`TimeoutExpired` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.poll_min
        while self._pending:
            self._pending = [p for p in self._pending if not p[0].Test()]
            if not self._pending:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutExpired(f"{len(self._pending)} sends not completed in {timeout} s")
            time.sleep(delay)
            delay = min(self.poll_max, delay * 2)

    # -- receiving --------------------------------------------------------------------------
    def probe(self, source: int = ANY_SOURCE, tag: int = -1, timeout: float | None = None):
        """Wait for a matching message; return ``(message, status)`` (matched, not yet received)."""
        MPI = self.MPI
        src = MPI.ANY_SOURCE if source == ANY_SOURCE else source
        tg = MPI.ANY_TAG if tag < 0 else tag
        status = MPI.Status()
        # improbe + exponential back-off instead of a blocking mprobe: MPICH busy-polls inside
        # blocking calls, which starves the training ranks on oversubscribed nodes.
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        spin_end = now + self.poll_spin
        delay = self.poll_min
        while True:
            msg = self.comm.improbe(source=src, tag=tg, status=status)
            if msg is not None:
                return msg, status
            now = time.monotonic()
            if deadline is not None and now > deadline:
                raise TimeoutExpired(
                    f"rank {self.rank}: no message from source {source} (tag {tag}) in {timeout} s")
            if now < spin_end:
                os.sched_yield()  # gives the core away, unlike MPICH's blocking busy-poll
                continue
            time.sleep(delay)
            delay = min(self.poll_max, delay * 2)

    def recv_buffer(self, source: int = ANY_SOURCE, tag: int = -1, *,
                    timeout: float | None = None, max_bytes: int | None = None
                    ) -> tuple[np.ndarray, int, int]:
        """Receive one frame: ``(buffer, source, tag)``. Sized with Mprobe + Get_count first;
        a message longer than ``max_bytes`` is drained and rejected without a large allocation."""
        msg, status = self.probe(source, tag, timeout)
        n = status.Get_count(self.MPI.BYTE)
        src, tg = status.Get_source(), status.Get_tag()
        if max_bytes is not None and n > max_bytes:
            # Consume the matched message into a tiny buffer: MPI reports truncation (raised by
            # mpi4py as MPI.Exception) and the message is gone; nothing of size n is allocated.
            try:
                msg.Recv([np.empty(16, dtype=np.uint8), self.MPI.BYTE])
            except self.MPI.Exception:
                pass
            raise WireFormatError(f"message of {n} bytes from rank {src} exceeds the expected "
                                  f"maximum {max_bytes}")
        buf = np.empty(n, dtype=np.uint8)
        try:
            msg.Recv([buf, self.MPI.BYTE])
        except self.MPI.Exception as exc:
            # a large message is copied from the sender's memory after the match (rendezvous,
            # e.g. MPICH's CMA): a sender that died in between fails the receive
            raise WorkerLost(f"rank {self.rank}: receiving {n} bytes from rank {src} failed "
                             f"(the sender died?): {exc.Get_error_string()}") from None
        self.counters.recv_bytes += n
        self.counters.recv_msgs += 1
        return buf, src, tg

    def recv_frame(self, source: int = ANY_SOURCE, tag: int = -1, *, timeout: float | None = None,
                   max_payload: int | None = None):
        """Receive and validate: ``(header, payload, source, nbytes)``."""
        lim = None if max_payload is None else max_payload + HEADER_SIZE
        buf, src, _ = self.recv_buffer(source, tag, timeout=timeout, max_bytes=lim)
        header, payload = unpack_frame(buf, max_payload=max_payload)
        return header, payload, src, buf.shape[0]


class LoopbackTransport:
    """In-process transport with the same counting, for unit tests (one queue per (src, dst))."""

    def __init__(self, rank: int, size: int, network: dict | None = None) -> None:
        self.rank, self.size = rank, size
        self.net = network if network is not None else collections.defaultdict(collections.deque)
        self.counters = _Counters()

    def peer(self, rank: int) -> LoopbackTransport:
        return LoopbackTransport(rank, self.size, self.net)

    def send_frame(self, dest: int, tag: int, frame: np.ndarray) -> int:
        n = memoryview(frame).nbytes
        self.counters.sent_bytes += n
        self.counters.sent_msgs += 1
        self.net[dest].append((self.rank, tag, np.array(frame, dtype=np.uint8, copy=True)))
        return n

    isend_frame = send_frame

    def wait_sends(self, timeout: float | None = None) -> None:
        return None

    def recv_buffer(self, source: int = ANY_SOURCE, tag: int = -1, *,
                    timeout: float | None = None, max_bytes: int | None = None):
        q = self.net[self.rank]
        for i, (src, tg, buf) in enumerate(q):
            if (source == ANY_SOURCE or src == source) and (tag < 0 or tg == tag):
                del q[i]
                self.counters.recv_bytes += buf.shape[0]
                self.counters.recv_msgs += 1
                return buf, src, tg
        raise TimeoutExpired(f"loopback rank {self.rank}: no message from {source} tag {tag}")

    def recv_frame(self, source: int = ANY_SOURCE, tag: int = -1, *, timeout=None,
                   max_payload=None):
        buf, src, _ = self.recv_buffer(source, tag)
        header, payload = unpack_frame(buf, max_payload=max_payload)
        return header, payload, src, buf.shape[0]

"""Transports: the only code that talks to MPI. Byte counting happens here, at the send call.

``MPITransport(comm)`` sends frames with uppercase ``Send``/``Isend`` on byte buffers and receives
with ``Mprobe`` -> ``Get_count(BYTE)`` -> one buffer -> ``Recv`` (size before allocating); waits
back off instead of spinning and honour a timeout. ``LoopbackTransport`` is an in-process twin for
unit tests. Nothing here pickles.

Large messages cost no more than a raw ``Send``/``Recv`` of the same bytes, apart from the CRC32:
a :class:`~fedsqueeze.comm.wire.Frame` (header + referenced sections) goes out as one message
over a derived datatype of the pieces' addresses, so its payload is not copied, and receive
buffers of 64 KiB or more come from a :class:`RecvPool` instead of fresh, never-touched pages.
"""

from __future__ import annotations

import collections
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import WireFormatError, WorkerLost
from .wire import HEADER_SIZE, Frame, unpack_frame

__all__ = ["SendRecord", "MPITransport", "LoopbackTransport", "RecvPool", "ANY_SOURCE",
           "TimeoutExpired", "ZERO_COPY_MIN"]

ANY_SOURCE = -1
ZERO_COPY_MIN = 64 << 10
"""A :class:`Frame` smaller than this is copied into one buffer: below it, a copy is cheaper than
building a derived datatype."""
_BLOCK = 1 << 30  # datatype block lengths are C ints: larger sections become several blocks


def frame_nbytes(frame) -> int:
    """Length of a frame (``uint8`` array, any buffer or :class:`Frame`): the logged byte count."""
    return frame.nbytes if isinstance(frame, Frame) else memoryview(frame).nbytes


class RecvPool:
    """Receive buffers that are reused once nothing refers to them any more.

    A fresh ``np.empty`` of many MB is fresh pages: the receive then takes a page fault every
    4 KiB, which costs about as much as the transfer itself (MACHINE.md: ~4 GB/s for fault +
    zero against ~5 GB/s for a copy). A pooled buffer is handed out again only when CPython's
    reference count shows that nothing (no array, view, memoryview or ``np.frombuffer`` of the
    payload) refers to it, so data a caller still holds is never overwritten. Buffers under
    ``min_bytes`` (64 KiB) are plain ``np.empty`` (the allocator reuses those anyway). The pool
    keeps at most ``max_bytes``, or two buffers of a message larger than half of that (a model
    of any size gets reused buffers); a buffer is reused only for a message of at least half its
    size.
    """

    def __init__(self, min_bytes: int = 64 << 10, max_bytes: int = 512 << 20) -> None:
        self.min_bytes, self.max_bytes = min_bytes, max_bytes
        self._bufs: list[np.ndarray] = []
        self.reused = 0

    @property
    def pooled_bytes(self) -> int:
        return sum(b.shape[0] for b in self._bufs)

    def _free(self, i: int) -> bool:
        return sys.getrefcount(self._bufs[i]) <= 2  # the list's reference + the argument's

    def take(self, n: int) -> np.ndarray:
        """A ``uint8`` array of length ``n`` that nobody else refers to."""
        if n < self.min_bytes:
            return np.empty(n, dtype=np.uint8)
        free = [i for i in range(len(self._bufs)) if self._free(i)]
        fits = [i for i in free if n <= self._bufs[i].shape[0] <= 2 * n]
        if fits:
            self.reused += 1
            return self._bufs[min(fits, key=lambda i: self._bufs[i].shape[0])][:n]
        buf = np.empty(n, dtype=np.uint8)
        limit = max(self.max_bytes, 2 * n)
        total, drop = self.pooled_bytes, set()
        for i in sorted(free, key=lambda i: -self._bufs[i].shape[0]):  # make room: idle ones go
            if total + n <= limit:
                break
            drop.add(i)
            total -= self._bufs[i].shape[0]
        if drop:
            self._bufs = [b for i, b in enumerate(self._bufs) if i not in drop]
        if total + n <= limit:
            self._bufs.append(buf)
        return buf[:n]


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
                 poll_max: float = 1e-3, poll_spin: float = 1e-4,
                 pool: RecvPool | None = None, checksum: bool = True) -> None:
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
        self._pending: list[tuple[Any, Any, int]] = []
        self.pool = pool if pool is not None else RecvPool()
        # False: Frames go out UNCHECKED (no CRC32 pass over the payload), and such frames are
        # accepted; frames that carry a CRC32 are still checked
        self.checksum = checksum

    # -- sending ----------------------------------------------------------------------------
    def _count(self, dest: int, tag: int, frame) -> int:
        n = frame_nbytes(frame)
        c = self.counters
        c.sent_bytes += n
        c.sent_msgs += 1
        if self.keep_log:
            c.log.append(SendRecord(dest, tag, n))
        return n

    def _message(self, frame, n: int):
        """``(buffer spec, datatype to free or None, object to keep alive)`` for one frame."""
        MPI = self.MPI
        if not isinstance(frame, Frame):
            return [frame, n, MPI.BYTE], None, frame
        if n < ZERO_COPY_MIN:
            buf = frame.contiguous(self.checksum)
            return [buf, n, MPI.BYTE], None, buf
        header = frame.header(self.checksum)
        lengths, addresses = [HEADER_SIZE], [MPI.Get_address(header)]
        for part in frame.payload.parts:  # an empty section adds no block
            for i in range(0, len(part), _BLOCK):
                block = part[i:i + _BLOCK]
                lengths.append(len(block))
                addresses.append(MPI.Get_address(block))
        dtype = MPI.Datatype.Create_struct(lengths, addresses, [MPI.BYTE] * len(lengths)).Commit()
        return [MPI.BOTTOM, 1, dtype], dtype, (header, frame)

    def send_frame(self, dest: int, tag: int, frame: np.ndarray | Frame) -> int:
        """Blocking send of one frame; returns the bytes handed to MPI."""
        n = self._count(dest, tag, frame)
        msg, dtype, _ = self._message(frame, n)
        try:
            self.comm.Send(msg, dest=dest, tag=tag)
        finally:
            if dtype is not None:
                dtype.Free()
        return n

    def isend_frame(self, dest: int, tag: int, frame: np.ndarray | Frame) -> int:
        """Nonblocking send; the frame (and a :class:`Frame`'s sections) is kept alive until
        :meth:`wait_sends`."""
        n = self._count(dest, tag, frame)
        msg, dtype, keep = self._message(frame, n)
        req = self.comm.Isend(msg, dest=dest, tag=tag)
        if dtype is not None:
            dtype.Free()  # MPI keeps it for the pending send (MPI-4.1 section 5.1.11)
        self._pending.append((req, keep, dest))
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
        buf = self.pool.take(n)
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
        header, payload = unpack_frame(buf, max_payload=max_payload, unchecked=not self.checksum)
        return header, payload, src, buf.shape[0]


class LoopbackTransport:
    """In-process transport with the same counting, for unit tests (one queue per (src, dst))."""

    def __init__(self, rank: int, size: int, network: dict | None = None, *,
                 checksum: bool = True) -> None:
        self.rank, self.size, self.checksum = rank, size, checksum
        self.net = network if network is not None else collections.defaultdict(collections.deque)
        self.counters = _Counters()

    def peer(self, rank: int) -> LoopbackTransport:
        return LoopbackTransport(rank, self.size, self.net, checksum=self.checksum)

    def send_frame(self, dest: int, tag: int, frame: np.ndarray | Frame) -> int:
        n = frame_nbytes(frame)
        self.counters.sent_bytes += n
        self.counters.sent_msgs += 1
        buf = (frame.contiguous(self.checksum) if isinstance(frame, Frame)
               else np.array(frame, np.uint8))
        self.net[dest].append((self.rank, tag, buf))
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
        header, payload = unpack_frame(buf, max_payload=max_payload, unchecked=not self.checksum)
        return header, payload, src, buf.shape[0]

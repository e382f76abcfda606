"""Run by tests/mpi/test_transport.py under mpiexec: one body on COMM_SELF, COMM_WORLD and a Dup.
Assertions are collective: every rank learns that some rank failed and exits non-zero."""

from __future__ import annotations

import sys
import traceback

import numpy as np
from mpi4py import MPI

from fedsqueeze.comm.tags import Kind
from fedsqueeze.comm.transport import MPITransport, TimeoutExpired
from fedsqueeze.comm.wire import HEADER_SIZE, frame, pack_frame, pad4
from fedsqueeze.errors import WireFormatError


def body(comm) -> None:
    tx = MPITransport(comm)
    size, rank = tx.size, tx.rank
    dest, src = (rank + 1) % size, (rank - 1) % size
    sent = 0
    for n in (0, 1, 4096, 1 << 20):
        payload = (np.arange(n, dtype=np.uint32) * (rank + 1)).astype(np.uint8)
        sent += tx.isend_frame(dest, int(Kind.METRICS), pack_frame(Kind.METRICS, payload, round=n,
                                                             client=rank))
        h, p, s, nbytes = tx.recv_frame(src, int(Kind.METRICS), timeout=60)
        expect = (np.arange(n, dtype=np.uint32) * (src + 1)).astype(np.uint8)
        assert s == src and h.client == src and h.round == n, (s, h)
        assert nbytes == HEADER_SIZE + pad4(n)  # sections are 4-byte aligned
        np.testing.assert_array_equal(np.frombuffer(p, np.uint8)[:n], expect)
    tx.wait_sends(timeout=60)
    assert tx.counters.sent_bytes == sent == 4 * HEADER_SIZE + 4 + 4096 + (1 << 20)
    assert tx.counters.recv_bytes == sent
    # a Frame (header + referenced sections) arrives as the very bytes pack_frame would build:
    # small ones are copied, large ones go as one message over a derived datatype (zero copy)
    held = []
    for n in (10, 3 << 20):
        sections = [np.full(3, rank, np.uint8),
                    (np.arange(n, dtype=np.uint32) + rank).view(np.uint8), b"", b"xyz"]
        f = frame(Kind.UP_UPDATE, sections, round=n, client=rank, codec=2, flags=1)
        assert tx.isend_frame(dest, int(Kind.UP_UPDATE), f) == f.nbytes
        h, p, s, nbytes = tx.recv_frame(src, int(Kind.UP_UPDATE), timeout=60)
        peer = [np.full(3, src, np.uint8), (np.arange(n, dtype=np.uint32) + src).view(np.uint8),
                b"", b"xyz"]
        expect = pack_frame(Kind.UP_UPDATE, peer, round=n, client=src, codec=2, flags=1)
        assert nbytes == expect.shape[0] == f.nbytes, (nbytes, expect.shape, f.nbytes)
        assert (h.codec, h.flags, h.round, h.client) == (2, 1, n, src)
        np.testing.assert_array_equal(np.frombuffer(p, np.uint8), expect[HEADER_SIZE:])
        held.append(p)
        tx.wait_sends(timeout=60)
    # receive buffers are reused only once nothing refers to them
    big = held.pop()
    for _ in range(2):
        tx.isend_frame(dest, int(Kind.UP_UPDATE),
                       frame(Kind.UP_UPDATE, np.zeros(3 << 20, np.uint8)))
        h, p, _, _ = tx.recv_frame(src, int(Kind.UP_UPDATE), timeout=60)
        assert not np.shares_memory(np.frombuffer(p, np.uint8), np.frombuffer(big, np.uint8))
        tx.wait_sends(timeout=60)
    reused = tx.pool.reused
    del big, p, h
    tx.isend_frame(dest, int(Kind.UP_UPDATE), frame(Kind.UP_UPDATE, np.ones(3 << 20, np.uint8)))
    h, p, _, _ = tx.recv_frame(src, int(Kind.UP_UPDATE), timeout=60)
    assert tx.pool.reused == reused + 1 and np.frombuffer(p, np.uint8).min() == 1
    tx.wait_sends(timeout=60)
    # a message beyond the receiver's bound is consumed and rejected without a large buffer
    tx.isend_frame(dest, int(Kind.UP_UPDATE), pack_frame(Kind.UP_UPDATE, bytes(10_000)))
    try:
        tx.recv_frame(src, int(Kind.UP_UPDATE), timeout=60, max_payload=100)
    except WireFormatError:
        pass
    else:
        raise AssertionError("oversized frame accepted")
    tx.wait_sends(timeout=60)
    # nothing pending: a receive with a timeout times out instead of hanging
    try:
        tx.recv_frame(src, int(Kind.UP_UPDATE), timeout=0.2)
    except TimeoutExpired:
        pass
    else:
        raise AssertionError("receive did not time out")
    comm.Barrier()


def main() -> int:
    world = MPI.COMM_WORLD
    failed = 0
    dup = world.Dup()
    for name, comm in (("self", MPI.COMM_SELF), ("world", world), ("dup", dup)):
        try:
            body(comm)
        except Exception:  # noqa: BLE001 - reported collectively below
            failed += 1
            print(f"rank {world.Get_rank()} on {name}:\n{traceback.format_exc()}", file=sys.stderr)
    dup.Free()
    total = np.zeros(1, np.int64)
    world.Allreduce(np.array([failed], np.int64), total)
    return 1 if total[0] else 0


if __name__ == "__main__":
    sys.exit(main())

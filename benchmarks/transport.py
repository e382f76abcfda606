"""Frame round trip over MPI against a raw mpi4py ``Send``/``Recv`` of the same bytes.

Run on exactly two ranks::

    mpiexec -n 2 python benchmarks/transport.py                       # 1 KB .. 256 MB
    mpiexec -n 2 python benchmarks/transport.py --sizes 100e6 --repeat 15
    mpiexec -n 2 python benchmarks/transport.py --markdown out.md

A ping-pong: rank 0 sends a message, rank 1 receives it and sends it back; the one-way time is
half the round trip. Two variants carry the same number of bytes (the frame length):

* ``raw``: ``comm.Send`` of a preallocated byte buffer into a preallocated ``comm.Recv`` buffer
  (the MPI loopback bandwidth: the best a Python program can do here).
* ``fedsqueeze``: what the framework does for every message: ``wire.frame`` (header and CRC32;
  the payload is referenced, not copied) -> ``MPITransport.send_frame`` (one message over a
  derived datatype of header + payload, or a copy below 64 KiB) -> ``MPITransport.recv_frame``
  (``Improbe`` with back-off, ``Get_count``, a buffer from the receive pool, ``Recv``) ->
  ``unpack_frame`` (validation, CRC32). The echo frames the received payload again, as a relay
  would. ``--no-checksum`` sends UNCHECKED frames (``fl.checksum = false``: no CRC32 pass on
  either side). ``--copy`` measures the older path instead: ``pack_frame`` (a copy of the
  payload into a fresh frame) and a fresh receive buffer per message.

Timing: ``--repeat`` round trips per size after one warm-up; the table shows the median and the
best one-way time (wall clock). On a shared machine the best of many is the number that
describes the code, the median the number a user sees; the load average is printed with the
table. Rank 0 also measures the single-process pieces at the largest size (CPU time: pack,
CRC32, allocation and first touch, unpack) next to single-core memcpy (``np.copyto``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import zlib

import numpy as np
from tabulate import tabulate

from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Kind
from fedsqueeze.comm.transport import MPITransport, RecvPool
from fedsqueeze.comm.wire import HEADER_SIZE, frame, pack_frame, unpack_frame

DEFAULT_SIZES = [1e3, 16e3, 256e3, 1e6, 4e6, 16e6, 64e6, 100e6, 256e6]
TAG = int(Kind.UP_UPDATE)


def repeats(nbytes: int, asked: int | None) -> int:
    if asked:
        return asked
    return int(min(200, max(5, 2e9 // max(nbytes, 1) // 20)))


def raw_pingpong(comm, n: int, reps: int) -> list[float]:
    from mpi4py import MPI

    r = comm.Get_rank()
    peer = 1 - r
    buf = np.full(n, 7, np.uint8)
    rbuf = np.empty(n, np.uint8)
    rbuf.fill(0)  # first touch outside the timed loop
    out = []
    for i in range(reps + 1):
        comm.Barrier()
        t0 = time.perf_counter()
        if r == 0:
            comm.Send([buf, MPI.BYTE], dest=peer, tag=TAG)
            comm.Recv([rbuf, MPI.BYTE], source=peer, tag=TAG)
        else:
            comm.Recv([rbuf, MPI.BYTE], source=peer, tag=TAG)
            comm.Send([rbuf, MPI.BYTE], dest=peer, tag=TAG)
        if i:
            out.append((time.perf_counter() - t0) / 2)
    return out


def frame_pingpong(comm, tx: MPITransport, n: int, reps: int, copy: bool = False) -> list[float]:
    r = comm.Get_rank()
    peer = 1 - r
    payload = np.random.default_rng(0).integers(0, 256, n - HEADER_SIZE, dtype=np.uint8)
    build = pack_frame if copy else frame
    out = []
    for i in range(reps + 1):
        comm.Barrier()
        t0 = time.perf_counter()
        if r == 0:
            tx.send_frame(peer, TAG, build(Kind.UP_UPDATE, payload, round=i, client=0))
            h, p, _, nb = tx.recv_frame(peer, TAG, max_payload=n)
        else:
            h, p, _, nb = tx.recv_frame(peer, TAG, max_payload=n)
            tx.send_frame(peer, TAG, build(Kind.UP_UPDATE, p, round=h.round, client=h.client))
        del p
        if i:
            out.append((time.perf_counter() - t0) / 2)
    return out


def cpu_ms(fn, reps: int = 5) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.process_time()
        fn()
        ts.append(time.process_time() - t0)
    return 1e3 * statistics.median(ts)


def pieces(n: int) -> list[list]:
    """CPU time of each single-process step of a frame of ``n`` bytes."""
    payload = np.random.default_rng(1).integers(0, 256, n - HEADER_SIZE, dtype=np.uint8)
    packed = pack_frame(Kind.UP_UPDATE, payload)
    dst = np.empty_like(payload)
    dst.fill(0)
    crc = getattr(wire, "crc32", zlib.crc32)
    rows = [
        ["memcpy (np.copyto, preallocated)", cpu_ms(lambda: np.copyto(dst, payload))],
        ["np.empty + first touch (fill)", cpu_ms(lambda: np.empty(n, np.uint8).fill(0))],
        ["zlib.crc32", cpu_ms(lambda: zlib.crc32(payload))],
    ]
    if crc is not zlib.crc32:
        rows.append([f"wire.crc32 ({crc.__module__})", cpu_ms(lambda: crc(payload))])
    rows += [
        ["frame + header (CRC32, no copy)",
         cpu_ms(lambda: frame(Kind.UP_UPDATE, payload).header())],
        ["pack_frame (copy + CRC32)", cpu_ms(lambda: pack_frame(Kind.UP_UPDATE, payload))],
        ["unpack_frame (validate + CRC32)", cpu_ms(lambda: unpack_frame(packed))],
    ]
    mb = (n - HEADER_SIZE) / 1e6
    return [[name, f"{ms:.1f}", f"{mb / ms:.2f}" if ms > 0 else "-"] for name, ms in rows]


def main(argv=None) -> int:
    from mpi4py import MPI

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=DEFAULT_SIZES,
                    help="frame sizes in bytes (1e3 .. 256e6)")
    ap.add_argument("--repeat", type=int, default=None, help="round trips per size")
    ap.add_argument("--poll-max", type=float, default=None,
                    help="MPITransport poll_max (s); default: the transport's default")
    ap.add_argument("--copy", action="store_true",
                    help="the copying path: pack_frame and a fresh receive buffer per message")
    ap.add_argument("--no-checksum", action="store_true",
                    help="UNCHECKED frames (fl.checksum = false): no CRC32 on either side")
    ap.add_argument("--markdown", help="also write the tables to this file")
    args = ap.parse_args(argv)
    comm = MPI.COMM_WORLD
    if comm.Get_size() != 2:
        if comm.Get_rank() == 0:
            print("run with: mpiexec -n 2 python benchmarks/transport.py", file=sys.stderr)
        return 2
    kw = {} if args.poll_max is None else {"poll_max": args.poll_max}
    if args.copy:  # no pooled buffers: every receive gets fresh pages
        kw["pool"] = RecvPool(min_bytes=1 << 62)
    tx = MPITransport(comm, checksum=not args.no_checksum, **kw)
    rows = []
    for s in args.sizes:
        n = max(HEADER_SIZE + 4, int(s))
        reps = repeats(n, args.repeat)
        raw = raw_pingpong(comm, n, reps)
        fsq = frame_pingpong(comm, tx, n, reps, copy=args.copy)
        if comm.Get_rank() == 0:
            rm, fm = statistics.median(raw), statistics.median(fsq)
            rb, fb = min(raw), min(fsq)
            rows.append([_size(n), reps, f"{1e3 * rm:.3f}", f"{1e3 * fm:.3f}",
                         f"{100 * (fm / rm - 1):+.0f}%", f"{1e3 * rb:.3f}", f"{1e3 * fb:.3f}",
                         f"{100 * (fb / rb - 1):+.0f}%", f"{n / rb / 1e9:.2f}",
                         f"{n / fb / 1e9:.2f}"])
    if comm.Get_rank() != 0:
        return 0
    head = ["frame", "reps", "raw ms (med)", "fsq ms (med)", "overhead (med)", "raw ms (best)",
            "fsq ms (best)", "overhead (best)", "raw GB/s (best)", "fsq GB/s (best)"]
    biggest = max(max(HEADER_SIZE + 4, int(s)) for s in args.sizes)
    piece_rows = pieces(biggest)
    env = (f"{platform.node()}: {os.cpu_count()} cores, load average "
           f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
           f"{MPI.Get_library_version().splitlines()[0].strip()}; transport poll_max "
           f"{tx.poll_max * 1e3:g} ms; crc32 from {getattr(wire, 'crc32', zlib.crc32).__module__}; "
           f"{'copying path (--copy)' if args.copy else 'zero-copy send, pooled receive'}"
           f"{', no checksum' if args.no_checksum else ''}")
    t1 = tabulate(rows, headers=head, tablefmt="github")
    t2 = tabulate(piece_rows, headers=[f"step at {_size(biggest)} (CPU time)", "ms", "GB/s"],
                  tablefmt="github")
    print(env)
    print(t1)
    print()
    print(t2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"{env}\n\n{t1}\n\n{t2}\n")
    return 0


def _size(n: int) -> str:
    for unit, k in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n} B"


if __name__ == "__main__":
    sys.exit(main())

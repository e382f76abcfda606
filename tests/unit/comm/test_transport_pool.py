"""The receive-buffer pool and the in-process transport's handling of Frames and checksums."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Kind
from fedsqueeze.comm.transport import LoopbackTransport, RecvPool, frame_nbytes
from fedsqueeze.errors import WireFormatError


def _addr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_buffer_is_reused_only_when_nothing_refers_to_it():
    pool = RecvPool(min_bytes=16, max_bytes=10_000)
    a = pool.take(1000)
    first = _addr(a)
    b = pool.take(1000)  # a is alive: a second buffer
    assert _addr(b) != first and pool.reused == 0
    view = np.frombuffer(memoryview(a)[8:], np.uint8)  # a payload view keeps it in use
    del a
    c = pool.take(1000)
    assert _addr(c) not in (first, _addr(b)) and pool.reused == 0
    del view, c
    d = pool.take(900)
    assert _addr(d) == first or pool.reused == 1
    assert pool.reused == 1 and d.shape == (900,)


def test_small_messages_and_a_far_smaller_message_get_fresh_buffers():
    pool = RecvPool(min_bytes=100, max_bytes=10_000)
    x = pool.take(50)
    assert pool.pooled_bytes == 0 and x.shape == (50,)
    del x
    pool.take(4000)  # pooled, and idle at once (nothing keeps it)
    y = pool.take(1000)  # less than half of 4000: not worth pinning the big one
    assert pool.reused == 0 and y.shape == (1000,)


def test_the_pool_stays_within_its_byte_budget():
    pool = RecvPool(min_bytes=1, max_bytes=3000)
    held = [pool.take(1000) for _ in range(5)]
    assert pool.pooled_bytes == 3000  # the last two are fresh, unpooled
    del held[:]
    big = pool.take(1400)  # idle buffers make room
    assert pool.pooled_bytes <= 3000 and big.shape == (1400,) and pool.reused == 0


def test_messages_beyond_the_budget_still_get_two_reused_buffers():
    pool = RecvPool(min_bytes=1, max_bytes=1000)
    a, b = pool.take(5000), pool.take(5000)
    assert pool.pooled_bytes == 10_000
    c = pool.take(5000)  # a third one in flight is not kept
    assert pool.pooled_bytes == 10_000
    del a, c
    assert pool.take(5000).shape == (5000,) and pool.reused == 1


@pytest.mark.parametrize("checksum", [True, False])
def test_loopback_carries_frames_with_or_without_checksums(checksum):
    a = LoopbackTransport(0, 2, checksum=checksum)
    b = a.peer(1)
    f = wire.frame(Kind.UP_UPDATE, [b"ab", np.arange(5, dtype=np.float32)], round=4, client=9)
    assert a.send_frame(1, int(Kind.UP_UPDATE), f) == f.nbytes == frame_nbytes(f.contiguous())
    h, p, src, n = b.recv_frame(0, int(Kind.UP_UPDATE))
    assert (h.round, h.client, src, n) == (4, 9, 0, f.nbytes)
    assert bool(h.flags & wire.Flag.UNCHECKED) is (not checksum)
    assert bytes(p) == bytes(f.contiguous()[wire.HEADER_SIZE:])


def test_a_checking_receiver_rejects_unchecked_frames():
    a = LoopbackTransport(0, 2, checksum=False)
    b = LoopbackTransport(1, 2, a.net)  # checksum=True
    a.send_frame(1, 4, wire.frame(Kind.UP_UPDATE, b"abcd"))
    with pytest.raises(WireFormatError, match="UNCHECKED"):
        b.recv_frame(0, 4)

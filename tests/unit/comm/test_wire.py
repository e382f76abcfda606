"""The 24-byte frame header and its validation (STYLE.md section 4)."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Kind
from fedsqueeze.errors import WireFormatError


def test_header_layout_is_the_documented_one():
    f = wire.pack_frame(Kind.UP_UPDATE, b"\x01\x02\x03\x04", round=7, client=11, codec=3, flags=1)
    assert f.shape == (28,)
    magic, ver, kind, codec, flags, res, rnd, client, plen, crc = struct.unpack_from(
        "<2sBBBBHIIII", f, 0)
    assert (magic, ver, kind, codec, flags, res, rnd, client, plen) == (
        b"FQ", 1, int(Kind.UP_UPDATE), 3, 1, 0, 7, 11, 4)
    assert crc == zlib.crc32(b"\x01\x02\x03\x04")


def test_sections_are_4_byte_aligned_and_padding_counted():
    f = wire.pack_frame(Kind.METRICS, [b"abc", b"de", np.arange(3, dtype="<u2")])
    h, p = wire.unpack_frame(f)
    assert h.payload_len == 4 + 4 + 8
    r = wire.SectionReader(p)
    assert bytes(r.bytes(3, "a")) == b"abc"
    assert bytes(r.bytes(2, "b")) == b"de"
    assert r.array("<u2", 3, "c").tolist() == [0, 1, 2]
    r.finish()


def _frame():
    return bytearray(wire.pack_frame(Kind.DOWN_MODEL, b"payload!", round=1, client=2))


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f[:10], "shorter"),
    (lambda f: b"XX" + f[2:], "magic"),
    (lambda f: f[:2] + b"\x09" + f[3:], "wire_version"),
    (lambda f: f[:3] + b"\xee" + f[4:], "kind"),
    (lambda f: f[:6] + b"\x01\x00" + f[8:], "reserved"),
    (lambda f: f[:-1], "payload_len"),
    (lambda f: f + b"\0", "payload_len"),
    (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "crc32"),
    (lambda f: f[:16] + struct.pack("<I", 2**31) + f[20:], "payload_len"),
])
def test_broken_frames_are_rejected(mutate, match):
    with pytest.raises(WireFormatError, match=match):
        wire.unpack_frame(bytes(mutate(_frame())))


def test_max_payload_is_checked_before_the_crc():
    f = wire.pack_frame(Kind.UP_UPDATE, bytes(100))
    with pytest.raises(WireFormatError, match="expected maximum"):
        wire.unpack_frame(f, max_payload=50)


def test_section_reader_rejects_lengths_past_the_buffer():
    r = wire.SectionReader(bytes(8), "x")
    with pytest.raises(WireFormatError, match="declares"):
        r.bytes(2**40, "huge")
    with pytest.raises(WireFormatError, match="negative"):
        r.array("<f4", -1, "neg")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_never_crash(data):
    try:
        wire.unpack_frame(data)
    except WireFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 31), st.integers(0, 255))
def test_any_single_byte_corruption_is_detected(pos, value):
    f = _frame()
    if f[pos] == value:
        return
    f[pos] = value
    try:
        h, p = wire.unpack_frame(bytes(f))
    except WireFormatError:
        return
    # only fields that carry no integrity constraint may change undetected
    assert pos in range(3, 6) or pos in range(8, 16)  # kind, codec, flags, round, client


_SECTIONS = st.lists(st.binary(max_size=64), max_size=5)


@given(_SECTIONS, st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 7))
@settings(max_examples=200, deadline=None)
def test_a_frame_is_the_bytes_pack_frame_builds(sections, rnd, codec, flags):
    f = wire.frame(Kind.UP_UPDATE, sections, round=rnd, client=5, codec=codec, flags=flags)
    packed = wire.pack_frame(Kind.UP_UPDATE, sections, round=rnd, client=5, codec=codec,
                             flags=flags)
    assert f.nbytes == packed.shape[0]
    np.testing.assert_array_equal(f.contiguous(), packed)
    np.testing.assert_array_equal(f.header(), packed[:wire.HEADER_SIZE])


def test_a_frame_references_its_sections_and_shares_one_crc():
    x = np.arange(1000, dtype=np.float32)
    body = wire.payload([b"pre", x])
    assert body._crc is None  # nothing read yet
    a = wire.frame(Kind.DOWN_MODEL, body, client=1)
    b = wire.frame(Kind.DOWN_MODEL, body, client=2)
    assert np.shares_memory(np.frombuffer(body.parts[-1], np.float32), x)  # not copied
    ha, _ = wire.unpack_frame(a.contiguous())
    hb, _ = wire.unpack_frame(b.contiguous())
    assert ha.crc32 == hb.crc32 == zlib.crc32(bytes(a.contiguous()[wire.HEADER_SIZE:]))
    assert (ha.client, hb.client) == (1, 2)


def test_an_unchecked_frame_needs_a_receiver_that_allows_it():
    f = wire.frame(Kind.UP_UPDATE, [b"abcd", np.ones(3, np.float32)], round=2, client=3, flags=1)
    raw = f.contiguous(checksum=False)
    h = wire.HEADER.unpack_from(raw, 0)
    assert h[4] == 1 | wire.Flag.UNCHECKED and h[-1] == 0  # flags, crc32
    with pytest.raises(WireFormatError, match="UNCHECKED"):
        wire.unpack_frame(raw)
    h, p = wire.unpack_frame(raw, unchecked=True)
    assert bytes(p) == bytes(f.contiguous()[wire.HEADER_SIZE:])
    # a checked frame is still checked by a receiver that allows unchecked ones
    good = f.contiguous()
    good[-1] ^= 1
    with pytest.raises(WireFormatError, match="crc32"):
        wire.unpack_frame(good, unchecked=True)
    # UNCHECKED with a non-zero crc32 field is malformed
    raw[20] = 1
    with pytest.raises(WireFormatError, match="UNCHECKED frame"):
        wire.unpack_frame(raw, unchecked=True)

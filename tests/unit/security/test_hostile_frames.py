"""Hostile and broken UP_UPDATE frames, case by case, for every codec (issue item 1).

Each case goes through the server's receive path (``unpack_frame`` -> ``protocol.uplink_body`` ->
``compress.base.decode_payload``, as ``benchmarks/fuzz_frames.py`` runs it) and must raise
``WireFormatError`` (a ``ValueError``; the server logs it as ``update_rejected`` and drops the
update). Allocations are measured with tracemalloc: a declared size is never allocated before
it is checked.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from fedsqueeze import compress
from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Kind
from fedsqueeze.compress.base import decode_payload, parse_payload
from fedsqueeze.errors import UnknownCodecError, WireFormatError
from fedsqueeze.fl import protocol as P
from fedsqueeze.fl.downlink import DownlinkReceiver

from ._engine import fuzz, target

CODECS = compress.available()
BODY = wire.HEADER_SIZE + P.UP_PRE.size  # offset of the codec payload in an uplink frame
D = fuzz().N_PARAMS
U32 = struct.Struct("<I")

LENGTH_FIELDS = {
    # codec: {offset of a u32 length/count field in the codec payload: name}
    "topk": {0: "k", 8: "pos_bytes"},
    "randk": {0: "k"},
    "stc": {0: "k", 12: "pos_bits"},
    "hdq": {0: "k", 8: "tier[0].k_h", 24: "tier[0].pos_bytes"},
    "qsgd": {4: "bucket"},
    "adaquant": {4: "bucket"},
    "countsketch": {4: "cols"},
}
"""Codecs whose payload declares lengths; the others take every size from the run's config."""
SCALAR_FLOATS = {"stc": (4,), "hdq": (12, 16)}
"""f32 scalars inside preambles (STC's ``mu``, HDQ's first tier ``lo``/``hi``)."""
HALF_FLOATS = {"fp16": 0x7C00, "bf16": 0x7F80}
"""Codecs whose value section is 16-bit floats, with their exponent mask."""
NO_FLOATS = {"signsgd"}
"""Codecs whose payload holds no float at all (one sign bit per coordinate)."""
F32_PATTERNS = {"nan": 0x7FC00000, "-nan": 0xFFC00000, "snan": 0x7F800001, "inf": 0x7F800000,
                "-inf": 0xFF800000}
HALF_PATTERNS = {"nan": (0x7E00, 0x7FC0), "-nan": (0xFE00, 0xFFC0), "snan": (0x7C01, 0x7F81),
                 "inf": (0x7C00, 0x7F80), "-inf": (0xFC00, 0xFF80)}


def refix(frame: bytes | bytearray) -> bytes:
    """Recompute payload_len and CRC32 so that only the codec's own checks can reject it."""
    f = bytearray(frame)
    U32.pack_into(f, 16, len(f) - wire.HEADER_SIZE)
    U32.pack_into(f, 20, zlib.crc32(f[wire.HEADER_SIZE:]))
    return bytes(f)


def server_decode(codec_id: str, frame) -> tuple[object, int]:
    """``(result or exception, tracemalloc peak bytes)`` of the server path for ``frame``."""
    t = target(codec_id)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        try:
            out = t.decode(frame)
        except Exception as exc:  # noqa: BLE001 - the caller asserts the type
            out = exc
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return out, peak


def assert_rejected(codec_id: str, frame, match: str | None = None, *,
                    max_alloc: int = fuzz().ALLOC_LIMIT) -> WireFormatError:
    out, peak = server_decode(codec_id, frame)
    assert isinstance(out, WireFormatError), f"{codec_id}: expected a rejection, got {out!r}"
    if match is not None:
        assert match in str(out), f"{codec_id}: {out} does not mention {match!r}"
    assert peak <= max_alloc, f"{codec_id}: rejecting allocated {peak} bytes (> {max_alloc})"
    return out


def valid(codec_id: str) -> bytes:
    return target(codec_id).frames[0]


@pytest.mark.parametrize("codec_id", CODECS)
def test_the_valid_frames_are_accepted(codec_id):
    for f in target(codec_id).frames:
        out, _ = server_decode(codec_id, f)
        assert isinstance(out, np.ndarray) and out.shape == (D,) and np.isfinite(out).all()


# -- truncated, extended -------------------------------------------------------------------
@pytest.mark.parametrize("codec_id", CODECS)
@pytest.mark.parametrize("fix", [False, True], ids=["raw", "len+crc fixed"])
def test_truncated_frames_are_rejected(codec_id, fix):
    f = valid(codec_id)
    cuts = np.unique(np.linspace(0, len(f) - 1, 48).astype(int))
    for cut in cuts:
        g = f[:cut]
        if fix and cut >= wire.HEADER_SIZE:
            g = refix(g)
        assert_rejected(codec_id, g)


@pytest.mark.parametrize("codec_id", CODECS)
@pytest.mark.parametrize("extra", [b"\0" * 4, b"\xff" * 4, b"\0" * 4096])
def test_extended_frames_are_rejected(codec_id, extra):
    assert_rejected(codec_id, refix(valid(codec_id) + extra))
    assert_rejected(codec_id, valid(codec_id) + extra, "payload_len")


# -- header: magic, version, CRC, lengths, kind, codec index --------------------------------
@pytest.mark.parametrize("codec_id", CODECS)
@pytest.mark.parametrize("offset, value, match", [
    (0, b"XX", "magic"), (0, b"\0\0", "magic"), (1, b"R", "magic"),
    (2, b"\x00", "wire_version"), (2, b"\x02", "wire_version"), (2, b"\xff", "wire_version"),
    (3, b"\x00", "kind"), (3, b"\xee", "kind"), (3, bytes([Kind.METRICS]), "UP_UPDATE"),
    (6, b"\x01\x00", "reserved"),
])
def test_bad_header_fields_are_rejected(codec_id, offset, value, match):
    f = bytearray(valid(codec_id))
    f[offset:offset + len(value)] = value
    assert_rejected(codec_id, bytes(f), match)


@pytest.mark.parametrize("codec_id", CODECS)
@pytest.mark.parametrize("where", ["first", "last", "n_i"])
def test_crc_mismatch_is_rejected(codec_id, where):
    f = bytearray(valid(codec_id))
    pos = {"first": BODY, "last": len(f) - 1, "n_i": wire.HEADER_SIZE}[where]
    f[pos] ^= 0x10
    assert_rejected(codec_id, bytes(f), "crc32", max_alloc=16 << 10)


@pytest.mark.parametrize("codec_id", CODECS)
@pytest.mark.parametrize("plen", [lambda n: n + 1, lambda n: n + 4, lambda n: n - 4,
                                  lambda n: 0x7FFFFFFF, lambda n: 0xFFFFFFFF],
                         ids=["+1", "+4", "-4", "2^31-1", "2^32-1"])
def test_payload_len_past_the_buffer_is_rejected_without_allocating(codec_id, plen):
    f = bytearray(valid(codec_id))
    U32.pack_into(f, 16, plen(len(f) - wire.HEADER_SIZE) & 0xFFFFFFFF)
    assert_rejected(codec_id, bytes(f), "payload_len", max_alloc=16 << 10)


@pytest.mark.parametrize("codec_id", CODECS)
def test_a_payload_far_beyond_the_model_size_is_rejected_before_the_crc(codec_id):
    t = target(codec_id)
    big = wire.pack_frame(Kind.UP_UPDATE, bytes(64 << 20), round=fuzz().ROUND,
                          client=fuzz().CLIENT)  # 64 MiB, a valid CRC
    out = assert_rejected(codec_id, big, "expected maximum", max_alloc=16 << 10)
    assert str(t.max_payload) in str(out)


@pytest.mark.parametrize("codec_id", CODECS)
@pytest.mark.parametrize("index", [1, 2, 7, 255])
def test_an_unknown_codec_index_is_rejected(codec_id, index):
    f = bytearray(valid(codec_id))
    f[4] = index
    assert_rejected(codec_id, bytes(f), "codec index")


@pytest.mark.parametrize("cut", [0, 1, 3])
def test_an_uplink_without_n_i_is_rejected(cut):
    # fl/server.py used struct.unpack_from here: a 0..3 byte payload raised struct.error, which
    # is no ValueError, and stopped the server instead of rejecting the update
    payload = b"\x25\0\0\0"[:cut]  # pack_frame would pad it to 4 bytes: build it by hand
    f = wire.HEADER.pack(wire.MAGIC, wire.WIRE_VERSION, Kind.UP_UPDATE, 0, 0, 0, 0, 0, cut,
                         zlib.crc32(payload)) + payload
    h, p = wire.unpack_frame(f)
    with pytest.raises(WireFormatError, match="no u32 n_i"):
        P.uplink_body(h, p)


def test_the_worker_rejects_a_downlink_codec_index_outside_the_setup_table():
    table = tuple(range(P.N_CODECS))
    for ok in table:
        h, _ = wire.unpack_frame(wire.pack_frame(Kind.DOWN_MODEL, bytes(4), codec=ok))
        P.check_codec_index(h, table, "DOWN_MODEL")
    h, _ = wire.unpack_frame(wire.pack_frame(Kind.DOWN_MODEL, bytes(4), codec=P.N_CODECS))
    with pytest.raises(WireFormatError, match="codec index 2"):
        P.check_codec_index(h, table, "DOWN_MODEL")


@pytest.mark.parametrize("cid", ["nope", "", "identity\0", "../base"])
def test_an_unknown_codec_id_in_a_config_is_rejected(cid):
    with pytest.raises(UnknownCodecError) as info:
        compress.from_config({"id": cid})
    assert isinstance(info.value, ValueError)


# -- declared sizes inside the codec payload -----------------------------------------------
@pytest.mark.parametrize("codec_id, offset", [(c, o) for c, fields in LENGTH_FIELDS.items()
                                              for o in fields])
@pytest.mark.parametrize("value", [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 1 << 24, 0])
def test_huge_declared_lengths_are_rejected_without_allocation(codec_id, offset, value):
    f = bytearray(valid(codec_id))
    (old,) = U32.unpack_from(f, BODY + offset)
    if value == old:
        pytest.skip("the valid frame already holds this value")
    U32.pack_into(f, BODY + offset, value)
    # less than one model's worth of bytes: nothing was sized from the declared value
    assert_rejected(codec_id, refix(f), LENGTH_FIELDS[codec_id][offset].split(".")[-1],
                    max_alloc=4 * D)


@pytest.mark.parametrize("codec_id", CODECS)
def test_any_preamble_word_set_to_huge_values_never_crashes(codec_id):
    f = valid(codec_id)
    for off in range(0, min(64, len(f) - BODY - 3), 4):
        for value in (0xFFFFFFFF, 0x7FFFFFFF, 0x10000):
            g = bytearray(f)
            U32.pack_into(g, BODY + off, value)
            out, peak = server_decode(codec_id, refix(g))
            assert isinstance(out, (WireFormatError, np.ndarray)), (off, value, out)
            assert peak <= fuzz().ALLOC_LIMIT, (off, value, peak)
            if isinstance(out, np.ndarray):
                assert out.shape == (D,) and np.isfinite(out).all()


# -- NaN / Inf ---------------------------------------------------------------------------------
def float_positions(codec_id: str) -> list[tuple[int, int]]:
    """``(offset in the codec payload, width)`` of the first and last value of every float
    section of a valid payload (found from the parsed sections' addresses), plus preamble
    scalars."""
    t = target(codec_id)
    frame = np.frombuffer(valid(codec_id), dtype=np.uint8)
    body = frame[BODY:]
    enc = parse_payload(t.codec, body, D, t.seed)
    start = body.__array_interface__["data"][0]
    out = [(o, 4) for o in SCALAR_FLOATS.get(codec_id, ())]
    for s in enc.sections:
        if not isinstance(s, np.ndarray) or s.size == 0:
            continue
        is_half = codec_id in HALF_FLOATS and s.dtype.itemsize == 2
        if not (s.dtype.kind == "f" or is_half):
            continue
        addr = s.__array_interface__["data"][0] - start
        if 0 <= addr < body.shape[0]:
            w = s.dtype.itemsize
            out += [(addr, w), (addr + (s.size - 1) * w, w)]
    return sorted(set(out))


@pytest.mark.parametrize("codec_id", CODECS)
def test_every_codec_but_signsgd_has_float_sections(codec_id):
    assert bool(float_positions(codec_id)) == (codec_id not in NO_FLOATS)


def inject(codec_id: str, off: int, width: int, pattern: str) -> bytearray:
    """The valid frame with the float at ``off`` (codec payload) replaced by ``pattern``."""
    f = bytearray(valid(codec_id))
    if width == 4:
        U32.pack_into(f, BODY + off, F32_PATTERNS[pattern])
    else:
        struct.pack_into("<H", f, BODY + off, HALF_PATTERNS[pattern][codec_id == "bf16"])
    return f


@pytest.mark.parametrize("codec_id", sorted(set(CODECS) - NO_FLOATS))
@pytest.mark.parametrize("pattern", list(F32_PATTERNS))
def test_nan_and_inf_in_any_float_section_are_rejected(codec_id, pattern):
    failures = []
    for off, width in float_positions(codec_id):
        out, _ = server_decode(codec_id, refix(inject(codec_id, off, width, pattern)))
        if not isinstance(out, WireFormatError):
            failures.append((off, out))
    assert not failures, f"{codec_id}: {pattern} accepted at {failures}"


@pytest.mark.parametrize("codec_id", sorted(set(CODECS) - NO_FLOATS))
def test_nan_is_rejected_by_parse_itself(codec_id):
    """The codec's own parse rejects a NaN in its float sections (not only the decode check)."""
    t = target(codec_id)
    for off, width in float_positions(codec_id):
        f = inject(codec_id, off, width, "nan")
        with pytest.raises(WireFormatError):
            parse_payload(t.codec, bytes(f[BODY:]), D, t.seed)


@pytest.mark.parametrize("codec_id", ["randk", "igc_static", "igc_ksub", "igc_timevarying",
                                      "identity", "topk"])
def test_finite_values_that_overflow_on_decode_are_rejected(codec_id):
    """Every value of every float section = f32 max: random-k scales by D / k and IGC sums
    projections, so both overflow to Inf and ``decode_payload`` rejects them; codecs that copy
    values (identity, top-k) accept the finite vector."""
    t = target(codec_id)
    frame = np.frombuffer(valid(codec_id), dtype=np.uint8).copy()
    body = frame[BODY:]
    for s in parse_payload(t.codec, body, D, t.seed).sections:
        if isinstance(s, np.ndarray) and s.dtype.kind == "f" and s.size:
            s = np.ndarray(s.shape, s.dtype, buffer=body,
                           offset=s.__array_interface__["data"][0]
                           - body.__array_interface__["data"][0])
            s[...] = np.finfo(np.float32).max
    out, _ = server_decode(codec_id, refix(frame.tobytes()))
    if codec_id in ("identity", "topk"):
        assert isinstance(out, np.ndarray) and np.isfinite(out).all()
        assert out.max() == np.finfo(np.float32).max
    else:
        assert isinstance(out, WireFormatError) and "decoded vector" in str(out), out


def test_decode_payload_names_the_codec_and_stays_quiet_on_overflow():
    c = compress.from_config({"id": "randk", "rho": 0.5})
    payload = struct.pack("<I", 2) + np.full(2, 3e38, "<f4").tobytes()
    with np.errstate(all="raise"):  # the decode's own errstate wins: no FloatingPointError
        with pytest.raises(WireFormatError, match="randk: decoded vector"):
            decode_payload(c, payload, 4, c.message_seed(1, 0, 0))


# -- downlinks and system payloads ---------------------------------------------------------------
@pytest.mark.parametrize("policy, flags", [("dense", 1), ("delta", 1)])
def test_a_non_finite_downlink_model_is_rejected(policy, flags):
    codec = compress.from_config({"id": "identity"})
    rx = DownlinkReceiver(codec, 8, policy, {}, seed=1)
    w = np.ones(8, "<f4")
    assert rx.receive(0, 3, flags, w.tobytes()).tolist() == [1.0] * 8
    w[5] = np.inf
    with pytest.raises(WireFormatError, match="NaN or Inf"):
        rx.receive(1, 3, flags, w.tobytes())


@pytest.mark.parametrize("count", [2, 1 << 20, 0xFFFFFFFF])
def test_a_replay_downlink_with_a_bogus_count_is_rejected(count):
    codec = compress.from_config({"id": "identity"})
    store = {("view", 3): np.zeros(8, np.float32)}
    rx = DownlinkReceiver(codec, 8, "delta", store, seed=1)
    one = struct.pack("<III", count, 0, 32) + bytes(32)
    tracemalloc.start()
    try:
        with pytest.raises(WireFormatError):
            rx.receive(1, 3, 2, one)
        assert tracemalloc.get_traced_memory()[1] < 64 << 10
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("payload", [b"[" * 100_000 + b"]" * 100_000, b"1" * 5000, b"\xff\xfe",
                                     b'{"a": ', b"NaN-ish"], ids=["deep", "digits", "utf8",
                                                                  "short", "junk"])
def test_malformed_json_system_payloads_are_rejected(payload):
    with pytest.raises(WireFormatError, match="invalid JSON"):
        P.parse_json(payload, "METRICS")


@pytest.mark.parametrize("m, n_down", [(0xFFFFFFFF, 1), (3, 0xFFFFFFFF), (1 << 20, 1)])
def test_a_task_list_with_huge_counts_is_rejected_without_allocation(m, n_down):
    payload = P.TASK_PRE.pack(0, 1, m, n_down)
    tracemalloc.start()
    try:
        with pytest.raises(WireFormatError):
            P.TaskList.parse(payload, max_clients=100)
        assert tracemalloc.get_traced_memory()[1] < 16 << 10
    finally:
        tracemalloc.stop()

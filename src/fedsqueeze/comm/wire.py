"""The wire frame: a 24-byte little-endian header and a payload of 4-byte aligned sections.

Bytes only: this module never imports MPI. Layout (STYLE.md section 4, METHODS.md section 0.5):

======  =====  ============  ==========================================
offset  bytes  field         notes
======  =====  ============  ==========================================
0       2      magic         ``b"FQ"``
2       1      wire_version  1
3       1      kind          :class:`~fedsqueeze.comm.tags.Kind`
4       1      codec         index into the SETUP frame's codec table
5       1      flags         :class:`~fedsqueeze.comm.tags.Flag`
6       2      reserved      0
8       4      round         u32
12      4      client        u32 (``0xFFFFFFFF`` = system traffic)
16      4      payload_len   u32
20      4      crc32         CRC32 (zlib) of the payload
======  =====  ============  ==========================================

>>> f = pack_frame(Kind.METRICS, b"abcd", round=3, client=7)
>>> h, p = unpack_frame(f)
>>> (h.kind, h.round, h.client, bytes(p))
(<Kind.METRICS: 8>, 3, 7, b'abcd')
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import WireFormatError
from .tags import Flag, Kind

__all__ = [
    "MAGIC",
    "WIRE_VERSION",
    "HEADER",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "Header",
    "Payload",
    "Frame",
    "payload",
    "frame",
    "pack_frame",
    "unpack_frame",
    "pad4",
    "join_sections",
    "SectionReader",
]

try:  # ISA-L's CRC-32: the same polynomial and values as zlib's, ~4x faster (optional)
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - depends on the environment
    from zlib import crc32

_CHUNK = 1 << 20  # pack_frame copies and checksums in chunks that stay in cache

MAGIC = b"FQ"
WIRE_VERSION = 1
ACCEPTED_VERSIONS = (WIRE_VERSION,)
HEADER = struct.Struct("<2sBBBBHIIII")
HEADER_SIZE = HEADER.size  # 24
MAX_PAYLOAD = 2**32 - 1
_ZEROS = bytes(4)


def pad4(n: int) -> int:
    """Round ``n`` up to a multiple of 4."""
    return (n + 3) & ~3


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded, validated frame header."""

    kind: Kind
    codec: int
    flags: int
    round: int
    client: int
    payload_len: int
    crc32: int


def join_sections(sections: Iterable[bytes | memoryview | np.ndarray]) -> list[memoryview]:
    """Views of ``sections`` with zero padding so each starts at a 4-byte aligned offset."""
    out: list[memoryview] = []
    for s in sections:
        m = memoryview(s).cast("B") if not isinstance(s, np.ndarray) else memoryview(
            np.ascontiguousarray(s).view(np.uint8).reshape(-1))
        out.append(m)
        r = (-len(m)) & 3
        if r:
            out.append(memoryview(_ZEROS[:r]))
    return out


class Payload:
    """A payload's sections as 4-byte aligned views, with their total length and CRC32.

    Nothing is copied: the views keep the section arrays alive. The CRC32 is computed on first
    use and shared by every frame that carries the same payload (a broadcast to several workers).
    """

    __slots__ = ("parts", "nbytes", "_crc")

    def __init__(self, parts: list[memoryview]) -> None:
        self.parts = tuple(parts)
        self.nbytes = sum(len(p) for p in self.parts)
        if self.nbytes > MAX_PAYLOAD:
            raise WireFormatError(
                f"payload_len = {self.nbytes} exceeds the u32 limit {MAX_PAYLOAD}")
        self._crc: int | None = None

    @property
    def crc(self) -> int:
        if self._crc is None:
            crc = 0
            for p in self.parts:
                crc = crc32(p, crc)
            self._crc = crc
        return self._crc


def payload(sections: bytes | memoryview | np.ndarray | Iterable) -> Payload:
    """A :class:`Payload` of one buffer or of a list or tuple of sections (4-byte aligned)."""
    return Payload(join_sections(sections) if isinstance(sections, (list, tuple))
                   else join_sections([sections]))


class Frame:
    """A frame as its header fields and references to its payload sections.

    What goes on the wire is the same bytes as :func:`pack_frame` builds; the transport sends
    header and sections as one MPI message (a derived datatype over their addresses), so a large
    payload is never copied on the sending side. The sections must not change until the send has
    completed (``wait_sends``); a section that did would arrive with a CRC mismatch and be
    rejected, never accepted corrupted. The header is made when the frame is sent:
    :meth:`header` with ``checksum=False`` sets ``Flag.UNCHECKED`` and a zero crc32 field instead
    of reading the payload (``fl.checksum = false``).
    """

    __slots__ = ("kind", "payload", "round", "client", "codec", "flags")

    def __init__(self, kind: int, payload: Payload, *, round: int = 0, client: int = 0xFFFFFFFF,
                 codec: int = 0, flags: int = 0) -> None:
        self.kind, self.payload = kind, payload
        self.round, self.client, self.codec, self.flags = round, client, codec, flags

    @property
    def nbytes(self) -> int:
        return HEADER_SIZE + self.payload.nbytes

    def header(self, checksum: bool = True) -> np.ndarray:
        """The 24 header bytes (``uint8`` array)."""
        flags, crc = (self.flags, self.payload.crc) if checksum else \
            (self.flags | Flag.UNCHECKED, 0)
        return _header(self.kind, self.payload.nbytes, crc, round=self.round, client=self.client,
                       codec=self.codec, flags=flags)

    def contiguous(self, checksum: bool = True) -> np.ndarray:
        """The frame as one ``uint8`` array (a copy)."""
        out = np.empty(self.nbytes, dtype=np.uint8)
        out[:HEADER_SIZE] = self.header(checksum)
        pos = HEADER_SIZE
        mv = memoryview(out)
        for p in self.payload.parts:
            mv[pos:pos + len(p)] = p
            pos += len(p)
        return out


def _header(kind: int, n: int, crc: int, *, round: int, client: int, codec: int,
            flags: int) -> np.ndarray:
    h = np.empty(HEADER_SIZE, dtype=np.uint8)
    HEADER.pack_into(h, 0, MAGIC, WIRE_VERSION, int(kind), codec, int(flags), 0,
                     round & 0xFFFFFFFF, client & 0xFFFFFFFF, n, crc)
    return h


def frame(kind: int, body: Payload | bytes | memoryview | np.ndarray | Iterable, *, round: int = 0,
          client: int = 0xFFFFFFFF, codec: int = 0, flags: int = 0) -> Frame:
    """A :class:`Frame`: header fields and referenced sections (the payload is not copied).

    ``body`` is a :class:`Payload` (shared, with its CRC) or anything :func:`payload` takes.

    >>> f = frame(Kind.METRICS, [b"ab", b"cdef"], round=1, client=2)
    >>> f.nbytes, bytes(f.contiguous()) == bytes(pack_frame(Kind.METRICS, [b"ab", b"cdef"],
    ...                                                     round=1, client=2))
    (32, True)
    """
    p = body if isinstance(body, Payload) else payload(body)
    return Frame(kind, p, round=round, client=client, codec=codec, flags=flags)


def pack_frame(kind: int, payload: bytes | memoryview | np.ndarray | Iterable, *, round: int = 0,
               client: int = 0xFFFFFFFF, codec: int = 0, flags: int = 0) -> np.ndarray:
    """Build one contiguous frame (``uint8`` array) from a payload or an iterable of sections.

    A list or tuple of sections is joined with :func:`join_sections` (4-byte alignment). The
    payload is copied (use :func:`frame` to send large payloads without a copy).
    """
    parts = join_sections(payload) if isinstance(payload, (list, tuple)) else join_sections([payload])
    n = sum(len(p) for p in parts)
    if n > MAX_PAYLOAD:
        raise WireFormatError(f"payload_len = {n} exceeds the u32 limit {MAX_PAYLOAD}")
    out = np.empty(HEADER_SIZE + n, dtype=np.uint8)
    mv = memoryview(out)
    pos = HEADER_SIZE
    crc = 0
    for p in parts:
        for i in range(0, len(p), _CHUNK):  # the CRC reads the chunk just copied, from cache
            c = p[i:i + _CHUNK]
            mv[pos:pos + len(c)] = c
            crc = crc32(mv[pos:pos + len(c)], crc)
            pos += len(c)
    out[:HEADER_SIZE] = _header(kind, n, crc, round=round, client=client, codec=codec,
                                flags=flags)
    return out


def unpack_frame(buffer, *, max_payload: int | None = None,
                 unchecked: bool = False) -> tuple[Header, memoryview]:
    """Validate a frame and return its header and a view of its payload (nothing is copied).

    Checks, in order, before anything is allocated: length >= 24, magic, wire_version, kind,
    ``24 + payload_len == len(buffer)``, ``payload_len <= max_payload`` and the CRC32. A frame
    flagged ``UNCHECKED`` (no CRC32, field 0) is accepted only with ``unchecked=True`` (a run
    with ``fl.checksum = false``); the CRC32 of other frames is always checked.
    Every failure raises :class:`~fedsqueeze.errors.WireFormatError` naming the field.
    """
    mv = memoryview(buffer).cast("B") if not isinstance(buffer, np.ndarray) else memoryview(
        buffer.view(np.uint8).reshape(-1))
    if len(mv) < HEADER_SIZE:
        raise WireFormatError(f"frame of {len(mv)} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, kind, codec, flags, reserved, rnd, client, plen, crc = HEADER.unpack_from(mv, 0)
    if magic != MAGIC:
        raise WireFormatError(f"magic = {bytes(magic)!r}, expected {MAGIC!r}")
    if version not in ACCEPTED_VERSIONS:
        raise WireFormatError(f"wire_version = {version}, this reader accepts {ACCEPTED_VERSIONS}")
    try:
        kind = Kind(kind)
    except ValueError:
        raise WireFormatError(f"kind = {kind} is not a known message kind") from None
    if reserved != 0:
        raise WireFormatError(f"reserved = {reserved}, expected 0")
    if HEADER_SIZE + plen != len(mv):
        raise WireFormatError(
            f"payload_len = {plen} but the frame holds {len(mv) - HEADER_SIZE} payload bytes")
    if max_payload is not None and plen > max_payload:
        raise WireFormatError(f"payload_len = {plen} exceeds the expected maximum {max_payload}")
    payload = mv[HEADER_SIZE:]
    if flags & Flag.UNCHECKED:
        if not unchecked:
            raise WireFormatError("flags: the frame is UNCHECKED (no CRC32) but this receiver "
                                  "requires checksums (fl.checksum = true)")
        if crc != 0:
            raise WireFormatError(f"crc32 = {crc:#010x} in an UNCHECKED frame, expected 0")
        return Header(kind, codec, flags, rnd, client, plen, crc), payload
    got = crc32(payload)
    if got != crc:
        raise WireFormatError(f"crc32 = {crc:#010x} but the payload's CRC32 is {got:#010x}")
    return Header(kind, codec, flags, rnd, client, plen, crc), payload


class SectionReader:
    """Sequential, bounds-checked reader of a payload's 4-byte aligned sections.

    Every read checks the remaining length first, so a hostile length can never cause an
    allocation or an out-of-bounds view. Errors name the section.
    """

    __slots__ = ("_mv", "_pos", "what")

    def __init__(self, payload, what: str = "payload") -> None:
        self._mv = memoryview(payload).cast("B")
        self._pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self._mv) - self._pos

    @property
    def position(self) -> int:
        return self._pos

    def struct(self, fmt: struct.Struct, name: str) -> tuple:
        """Unpack a scalar preamble (its size must be a multiple of 4)."""
        if fmt.size > self.remaining:
            raise WireFormatError(
                f"{self.what}: {name} needs {fmt.size} bytes, {self.remaining} remain")
        vals = fmt.unpack_from(self._mv, self._pos)
        self._pos += pad4(fmt.size)
        return vals

    def bytes(self, nbytes: int, name: str) -> memoryview:
        """A view of the next ``nbytes`` bytes; the cursor then skips to the next 4-byte boundary."""
        if nbytes < 0 or pad4(nbytes) > self.remaining:
            raise WireFormatError(
                f"{self.what}: section {name} declares {nbytes} bytes, {self.remaining} remain")
        v = self._mv[self._pos:self._pos + nbytes]
        if any(self._mv[self._pos + nbytes:self._pos + pad4(nbytes)]):
            raise WireFormatError(f"{self.what}: non-zero padding after section {name}")
        self._pos += pad4(nbytes)
        return v

    def array(self, dtype, count: int, name: str) -> np.ndarray:
        """A read-only NumPy view of ``count`` items of ``dtype`` (little-endian on the wire)."""
        dt = np.dtype(dtype).newbyteorder("<")
        if count < 0:
            raise WireFormatError(f"{self.what}: section {name} has negative count {count}")
        v = self.bytes(count * dt.itemsize, name)
        return np.frombuffer(v, dtype=dt, count=count)

    def finish(self) -> None:
        """Raise unless every byte was consumed."""
        if self.remaining:
            raise WireFormatError(f"{self.what}: {self.remaining} trailing bytes")

"""Orchestration payloads (system traffic): task lists, metrics and setup. Structs and JSON only."""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

from ..comm.tags import Kind
from ..comm.wire import SectionReader
from ..errors import WireFormatError
from .strategy_types import UP_PRE

TASK_PRE = struct.Struct("<IIII")  # cmd, round, m, n_down

CODEC_UP, CODEC_DOWN = 0, 1
"""Indices of the SETUP frame's codec table (``"codecs": [up, down]``); an uplink frame names
the uplink codec in its header's ``codec`` byte."""
N_CODECS = 2
"""Entries of that table."""


def check_codec_index(header, allowed, what: str) -> None:
    """:class:`WireFormatError` unless ``header.codec`` is one of ``allowed`` (table indices)."""
    if header.codec not in allowed:
        raise WireFormatError(f"{what}: header codec index {header.codec} is not in the codec "
                              f"table (accepted here: {sorted(allowed)})")


def uplink_body(header, payload) -> tuple[int, memoryview]:
    """``(n_i, codec payload)`` of a validated UP_UPDATE frame (``WireFormatError`` otherwise).

    Checks the kind, that the header names the uplink codec (:data:`CODEC_UP`) and that the
    payload holds the ``u32 n_i`` preamble; the codec payload itself is the codec's to check.
    """
    if header.kind != Kind.UP_UPDATE:
        raise WireFormatError(f"UP_UPDATE: frame kind is {header.kind!r}")
    check_codec_index(header, (CODEC_UP,), "UP_UPDATE")
    mv = memoryview(payload).cast("B")
    if len(mv) < UP_PRE.size:
        raise WireFormatError(f"UP_UPDATE: payload of {len(mv)} bytes has no u32 n_i")
    (n,) = UP_PRE.unpack_from(mv, 0)
    return n, mv[UP_PRE.size:]


class Cmd(enum.IntEnum):
    ROUND = 0
    STOP = 1
    CHECKPOINT = 2


@dataclass
class TaskList:
    """What a worker does in one round: its clients (increasing id), the index of each client's
    downlink frame among the frames that follow, and which clients drop out (simulated)."""

    cmd: Cmd
    round: int
    clients: np.ndarray
    down_index: np.ndarray
    drop: np.ndarray
    n_down: int

    def sections(self) -> tuple:
        m = self.clients.shape[0]
        return (TASK_PRE.pack(int(self.cmd), self.round, m, self.n_down),
                self.clients.astype("<u4"), self.down_index.astype("<u4"),
                self.drop.astype(np.uint8))

    @classmethod
    def parse(cls, payload, max_clients: int) -> TaskList:
        r = SectionReader(payload, "task list")
        cmd, rnd, m, n_down = r.struct(TASK_PRE, "preamble")
        if m > max_clients or n_down > max(m, 1):
            raise WireFormatError(f"task list: m = {m}, n_down = {n_down} exceed {max_clients}")
        clients = r.array("<u4", m, "clients").astype(np.int64)
        down = r.array("<u4", m, "down_index").astype(np.int64)
        drop = r.array("u1", m, "drop").astype(bool)
        r.finish()
        if m and (down.max() >= n_down or clients.max() >= max_clients):
            raise WireFormatError("task list: index out of range")
        try:
            cmd = Cmd(cmd)
        except ValueError:
            raise WireFormatError(f"task list: unknown command {cmd}") from None
        return cls(cmd, rnd, clients, down, drop, n_down)


def json_payload(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def parse_json(payload, what: str, max_bytes: int = 64 << 20):
    if len(payload) > max_bytes:
        raise WireFormatError(f"{what}: {len(payload)} bytes exceed {max_bytes}")
    try:
        return json.loads(bytes(payload).rstrip(b"\0"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, int digit limit, depth
        raise WireFormatError(f"{what}: invalid JSON: {type(exc).__name__}: {exc}") from None


def config_hash(config_json: str) -> int:
    """u64 hash of the resolved config (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(config_json.encode()).digest()[:8], "little")


SETUP_PER_CLIENT = struct.Struct("<QQ")  # run_seed, config_hash: the logical per-client setup

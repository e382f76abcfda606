"""Orchestration payloads (system traffic): task lists, metrics and setup. Structs and JSON only."""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from dataclasses import dataclass

import numpy as np

from ..comm.wire import SectionReader
from ..errors import WireFormatError

TASK_PRE = struct.Struct("<IIII")  # cmd, round, m, n_down


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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireFormatError(f"{what}: invalid JSON: {exc}") from None


def config_hash(config_json: str) -> int:
    """u64 hash of the resolved config (first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(config_json.encode()).digest()[:8], "little")


SETUP_PER_CLIENT = struct.Struct("<QQ")  # run_seed, config_hash: the logical per-client setup

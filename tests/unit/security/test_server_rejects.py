"""The server's round loop logs a hostile uplink, leaves it out of the round and carries on.

One real :class:`~fedsqueeze.fl.server.Server` (digits, identity uplink) over a
``LoopbackTransport``; a fake worker rank puts the clients' UP_UPDATE frames in its queue, some
valid and some hostile, then the METRICS frame. No MPI: the MPI tier
(``tests/mpi/test_reliability.py``) runs the same faults end to end.
"""

from __future__ import annotations

import collections
import zlib

import numpy as np
import pytest

from fedsqueeze import config as C
from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import SYSTEM_CLIENT, Kind
from fedsqueeze.comm.transport import LoopbackTransport
from fedsqueeze.fl import protocol as P
from fedsqueeze.fl.server import Server
from fedsqueeze.fl.world import build_world

KINDS = ["valid", "no n_i", "codec index", "nan", "truncated", "n_i", "crc"]
"""What each client sends (rotated per test case)."""
CLIENTS = len(KINDS) + 1
class _Log:
    """Stands in for the RunWriter: keeps what the server logs."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, str, str]] = []
        self.rounds: list[dict] = []

    def event(self, t, level, code, message) -> None:
        self.events.append((t, level, code, message))

    def append_round(self, row) -> None:
        self.rounds.append(dict(row))

    def __getattr__(self, name):  # append_clients, append_comm, append_system, flush, ...
        return lambda *a, **k: None


@pytest.fixture(scope="module")
def world():
    cfg = C.from_dict({"seed": 5, "data": {"name": "digits", "clients": CLIENTS,
                                           "partition": "iid"},
                       "model": {"name": "digits_mlp"}, "train": {"max_steps": 1},
                       "sampling": {"fraction": 1.0}, "fl": {"rounds": 2},
                       "compress": {"up": {"id": "identity"}}})
    return build_world(cfg)


def _raw(payload: bytes, *, t: int, c: int, codec: int = 0) -> np.ndarray:
    """An UP_UPDATE frame with exactly ``payload`` (no padding) and a correct CRC."""
    head = wire.HEADER.pack(wire.MAGIC, wire.WIRE_VERSION, Kind.UP_UPDATE, codec, 0, 0, t, c,
                            len(payload), zlib.crc32(payload))
    return np.frombuffer(head + payload, dtype=np.uint8)


def _uplink(world, c: int, t: int, kind: str) -> np.ndarray:
    n, D = int(world.samples[c]), world.n_params
    ok = np.full(D, 1e-3, "<f4")
    if kind == "valid":
        return _raw(P.UP_PRE.pack(n) + ok.tobytes(), t=t, c=c)
    if kind == "no n_i":  # a 2-byte payload: struct.error in the old server code
        return _raw(b"\x01\x02", t=t, c=c)
    if kind == "codec index":
        return _raw(P.UP_PRE.pack(n) + ok.tobytes(), t=t, c=c, codec=9)
    if kind == "nan":
        bad = ok.copy()
        bad[3] = np.nan
        return _raw(P.UP_PRE.pack(n) + bad.tobytes(), t=t, c=c)
    if kind == "truncated":
        return _raw(P.UP_PRE.pack(n) + ok.tobytes()[:-8], t=t, c=c)
    if kind == "n_i":
        return _raw(P.UP_PRE.pack(n + 1) + ok.tobytes(), t=t, c=c)
    if kind == "crc":  # fails in unpack_frame: logged as frame_rejected, the client is missing
        f = _raw(P.UP_PRE.pack(n) + ok.tobytes(), t=t, c=c).copy()
        f[-1] ^= 1
        return f
    raise ValueError(kind)



@pytest.mark.parametrize("rotate", [0, 3])
def test_hostile_uplinks_are_rejected_logged_and_the_round_completes(world, rotate):
    tx = LoopbackTransport(0, 2, collections.defaultdict(collections.deque))
    worker = tx.peer(1)
    log = _Log()
    server = Server(world, tx, log)
    server.setup()
    plan = {c: KINDS[(c + rotate) % len(KINDS)] for c in range(CLIENTS)}
    for t in range(2):
        for c in range(CLIENTS):  # the worker's frames, in increasing client id
            worker.send_frame(0, int(Kind.UP_UPDATE), _uplink(world, c, t, plan[c]))
        rows = [{"client": c, "loss": 1.0, "steps": 1, "t_train": 0.0, "t_encode": 0.0,
                 "sent_bytes": 0, "pad_bytes": 0, "theoretical_bits": 0.0, "diag": {}}
                for c in range(CLIENTS)]
        metrics = P.json_payload({"round": t, "rank": 1, "clients": rows, "state_bytes": 0})
        worker.send_frame(0, int(Kind.METRICS), wire.pack_frame(Kind.METRICS, metrics, round=t,
                                                          client=SYSTEM_CLIENT))
        w_before = server.strategy.weights.copy()
        row = server.run_round(t)
        n_valid = sum(k == "valid" for k in plan.values())
        n_crc = sum(k == "crc" for k in plan.values())
        assert (row["n_received"], row["n_rejected"], row["n_missing"]) == (
            n_valid, CLIENTS - n_valid - n_crc, n_crc)
        rejected = [e for e in log.events if e[0] == t and e[2] == "update_rejected"]
        assert len(rejected) == CLIENTS - n_valid - n_crc
        for c, k in plan.items():
            if k not in ("valid", "crc"):
                assert any(f"client {c}:" in e[3] for e in rejected), (c, k)
        assert [e for e in log.events if e[0] == t and e[2] == "frame_rejected"
                and "crc32" in e[3]]
        # only the valid updates moved the model, and it stays finite
        w = server.strategy.weights
        assert np.isfinite(w).all()
        np.testing.assert_allclose(w - w_before, 1e-3, rtol=1e-4)


@pytest.mark.parametrize("metrics", [
    b"[1, 2]",                                                   # not an object
    b'{"clients": 3}',                                           # clients not a list
    b'{"clients": [{"client": 99, "loss": 1.0}]}',               # not this worker's client
    b'{"clients": [{"client": true}]}',                          # a bool is no client id
    b'{"clients": [{"client": 0, "loss": "x"}]}',                # a string where a number goes
    b'{"clients": [{"client": 0, "diag": {"d": [1]}}]}',         # a list as a diagnostic
    b'{"clients": [], "state_bytes": -5}',                       # a negative count
    b'{"clients": [{"client": 0}]' + b" " * 10,                  # broken JSON
])
def test_a_hostile_metrics_frame_is_logged_and_the_round_completes(world, metrics):
    tx = LoopbackTransport(0, 2, collections.defaultdict(collections.deque))
    worker = tx.peer(1)
    log = _Log()
    server = Server(world, tx, log)
    server.setup()
    for c in range(CLIENTS):
        worker.send_frame(0, int(Kind.UP_UPDATE), _uplink(world, c, 0, "valid"))
    worker.send_frame(0, int(Kind.METRICS), wire.pack_frame(Kind.METRICS, metrics, round=0,
                                                            client=SYSTEM_CLIENT))
    row = server.run_round(0)
    assert row["n_received"] == CLIENTS
    assert [e for e in log.events if e[2] == "frame_rejected" and "METRICS from rank 1" in e[3]]

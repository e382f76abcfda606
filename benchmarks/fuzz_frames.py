"""Mutation fuzzing of UP_UPDATE frames through the server's receive path, for every codec.

For each codec id in :func:`fedsqueeze.compress.available` (its default config, with the run-level
arguments :func:`fedsqueeze.fl.world._codec` fills in: ``hash_seed``/``init_seed`` from the run
seed, ``shapes``/``segments`` from the model) the script builds valid uplink frames as a worker
does (``u32 n_i`` + codec sections, :func:`~fedsqueeze.comm.wire.pack_frame`) for a
4,810-parameter model, mutates them and feeds every mutant to the server's path:
:func:`~fedsqueeze.comm.wire.unpack_frame` -> :func:`fedsqueeze.fl.protocol.uplink_body` (kind,
codec index, ``n_i``) -> :func:`fedsqueeze.compress.base.decode_payload` (parse, decode, finite).

Mutations: bit flips, byte sets, truncation, extension, deletion/duplication/splicing of chunks,
u32/u16/u8 field edits with boundary values (lengths, counts, ``k``, section sizes), NaN/Inf/huge
float injections (f32, f16 and bf16 patterns), header edits (magic, version, kind, codec index,
reserved, payload_len, round, client) and ``n_i`` edits. Most mutants get a recomputed
``payload_len`` and CRC32, so the codec parsers are exercised and not just the CRC check.

Outcomes per frame:

rejected   ``WireFormatError`` or ``UpdateRejected``: what the server's round loop catches, logs as
           ``update_rejected`` and drops from the round.
accepted   a finite float32 vector of the model's length.
crash      anything else: another exception (the server would stop), a wrong or non-finite
           accepted vector, or the worker process dying (a segfault in a kernel).
hang       one frame ran longer than ``--frame-timeout`` seconds of CPU time (interrupted by a
           SIGPROF timer) or made no progress for ``--kill-after`` seconds of wall time (a
           compiled loop the timer cannot interrupt: the supervisor kills the process).
oversized  tracemalloc's peak during the frame exceeded ``ALLOC_FACTOR * 4 D + ALLOC_SLACK``
           bytes (``D`` = model size): an allocation driven by an unchecked length.

    python benchmarks/fuzz_frames.py                          # 2,000 frames per codec
    python benchmarks/fuzz_frames.py --frames 100000 --jobs 2 # the full run of docs/security.md
    python benchmarks/fuzz_frames.py --codecs topk stc --frames 20000
    python benchmarks/fuzz_frames.py --repro topk 1234        # one mutant, in process, traceback

Mutant ``i`` of a codec depends only on ``(--seed, codec id, i)``, so any failure is replayed with
``--repro``. Exit status 1 if any crash, hang or oversized allocation was found.
The module is importable without side effects; ``tests/unit/security/test_fuzz.py`` uses the same
engine for a short seeded run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import signal
import struct
import sys
import time
import traceback
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import numpy as np

from fedsqueeze import compress
from fedsqueeze.comm import wire
from fedsqueeze.comm.tags import Kind
from fedsqueeze.compress.base import decode_payload
from fedsqueeze.errors import UpdateRejected, WireFormatError
from fedsqueeze.fl import protocol as P

MODEL_SHAPES = [[64, 64], [64], [10, 64], [10]]
"""A 4,810-parameter MLP (64 -> 64 -> 10), the model size of METHODS.md 6.12."""
N_PARAMS = sum(math.prod(s) for s in MODEL_SHAPES)
RUN_SEED = 20240611
ROUND, CLIENT, N_I = 3, 5, 37
"""The round, client id and ``u32 n_i`` (sample count) of every base frame."""
ALLOC_FACTOR = 8
ALLOC_SLACK = 64 << 10
ALLOC_LIMIT = ALLOC_FACTOR * 4 * N_PARAMS + ALLOC_SLACK
"""Bytes one frame may allocate (tracemalloc peak) before it counts as oversized."""
OUTCOMES = ("rejected", "accepted", "crash", "hang", "oversized")
REJECTED = (WireFormatError, UpdateRejected)
"""What the server's round loop catches for an uplink (``fl/server.py``)."""

_F32 = struct.Struct("<f")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


# -- targets: a codec, its valid frames and the server-side decode ----------------------------
def build_codec(codec_id: str, config: dict | None = None):
    """The codec as an FL run builds it (``fl/world._codec``): run seed and model layout filled."""
    from fedsqueeze.fl.world import _codec

    return _codec({"id": codec_id, **(config or {})}, RUN_SEED, MODEL_SHAPES)


def _inputs() -> list[np.ndarray]:
    g = np.random.default_rng(7)
    n = N_PARAMS
    sparse = np.zeros(n, np.float32)
    sparse[g.choice(n, 40, replace=False)] = g.standard_normal(40).astype(np.float32) * 5
    return [
        (g.standard_normal(n) * 0.01).astype(np.float32),
        (g.standard_t(2, n) * 0.01).astype(np.float32),
        sparse,
        np.zeros(n, np.float32),
        np.linspace(-3, 3, n, dtype=np.float32),
    ]


def _states(codec) -> list:
    """Encoder states worth covering: AdaQuant level counts, both PowerSGD phases."""
    cid = codec.codec_id
    if cid == "adaquant":
        return [None, {"s": 1}, {"s": 7}, {"s": codec.s_max}]
    if cid == "powersgd":
        return ["phase0", "phase1"]
    return [None]


def _encode(codec, x: np.ndarray, state, seed: int):
    if state == "phase0":
        state = None
    elif state == "phase1":
        _, state = codec.encode(x, seed=seed)
    enc, _ = codec.encode(x, seed=seed, state=state)
    return enc


def make_frame(sections, *, n_i: int = N_I, codec_index: int = P.CODEC_UP) -> bytes:
    """An UP_UPDATE frame as a worker builds it: ``u32 n_i`` then the codec's sections."""
    return bytes(wire.pack_frame(Kind.UP_UPDATE, (P.UP_PRE.pack(n_i),) + tuple(sections),
                                 round=ROUND, client=CLIENT, codec=codec_index))


@dataclasses.dataclass
class Target:
    """One codec under test: its valid base frames and the server-side decode."""

    codec_id: str
    codec: object
    seed: int
    frames: list[bytes]
    max_payload: int

    @classmethod
    def build(cls, codec_id: str, config: dict | None = None) -> Target:
        codec = build_codec(codec_id, config)
        seed = codec.message_seed(RUN_SEED, ROUND, CLIENT)
        frames = []
        for state in _states(codec):
            for x in _inputs():
                frames.append(make_frame(_encode(codec, x, state, seed).sections))
        frames = list(dict.fromkeys(frames))  # identical encodings once
        # the server's bound (fl/server.py Server.max_up)
        max_payload = max(codec.max_nbytes(N_PARAMS), 4 * N_PARAMS) + 4096
        return cls(codec_id, codec, seed, frames, max_payload)

    def decode(self, frame) -> np.ndarray:
        """The server's path for one received frame; raises what the server would see."""
        header, payload = wire.unpack_frame(frame, max_payload=self.max_payload)
        n_i, body = P.uplink_body(header, payload)
        if n_i != N_I:
            raise WireFormatError(f"n_i = {n_i}, client {CLIENT} holds {N_I} samples")
        if header.round != ROUND or header.client != CLIENT:
            raise WireFormatError(f"expected client {CLIENT} round {ROUND}, got client "
                                  f"{header.client} round {header.round}")  # frame_rejected
        return decode_payload(self.codec, body, N_PARAMS, self.seed)


# -- mutation engine ----------------------------------------------------------------------------
_INT_U32 = (0, 1, 2, 3, 4, 7, 8, 15, 16, 31, 32, 63, 64, 127, 128, 255, 256, 1023, 1024, 4095,
            4096, 4809, 4810, 4811, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 1 << 20, 1 << 24,
            0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0xFFFFFFFE, 0xFFFFFFFF)
_INT_SMALL = (0, 1, 2, 3, 4, 7, 8, 9, 15, 16, 17, 31, 32, 33, 127, 128, 254, 255)
_F32_BITS = (0x7FC00000, 0xFFC00000, 0x7F800001, 0x7F800000, 0xFF800000, 0x7F7FFFFF,
             0xFF7FFFFF, 0x00000001, 0x80000000, 0x7E967699, 0xFE967699, 0x3F800000)
"""qNaN, -qNaN, sNaN, +Inf, -Inf, +-FLT_MAX, smallest denormal, -0.0, +-1e38, 1.0."""
_F16_BITS = (0x7E00, 0x7C00, 0xFC00, 0x7C01, 0x7BFF)  # f16 NaN, +-Inf, sNaN, max
_BF16_BITS = (0x7FC0, 0x7F80, 0xFF80, 0x7F81, 0x7F7F)  # bf16 NaN, +-Inf, sNaN, max
_BODY = wire.HEADER_SIZE + P.UP_PRE.size  # offset of the codec payload in a frame


def _aligned(rng: np.random.Generator, lo: int, hi: int, step: int) -> int | None:
    """A random offset in ``[lo, hi - step]`` aligned to ``step`` from ``lo``."""
    slots = (hi - lo) // step
    return None if slots <= 0 else lo + step * int(rng.integers(slots))


def _preamble_bias(rng: np.random.Generator, n: int) -> int:
    """Payload-relative bound that favours the first 64 bytes (preambles, section headers)."""
    return min(n, 64) if rng.random() < 0.6 else n


def _m_flip(f: bytearray, rng, ctx) -> str:
    lo = wire.HEADER_SIZE if rng.random() < 0.9 else 0
    if len(f) <= lo:
        return "flip:none"
    for _ in range(int(rng.integers(1, 9))):
        p = int(rng.integers(lo, len(f)))
        f[p] ^= 1 << int(rng.integers(8))
    return "flip"


def _m_setbyte(f: bytearray, rng, ctx) -> str:
    if len(f) <= _BODY:
        return "setbyte:none"
    for _ in range(int(rng.integers(1, 5))):
        p = _BODY + int(rng.integers(_preamble_bias(rng, len(f) - _BODY)))
        f[p] = int(rng.choice(_INT_SMALL)) if rng.random() < 0.7 else int(rng.integers(256))
    return "setbyte"


def _m_truncate(f: bytearray, rng, ctx) -> str:
    body = len(f) - wire.HEADER_SIZE
    if body <= 0:
        return "truncate:none"
    cut = int(rng.integers(body))
    if rng.random() < 0.5:
        cut &= ~3
    del f[wire.HEADER_SIZE + cut:]
    return f"truncate:{cut}"


def _m_extend(f: bytearray, rng, ctx) -> str:
    k = int(rng.choice([1, 2, 3, 4, 8, 12, 16, 64, 1024]))
    f.extend(bytes(k) if rng.random() < 0.5 else rng.bytes(k))
    return f"extend:{k}"


def _m_u32(f: bytearray, rng, ctx) -> str:
    p = _aligned(rng, _BODY, _BODY + _preamble_bias(rng, len(f) - _BODY), 4)
    if p is None:
        return "u32:none"
    (old,) = _U32.unpack_from(f, p)
    choice = rng.random()
    if choice < 0.5:
        v = int(rng.choice(_INT_U32))
    elif choice < 0.8:
        v = old + int(rng.choice([-4, -3, -2, -1, 1, 2, 3, 4, 8, -8]))
    else:
        v = int(rng.choice([old * 2, old // 2, old << 8, old << 16, old ^ 0x80000000]))
    _U32.pack_into(f, p, v & 0xFFFFFFFF)
    return f"u32@{p - _BODY}"


def _m_small(f: bytearray, rng, ctx) -> str:
    if rng.random() < 0.5:
        p = _aligned(rng, _BODY, _BODY + _preamble_bias(rng, len(f) - _BODY), 2)
        if p is None:
            return "u16:none"
        v = int(rng.choice(_INT_SMALL + (0x100, 0x7FFF, 0x8000, 0xFFFF)))
        _U16.pack_into(f, p, v)
        return f"u16@{p - _BODY}"
    if len(f) <= _BODY:
        return "u8:none"
    p = _BODY + int(rng.integers(_preamble_bias(rng, len(f) - _BODY)))
    f[p] = int(rng.choice(_INT_SMALL))
    return f"u8@{p - _BODY}"


def _m_float(f: bytearray, rng, ctx) -> str:
    kind = rng.random()
    if kind < 0.7:  # f32 words (norms, scales, codebooks, values, factors)
        count = 1 if rng.random() < 0.6 else int(rng.integers(2, 65))
        for _ in range(count):
            p = _aligned(rng, _BODY, len(f), 4)
            if p is None:
                return "f32:none"
            _U32.pack_into(f, p, int(rng.choice(_F32_BITS)))
        return f"f32x{count}"
    table = _F16_BITS if kind < 0.85 else _BF16_BITS
    for _ in range(int(rng.integers(1, 9))):
        p = _aligned(rng, _BODY, len(f), 2)
        if p is None:
            return "f16:none"
        _U16.pack_into(f, p, int(rng.choice(table)))
    return "f16" if table is _F16_BITS else "bf16"


def _m_fill(f: bytearray, rng, ctx) -> str:
    if len(f) <= _BODY:
        return "fill:none"
    a = _BODY + int(rng.integers(len(f) - _BODY))
    b = min(len(f), a + int(rng.integers(1, 257)))
    byte = int(rng.choice([0x00, 0xFF, 0x80, 0x7F]))
    f[a:b] = bytes([byte]) * (b - a)
    return f"fill:{byte:#x}x{b - a}"


def _m_chunk(f: bytearray, rng, ctx) -> str:
    if len(f) <= _BODY + 4:
        return "chunk:none"
    a = _BODY + int(rng.integers(len(f) - _BODY))
    b = min(len(f), a + int(rng.choice([1, 2, 3, 4, 8, 16, 64, 256])))
    op = rng.random()
    if op < 0.4:
        del f[a:b]
        return f"delete:{b - a}"
    if op < 0.7:
        f[b:b] = f[a:b]
        return f"duplicate:{b - a}"
    other = ctx[int(rng.integers(len(ctx)))]  # splice from another valid frame of the codec
    if len(other) <= _BODY:
        return "splice:none"
    c = _BODY + int(rng.integers(len(other) - _BODY))
    seg = other[c:c + (b - a)]
    f[a:a + len(seg)] = seg
    return f"splice:{len(seg)}"


def _m_header(f: bytearray, rng, ctx) -> str:
    field = int(rng.integers(9))
    if field == 0:
        f[0:2] = rng.bytes(2)
        return "hdr:magic"
    if field == 1:
        f[2] = int(rng.choice([0, 2, 3, 255]))
        return "hdr:version"
    if field == 2:
        f[3] = int(rng.integers(256))
        return "hdr:kind"
    if field == 3:
        f[4] = int(rng.choice([1, 2, 3, 7, 128, 255]))
        return "hdr:codec"  # unknown codec index
    if field == 4:
        f[5] = int(rng.integers(256))
        return "hdr:flags"
    if field == 5:
        _U16.pack_into(f, 6, int(rng.integers(1, 1 << 16)))
        return "hdr:reserved"
    if field == 6:
        _U32.pack_into(f, 8, int(rng.choice([0, ROUND + 1, 0xFFFFFFFF])))
        return "hdr:round"
    if field == 7:
        _U32.pack_into(f, 12, int(rng.choice([0, CLIENT + 1, 0xFFFFFFFF])))
        return "hdr:client"
    (plen,) = _U32.unpack_from(f, 16)
    _U32.pack_into(f, 16, int(rng.choice([0, plen - 1, plen + 1, plen + 4, 0x7FFFFFFF,
                                          0xFFFFFFFF])) & 0xFFFFFFFF)
    return "hdr:payload_len"


def _m_n_i(f: bytearray, rng, ctx) -> str:
    if len(f) < _BODY:
        return "n_i:none"
    _U32.pack_into(f, wire.HEADER_SIZE, int(rng.choice([0, N_I - 1, N_I + 1, 0xFFFFFFFF])))
    return "n_i"


MUTATORS: tuple[tuple[Callable, float], ...] = (
    (_m_flip, 3), (_m_setbyte, 2), (_m_truncate, 1.5), (_m_extend, 1), (_m_u32, 4),
    (_m_small, 2), (_m_float, 3), (_m_fill, 1), (_m_chunk, 2), (_m_header, 0.6), (_m_n_i, 0.2),
)
_WEIGHTS = np.array([w for _, w in MUTATORS]) / sum(w for _, w in MUTATORS)


def mutant(target: Target, seed: int, index: int) -> tuple[bytes, str]:
    """Mutant ``index`` of ``target`` (deterministic in ``(seed, codec id, index)``) and a short
    description of what was done to it."""
    key = zlib.crc32(target.codec_id.encode())
    rng = np.random.default_rng([seed, key, index])
    f = bytearray(target.frames[int(rng.integers(len(target.frames)))])
    ops = []
    nops = 1 if rng.random() < 0.5 else min(4, 1 + int(rng.geometric(0.5)))  # 1..4 stacked
    for _ in range(nops):
        fn = MUTATORS[int(rng.choice(len(MUTATORS), p=_WEIGHTS))][0]
        ops.append(fn(f, rng, target.frames))
    fix = rng.random()
    keep_len = any(o == "hdr:payload_len" for o in ops)
    if len(f) >= wire.HEADER_SIZE:
        if fix < 0.9:  # consistent frame: the codec parser sees the mutation
            if not keep_len:
                _U32.pack_into(f, 16, len(f) - wire.HEADER_SIZE)
            _U32.pack_into(f, 20, zlib.crc32(f[wire.HEADER_SIZE:]))
        elif fix < 0.95 and not keep_len:  # length fixed, stale CRC
            _U32.pack_into(f, 16, len(f) - wire.HEADER_SIZE)
            ops.append("stale-crc")
        else:
            ops.append("stale-len+crc")
    return bytes(f), "+".join(ops)


# -- running frames -----------------------------------------------------------------------------
class FrameTimeout(Exception):
    """Raised by the SIGPROF handler: one frame used more than its CPU-time budget."""


@contextlib.contextmanager
def cpu_watchdog(seconds: float | None) -> Iterator[None]:
    """Interrupt Python code after ``seconds`` of process CPU time (SIGPROF; main thread only).

    ITIMER_PROF leaves ITIMER_REAL to pytest-timeout. A compiled (Numba) loop cannot be
    interrupted by a signal handler: the benchmark's supervisor catches those by wall time.
    """
    if not seconds:
        yield
        return

    def _raise(signum, frame):
        raise FrameTimeout(f"frame used more than {seconds} s of CPU time")

    old = signal.signal(signal.SIGPROF, _raise)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


@dataclasses.dataclass
class Result:
    """Outcome counts of a run of frames for one codec, and the first few failures."""

    codec_id: str
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    max_alloc: int = 0
    max_seconds: float = 0.0
    failures: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)
    """``(index, outcome, mutation, detail)``."""

    @property
    def frames(self) -> int:
        return sum(self.counts.values())

    @property
    def bad(self) -> int:
        return self.counts["crash"] + self.counts["hang"] + self.counts["oversized"]

    def add(self, index: int, outcome: str, mutation: str, detail: str) -> None:
        self.counts[outcome] += 1
        if outcome not in ("rejected", "accepted") and len(self.failures) < 20:
            self.failures.append((index, outcome, mutation, detail))

    def merge(self, other: Result) -> None:
        for k, v in other.counts.items():
            self.counts[k] += v
        self.max_alloc = max(self.max_alloc, other.max_alloc)
        self.max_seconds = max(self.max_seconds, other.max_seconds)
        self.failures.extend(other.failures[: max(0, 20 - len(self.failures))])


def classify(target: Target, frame: bytes, *, timeout: float | None = None
             ) -> tuple[str, str, int, float]:
    """Run one frame through the server path: ``(outcome, detail, peak bytes, seconds)``.

    tracemalloc must be tracing (the caller starts it); the peak is measured from the frame's
    start.
    """
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    try:
        with cpu_watchdog(timeout):
            x = target.decode(frame)
    except FrameTimeout as exc:
        outcome, detail = "hang", str(exc)
    except REJECTED as exc:
        outcome, detail = "rejected", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - classifying every other failure is the point
        outcome, detail = "crash", f"{type(exc).__name__}: {exc}"
    else:
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != (N_PARAMS,):
            outcome, detail = "crash", f"accepted a {type(x).__name__} {getattr(x, 'shape', '')}"
        elif not np.isfinite(x).all():
            outcome, detail = "crash", "accepted a non-finite vector"
        else:
            outcome, detail = "accepted", ""
    dt = time.perf_counter() - t0
    peak = max(0, tracemalloc.get_traced_memory()[1] - base)
    if peak > ALLOC_LIMIT and outcome != "crash":
        outcome, detail = "oversized", f"peak {peak} bytes > {ALLOC_LIMIT} ({detail})"
    return outcome, detail, peak, dt


def warm_up(target: Target) -> None:
    """Decode every base frame once (compiles kernels, fills caches); they must be accepted."""
    for i, f in enumerate(target.frames):
        x = target.decode(f)
        if x.shape != (N_PARAMS,) or not np.isfinite(x).all():
            raise AssertionError(f"{target.codec_id}: base frame {i} does not decode")


def run_frames(target: Target, seed: int, start: int, stop: int, *,
               timeout: float | None = 5.0, progress: Callable[[int], None] | None = None,
               batch: int = 64) -> Result:
    """Mutants ``start .. stop-1`` of ``target`` through :func:`classify`, ``batch`` at a time
    (each batch generated first, then decoded with tracemalloc tracing)."""
    res = Result(target.codec_id)
    for a in range(start, stop, batch):
        # mutants are made with tracing off (tracemalloc makes the generator 4x slower)
        mutants = [mutant(target, seed, i) for i in range(a, min(stop, a + batch))]
        tracemalloc.start()
        try:
            for i, (frame, how) in enumerate(mutants, start=a):
                if progress is not None:
                    progress(i)
                outcome, detail, peak, dt = classify(target, frame, timeout=timeout)
                res.add(i, outcome, how, detail)
                res.max_alloc = max(res.max_alloc, peak)
                res.max_seconds = max(res.max_seconds, dt)
        finally:
            tracemalloc.stop()
    return res


# -- multiprocess supervisor (benchmark only) ---------------------------------------------------
def _worker(conn, heartbeat, seed: int, timeout: float, nice: int
            ) -> None:  # pragma: no cover - subprocess
    with contextlib.suppress(AttributeError, OSError):
        os.nice(nice)
    targets: dict[str, Target] = {}

    def beat(i: int) -> None:
        heartbeat[0] = i
        heartbeat[1] = time.monotonic()

    while True:
        task = conn.recv()
        if task is None:
            return
        cid, start, stop = task
        if cid not in targets:
            targets[cid] = Target.build(cid)
            warm_up(targets[cid])
        heartbeat[2] = 1.0
        res = run_frames(targets[cid], seed, start, stop, timeout=timeout, progress=beat)
        heartbeat[2] = 0.0
        conn.send(res)


def supervise(codec_ids: list[str], frames: int, seed: int, jobs: int, chunk: int,
              timeout: float, kill_after: float, nice: int = 10, log=print
              ) -> dict[str, Result]:
    """Run ``frames`` mutants per codec on ``jobs`` processes; a process that dies or stops
    making progress is replaced and its frame is counted as a crash or a hang."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    tasks = [(cid, a, min(frames, a + chunk)) for cid in codec_ids
             for a in range(0, frames, chunk)]
    tasks.reverse()
    results = {cid: Result(cid) for cid in codec_ids}
    workers: list[dict] = []

    def spawn() -> dict:
        parent, child = ctx.Pipe()
        hb = ctx.Array("d", 3, lock=False)
        p = ctx.Process(target=_worker, args=(child, hb, seed, timeout, nice),
                        daemon=True)
        p.start()
        return {"proc": p, "conn": parent, "hb": hb, "task": None}

    def assign(w: dict) -> None:
        if tasks:
            w["task"] = tasks.pop()
            w["hb"][0], w["hb"][1], w["hb"][2] = -1.0, time.monotonic(), 0.0
            w["conn"].send(w["task"])
        else:
            w["task"] = None

    def lost(w: dict, outcome: str, why: str) -> None:
        cid, start, stop = w["task"]
        i = int(w["hb"][0]) if w["hb"][0] >= start else start
        r = Result(cid)
        r.add(i, outcome, "(see --repro)", why)
        results[cid].merge(r)
        log(f"  {cid} frame {i}: {outcome} ({why}); replacing the process")
        with contextlib.suppress(Exception):
            w["proc"].kill()
        w["proc"].join(5)
        if i + 1 < stop:
            tasks.append((cid, i + 1, stop))

    for _ in range(max(1, jobs)):
        workers.append(spawn())
        assign(workers[-1])
    done_frames, total, t0 = 0, frames * len(codec_ids), time.monotonic()
    while any(w["task"] is not None for w in workers):
        for k, w in enumerate(workers):
            if w["task"] is None:
                continue
            if w["conn"].poll(0.2):
                try:
                    res = w["conn"].recv()
                except (EOFError, OSError):
                    lost(w, "crash", f"process died, exit code {w['proc'].exitcode}")
                    workers[k] = w = spawn()
                    assign(w)
                    continue
                results[res.codec_id].merge(res)
                done_frames += res.frames
                el = time.monotonic() - t0
                log(f"  {res.codec_id:16s} frames {w['task'][1]:>7d}..{w['task'][2]:<7d} "
                    f"done; {done_frames}/{total} in {el:.0f} s")
                assign(w)
            elif not w["proc"].is_alive():
                lost(w, "crash", f"process died, exit code {w['proc'].exitcode}")
                workers[k] = w = spawn()
                assign(w)
            elif w["hb"][2] and time.monotonic() - w["hb"][1] > kill_after:
                lost(w, "hang", f"no progress for {kill_after} s")
                workers[k] = w = spawn()
                assign(w)
    for w in workers:
        with contextlib.suppress(Exception):
            w["conn"].send(None)
        w["proc"].join(10)
        if w["proc"].is_alive():
            w["proc"].kill()
    return results


def table(results: dict[str, Result]) -> str:
    from tabulate import tabulate

    rows = [(r.codec_id, r.frames, r.counts["rejected"], r.counts["accepted"], r.counts["crash"],
             r.counts["hang"], r.counts["oversized"], f"{r.max_alloc / 1024:.1f}",
             f"{r.max_seconds * 1e3:.1f}") for r in results.values()]
    return tabulate(rows, headers=("codec", "frames", "rejected", "accepted", "crashes", "hangs",
                                   "oversized", "max alloc KiB", "max ms"),
                    tablefmt="github")


def repro(codec_id: str, seed: int, index: int) -> int:
    target = Target.build(codec_id)
    warm_up(target)
    frame, how = mutant(target, seed, index)
    print(f"{codec_id} mutant {index} (seed {seed}): {how}, {len(frame)} bytes")
    print(frame[:96].hex())
    tracemalloc.start()
    try:
        target.decode(frame)
        print("accepted")
    except REJECTED as exc:
        print(f"rejected: {type(exc).__name__}: {exc}")
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    finally:
        print(f"peak alloc {tracemalloc.get_traced_memory()[1]} bytes (limit {ALLOC_LIMIT})")
        tracemalloc.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=2000, help="mutants per codec")
    ap.add_argument("--codecs", nargs="*", default=None, help="codec ids (default: all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--chunk", type=int, default=5000, help="frames per task")
    ap.add_argument("--frame-timeout", type=float, default=5.0, help="CPU seconds per frame")
    ap.add_argument("--kill-after", type=float, default=60.0,
                    help="wall seconds without progress before a process is killed")
    ap.add_argument("--nice", type=int, default=10, help="niceness of the fuzzing processes")
    ap.add_argument("--repro", nargs=2, metavar=("CODEC", "INDEX"))
    ap.add_argument("--markdown", help="also write the table to this file")
    a = ap.parse_args(argv)
    if a.repro:
        return repro(a.repro[0], a.seed, int(a.repro[1]))
    ids = a.codecs or compress.available()
    unknown = sorted(set(ids) - set(compress.available()))
    if unknown:
        ap.error(f"unknown codec ids {unknown}; available: {compress.available()}")
    print(f"fuzzing {len(ids)} codecs x {a.frames} frames, seed {a.seed}, {a.jobs} processes, "
          f"model D = {N_PARAMS}, alloc limit {ALLOC_LIMIT} bytes")
    t0 = time.monotonic()
    results = supervise(ids, a.frames, a.seed, a.jobs, a.chunk, a.frame_timeout, a.kill_after,
                        a.nice)
    text = table(results)
    print(text)
    print(f"{sum(r.frames for r in results.values())} frames in {time.monotonic() - t0:.0f} s "
          f"(python {sys.version.split()[0]}, numpy {np.__version__})")
    for r in results.values():
        for i, outcome, how, detail in r.failures:
            print(f"{r.codec_id} #{i} {outcome}: {how}: {detail}")
    if a.markdown:
        with open(a.markdown, "w") as fh:
            fh.write(text + "\n")
    return 1 if any(r.bad for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

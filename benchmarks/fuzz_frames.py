"""Mutation fuzzing of received frames through the receive paths, for every codec and more.

Targets (``--codecs``, default all; :func:`all_targets`):

* every codec id in :func:`fedsqueeze.compress.available` (its default config, with the run-level
  arguments :func:`fedsqueeze.fl.world._codec` fills in: ``hash_seed``/``init_seed`` from the run
  seed, ``shapes``/``segments`` from the model): valid uplink frames as a worker builds them
  (``u32 n_i`` + codec sections, :func:`~fedsqueeze.comm.wire.pack_frame`) for a 4,810-parameter
  model, through the server's path :func:`~fedsqueeze.comm.wire.unpack_frame` ->
  :func:`fedsqueeze.fl.protocol.uplink_body` (kind, codec index, ``n_i``) -> round/client ->
  :func:`fedsqueeze.compress.base.decode_payload` (parse, decode, finite);
* split learning (:data:`EXTRA_TARGETS`): SPLIT_ACT with GPQ codes (``split_act_gpq``, sample
  grouping; ``split_act_gpq_pos``, position grouping) and dense (``split_act_dense``) through the
  split server's path (``parse_act`` + ``GPQ.decode``); SPLIT_GRAD in the three backward formats
  through the client's ``parse_grad`` (``split_grad_fp32``, ``_fp16``, ``_codebook``); the
  prefix uplink and downlink (``split_prefix``);
* the bare frame decoder (``frame``): frames of every kind, mostly header edits.

Mutations: bit flips, byte sets, truncation, extension, deletion/duplication/splicing of chunks,
u32/u16/u8 field edits with boundary values (lengths, counts, ``k``, section sizes), NaN/Inf/huge
float injections (f32, f16 and bf16 patterns), header edits (magic, version, kind, codec index,
reserved, payload_len, round, client) and ``n_i`` edits. Most mutants get a recomputed
``payload_len`` and CRC32, so the payload parsers are exercised and not just the CRC check.

Outcomes per frame:

rejected   ``WireFormatError`` or ``UpdateRejected`` (``ValueError`` subclasses): what the server's
           round loop catches, logs as ``update_rejected`` and drops from the round.
accepted   a finite float32 result of the expected shape (``Target.check``).
crash      anything else: another exception (the server would stop), a wrong or non-finite
           accepted result, or the child process dying (a segfault in a kernel).
hang       one frame ran longer than ``--frame-timeout`` seconds of CPU time (interrupted by a
           SIGPROF timer) or made no progress for ``--kill-after`` seconds of wall time (a
           compiled loop the timer cannot interrupt: the supervisor kills the process).
oversized  tracemalloc's peak during the frame exceeded ``ALLOC_FACTOR * 4 D + ALLOC_SLACK``
           bytes (``D`` = model size), or a ``MemoryError`` (each child runs under
           ``RLIMIT_AS`` = its size after warm-up + 1 GiB): an allocation from an unchecked length.

The supervisor runs one child process per target and chunk (``python fuzz_frames.py --child
TARGET --start A --stop B``), ``--jobs`` at a time under ``nice``; a child prints its counts as
one JSON line on stdout and writes the index of the frame it is decoding into a progress file,
so nothing is pickled and a child that segfaults or hangs is reported at that frame and
replaced (resuming after it) instead of taking the harness down.

    python benchmarks/fuzz_frames.py                          # 2,000 frames per target
    python benchmarks/fuzz_frames.py --frames 100000 --jobs 2 --trace-every 4  # docs/security.md
    python benchmarks/fuzz_frames.py --codecs topk split_act_gpq frame --frames 20000
    python benchmarks/fuzz_frames.py --repro topk 1234        # one mutant, in process, traceback

Mutant ``i`` of a target depends only on ``(--seed, target name, i)``, so any failure is replayed
with ``--repro``. Exit status 1 if any crash, hang or oversized allocation was found.
The module is importable without side effects; ``tests/unit/security/test_fuzz.py`` uses the same
engine for a short seeded run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import itertools
import math
import os
import random
import shutil
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
    body: int = wire.HEADER_SIZE + P.UP_PRE.size
    """Offset in a frame of the payload the parser under test reads (after ``n_i``)."""
    header_weight: float = 0.6
    """Relative weight of the header-field mutator."""

    @classmethod
    def build(cls, codec_id: str, config: dict | None = None) -> Target:
        if codec_id in EXTRA_TARGETS and config is None:
            return EXTRA_TARGETS[codec_id]()
        if codec_id in SELFTEST_TARGETS:
            return SELFTEST_TARGETS[codec_id]()
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

    def decode(self, frame):
        """The server's path for one received frame; raises what the server would see."""
        header, payload = wire.unpack_frame(frame, max_payload=self.max_payload)
        n_i, body = P.uplink_body(header, payload)
        if n_i != N_I:
            raise WireFormatError(f"n_i = {n_i}, client {CLIENT} holds {N_I} samples")
        _check_round_client(header)
        return decode_payload(self.codec, body, N_PARAMS, self.seed)

    def check(self, x) -> str:
        """Why an accepted result is wrong ('' if it is fine): a finite f32 vector of ``D``."""
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != (N_PARAMS,):
            return f"accepted a {type(x).__name__} {getattr(x, 'dtype', '')} " \
                   f"{getattr(x, 'shape', '')}"
        if not np.isfinite(x).all():
            return "accepted a non-finite vector"
        return ""


def _check_round_client(header) -> None:
    if header.round != ROUND or header.client != CLIENT:
        raise WireFormatError(f"expected client {CLIENT} round {ROUND}, got client "
                              f"{header.client} round {header.round}")  # frame_rejected


def _finite_f32(x, shape) -> str:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape != shape:
        return f"accepted a {type(x).__name__} {getattr(x, 'dtype', '')} " \
               f"{getattr(x, 'shape', '')}, expected float32 {shape}"
    if not np.isfinite(x).all():
        return "accepted a non-finite array"
    return ""


# -- split learning (split/payloads.py, compress/activations.py GPQ) ---------------------------
SPLIT_B, SPLIT_DA, SPLIT_CLASSES, SPLIT_STEP, SPLIT_DC = 8, 40, 10, 3, 1000
"""Batch, cut-layer width, classes, local step and prefix size of the split targets."""
SPLIT_GPQ = {"q": 16, "R": 4, "L": 3, "grouping": "sample"}
"""A GPQ with several groups and a code width that leaves unused code values (``L_eff = 3``,
2-bit codes), so out-of-range codes and padding bits are reachable."""


def _split_batches():
    g = np.random.default_rng(11)
    out = []
    for i in range(4):
        z = np.maximum(g.standard_normal((SPLIT_B, SPLIT_DA)), 0).astype(np.float32)
        if i == 3:
            z[:] = 0
        out.append((z, g.integers(0, SPLIT_CLASSES, SPLIT_B)))
    return out


def _gpq(grouping: str | None = None):
    from fedsqueeze.compress.activations import GPQ

    cfg = dict(SPLIT_GPQ)
    if grouping:
        cfg["grouping"] = grouping
    return GPQ(**cfg)


@dataclasses.dataclass
class SplitActTarget(Target):
    """SPLIT_ACT as the split server reads it (``split/server.py _serve``): ``unpack_frame`` ->
    round/client -> ``parse_act`` -> ``GPQ.decode`` (or the dense activations)."""

    spec: object = None

    @classmethod
    def make(cls, name: str, gpq) -> SplitActTarget:
        from fedsqueeze.split import payloads as SP

        spec = SP.ActSpec(SPLIT_DA, SPLIT_CLASSES, gpq)
        frames = []
        for k, (z, y) in enumerate(_split_batches()):
            if gpq is None:
                secs = SP.act_sections(step=SPLIT_STEP, labels=y, label_bits=spec.label_bits,
                                       d_a=SPLIT_DA, dense=z)
            else:
                code, _ = gpq.encode(z, seed=RUN_SEED, client=CLIENT, round=k)
                secs = SP.act_sections(step=SPLIT_STEP, labels=y, label_bits=spec.label_bits,
                                       d_a=SPLIT_DA, code=code)
            frames.append(bytes(wire.pack_frame(Kind.SPLIT_ACT, secs, round=ROUND,
                                                client=CLIENT)))
        maxp = SP.act_payload_nbytes(SPLIT_B, SPLIT_DA, spec.label_bits,
                                     spec.geometry(SPLIT_B))
        return cls(name, gpq, 0, list(dict.fromkeys(frames)), maxp, body=wire.HEADER_SIZE,
                   spec=spec)

    def decode(self, frame):
        from fedsqueeze.split import payloads as SP

        header, payload = wire.unpack_frame(frame, max_payload=self.max_payload)
        _check_round_client(header)
        msg = SP.parse_act(payload, self.spec, B=SPLIT_B, step=SPLIT_STEP)
        z = msg.dense if msg.code is None else self.codec.decode(msg.code)
        return z, msg.labels

    def check(self, x) -> str:
        z, labels = x
        if labels.shape != (SPLIT_B,) or labels.min() < 0 or labels.max() >= SPLIT_CLASSES:
            return f"accepted labels {labels!r}"
        return _finite_f32(z, (SPLIT_B, SPLIT_DA))


@dataclasses.dataclass
class SplitGradTarget(Target):
    """SPLIT_GRAD as a split client reads it (``split/client.py backward``): ``unpack_frame``
    -> ``parse_grad`` with the client's own GPQ code (codebook format)."""

    fmt: str = "dense_fp32"
    code: object = None

    @classmethod
    def make(cls, name: str, fmt: str) -> SplitGradTarget:
        from fedsqueeze.split import payloads as SP

        gpq = _gpq()
        z, _ = _split_batches()[0]
        code, _ = gpq.encode(z, seed=RUN_SEED, client=CLIENT, round=0)
        g = np.random.default_rng(5)
        frames = []
        for scale in (1e-3, 1.0, 1e3, 0.0):
            grad = (g.standard_normal((SPLIT_B, SPLIT_DA)) * scale).astype(np.float32)
            frames.append(bytes(wire.pack_frame(Kind.SPLIT_GRAD, SP.grad_sections(fmt, grad, code),
                                                round=ROUND, client=CLIENT)))
        maxp = SP.grad_payload_nbytes(fmt, SPLIT_B, SPLIT_DA, code.geometry)
        return cls(name, gpq, 0, list(dict.fromkeys(frames)), maxp, body=wire.HEADER_SIZE,
                   fmt=fmt, code=code if fmt == "codebook" else None)

    def decode(self, frame):
        from fedsqueeze.split import payloads as SP

        header, payload = wire.unpack_frame(frame, max_payload=self.max_payload)
        _check_round_client(header)
        return SP.parse_grad(payload, self.fmt, B=SPLIT_B, d_a=SPLIT_DA, code=self.code)

    def check(self, x) -> str:
        return _finite_f32(x, (SPLIT_B, SPLIT_DA))


@dataclasses.dataclass
class SplitPrefixTarget(Target):
    """The split client's trained prefix (UP_UPDATE ``u32 n_c | f32[D_c]``,
    ``split/server.py _recv_prefix``) and the round's prefix downlink (``parse_prefix_down``)."""

    @classmethod
    def make(cls, name: str) -> SplitPrefixTarget:
        from fedsqueeze.split import payloads as SP

        g = np.random.default_rng(9)
        frames = [bytes(wire.pack_frame(Kind.UP_UPDATE, SP.prefix_up_sections(
            N_I, (g.standard_normal(SPLIT_DC) * s).astype(np.float32)), round=ROUND,
            client=CLIENT)) for s in (0.01, 1.0, 0.0)]
        return cls(name, None, 0, frames, 4 + 4 * SPLIT_DC, body=wire.HEADER_SIZE)

    def decode(self, frame):
        from fedsqueeze.split import payloads as SP

        header, payload = wire.unpack_frame(frame, max_payload=self.max_payload)
        _check_round_client(header)
        w = SP.parse_prefix_up(payload, SPLIT_DC, N_I)
        # the same bytes after n_c as a DOWN_MODEL prefix
        w2 = SP.parse_prefix_down(memoryview(payload)[4:], SPLIT_DC)
        return w, w2

    def check(self, x) -> str:
        return _finite_f32(x[0], (SPLIT_DC,)) or _finite_f32(x[1], (SPLIT_DC,))


@dataclasses.dataclass
class FrameTarget(Target):
    """The bare frame decoder (``comm/wire.unpack_frame``) on frames of every kind; mostly
    header edits. Accepted: a header of a known kind and a payload view of ``payload_len``."""

    header_weight: float = 8.0

    @classmethod
    def make(cls, name: str) -> FrameTarget:
        g = np.random.default_rng(3)
        frames = []
        for kind in Kind:
            for n in (0, 4, 37, 256):
                frames.append(bytes(wire.pack_frame(kind, g.bytes(n), round=ROUND,
                                                    client=CLIENT, flags=int(kind) & 3)))
        return cls(name, None, 0, frames, 4096, body=wire.HEADER_SIZE)

    def decode(self, frame):
        return wire.unpack_frame(frame, max_payload=self.max_payload)

    def check(self, x) -> str:
        header, payload = x
        if not isinstance(header, wire.Header) or not isinstance(header.kind, Kind):
            return f"accepted {header!r}"
        if payload.nbytes != header.payload_len or payload.nbytes > self.max_payload:
            return f"payload view of {payload.nbytes} bytes, header says {header.payload_len}"
        return ""


EXTRA_TARGETS: dict[str, Callable[[], Target]] = {
    "split_act_gpq": lambda: SplitActTarget.make("split_act_gpq", _gpq()),
    "split_act_gpq_pos": lambda: SplitActTarget.make("split_act_gpq_pos", _gpq("position")),
    "split_act_dense": lambda: SplitActTarget.make("split_act_dense", None),
    "split_grad_fp32": lambda: SplitGradTarget.make("split_grad_fp32", "dense_fp32"),
    "split_grad_fp16": lambda: SplitGradTarget.make("split_grad_fp16", "dense_fp16"),
    "split_grad_codebook": lambda: SplitGradTarget.make("split_grad_codebook", "codebook"),
    "split_prefix": lambda: SplitPrefixTarget.make("split_prefix"),
    "frame": lambda: FrameTarget.make("frame"),
    "qsgd_elias": lambda: dataclasses.replace(
        Target.build("qsgd", {"id": "qsgd", "s": 2, "coding": "elias"}), codec_id="qsgd_elias"),
}
"""Targets beyond the registry's codecs: split-learning payloads, the bare frame decoder and
non-default codings."""


class _SelfTest(FrameTarget):
    """A target whose decoder dies (SIGSEGV) or blocks in C code: tests that the supervisor
    reports crashes and hangs (``tests/unit/security/test_fuzz.py``); not in :func:`all_targets`."""

    def decode(self, frame):
        if self.codec_id == "selftest_segv":
            import ctypes

            ctypes.string_at(0)  # a segfault, as an out-of-bounds write in a kernel would be
        time.sleep(3600)  # blocked outside Python bytecode: no CPU time, no SIGPROF


SELFTEST_TARGETS: dict[str, Callable[[], Target]] = {
    n: (lambda n=n: _SelfTest(n, None, 0, FrameTarget.make(n).frames, 4096, body=wire.HEADER_SIZE))
    for n in ("selftest_segv", "selftest_hang")
}


def all_targets() -> list[str]:
    """Every target name: the registry's codec ids, then :data:`EXTRA_TARGETS`."""
    return list(compress.available()) + list(EXTRA_TARGETS)


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


class _Rng(random.Random):
    """The few draws the mutators need, on Python's Mersenne Twister (scalar draws are ~20x
    cheaper than a NumPy ``Generator``'s, and seeding one per mutant is cheap)."""

    def integers(self, a: int, b: int | None = None) -> int:
        return self.randrange(a) if b is None else self.randrange(a, b)

    def bytes(self, k: int) -> bytes:
        return self.randbytes(k)

    def geometric(self, p: float) -> int:
        """Trials up to the first success (>= 1)."""
        n = 1
        while self.random() >= p:
            n += 1
        return n


def _aligned(rng: _Rng, lo: int, hi: int, step: int) -> int | None:
    """A random offset in ``[lo, hi - step]`` aligned to ``step`` from ``lo``."""
    slots = (hi - lo) // step
    return None if slots <= 0 else lo + step * int(rng.integers(slots))


def _preamble_bias(rng: _Rng, n: int) -> int:
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
    B0 = ctx.body
    if len(f) <= B0:
        return "setbyte:none"
    for _ in range(int(rng.integers(1, 5))):
        p = B0 + int(rng.integers(_preamble_bias(rng, len(f) - B0)))
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
    B0 = ctx.body
    p = _aligned(rng, B0, B0 + _preamble_bias(rng, len(f) - B0), 4)
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
    return f"u32@{p - B0}"


def _m_small(f: bytearray, rng, ctx) -> str:
    B0 = ctx.body
    if rng.random() < 0.5:
        p = _aligned(rng, B0, B0 + _preamble_bias(rng, len(f) - B0), 2)
        if p is None:
            return "u16:none"
        v = int(rng.choice(_INT_SMALL + (0x100, 0x7FFF, 0x8000, 0xFFFF)))
        _U16.pack_into(f, p, v)
        return f"u16@{p - B0}"
    if len(f) <= B0:
        return "u8:none"
    p = B0 + int(rng.integers(_preamble_bias(rng, len(f) - B0)))
    f[p] = int(rng.choice(_INT_SMALL))
    return f"u8@{p - B0}"


def _m_float(f: bytearray, rng, ctx) -> str:
    B0 = ctx.body
    kind = rng.random()
    if kind < 0.7:  # f32 words (norms, scales, codebooks, values, factors)
        count = 1 if rng.random() < 0.6 else int(rng.integers(2, 65))
        for _ in range(count):
            p = _aligned(rng, B0, len(f), 4)
            if p is None:
                return "f32:none"
            _U32.pack_into(f, p, int(rng.choice(_F32_BITS)))
        return f"f32x{count}"
    table = _F16_BITS if kind < 0.85 else _BF16_BITS
    for _ in range(int(rng.integers(1, 9))):
        p = _aligned(rng, B0, len(f), 2)
        if p is None:
            return "f16:none"
        _U16.pack_into(f, p, int(rng.choice(table)))
    return "f16" if table is _F16_BITS else "bf16"


def _m_fill(f: bytearray, rng, ctx) -> str:
    B0 = ctx.body
    if len(f) <= B0:
        return "fill:none"
    a = B0 + int(rng.integers(len(f) - B0))
    b = min(len(f), a + int(rng.integers(1, 257)))
    byte = int(rng.choice([0x00, 0xFF, 0x80, 0x7F]))
    f[a:b] = bytes([byte]) * (b - a)
    return f"fill:{byte:#x}x{b - a}"


def _m_chunk(f: bytearray, rng, ctx) -> str:
    B0 = ctx.body
    if len(f) <= B0 + 4:
        return "chunk:none"
    a = B0 + int(rng.integers(len(f) - B0))
    b = min(len(f), a + int(rng.choice([1, 2, 3, 4, 8, 16, 64, 256])))
    op = rng.random()
    if op < 0.4:
        del f[a:b]
        return f"delete:{b - a}"
    if op < 0.7:
        f[b:b] = f[a:b]
        return f"duplicate:{b - a}"
    other = ctx.frames[int(rng.integers(len(ctx.frames)))]  # splice from another base frame
    if len(other) <= B0:
        return "splice:none"
    c = B0 + int(rng.integers(len(other) - B0))
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
    if len(f) < wire.HEADER_SIZE + 4:
        return "n_i:none"
    _U32.pack_into(f, wire.HEADER_SIZE, int(rng.choice([0, N_I - 1, N_I + 1, 0xFFFFFFFF])))
    return "n_i"  # the first u32 of the payload (n_i of an uplink)


MUTATORS: tuple[tuple[Callable, float], ...] = (
    (_m_flip, 3), (_m_setbyte, 2), (_m_truncate, 1.5), (_m_extend, 1), (_m_u32, 4),
    (_m_small, 2), (_m_float, 3), (_m_fill, 1), (_m_chunk, 2), (_m_header, 0.6), (_m_n_i, 0.2),
)


@functools.cache
def _cum_weights(header_weight: float) -> tuple[float, ...]:
    return tuple(itertools.accumulate(header_weight if fn is _m_header else w
                                      for fn, w in MUTATORS))


def mutant(target: Target, seed: int, index: int) -> tuple[bytes, str]:
    """Mutant ``index`` of ``target`` (deterministic in ``(seed, codec id, index)``) and a short
    description of what was done to it."""
    key = zlib.crc32(target.codec_id.encode())
    rng = _Rng((int(seed) << 64) ^ (key << 32) ^ int(index))
    f = bytearray(target.frames[rng.integers(len(target.frames))])
    ops = []
    nops = 1 if rng.random() < 0.5 else min(4, 1 + rng.geometric(0.5))  # 1..4 stacked
    cum = _cum_weights(target.header_weight)
    for fn in rng.choices([m for m, _ in MUTATORS], cum_weights=cum, k=nops):
        ops.append(fn(f, rng, target))
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


def _on_sigprof(signum, frame):
    raise FrameTimeout("frame used more than its CPU-time budget")


@contextlib.contextmanager
def sigprof_handler() -> Iterator[None]:
    """Install the SIGPROF handler of :func:`cpu_watchdog` (once for many frames)."""
    old = signal.signal(signal.SIGPROF, _on_sigprof)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


@contextlib.contextmanager
def cpu_watchdog(seconds: float | None) -> Iterator[None]:
    """Interrupt Python code after ``seconds`` of process CPU time (SIGPROF; main thread only).

    ITIMER_PROF leaves ITIMER_REAL to pytest-timeout. A compiled (Numba) loop cannot be
    interrupted by a signal handler: the benchmark's supervisor catches those by wall time.
    Inside :func:`sigprof_handler` only the timer is set (two system calls per frame).
    """
    if not seconds:
        yield
        return
    with contextlib.ExitStack() as stack:
        if signal.getsignal(signal.SIGPROF) is not _on_sigprof:
            stack.enter_context(sigprof_handler())
        signal.setitimer(signal.ITIMER_PROF, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)


@dataclasses.dataclass
class Result:
    """Outcome counts of a run of frames for one codec, and the first few failures."""

    codec_id: str
    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    max_alloc: int = 0
    max_seconds: float = 0.0
    failures: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)
    """``(index, outcome, mutation, detail)``."""
    traced: int = 0
    """Frames decoded under tracemalloc (``max_alloc`` is their maximum)."""

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
        self.traced += other.traced
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
    except MemoryError as exc:  # beyond the child's RLIMIT_AS (an unchecked huge length)
        outcome, detail = "oversized", f"MemoryError: {exc}"
    except Exception as exc:  # noqa: BLE001 - classifying every other failure is the point
        outcome, detail = "crash", f"{type(exc).__name__}: {exc}"
    else:
        try:
            bad = target.check(x)
        except Exception as exc:  # noqa: BLE001 - a malformed accepted value
            bad = f"accepted a malformed result ({type(exc).__name__}: {exc})"
        outcome, detail = ("crash", bad) if bad else ("accepted", "")
    dt = time.perf_counter() - t0
    peak = max(0, tracemalloc.get_traced_memory()[1] - base)
    if peak > ALLOC_LIMIT and outcome != "crash":
        outcome, detail = "oversized", f"peak {peak} bytes > {ALLOC_LIMIT} ({detail})"
    return outcome, detail, peak, dt


def warm_up(target: Target) -> None:
    """Decode every base frame once (compiles kernels, fills caches); they must be accepted."""
    for i, f in enumerate(target.frames):
        bad = target.check(target.decode(f))
        if bad:
            raise AssertionError(f"{target.codec_id}: base frame {i} does not decode: {bad}")


def run_frames(target: Target, seed: int, start: int, stop: int, *,
               timeout: float | None = 5.0, progress: Callable[[int], None] | None = None,
               batch: int = 64, trace_every: int = 1) -> Result:
    """Mutants ``start .. stop-1`` of ``target`` through :func:`classify`, ``batch`` at a time
    (each batch generated first, then decoded with tracemalloc tracing). With ``trace_every=k``
    only batches whose index is a multiple of ``k`` are traced (tracemalloc triples the cost of
    a frame); ``Result.traced`` counts the traced frames."""
    res = Result(target.codec_id)
    for a in range(start, stop, batch):
        # mutants are made with tracing off (tracemalloc makes the generator 4x slower)
        mutants = [mutant(target, seed, i) for i in range(a, min(stop, a + batch))]
        traced = (a // batch) % max(1, trace_every) == 0
        if traced:
            tracemalloc.start()
            res.traced += len(mutants)
        try:
            with sigprof_handler():
                for i, (frame, how) in enumerate(mutants, start=a):
                    if progress is not None:
                        progress(i)
                    outcome, detail, peak, dt = classify(target, frame, timeout=timeout)
                    res.add(i, outcome, how, detail)
                    res.max_alloc = max(res.max_alloc, peak)
                    res.max_seconds = max(res.max_seconds, dt)
        finally:
            tracemalloc.stop()  # a no-op when not tracing
    return res


# -- one process per target, no pickling (benchmark only) --------------------------------------
def _maxrss_kib() -> int:
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _limit_address_space(headroom: int) -> int:
    """Cap this process's virtual memory at its current size + ``headroom`` bytes (RLIMIT_AS):
    an allocation from an unchecked length then fails with MemoryError even in an untraced
    frame. Returns the limit (0 if it could not be set)."""
    import resource

    try:
        with open("/proc/self/status") as fh:
            vm = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmSize:")) * 1024
        limit = vm + headroom
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
        return limit
    except (OSError, ValueError, StopIteration):
        return 0


REPORT_EVERY = 6400
"""A child prints its cumulative counts every this many frames (multiple of the 64-frame batch),
so an interrupted run keeps what it measured."""


def child(name: str, seed: int, start: int, stop: int, timeout: float,
          progress_path: str | None, trace_every: int = 1,
          headroom: int = 1 << 30) -> int:  # pragma: no cover - runs in a subprocess
    """``--child``: fuzz frames ``start .. stop-1`` of one target, print one JSON line.

    The index of the frame being decoded is written to ``progress_path`` (8 bytes, in place)
    before each frame, so the parent can name the frame if this process dies or stops.
    """
    import json

    t0 = time.monotonic()
    target = Target.build(name)
    if not name.startswith("selftest_"):
        warm_up(target)
    rss0 = _maxrss_kib()
    as_limit = _limit_address_space(headroom) if headroom else 0
    fd = os.open(progress_path, os.O_RDWR | os.O_CREAT, 0o600) if progress_path else None
    pack = struct.Struct("<q").pack

    def beat(i: int) -> None:
        os.pwrite(fd, pack(i), 0)

    c0 = time.process_time()
    res = Result(name)
    for a in range(start, stop, REPORT_EVERY):  # a cumulative JSON line per REPORT_EVERY frames
        b = min(stop, a + REPORT_EVERY)
        res.merge(run_frames(target, seed, a, b, timeout=timeout,
                             progress=beat if fd is not None else None, trace_every=trace_every))
        out = dataclasses.asdict(res)
        out.update(start=start, stop=b, final=b == stop, cpu_s=time.process_time() - c0,
                   as_limit=as_limit, wall_s=time.monotonic() - t0, rss_warm_kib=rss0,
                   rss_growth_kib=_maxrss_kib() - rss0, base_frames=len(target.frames))
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    if fd is not None:
        os.close(fd)
    return 0


@dataclasses.dataclass
class Totals(Result):
    """A target's merged results, with the per-process resource figures."""

    cpu_s: float = 0.0
    wall_s: float = 0.0
    rss_growth_kib: int = 0
    processes: int = 0

    def merge_json(self, d: dict) -> None:
        r = Result(d["codec_id"], dict(d["counts"]), d["max_alloc"], d["max_seconds"],
                   [tuple(f) for f in d["failures"]], d["traced"])
        self.merge(r)
        self.cpu_s += d["cpu_s"]
        self.wall_s += d["wall_s"]
        self.rss_growth_kib = max(self.rss_growth_kib, d["rss_growth_kib"])


def supervise(names: list[str], frames: int, seed: int, jobs: int, chunk: int,
              timeout: float, kill_after: float, nice: int = 10, log=print,
              trace_every: int = 1) -> dict[str, Totals]:
    """Run ``frames`` mutants per target in child processes (``python fuzz_frames.py --child``),
    at most ``jobs`` at a time, ``chunk`` frames per process; results come back as one JSON line
    on the child's stdout (nothing is pickled). A child that exits without its JSON line (a
    segfault in a kernel, an uncaught error) counts as a crash and one that makes no progress
    for ``kill_after`` wall seconds as a hang, at the frame its progress file names; the
    supervisor then starts a new child after that frame."""
    import json
    import subprocess
    import tempfile

    # chunk by chunk across targets: an interrupted run has covered every target about equally
    tasks = [(n, a, min(frames, a + chunk)) for a in range(0, frames, chunk) for n in names]
    tasks.reverse()
    results = {n: Totals(n) for n in names}
    running: list[dict] = []
    tmp = tempfile.mkdtemp(prefix="fuzz_frames_")
    env = dict(os.environ, PYTHONHASHSEED="0")
    done_frames, total, t0 = 0, frames * len(names), time.monotonic()
    serial = 0

    def start(task) -> dict:
        nonlocal serial
        serial += 1
        name, a, b = task
        prog = os.path.join(tmp, f"p{serial}")
        with open(prog, "wb") as fh:
            fh.write(struct.pack("<q", -1))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--start", str(a),
               "--stop", str(b), "--seed", str(seed), "--frame-timeout", str(timeout),
               "--progress", prog, "--trace-every", str(trace_every)]
        if nice > os.nice(0):  # --nice is the children's niceness, not an increment
            cmd = ["nice", "-n", str(nice - os.nice(0))] + cmd
        out = open(os.path.join(tmp, f"o{serial}"), "w+b")
        err = open(os.path.join(tmp, f"e{serial}"), "w+b")
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        return {"task": task, "proc": p, "out": out, "err": err, "prog": prog, "last": -1,
                "seen": time.monotonic()}

    def position(w) -> int:
        with open(w["prog"], "rb") as fh:
            (i,) = struct.unpack("<q", fh.read(8))
        return i

    def lost(w, outcome: str, why: str) -> None:
        name, a, b = w["task"]
        i = position(w)
        tail = _tail(w["err"])
        if i < a:  # died before the first frame: building or warming up the target
            _close(w)
            raise RuntimeError(f"{name}: child failed before fuzzing ({why}):\n{tail}")
        w["out"].seek(0)
        for line in reversed(w["out"].read().decode(errors="replace").splitlines()):
            with contextlib.suppress(ValueError, KeyError):  # counts up to the last report
                results[name].merge_json(json.loads(line))
                break
        r = Result(name)
        r.add(i, outcome, "(see --repro)", why)
        results[name].merge(r)
        _close(w)
        log(f"  {name} frame {i}: {outcome} ({why}); resuming after it\n{tail}")
        if i + 1 < b:
            tasks.append((name, i + 1, b))

    try:
        while tasks or running:
            while tasks and len(running) < max(1, jobs):
                running.append(start(tasks.pop()))
            time.sleep(0.2)
            for w in list(running):
                rc = w["proc"].poll()
                if rc is None:
                    i = position(w)
                    now = time.monotonic()
                    if i != w["last"]:
                        w["last"], w["seen"] = i, now
                    elif now - w["seen"] > (kill_after if i >= 0 else 900.0):  # 900: build, JIT
                        w["proc"].kill()
                        w["proc"].wait()
                        running.remove(w)
                        lost(w, "hang", f"no progress for {kill_after:.0f} s")
                    continue
                running.remove(w)
                w["out"].seek(0)
                lines = w["out"].read().decode(errors="replace").strip().splitlines()
                if rc != 0 or not lines:
                    lost(w, "crash", f"process exited with status {rc} and no result")
                    continue
                d = None
                with contextlib.suppress(ValueError):
                    d = json.loads(lines[-1])
                if d is None:
                    lost(w, "crash", f"process exited with status {rc}, unreadable result")
                    continue
                _close(w)
                results[d["codec_id"]].merge_json(d)
                results[d["codec_id"]].processes += 1
                done_frames += d["stop"] - d["start"]
                log(f"  {d['codec_id']:20s} frames {d['start']:>7d}..{d['stop']:<7d} "
                    f"{dict((k, v) for k, v in d['counts'].items() if v)} "
                    f"cpu {d['cpu_s']:.0f} s; {done_frames}/{total} in "
                    f"{time.monotonic() - t0:.0f} s")
    finally:
        for w in running:  # interrupted: stop the children
            w["proc"].kill()
            w["proc"].wait()
            _close(w)
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def _close(w: dict) -> None:
    w["out"].close()
    w["err"].close()


def _tail(fh, n: int = 2000) -> str:
    fh.seek(0)
    return fh.read().decode(errors="replace")[-n:]


def table(results: dict[str, Totals]) -> str:
    from tabulate import tabulate

    rows = [(r.codec_id, r.frames, r.counts["rejected"], r.counts["accepted"], r.counts["crash"],
             r.counts["hang"], r.counts["oversized"], r.traced, f"{r.max_alloc / 1024:.1f}",
             r.rss_growth_kib, f"{r.max_seconds * 1e3:.1f}", f"{r.cpu_s:.0f}")
            for r in results.values()]
    return tabulate(rows, headers=("target", "frames", "rejected", "accepted", "crashes",
                                   "hangs", "oversized", "traced", "max alloc KiB",
                                   "max RSS growth KiB", "max ms/frame", "CPU s"),
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
    ap.add_argument("--codecs", nargs="*", default=None,
                    help="target names: codec ids and " + ", ".join(EXTRA_TARGETS)
                    + " (default: all)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--chunk", type=int, default=50000, help="frames per child process")
    ap.add_argument("--frame-timeout", type=float, default=5.0, help="CPU seconds per frame")
    ap.add_argument("--kill-after", type=float, default=60.0,
                    help="wall seconds without progress before a process is killed")
    ap.add_argument("--nice", type=int, default=10,
                    help="niceness of the child processes (absolute; never lowered)")
    ap.add_argument("--repro", nargs=2, metavar=("CODEC", "INDEX"))
    ap.add_argument("--markdown", help="also write the table to this file")
    ap.add_argument("--json", help="also write the per-target results to this JSON file")
    ap.add_argument("--child", metavar="TARGET", help=argparse.SUPPRESS)
    ap.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--stop", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--progress", help=argparse.SUPPRESS)
    ap.add_argument("--trace-every", type=int, default=1,
                    help="trace one batch of 64 frames in this many with tracemalloc (1: all)")
    a = ap.parse_args(argv)
    if a.child:
        return child(a.child, a.seed, a.start, a.stop, a.frame_timeout, a.progress,
                     a.trace_every)
    if a.repro:
        return repro(a.repro[0], a.seed, int(a.repro[1]))
    ids = a.codecs or all_targets()
    unknown = sorted(set(ids) - set(all_targets()))
    if unknown:
        ap.error(f"unknown targets {unknown}; available: {all_targets()}")
    print(f"fuzzing {len(ids)} targets x {a.frames} frames, seed {a.seed}, {a.jobs} processes, "
          f"model D = {N_PARAMS}, alloc limit {ALLOC_LIMIT} bytes", flush=True)
    t0 = time.monotonic()
    results = supervise(ids, a.frames, a.seed, a.jobs, a.chunk, a.frame_timeout, a.kill_after,
                        a.nice, log=lambda m: print(m, flush=True), trace_every=a.trace_every)
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
    if a.json:
        import json

        with open(a.json, "w") as fh:
            json.dump({n: dataclasses.asdict(r) for n, r in results.items()}, fh, indent=1)
    return 1 if any(r.bad for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

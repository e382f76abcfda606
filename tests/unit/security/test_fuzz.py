"""A short, seeded run of the frame fuzzer (``benchmarks/fuzz_frames.py``) for every codec.

The benchmark runs 100,000 mutants per target (docs/security.md); here a few hundred per target
go through the same mutation engine and receive path, plus random payloads from hypothesis.
Targets: every registry codec (UP_UPDATE through the server's path), the split-learning
SPLIT_ACT (GPQ and dense), SPLIT_GRAD (fp32, fp16, codebook) and prefix payloads, and the bare
frame decoder. Every outcome must be a rejection (``WireFormatError``/``UpdateRejected``) or a
finite vector of the model's length; no other exception, no hang, no oversized allocation.
The harness itself is tested on broken targets so that these tests can fail.
"""

from __future__ import annotations

import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsqueeze import compress
from fedsqueeze.comm import wire
from fedsqueeze.compress.base import Compressor, Encoded
from fedsqueeze.errors import WireFormatError

from ._engine import fuzz, target

CODECS = compress.available()
TARGETS = fuzz().all_targets()
FRAMES = 400
SEED = 20240611


def test_every_codec_and_the_split_and_frame_decoders_are_targets():
    assert set(CODECS) < set(TARGETS)
    assert {"split_act_gpq", "split_act_dense", "split_grad_fp32", "split_grad_fp16",
            "split_grad_codebook", "split_prefix", "frame"} <= set(TARGETS)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("codec_id", TARGETS)
def test_mutated_frames_are_rejected_or_decode_to_a_finite_vector(codec_id):
    res = fuzz().run_frames(target(codec_id), SEED, 0, FRAMES, timeout=5.0)
    assert res.frames == FRAMES
    assert res.bad == 0, f"{codec_id}: {res.counts}; first failures {res.failures[:5]}"
    # the mutants reach the codec parser: most are rejected there, some decode
    assert res.counts["rejected"] >= FRAMES // 4
    assert res.max_alloc <= fuzz().ALLOC_LIMIT


@pytest.mark.parametrize("codec_id", TARGETS)
def test_mutants_are_reproducible_and_mostly_consistent_frames(codec_id):
    t = target(codec_id)
    a = [fuzz().mutant(t, SEED, i) for i in range(50)]
    assert a == [fuzz().mutant(t, SEED, i) for i in range(50)]
    assert len({f for f, _ in a}) > 40
    assert sum("stale" not in how for _, how in a) >= 35  # len + CRC recomputed for most


@pytest.mark.parametrize("codec_id", TARGETS)
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_random_codec_payloads_never_crash(codec_id, data):
    """Hypothesis payloads (random bytes, or a valid payload with a random window overwritten)
    after a valid header (and ``n_i`` for codecs), with a correct CRC."""
    t = target(codec_id)
    base = t.frames[data.draw(st.integers(0, len(t.frames) - 1), label="base")]
    body = bytearray(base[t.body:])
    if data.draw(st.booleans(), label="random body"):
        body = bytearray(data.draw(st.binary(max_size=2 * len(body) + 8), label="body"))
    else:
        at = data.draw(st.integers(0, max(0, len(body) - 1)), label="at")
        chunk = data.draw(st.binary(min_size=1, max_size=16), label="chunk")
        body[at:at + len(chunk)] = chunk
    payload = base[wire.HEADER_SIZE:t.body] + bytes(body)  # not padded: the body as drawn
    frame = base[:16] + struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    tracemalloc.start()
    try:
        outcome, detail, peak, _ = fuzz().classify(t, frame, timeout=5.0)
    finally:
        tracemalloc.stop()
    assert outcome in ("rejected", "accepted"), f"{codec_id}: {outcome}: {detail}"


# -- the harness can fail -----------------------------------------------------------------------
class _Broken(Compressor):
    """A codec whose receive path misbehaves in the way ``mode`` says."""

    codec_id = "broken-for-test"

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def encode(self, x, *, seed, state=None):
        return Encoded({}, (np.asarray(x, "<f4"),), len(x)), None

    def parse(self, payload, n):
        if self.mode == "index":
            return [][1]
        if self.mode == "struct":
            return struct.unpack("<Q", b"")
        if self.mode == "hang":
            t0 = time.process_time()
            while time.process_time() - t0 < 60:
                pass
        if self.mode == "alloc":
            np.ones(1 << 22, np.uint8)  # 4 MiB "from a declared length"
        return Encoded({}, (np.frombuffer(payload, "<f4"),), n)

    def decode(self, enc, *, out=None):
        x = np.frombuffer(enc.sections[0], "<f4").copy()
        if self.mode == "short":
            return x[:-1]
        return x

    def max_nbytes(self, n):
        return 4 * n


@pytest.mark.parametrize("mode, outcome", [
    ("index", "crash"), ("struct", "crash"), ("short", "crash"), ("hang", "hang"),
    ("alloc", "oversized"), ("ok", "accepted"),
])
def test_the_harness_reports_crashes_hangs_and_oversized_allocations(mode, outcome):
    F = fuzz()
    codec = _Broken(mode)
    x = np.linspace(-1, 1, F.N_PARAMS, dtype=np.float32)
    t = F.Target("broken-for-test", codec, 0, [F.make_frame((x,))], F.N_PARAMS * 4 + 4096)
    tracemalloc.start()
    try:
        got, detail, _, _ = F.classify(t, t.frames[0], timeout=0.5)
    finally:
        tracemalloc.stop()
    assert got == outcome, detail


def test_the_harness_counts_a_non_finite_accept_as_a_crash(monkeypatch):
    F = fuzz()
    t = target("identity")
    monkeypatch.setattr(F, "decode_payload", lambda c, p, n, s: np.full(n, np.nan, np.float32))
    tracemalloc.start()
    try:
        got, detail, _, _ = F.classify(t, t.frames[0])
    finally:
        tracemalloc.stop()
    assert (got, detail) == ("crash", "accepted a non-finite vector")


def test_a_rejection_is_a_value_error_the_server_catches():
    F = fuzz()
    assert all(issubclass(e, ValueError) for e in F.REJECTED)
    assert WireFormatError in F.REJECTED


# -- the supervisor: one subprocess per target, no pickling -------------------------------------
@pytest.mark.timeout(600)
def test_the_supervisor_reports_a_segfault_and_a_hang_and_carries_on():
    """A child that dies of SIGSEGV is a crash, one blocked in C code a hang; both at the frame
    the progress file names, and the supervisor resumes after it and finishes."""
    F = fuzz()
    logs = []
    res = F.supervise(["selftest_segv", "selftest_hang"], 2, SEED, jobs=2, chunk=2, timeout=5.0,
                      kill_after=3.0, nice=0, log=logs.append)
    for name, outcome in (("selftest_segv", "crash"), ("selftest_hang", "hang")):
        r = res[name]
        assert r.counts[outcome] == 2 and r.frames == 2, (name, r.counts)
        assert [f[0] for f in r.failures] == [0, 1]
    assert any("status -11" in m for m in logs), logs


def test_the_harness_does_not_pickle():
    """Item 7 for the fuzzer itself: results come back as JSON lines, not through
    multiprocessing's pickled pipes."""
    import ast

    from .test_no_code_from_wire import scan_source

    src = Path(fuzz().__file__).read_text()
    assert scan_source(src, "benchmarks/fuzz_frames.py") == []
    mods = {a.name for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module for n in ast.walk(ast.parse(src)) if isinstance(n, ast.ImportFrom)}
    assert not mods & {"multiprocessing", "concurrent.futures", "pickle"}, mods

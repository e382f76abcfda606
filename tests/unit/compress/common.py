"""Shared checks every codec passes (STYLE.md section 6). Test modules parametrize over them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedsqueeze import compress
from fedsqueeze.comm import wire
from fedsqueeze.compress.base import parse_payload
from fedsqueeze.errors import WireFormatError

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "wire"


def sample_vector(n: int, seed: int = 0, kind: str = "normal") -> np.ndarray:
    g = np.random.default_rng(seed)
    if kind == "normal":
        return g.standard_normal(n).astype(np.float32)
    if kind == "heavy":
        return (g.standard_t(2, n) * 0.01).astype(np.float32)
    if kind == "zeros":
        return np.zeros(n, np.float32)
    raise ValueError(kind)


def check_roundtrip(codec, x: np.ndarray, seed: int = 0, *, rtol: float | None = None):
    """Encode, serialise, parse, decode. Lossless codecs must be exact; returns the decoded vector."""
    enc, _ = codec.encode(x, seed=seed)
    payload = enc.payload()
    enc2 = parse_payload(codec, payload, x.shape[0], seed)
    out = codec.decode(enc2)
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_array_equal(out, codec.decode(enc))
    if codec.lossless:
        np.testing.assert_array_equal(out, x)
    elif rtol is not None:
        err = np.linalg.norm(out - x) / max(np.linalg.norm(x), 1e-30)
        assert err <= rtol, f"relative error {err} > {rtol}"
    # decode into a caller buffer of the right size; wrong size is an error
    buf = np.empty_like(x)
    assert codec.decode(enc2, out=buf) is buf
    with pytest.raises(ValueError):
        codec.decode(enc2, out=np.empty(x.shape[0] + 1, np.float32))
    return out


def check_config_json(codec):
    cfg = json.loads(json.dumps(codec.get_config()))
    assert cfg["id"] == codec.codec_id
    again = compress.from_config(cfg)
    assert again == codec and again.get_config() == codec.get_config()


def check_repr(codec):
    cls = type(codec)
    again = eval(repr(codec), {cls.__name__: cls})  # noqa: S307 - our own repr
    assert again == codec


def check_nbytes(codec, x: np.ndarray, seed: int = 0):
    enc, _ = codec.encode(x, seed=seed)
    lens = [memoryview(s).nbytes for s in enc.sections]
    assert enc.nbytes == sum(wire.pad4(n) for n in lens) == len(enc.payload())
    assert enc.nbytes <= codec.max_nbytes(x.shape[0])
    frame = wire.pack_frame(4, enc.sections, round=1, client=2)
    assert len(frame) == wire.HEADER_SIZE + enc.nbytes
    return enc


def check_deterministic(codec, x: np.ndarray, seed: int = 3):
    a, _ = codec.encode(x, seed=seed)
    b, _ = codec.encode(x, seed=seed)
    assert a.payload() == b.payload()


def check_truncation(codec, x: np.ndarray, seed: int = 0, *, max_cuts: int = 64):
    """Every truncation of a valid payload is rejected with WireFormatError, never a crash."""
    payload = codec.encode(x, seed=seed)[0].payload()
    cuts = np.unique(np.linspace(0, len(payload) - 1, min(max_cuts, len(payload))).astype(int))
    for cut in cuts:
        with pytest.raises(WireFormatError):
            codec.decode(parse_payload(codec, payload[:cut], x.shape[0], seed))
    with pytest.raises(WireFormatError):
        parse_payload(codec, payload + b"\0\0\0\0", x.shape[0], seed)


def golden_cases(codec_id: str) -> list[Path]:
    return sorted((GOLDEN / codec_id).glob("v*/*.json"))


def check_golden_frames(codec_id: str):
    """Decode every committed golden frame of ``codec_id`` and compare with the stored output."""
    cases = golden_cases(codec_id)
    assert cases, f"no golden frames for {codec_id}: run python tests/fixtures/make_wire.py"
    for meta_path in cases:
        meta = json.loads(meta_path.read_text())
        codec = compress.from_config(meta["config"])
        if int(meta_path.parent.name[1:]) != codec.codec_version:
            continue  # older versions: kept for readers that still accept them
        frame = np.fromfile(meta_path.with_suffix(".frame"), dtype=np.uint8)
        header, payload = wire.unpack_frame(frame)
        out = codec.decode(parse_payload(codec, payload, meta["n"], meta["seed"]))
        expected = np.load(meta_path.with_suffix(".npy"))
        np.testing.assert_array_equal(out, expected)
        # and the encoder still produces the same bytes from the same input and seed
        x = sample_vector(meta["n"], meta["input_seed"], meta.get("kind", "normal"))
        enc, _ = codec.encode(x, seed=meta["seed"])
        assert enc.payload() == bytes(payload), f"{codec_id}: encoder output changed; bump codec_version"

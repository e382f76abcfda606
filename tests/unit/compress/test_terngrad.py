"""TernGrad codec (METHODS.md 6.5): sizes, oracle codes, clipping, unbiasedness."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.comm import wire
from fedsqueeze.compress.terngrad import TernGrad
from fedsqueeze.errors import WireFormatError
from fedsqueeze.fl.strategy import UP_PRE
from tests import naive

from .common import (
    check_config_json,
    check_deterministic,
    check_golden_frames,
    check_nbytes,
    check_repr,
    check_roundtrip,
    check_truncation,
    sample_vector,
)
from .test_qsgd import assert_unbiased

DIGITS = [4096, 64, 640, 10]


@pytest.mark.parametrize("cfg", [{}, {"clip": None}, {"clip": 1.0}, {"segments": "split"}])
@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("kind", ["normal", "heavy", "zeros"])
def test_shared_checks(cfg, n, kind):
    if cfg.get("segments") == "split":
        cfg = {"segments": [n] if n < 3 else [1, n - 3, 2]}
    codec = TernGrad(**cfg)
    x = sample_vector(n, n, kind)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


def test_golden_frames():
    check_golden_frames("terngrad")


def test_worked_size():
    codec = TernGrad(segments=DIGITS)
    enc, _ = codec.encode(sample_vector(4810, 0), seed=0)
    frame = wire.pack_frame(4, [UP_PRE.pack(1)] + list(enc.sections))
    assert len(frame) == 1248 == 24 + 4 + codec.max_nbytes(4810)
    assert codec.theoretical_bits(enc) == pytest.approx(32 * 4 + 4810 * math.log2(3))


@pytest.mark.parametrize("clip", [2.5, None])
def test_codes_equal_oracle(clip):
    x = sample_vector(4810, 7, "heavy")
    codec = TernGrad(clip=clip, segments=DIGITS)
    seed = 99
    enc, _ = codec.encode(x, seed=seed)
    bounds = np.cumsum([0] + DIGITS)
    st = naive.segment_stats(x, bounds)
    n = np.diff(bounds)
    sigma = np.sqrt(np.maximum(st[:, 1] / n - (st[:, 0] / n) ** 2, 0))
    cv = np.full(4, np.inf, np.float32) if clip is None else (clip * sigma).astype(np.float32)
    scales = np.minimum(st[:, 3].astype(np.float32), cv)
    np.testing.assert_array_equal(enc.sections[0], scales)
    k0, k1 = rng.key_of(seed)
    codes = naive.ternary_codes(x, bounds, cv, scales, (int(k0), int(k1)))
    np.testing.assert_array_equal(np.frombuffer(enc.sections[1], np.uint8),
                                  naive.pack_bits(codes, 2))


def test_clipping_bounds_the_scale():
    x = sample_vector(1000, 2)
    x[10] = 100.0  # an outlier far beyond 2.5 sigma
    enc, _ = TernGrad().encode(x, seed=0)
    s = float(enc.sections[0][0])
    sigma = float(np.std(x.astype(np.float64)))
    assert s == pytest.approx(2.5 * sigma, rel=1e-6) and s < 100.0
    out = TernGrad().decode(enc)
    assert set(np.unique(out).tolist()) <= {-s, 0.0, s} and out[10] == s


@pytest.mark.parametrize("clip", [2.5, None])
def test_unbiased_for_the_clipped_vector(clip):
    x = sample_vector(300, 11, "heavy")
    codec = TernGrad(clip=clip, segments=[100, 200])
    draws = 1500
    acc = np.zeros(300)
    for seed in range(draws):  # the draws form one estimate, not separate cases
        acc += codec.decode(codec.encode(x, seed=seed)[0])
    scales = np.asarray(codec.encode(x, seed=0)[0].sections[0])
    s = np.repeat(scales, [100, 200])
    target = np.clip(x, -s, s)  # s = min(max|x|, cv): clipping at cv is clipping at s
    assert_unbiased(acc / draws, target, s / 2, draws)


def test_decode_rejects_code_three():
    payload = np.array([1.0], "<f4").tobytes() + bytes([0b11, 0, 0, 0])
    codec = TernGrad()
    with pytest.raises(WireFormatError, match="codes are 3"):
        codec.decode(codec.parse(payload, 4))


@pytest.mark.parametrize("payload,match", [
    (np.array([-1.0], "<f4").tobytes() + bytes(4), ">= 0"),
    (np.array([1.0], "<f4").tobytes() + bytes([0, 0b100, 0, 0]), "padding bits"),  # n = 5
    (np.array([1.0], "<f4").tobytes(), "codes"),
])
def test_parse_rejects(payload, match):
    with pytest.raises(WireFormatError, match=match):
        TernGrad().parse(payload, 5)


@pytest.mark.parametrize("kw,error", [
    ({"clip": 0}, ValueError), ({"clip": float("inf")}, ValueError), ({"clip": "2"}, TypeError),
    ({"segments": [0]}, ValueError),
])
def test_constructor_validates(kw, error):
    with pytest.raises(error):
        TernGrad(**kw)


def test_diagnostics_density():
    enc, _ = TernGrad().encode(np.zeros(40, np.float32), seed=0)
    assert TernGrad().diagnostics(enc)["density"] == 0.0
    enc, _ = TernGrad(clip=None).encode(np.full(40, -2.0, np.float32), seed=0)
    assert TernGrad().diagnostics(enc)["density"] == 1.0

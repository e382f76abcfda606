"""signSGD and EF-signSGD codecs (METHODS.md 6.6, 6.7)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm import wire
from fedsqueeze.compress.base import ErrorFeedback
from fedsqueeze.compress.sign import EFSignSGD, SignSGD
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

DIGITS = [4096, 64, 640, 10]  # DigitsMLP tensors, D = 4,810


def _codecs(n: int):
    return [SignSGD(), EFSignSGD(), EFSignSGD(segments=[n]),
            EFSignSGD(segments=[1] * n if n < 10 else [n - 5, 2, 3])]


@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize("n", [1, 7, 1000])
@pytest.mark.parametrize("kind", ["normal", "zeros"])
def test_shared_checks(which, n, kind):
    codec = _codecs(n)[which]
    x = sample_vector(n, n, kind)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


@pytest.mark.parametrize("codec_id", ["signsgd", "ef_signsgd"])
def test_golden_frames(codec_id):
    check_golden_frames(codec_id)


@pytest.mark.parametrize("codec,expected", [(SignSGD(), 632), (EFSignSGD(segments=DIGITS), 648)])
def test_worked_sizes(codec, expected):
    enc, _ = codec.encode(sample_vector(4810, 0), seed=0)
    frame = wire.pack_frame(4, [UP_PRE.pack(1)] + list(enc.sections))
    assert len(frame) == expected == 24 + 4 + codec.max_nbytes(4810)


def test_signsgd_bytes_and_values():
    x = sample_vector(1001, 3)
    x[::7] = 0.0
    enc, _ = SignSGD().encode(x, seed=0)
    np.testing.assert_array_equal(np.frombuffer(enc.sections[0], np.uint8), naive.pack_signs(x))
    np.testing.assert_array_equal(SignSGD().decode(enc), np.where(x < 0, -1, 1).astype(np.float32))
    assert SignSGD().theoretical_bits(enc) == 1001


def test_ef_alpha_is_mean_abs_per_segment():
    x = sample_vector(4810, 5)
    codec = EFSignSGD(segments=DIGITS)
    enc, _ = codec.encode(x, seed=0)
    bounds = np.cumsum([0] + DIGITS)
    ref = [np.abs(x[a:b].astype(np.float64)).mean() for a, b in zip(bounds[:-1], bounds[1:],
                                                                     strict=True)]
    np.testing.assert_allclose(enc.sections[0], ref, rtol=1e-6)
    out = codec.decode(enc)
    np.testing.assert_array_equal(out, naive.unpack_signs(naive.pack_signs(x), bounds,
                                                          enc.sections[0], 4810))
    assert codec.theoretical_bits(enc) == 32 * 4 + 4810


def test_error_feedback_conservation():
    """The compensated input equals ``x_hat + residual`` (STYLE.md section 6)."""
    codec, ef = EFSignSGD(segments=[30, 70]), ErrorFeedback()
    assert codec.error_feedback and not SignSGD().error_feedback
    for rnd in range(3):  # residuals carry across rounds; each round re-checks the identity
        v = ef.compensate(("c", 0), sample_vector(100, rnd))
        x_hat = codec.decode(codec.encode(v, seed=rnd)[0])
        ef.update(("c", 0), v, x_hat)
        np.testing.assert_allclose(x_hat + ef.store[("c", 0)], v, rtol=0, atol=1e-6)


def test_segments_must_match_the_vector():
    codec = EFSignSGD(segments=[3, 4])
    with pytest.raises(ValueError, match="sum to 7"):
        codec.encode(sample_vector(8, 0), seed=0)
    payload = codec.encode(sample_vector(7, 0), seed=0)[0].payload()
    with pytest.raises(WireFormatError, match="sum to 7"):
        codec.parse(payload, 8)


@pytest.mark.parametrize("segments,error", [
    ([], ValueError), ([0, 3], ValueError), ([2.0], ValueError), ("12", TypeError),
    (5, TypeError), ([True], ValueError),
])
def test_segments_validated(segments, error):
    with pytest.raises(error):
        EFSignSGD(segments=segments)


@pytest.mark.parametrize("payload,match", [
    (np.array([-1.0], "<f4").tobytes() + b"\x00\x00\x00\x00", ">= 0"),
    (np.array([1.0], "<f4").tobytes() + b"\x00\x08\x00\x00", "padding bits"),  # bit 11 of n=9
    (np.array([np.inf], "<f4").tobytes() + b"\x00\x00\x00\x00", "finite"),
])
def test_ef_parse_rejects(payload, match):
    with pytest.raises(WireFormatError, match=match):
        EFSignSGD().parse(payload, 9)


def test_nan_is_rejected_by_ef_and_coded_plus_by_signsgd():
    x = np.array([np.nan, -1.0], np.float32)
    with pytest.raises(ValueError, match="NaN"):
        EFSignSGD().encode(x, seed=0)
    assert SignSGD().decode(SignSGD().encode(x, seed=0)[0]).tolist() == [1.0, -1.0]

"""AdaQuantFL codec: QSGD payload with ``s`` from the encode state (METHODS.md 4.2-4.4)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.compress.adaquant import AdaQuant
from fedsqueeze.compress.qsgd import QSGD
from fedsqueeze.errors import WireFormatError

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

CONFIGS = [{}, {"s0": 1, "s_max": 4, "bucket": 64}, {"s0": 300, "s_max": 32767}]


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_shared_checks(cfg, n):
    codec = AdaQuant(**cfg)
    x = sample_vector(n, n)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


def test_golden_frames():
    check_golden_frames("adaquant")


@pytest.mark.parametrize("s", [1, 2, 5, 16, 255])
def test_state_level_gives_qsgd_bytes(s):
    x = sample_vector(1500, s)
    enc, state = AdaQuant().encode(x, seed=42, state={"s": s})
    assert state == {"s": s} and enc.meta["s"] == s
    assert enc.payload() == QSGD(s=s).encode(x, seed=42)[0].payload()


def test_default_level_is_s0():
    enc, state = AdaQuant(s0=3).encode(sample_vector(10, 0), seed=0)
    assert enc.meta["s"] == 3 and state is None


@pytest.mark.parametrize("state,error", [
    ({"s": 0}, ValueError), ({"s": 256}, ValueError), ({"s": 2.5}, TypeError),
    ({"levels": 2}, TypeError), (5, TypeError),
])
def test_state_validated(state, error):
    with pytest.raises(error):
        AdaQuant().encode(sample_vector(10, 0), seed=0, state=state)


def test_parse_accepts_any_level_up_to_s_max():
    x = sample_vector(100, 1)
    small, big = AdaQuant(s_max=8), AdaQuant(s_max=255)
    payload = big.encode(x, seed=0, state={"s": 8})[0].payload()
    assert small.parse(payload, 100).meta["s"] == 8
    payload = big.encode(x, seed=0, state={"s": 9})[0].payload()
    with pytest.raises(WireFormatError, match="s = 9"):
        small.parse(payload, 100)


@pytest.mark.parametrize("kw", [{"s0": 0}, {"s0": 5, "s_max": 4}, {"s_max": 40000},
                                {"bucket": -1}, {"coding": "huffman"}])
def test_constructor_validates(kw):
    with pytest.raises(ValueError):
        AdaQuant(**kw)


def test_max_nbytes_uses_s_max():
    assert AdaQuant(s_max=255).max_nbytes(4810) == QSGD(s=255).max_nbytes(4810)


def test_elias_coding_carries_the_same_values():
    x = sample_vector(2000, 3)
    a, b = AdaQuant(), AdaQuant(coding="elias")
    ea, _ = a.encode(x, seed=2, state={"s": 6})
    eb, _ = b.encode(x, seed=2, state={"s": 6})
    np.testing.assert_array_equal(a.decode(a.parse(ea.payload(), 2000)),
                                  b.decode(b.parse(eb.payload(), 2000)))
    assert b.parse(eb.payload(), 2000).meta["s"] == 6 and eb.nbytes < ea.nbytes

"""The "clustered" codec and the ME encoding (METHODS.md 3.4 item 1, 3.5)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.comm.wire import SectionReader
from fedsqueeze.compress.clustering import (
    Clustered,
    decode_parts,
    encode_parts,
    index_width,
    me_bits,
    me_nbytes,
    normalize_layout,
    read_parts,
)
from fedsqueeze.errors import WireFormatError
from tests import naive

from .common import (
    check_config_json,
    check_deterministic,
    check_nbytes,
    check_repr,
    check_roundtrip,
    check_truncation,
    sample_vector,
)

# DigitsCNN (METHODS.md 7.9): conv1 w, b, conv2 w, b, fc w, b; the conv kernels are clustered
DIGITS_CNN = [[144, True], [16, False], [4608, True], [32, False], [320, False], [10, False]]

CONFIGS = [
    {"k": 8},
    {"k": 2, "iters": 0},
    {"k": 30, "iters": 3},
    {"k": 255, "iters": 1},
    {"k": 5, "layout": [[3, True], [2, False], [995, True]]},
    {"k": 4, "shapes": [[4, 1, 3, 3], [4], [10, 4], [10]]},
]


def _n(cfg: dict, default: int) -> int:
    if "layout" in cfg:
        return sum(m for m, _ in cfg["layout"])
    if "shapes" in cfg:
        return sum(int(np.prod(s)) for s in cfg["shapes"])
    return default


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("n", [1, 7, 1000])
def test_shared_checks(cfg, n):
    codec = Clustered(**cfg)
    x = sample_vector(_n(cfg, n), seed=n)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    check_nbytes(codec, x)
    check_deterministic(codec, x)
    check_truncation(codec, x)


@pytest.mark.parametrize(("k", "nbytes"), [(8, 3368), (30, 4732)])
def test_digits_cnn_sizes_from_methods(k, nbytes):
    layout = normalize_layout(DIGITS_CNN)
    assert me_nbytes(layout, k) == nbytes
    codec = Clustered(k=k, iters=0, layout=DIGITS_CNN)
    enc, _ = codec.encode(sample_vector(5130, seed=k), seed=1)
    assert enc.nbytes == nbytes == codec.max_nbytes(5130)
    w = index_width(k)
    assert codec.theoretical_bits(enc) == me_bits(layout, k) == (
        32 * k * 2 + (144 + 4608) * w + 32 * (16 + 32 + 320 + 10))


@pytest.mark.parametrize("k", [2, 3, 8, 17, 30])
def test_payload_equals_oracle_bytes(k):
    g = np.random.default_rng(k)
    layout = normalize_layout([[13, True], [3, False], [40, True]])
    parts = [(g.standard_normal(k).astype(np.float32), g.integers(0, k, 13).astype(np.uint8)),
             g.standard_normal(3).astype(np.float32),
             (g.standard_normal(k).astype(np.float32), g.integers(0, k, 40).astype(np.uint8))]
    sections, bits = encode_parts(parts, layout)
    from fedsqueeze.compress.base import Encoded

    payload = Encoded({}, tuple(sections), 56).payload()
    assert payload == naive.me_bytes(parts, layout)
    back, _ = read_parts(SectionReader(payload), layout, k=k)
    out = decode_parts(back, layout, np.empty(56, np.float32))
    np.testing.assert_array_equal(out[:13], parts[0][0][parts[0][1]])
    np.testing.assert_array_equal(out[13:16], parts[1])
    np.testing.assert_array_equal(out[16:], parts[2][0][parts[2][1]])


@pytest.mark.parametrize("iters", [0, 10])
def test_few_distinct_values_are_exact(iters):
    x = np.repeat(np.array([-2.0, 0.0, 0.5, 7.0], np.float32), 25)
    codec = Clustered(k=8, iters=iters)
    enc, _ = codec.encode(x, seed=0)
    np.testing.assert_array_equal(codec.decode(enc), x)


@pytest.mark.parametrize("k", [4, 16])
def test_more_clusters_less_error(k):
    x = sample_vector(2000, seed=5)
    err = [np.linalg.norm(check_roundtrip(Clustered(k=kk), x) - x) for kk in (k, 2 * k)]
    assert err[1] < err[0] < 0.5 * np.linalg.norm(x)


def _payload(k=5, n=10):
    return Clustered(k=k).encode(sample_vector(n, seed=2), seed=0)[0].payload(), n


@pytest.mark.parametrize(("mutate", "match"), [
    (lambda p: bytes([6]) + p[1:], "k = 6"),           # k differs from the codec's k
    (lambda p: bytes([1]) + p[1:], "k = 1"),           # k below the minimum
    (lambda p: p[:1] + b"\x01" + p[2:], "reserved"),   # non-zero reserved bytes
    (lambda p: p[:24] + bytes([0xFF]) + p[25:], "id"),  # id 7 >= k = 5
    (lambda p: p[:27] + bytes([0x80]) + p[28:], "unused bits|padding"),
])
def test_malformed_payloads_rejected(mutate, match):
    payload, n = _payload()
    codec = Clustered(k=5)
    codec.decode(codec.parse(payload, n))  # the original is fine
    with pytest.raises(WireFormatError, match=match):
        codec.parse(mutate(payload), n)


def test_wrong_length_for_layout_rejected():
    codec = Clustered(k=4, layout=[[4, True], [2, False]])
    payload = codec.encode(sample_vector(6), seed=0)[0].payload()
    with pytest.raises(WireFormatError, match="layout"):
        codec.parse(payload, 7)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"k": 1}, "k = 1"), ({"k": 256}, "k = 256"), ({"k": True}, "k = True"),
    ({"iters": -1}, "iters"), ({"layout": []}, "empty"), ({"layout": [[0, True]]}, "numel"),
    ({"layout": [[3, 1]]}, "clustered:bool"), ({"layout": [[2.5, True]]}, "numel"),
    ({"shapes": []}, "shapes"), ({"shapes": [[3, 0]]}, "shapes"), ({"shapes": [[]]}, "shapes"),
])
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Clustered(**kwargs)


def test_encode_rejects_layout_mismatch():
    with pytest.raises(ValueError, match="layout holds 3"):
        Clustered(layout=[[3, True]]).encode(sample_vector(4), seed=0)


@pytest.mark.parametrize(("shapes", "layout"), [
    ([[16, 1, 3, 3], [16], [10, 16], [10]], [[144, True], [16, False], [160, True], [10, False]]),
    ([[7]], [[7, False]]),
])
def test_layout_from_shapes(shapes, layout):
    a, b = Clustered(k=4, shapes=shapes), Clustered(k=4, layout=layout)
    n = sum(m for m, _ in layout)
    x = sample_vector(n, seed=1)
    assert a.encode(x, seed=2)[0].payload() == b.encode(x, seed=2)[0].payload()
    assert a.max_nbytes(n) == b.max_nbytes(n)
    # an explicit layout wins over shapes
    c = Clustered(k=4, layout=[[n, True]], shapes=shapes)
    assert c.encode(x, seed=2)[0].payload() == Clustered(k=4).encode(x, seed=2)[0].payload()

"""SPLIT_ACT / SPLIT_GRAD / prefix payloads (METHODS.md 5.5): byte layout against an independent
builder, sizes, and every way a receiver rejects a payload before allocating from it."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from fedsqueeze.comm.wire import HEADER_SIZE, join_sections, pack_frame, unpack_frame
from fedsqueeze.compress.activations import GPQ
from fedsqueeze.errors import WireFormatError
from fedsqueeze.split import payloads as P
from tests import naive

GPQS = [GPQ(q=64, R=1, L=16), GPQ(q=16, R=4, L=3, grouping="sample"), GPQ(q=8, R=2, L=1),
        None]
IDS = ["q64R1L16", "q16R4L3-sample", "L1", "dense"]


def _payload(sections) -> bytes:
    return b"".join(bytes(p) for p in join_sections(sections))


def _batch(gpq, B=5, d_a=40, classes=10, step=3, seed=0):
    g = np.random.default_rng(seed)
    z = np.maximum(g.standard_normal((B, d_a)), 0).astype(np.float32)
    y = g.integers(0, classes, B)
    spec = P.ActSpec(d_a, classes, gpq)
    if gpq is None:
        code, secs = None, P.act_sections(step=step, labels=y, label_bits=spec.label_bits,
                                          d_a=d_a, dense=z)
    else:
        code, _ = gpq.encode(z, seed=0, client=1, round=0)
        secs = P.act_sections(step=step, labels=y, label_bits=spec.label_bits, d_a=d_a,
                              code=code)
    return spec, z, y, code, _payload(secs)


def test_methods_worked_example_sizes():
    g = GPQ(q=64, R=1, L=16).geometry(32, 1024)
    assert HEADER_SIZE + P.act_payload_nbytes(32, 1024, 4, g) == 2104
    assert HEADER_SIZE + P.act_payload_nbytes(32, 1024, 4, None) == 24 + 16 + 131_072 + 16
    assert [HEADER_SIZE + P.grad_payload_nbytes(f, 32, 1024, g) for f in P.BACKWARD] == [
        131_100, 65_564, 1_052]
    assert P.label_width(10) == 4 and P.label_width(101) == 7 and P.label_width(1) == 0


@pytest.mark.parametrize("gpq", GPQS[:3], ids=IDS[:3])
def test_act_layout_equals_the_independent_builder(gpq):
    spec, _, y, code, payload = _batch(gpq, B=5, d_a=40, step=3)
    g = code.geometry
    want = naive.split_act_payload(B=5, q=g.q, R=g.R, L_eff=g.L_eff, d_a=40, label_bits=4,
                                   grouping=g.grouping, step=3, centroids=code.centroids,
                                   codes=code.codes, labels=y)
    assert payload == want
    assert len(payload) == P.act_payload_nbytes(5, 40, 4, g)


@pytest.mark.parametrize("gpq", GPQS, ids=IDS)
def test_act_round_trip(gpq):
    spec, z, y, code, payload = _batch(gpq)
    msg = P.parse_act(payload, spec, B=5, step=3)
    np.testing.assert_array_equal(msg.labels, y)
    assert msg.step == 3 and msg.B == 5
    if gpq is None:
        np.testing.assert_array_equal(msg.dense, z)
        assert msg.dense.flags.writeable
    else:
        np.testing.assert_array_equal(gpq.decode(msg.code), gpq.decode(code))
    assert msg.label_nbytes == 4  # 5 labels x 4 bits = 3 bytes, padded to 4
    frame = pack_frame(6, payload, round=1, client=2)
    assert unpack_frame(frame)[1].nbytes == len(payload)


@pytest.mark.parametrize(("field", "index"), [("B", 0), ("q", 1), ("R", 2), ("L_eff", 3),
                                              ("label_bits", 5), ("grouping", 6),
                                              ("step", 7)])
def test_act_preamble_fields_are_checked(field, index):
    spec, _, _, _, payload = _batch(GPQ(q=8, R=2, L=4))
    vals = list(P.ACT_PRE.unpack_from(payload))
    vals[index] += 1
    bad = P.ACT_PRE.pack(*vals) + payload[P.ACT_PRE.size:]
    with pytest.raises(WireFormatError, match=field):
        P.parse_act(bad, spec, B=5, step=3)


def test_act_d_a_is_checked():
    spec, _, _, _, payload = _batch(None)
    with pytest.raises(WireFormatError, match="d_a"):
        P.parse_act(payload, P.ActSpec(41, 10, None), B=5, step=3)


@pytest.mark.parametrize("gpq", GPQS, ids=IDS)
def test_every_truncation_and_extension_is_rejected(gpq):
    spec, _, _, _, payload = _batch(gpq)
    for cut in range(len(payload)):
        with pytest.raises(WireFormatError):
            P.parse_act(payload[:cut], spec, B=5, step=3)
    with pytest.raises(WireFormatError):
        P.parse_act(payload + bytes(4), spec, B=5, step=3)


def test_out_of_range_codes_labels_and_padding_bits_are_rejected():
    gpq = GPQ(q=8, R=1, L=3)  # 2-bit codes, code 3 is invalid
    spec, _, _, code, payload = _batch(gpq, B=5, d_a=40)
    g = code.geometry
    off = P.ACT_PRE.size + g.centroid_nbytes
    bad = bytearray(payload)
    bad[off] |= 0b11
    with pytest.raises(WireFormatError, match="code 3"):
        P.parse_act(bytes(bad), spec, B=5, step=3)
    lab = off + 12  # 40 codes x 2 bits = 10 bytes, padded to 12
    bad = bytearray(payload)
    bad[lab] |= 0x0F  # label 15 >= 10 classes
    with pytest.raises(WireFormatError, match="label"):
        P.parse_act(bytes(bad), spec, B=5, step=3)
    bad = bytearray(payload)
    bad[lab + 2] |= 0x80  # bit 23 of the label stream: past 5 x 4 = 20 bits
    with pytest.raises(WireFormatError, match="padding bits"):
        P.parse_act(bytes(bad), spec, B=5, step=3)
    bad = bytearray(payload)
    bad[lab + 3] = 1  # the pad byte of the label section
    with pytest.raises(WireFormatError, match="padding"):
        P.parse_act(bytes(bad), spec, B=5, step=3)


def test_non_finite_centroids_are_rejected():
    spec, _, _, _, payload = _batch(GPQ(q=8, R=1, L=4))
    bad = payload[:P.ACT_PRE.size] + struct.pack("<f", np.inf) + payload[P.ACT_PRE.size + 4:]
    with pytest.raises(WireFormatError, match="non-finite"):
        P.parse_act(bad, spec, B=5, step=3)


@pytest.mark.parametrize("fmt", list(P.BACKWARD))
def test_grad_round_trip_and_size(fmt):
    gpq = GPQ(q=8, R=2, L=4)
    _, _, _, code, _ = _batch(gpq)
    grad = np.random.default_rng(1).standard_normal((5, 40)).astype(np.float32) * 1e-3
    payload = _payload(P.grad_sections(fmt, grad, code))
    assert len(payload) == P.grad_payload_nbytes(fmt, 5, 40, code.geometry)
    out = P.parse_grad(payload, fmt, B=5, d_a=40, code=code)
    assert out.dtype == np.float32 and out.shape == (5, 40) and out.flags.writeable
    if fmt == "dense_fp32":
        np.testing.assert_array_equal(out, grad)
    elif fmt == "dense_fp16":
        np.testing.assert_allclose(out, grad, rtol=1e-3, atol=1e-7)
    else:  # per-cluster means: the total gradient of every cluster is kept
        from fedsqueeze.compress.activations import codebook_grad_sums
        np.testing.assert_allclose(codebook_grad_sums(code, out),
                                   codebook_grad_sums(code, grad), rtol=1e-4, atol=1e-6)
    assert P.grad_theoretical_bits(fmt, 5, 40, code.geometry) == {
        "dense_fp32": 32 * 200, "dense_fp16": 16 * 200, "codebook": 32 * 2 * 4 * 5}[fmt]


@pytest.mark.parametrize("fmt", list(P.BACKWARD))
def test_grad_rejects_format_reserved_and_length(fmt):
    _, _, _, code, _ = _batch(GPQ(q=8, R=2, L=4))
    grad = np.zeros((5, 40), np.float32)
    payload = _payload(P.grad_sections(fmt, grad, code))
    other = next(f for f in P.BACKWARD if f != fmt)
    with pytest.raises(WireFormatError, match="format"):
        P.parse_grad(payload, other, B=5, d_a=40, code=code)
    with pytest.raises(WireFormatError, match="reserved"):
        P.parse_grad(payload[:1] + b"\x01" + payload[2:], fmt, B=5, d_a=40, code=code)
    for cut in (0, 3, 4, len(payload) - 1):
        with pytest.raises(WireFormatError):
            P.parse_grad(payload[:cut], fmt, B=5, d_a=40, code=code)
    with pytest.raises(ValueError):  # WireFormatError for dense formats, the batch otherwise
        P.parse_grad(payload, fmt, B=4, d_a=40, code=code)


def test_prefix_payloads():
    w = np.arange(7, dtype=np.float32)
    up = _payload(P.prefix_up_sections(12, w))
    assert len(up) == 4 + 28
    np.testing.assert_array_equal(P.parse_prefix_up(up, 7, 12), w)
    with pytest.raises(WireFormatError, match="n_c"):
        P.parse_prefix_up(up, 7, 13)
    with pytest.raises(WireFormatError):
        P.parse_prefix_up(up, 8, 12)
    np.testing.assert_array_equal(P.parse_prefix_down(w.tobytes(), 7), w)
    with pytest.raises(WireFormatError):
        P.parse_prefix_down(w.tobytes() + bytes(4), 7)


@pytest.mark.parametrize("step", [0, 65536])
def test_step_must_fit_the_preamble(step):
    with pytest.raises(ValueError, match="step"):
        P.act_sections(step=step, labels=np.zeros(2, np.int64), label_bits=1, d_a=4,
                       dense=np.zeros((2, 4), np.float32))

"""QSGD kernels (kernels/cpu/quantize.py) against the NumPy oracle; also without JIT."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedsqueeze.kernels import dispatch
from fedsqueeze.kernels.cpu import lanes as L
from fedsqueeze.kernels.cpu import quantize as Q
from tests import naive

ROOT = Path(__file__).resolve().parents[3]
KEY = (0x01234567, 0x89ABCDEF)
C3 = naive.QSGD_ROUND << 24


def _encode(x: np.ndarray, s: int, bucket: int):
    w = Q.code_width(s)
    norms = np.full(-(-x.shape[0] // bucket), -1, np.float32)
    out = np.full((x.shape[0] * w + 7) // 8, 0xA5, np.uint8)
    dispatch.qsgd_encode(x, (s, bucket, w, KEY[0], KEY[1], C3), norms, out)
    return norms, out


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


@pytest.mark.parametrize("s", [1, 2, 3, 7, 8, 255, 256, 32767])
def test_code_width(s):
    assert Q.code_width(s) == naive.qsgd_width(s)


# bucket % 8 == 0 takes the per-bucket path, other buckets the per-chunk path; n > CHUNK and
# bucket > CHUNK cross chunk boundaries
@pytest.mark.parametrize("s", [1, 2, 7, 255, 32767])
@pytest.mark.parametrize("bucket,n", [(512, 1), (512, 7), (512, 1000), (8, 37), (3, 50),
                                      (100, 10_001), (8192, 20_000), (512, 9000)])
def test_encode_matches_oracle(s, bucket, n):
    x = _x(n, seed=n + s)
    norms, packed = _encode(x, s, bucket)
    ref_norms, ref_packed = naive.qsgd_encode(x, s, bucket, KEY)
    np.testing.assert_array_equal(norms, ref_norms)
    np.testing.assert_array_equal(packed, ref_packed)


@pytest.mark.parametrize("s,bucket,n", [(1, 512, 1000), (2, 100, 10_001), (255, 8, 77),
                                        (32767, 512, 3000)])
def test_decode_matches_oracle(s, bucket, n):
    x = _x(n, seed=s)
    norms, packed = _encode(x, s, bucket)
    out = np.empty(n, np.float32)
    assert dispatch.qsgd_decode(packed, norms, (s, bucket, Q.code_width(s)), out) == 0
    np.testing.assert_array_equal(out, naive.qsgd_decode(norms, packed, s, bucket, n))


def test_decoded_levels_stay_on_the_grid():
    s, bucket = 7, 64
    x = _x(640, seed=3)
    norms, packed = _encode(x, s, bucket)
    out = np.empty(640, np.float32)
    dispatch.qsgd_decode(packed, norms, (s, bucket, 4), out)
    levels = np.abs(out) / np.repeat(norms / np.float32(s), bucket)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert levels.max() <= s and (np.sign(out) * np.sign(x) >= 0).all()


def test_zero_and_tiny_buckets_code_as_zero():
    x = np.zeros(96, np.float32)
    x[32:64] = np.float32(1e-40)  # subnormal bucket: the scale overflows and codes as zeros
    x[64:] = _x(32, seed=1)
    norms, packed = _encode(x, 2, 32)
    out = np.empty(96, np.float32)
    dispatch.qsgd_decode(packed, norms, (2, 32, 3), out)
    assert norms[0] == 0 and norms[1] > 0
    assert (out[:64] == 0).all() and (out[64:] != 0).any()


def test_invalid_levels_are_counted():
    s, w = 2, 3
    codes = np.array([(3 << 1), (2 << 1) | 1, 7, 0], np.uint16)  # levels 3, 2, 3, 0
    packed = naive.pack_bits(codes, w)
    out = np.empty(4, np.float32)
    assert dispatch.qsgd_decode(packed, np.ones(1, np.float32), (s, 512, w), out) == 2


@pytest.mark.parametrize("n", [0, 1, 8, 9, 4099])
def test_sumsq8_fixed_order(n):
    x = (_x(n, seed=n) * 1e3).astype(np.float32)
    assert Q.sumsq8(x) == naive.lane_sum(x.astype(np.float64) ** 2)


@pytest.mark.parametrize("n", [0, 7, 64, 65, 512, 1000])
def test_sumsq8_lanes_and_pair_fixed_order(n):
    x = (_x(n, seed=n) * 1e3).astype(np.float32)
    y = (_x(n, seed=n + 1) * 1e-3).astype(np.float32)
    ref = (naive.lane_sum(x.astype(np.float64) ** 2), naive.lane_sum(y.astype(np.float64) ** 2))
    assert L.sumsq8_lanes(x, np.empty(L.LANES)) == ref[0]
    assert L.sumsq8_pair(x, y, np.empty(L.LANES), np.empty(L.LANES)) == ref


def test_bucket_norms():
    x = _x(1300, seed=5)
    norms = np.empty(3, np.float32)
    Q.bucket_norms(x, 512, norms)
    np.testing.assert_array_equal(norms, naive.qsgd_norms(x, 512))


@pytest.mark.parametrize("v,scale,word,expected", [
    (0.0, 1.0, 0, 0), (-0.0, 1.0, 0, 0), (-1.5, 2.0**24, 0, (2 << 1) | 1),  # r = 1.5, u = 0
    (-1.5, 2.0**24, 0xFFFFFFFF, (1 << 1) | 1),  # u = 2^24 - 1 >= frac: rounds down
    (9.0, 2.0**24, 0, 7 << 1),  # clamped to s = 7
])
def test_code_rule(v, scale, word, expected):
    got = Q.qsgd_code(np.float32(v), np.float32(scale), np.float32(7 * 2**24), np.uint32(word))
    assert int(got) == expected


NO_JIT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fedsqueeze.kernels import dispatch
    from fedsqueeze.kernels.cpu import lanes as L
    from fedsqueeze.kernels.cpu import quantize as Q
    from tests import naive
    x = np.random.default_rng(0).standard_normal(45).astype(np.float32)
    for s, b in ((2, 16), (255, 7)):
        w = Q.code_width(s)
        norms = np.empty(-(-45 // b), np.float32); out = np.zeros((45 * w + 7) // 8, np.uint8)
        dispatch.qsgd_encode(x, (s, b, w, 1, 2, 13 << 24), norms, out)
        rn, rp = naive.qsgd_encode(x, s, b, (1, 2))
        assert (norms == rn).all() and (out == rp).all(), (s, b)
        y = np.empty(45, np.float32)
        assert dispatch.qsgd_decode(out, norms, (s, b, w), y) == 0
        assert (y == naive.qsgd_decode(norms, out, s, b, 45)).all()
        cuts = np.array([0, 10, 45])
        st = dispatch.segment_stats(x, cuts)
        assert (st == naive.segment_stats(x, cuts)).all()
        clips = np.array([1.0, 0.7], np.float32)
        sc = np.minimum(st[:, 3], clips).astype(np.float32)
        tc = np.zeros(12, np.uint8)
        dispatch.ternary_encode(x, cuts, clips, sc, (1, 2, 14 << 24), tc)
        assert (tc == naive.pack_bits(naive.ternary_codes(x, cuts, clips, sc, (1, 2)), 2)).all()
        sg = np.zeros(6, np.uint8); dispatch.pack_signs(x, sg)
        assert (sg == naive.pack_signs(x)).all()
    # the fused w = 4 loop and the pairwise 64-element norm rows (lanes.sumsq8_pair)
    x = np.random.default_rng(1).standard_normal(300).astype(np.float32)
    norms = np.empty(3, np.float32); out = np.zeros(150, np.uint8)
    dispatch.qsgd_encode(x, (7, 128, 4, 1, 2, 13 << 24), norms, out)
    rn, rp = naive.qsgd_encode(x, 7, 128, (1, 2))
    assert (norms == rn).all() and (out == rp).all()
    assert L.sumsq8_pair(x[:130], x[130:260], np.empty(8), np.empty(8)) == (
        naive.lane_sum(np.float64(x[:130]) ** 2), naive.lane_sum(np.float64(x[130:260]) ** 2))
    from fedsqueeze.kernels.cpu import topk as K
    idx = np.empty(300, np.int64); z = np.uint32(0)
    assert K.randk_select(17, z, z, np.uint32(11 << 24), np.uint32(5), np.uint32(3),
                          np.empty(300, np.uint16), np.empty(K.RANDK_BINS, np.int64), idx) == 17
    assert (idx[:17] == naive.randk_indices(300, 17, (3 << 32) | 5)).all()
    print("ok")
""")


@pytest.mark.slow
def test_kernels_without_jit():
    # STYLE.md rule 4: the kernel bodies also run as plain Python (what coverage and the CUDA
    # simulator execute); warnings are errors there too
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    r = subprocess.run([sys.executable, "-W", "error", "-c", NO_JIT_SCRIPT], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]

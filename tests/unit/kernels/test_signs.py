"""Sign and ternary kernels and the fixed-order segment statistics (kernels/cpu/signs.py)."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.kernels import dispatch
from fedsqueeze.kernels.cpu import signs as S
from tests import naive

KEY = (0xCAFEF00D, 0x5EED)
C3 = naive.TERNGRAD << 24

# segment layouts: one segment; boundaries inside bytes and Philox blocks; an empty segment;
# a segment longer than a statistics piece
LAYOUTS = {
    "one": [0, 1000],
    "ragged": [0, 3, 4, 13, 600, 1000],
    "empty": [0, 5, 5, 1000],
    "long": [0, 9000, 9001],
}


def _x(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    x[::11] = 0.0
    x[5::13] = -0.0
    return x


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 1000])
def test_pack_signs_matches_oracle(n):
    x = _x(n, seed=n)
    out = np.full((n + 7) // 8 + 2, 0x5A, np.uint8)
    S.pack_signs(x, out)
    np.testing.assert_array_equal(out[:(n + 7) // 8], naive.pack_signs(x))
    assert (out[(n + 7) // 8:] == 0x5A).all()


def test_sign_of_zero_and_nan_is_plus():
    out = np.zeros(1, np.uint8)
    S.pack_signs(np.array([0.0, -0.0, np.nan, -1.0], np.float32), out)
    assert int(out[0]) == 0b1000


@pytest.mark.parametrize("layout", LAYOUTS)
def test_unpack_signs_per_segment(layout):
    bounds = np.array(LAYOUTS[layout], np.int64)
    n = int(bounds[-1])
    x = _x(n, seed=1)
    scales = np.random.default_rng(2).random(len(bounds) - 1).astype(np.float32)
    out = np.empty(n, np.float32)
    S.unpack_signs(naive.pack_signs(x), bounds, scales, out)
    np.testing.assert_array_equal(out, naive.unpack_signs(naive.pack_signs(x), bounds, scales, n))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_segment_stats_fixed_order(layout):
    bounds = np.array(LAYOUTS[layout], np.int64)
    x = _x(int(bounds[-1]), seed=3) * np.float32(1e3)
    np.testing.assert_array_equal(dispatch.segment_stats(x, bounds),
                                  naive.segment_stats(x, bounds))


def _clips_scales(x, bounds):
    st = naive.segment_stats(x, bounds)
    n = np.maximum(np.diff(bounds), 1)
    sigma = np.sqrt(np.maximum(st[:, 1] / n - (st[:, 0] / n) ** 2, 0))
    clips = (2.5 * sigma).astype(np.float32)
    return clips, np.minimum(st[:, 3].astype(np.float32), clips)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ternary_encode_matches_oracle(layout):
    bounds = np.array(LAYOUTS[layout], np.int64)
    n = int(bounds[-1])
    x = _x(n, seed=4)
    clips, scales = _clips_scales(x, bounds)
    out = np.full((n + 3) // 4 + 1, 0x77, np.uint8)
    dispatch.ternary_encode(x, bounds, clips, scales, (KEY[0], KEY[1], C3), out[:-1])
    ref = naive.pack_bits(naive.ternary_codes(x, bounds, clips, scales, KEY), 2)
    np.testing.assert_array_equal(out[:-1], ref)
    assert out[-1] == 0x77


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ternary_decode_matches_oracle(layout):
    bounds = np.array(LAYOUTS[layout], np.int64)
    n = int(bounds[-1])
    codes = np.random.default_rng(5).integers(0, 3, n).astype(np.uint8)
    packed = naive.pack_bits(codes, 2)
    scales = np.arange(1, len(bounds), dtype=np.float32)
    out = np.empty(n, np.float32)
    assert S.ternary_decode(packed, bounds, scales, out) == 0
    np.testing.assert_array_equal(out, naive.ternary_decode(packed, bounds, scales, n))


def test_ternary_decode_counts_code_three():
    packed = naive.pack_bits(np.array([3, 1, 3, 0, 2], np.uint8), 2)
    out = np.empty(5, np.float32)
    assert S.ternary_decode(packed, np.array([0, 5]), np.ones(1, np.float32), out) == 2


@pytest.mark.parametrize("v,cv,s,word,expected", [
    (0.0, 1.0, 1.0, 0, 0),  # nothing to keep
    (1.0, 1.0, 1.0, 0xFFFFFFFF, 1),  # |g| = s: always kept
    (-5.0, 1.0, 1.0, 0xFFFFFFFF, 2),  # clipped to cv = s: always kept, negative
    (0.5, 1.0, 1.0, 0x7FFFFF00, 1),  # u = 2^23 - 1 < 2^23
    (0.5, 1.0, 1.0, 0x80000000, 0),  # u = 2^23 is not below 0.5 * 2^24
    (0.5, 1.0, 0.0, 0, 0),  # scale 0: every code is 0
])
def test_ternary_code_rule(v, cv, s, word, expected):
    got = S.ternary_code(np.float32(v), np.float32(cv), np.float32(s), np.uint32(word))
    assert int(got) == expected


def test_piece_bounds_cut_segments():
    rows = S.piece_bounds(np.array([0, 5000, 5000, 5001]))
    assert rows.tolist() == [[0, 0, 4096], [0, 4096, 5000], [2, 5000, 5001]]


@pytest.mark.parametrize("n", [0, 1, 7, 8, 63, 64, 65, 129, 4096])
@pytest.mark.parametrize("kind", ["normal", "specials"])
def test_piece_moments_lanes_equals_piece_moments(n, kind):
    """The vectorised lanes give the scalar eight-lane moments bit for bit (the CUDA twin
    compiles ``piece_moments``), NaN and Inf included."""
    x = (np.random.default_rng(n).standard_normal(n) * 10).astype(np.float32)
    if kind == "specials" and n:
        x[:: max(1, n // 5)] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0],
                                        np.float32)[np.arange(len(x[:: max(1, n // 5)])) % 5]
    scratch = [np.empty(8) for _ in range(4)]
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf as NumPy scalars (no JIT)
        got = np.array(S.piece_moments_lanes(x, *scratch))
        ref = np.array(S.piece_moments(x))
    np.testing.assert_array_equal(got.view(np.uint64), ref.view(np.uint64))

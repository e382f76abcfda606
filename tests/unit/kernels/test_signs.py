"""Sign and ternary kernels and the fixed-order segment statistics (kernels/cpu/signs.py)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from fedsqueeze.kernels import dispatch
from fedsqueeze.kernels.cpu import signs as S
from tests import naive

from .nojit import assert_runs_without_jit

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


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 63, 64, 65, 129, 1000, 4099])
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


@pytest.mark.parametrize("n", [0, 1, 7, 8, 63, 64, 65, 129, 4096])
@pytest.mark.parametrize("kind", ["normal", "specials"])
def test_piece_abs_lanes_equals_piece_moments(n, kind):
    """The sum-|x|-only lanes give ``piece_moments(x)[2]`` bit for bit (NaN and Inf too)."""
    x = (np.random.default_rng(n + 1).standard_normal(n) * 10).astype(np.float32)
    if kind == "specials" and n:
        x[:: max(1, n // 5)] = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0],
                                        np.float32)[np.arange(len(x[:: max(1, n // 5)])) % 5]
    with np.errstate(invalid="ignore", over="ignore"):
        got = np.float64(S.piece_abs_lanes(x, np.empty(8)))
        ref = np.float64(S.piece_moments(x)[2])
    assert got.view(np.uint64) == ref.view(np.uint64)


@pytest.mark.parametrize("layout", [*LAYOUTS, "pieces"])
def test_sign_abs_encode_fuses_stats_and_signs(layout):
    """One pass gives the signs of pack_signs and the sum-|x| column of the fixed-order
    statistics, bit for bit, for segment and piece boundaries inside bytes."""
    bounds = np.array(LAYOUTS.get(layout, [0, 4099, 4100, 8200, 12301]), np.int64)
    n = int(bounds[-1])
    x = _x(n, seed=4) * np.float32(1e3)
    out = np.full((n + 7) // 8 + 1, 0x5A, np.uint8)
    sums = np.full(len(bounds) - 1, 7.0)
    S.sign_abs_encode(x, S.piece_bounds(bounds), sums, out)
    np.testing.assert_array_equal(out[:-1], naive.pack_signs(x))
    assert out[-1] == 0x5A
    ref = naive.segment_stats(x, bounds)[:, 2]
    np.testing.assert_array_equal(sums.view(np.uint64), ref.view(np.uint64))
    got = dispatch.sign_abs_encode(x, bounds, np.zeros((n + 7) // 8, np.uint8))
    np.testing.assert_array_equal(got.view(np.uint64), ref.view(np.uint64))


def test_piece_bounds_many_segments():
    segs = [1, 4096, 4097, 3, 9000, 8192]
    bounds = np.concatenate([[0], np.cumsum(segs)]).astype(np.int64)
    rows = [(t, a, min(int(bounds[t + 1]), a + S.PIECE)) for t in range(len(segs))
            for a in range(int(bounds[t]), int(bounds[t + 1]), S.PIECE)]
    assert S.piece_bounds(bounds).tolist() == [list(r) for r in rows]
    assert S.piece_bounds(np.array([0], np.int64)).shape == (0, 3)


NO_JIT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fedsqueeze.kernels.cpu import signs as S
    from tests import naive
    x = np.random.default_rng(0).standard_normal(4200).astype(np.float32)
    x[::9] = -0.0
    bounds = np.array([0, 3, 4100, 4200], np.int64)
    out = np.zeros(525, np.uint8); sums = np.zeros(3)
    S.sign_abs_encode(x, S.piece_bounds(bounds), sums, out)
    assert (out == naive.pack_signs(x)).all()
    assert (sums == naive.segment_stats(x, bounds)[:, 2]).all()
    assert S.piece_abs_lanes(x[:200], np.empty(8)) == S.piece_moments(x[:200])[2]
    print("ok")
""")


def test_sign_abs_encode_without_jit():
    # STYLE.md rule 4: the kernel bodies also run as plain Python
    assert_runs_without_jit(NO_JIT_SCRIPT)

"""fp16/bf16 cast kernels (kernels/cpu/cast.py) against NumPy oracles; also without JIT."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from fedsqueeze.kernels.cpu import cast as C

from .nojit import assert_runs_without_jit

# low 16 bits around every rounding boundary of both casts (f16 rounds at bit 13, bf16 at 16)
LOWS = np.array([0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x1FFF, 0x2000, 0x3000, 0x5FFF,
                 0x6000, 0x7FFF, 0x8000, 0x8001, 0xA000, 0xE000, 0xFFFF], np.uint32)


def f16_oracle(u: np.ndarray) -> np.ndarray:
    """The bytes the fp16 codec sent before the kernel: ``np.clip(v, -65504, 65504).astype``."""
    with np.errstate(invalid="ignore"):
        return np.clip(u.view(np.float32), -65504, 65504).astype("<f2").view(np.uint16)


def bf16_oracle(u: np.ndarray) -> np.ndarray:
    """Upper 16 bits rounded to nearest even; NaN keeps its upper bits with the quiet bit set."""
    w = u.astype(np.uint64)
    r = ((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r[nan] = (w[nan] >> 16) | 0x0040
    return r.astype(np.uint16)


def patterns() -> np.ndarray:
    """Every upper half with the :data:`LOWS`, plus random patterns: ~2M float32 bit patterns."""
    hi = np.arange(1 << 16, dtype=np.uint32) << np.uint32(16)
    grid = (hi[:, None] | LOWS[None, :]).ravel()
    rand = np.random.default_rng(0).integers(0, 2**32, 1 << 20, dtype=np.uint64)
    return np.concatenate([grid, rand.astype(np.uint32)])


def test_f32_to_f16_matches_numpy():
    u = patterns()
    out = np.empty(u.shape[0], np.uint16)
    C.f32_to_f16(u, out)
    np.testing.assert_array_equal(out, f16_oracle(u))


def test_f32_to_bf16_matches_oracle():
    u = patterns()
    out = np.empty(u.shape[0], np.uint16)
    C.f32_to_bf16(u, out)
    np.testing.assert_array_equal(out, bf16_oracle(u))


def test_f16_to_f32_every_pattern():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(h.shape[0], np.uint32)
    C.f16_to_f32(h, out)
    np.testing.assert_array_equal(out, h.view("<f2").astype(np.float32).view(np.uint32))


def test_bf16_to_f32_every_pattern():
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(h.shape[0], np.uint32)
    C.bf16_to_f32(h, out)
    np.testing.assert_array_equal(out, h.astype(np.uint32) << np.uint32(16))


@pytest.mark.parametrize("n", [0, 1, 15, 17, 1000])
def test_lengths_and_round_trip(n):
    x = (np.random.default_rng(n).standard_normal(n) * 100).astype(np.float32)
    h = np.empty(n, np.uint16)
    back = np.empty(n, np.float32)
    C.f32_to_f16(x.view(np.uint32), h)
    C.f16_to_f32(h, back.view(np.uint32))
    np.testing.assert_array_equal(back, x.astype(np.float16).astype(np.float32))
    C.f32_to_bf16(x.view(np.uint32), h)
    C.bf16_to_f32(h, back.view(np.uint32))
    np.testing.assert_array_equal(back.view(np.uint32) >> 16, bf16_oracle(x.view(np.uint32)))


@pytest.mark.parametrize("mask", [0x7C00, 0x7F80])
def test_count_all_ones(mask):
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    assert C.count_all_ones(h, mask) == np.count_nonzero((h & mask) == mask)
    assert C.count_all_ones(h[:0], mask) == 0


NO_JIT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fedsqueeze.kernels.cpu import cast as C
    from tests.unit.kernels.test_cast import LOWS, bf16_oracle, f16_oracle
    hi = np.array([0x0000, 0x0080, 0x3380, 0x3880, 0x3F80, 0x477F, 0x4780, 0x7F7F, 0x7F80,
                   0x7FC0, 0x7FFF], np.uint32) << np.uint32(16)
    u = (hi[:, None] | LOWS[None, :]).ravel()
    u = np.concatenate([u, u | np.uint32(0x80000000)])
    h = np.empty(u.shape[0], np.uint16)
    C.f32_to_f16(u, h)
    assert (h == f16_oracle(u)).all()
    f = np.empty(u.shape[0], np.uint32)
    C.f16_to_f32(h, f)
    assert (f == h.view("<f2").astype(np.float32).view(np.uint32)).all()
    C.f32_to_bf16(u, h)
    assert (h == bf16_oracle(u)).all()
    C.bf16_to_f32(h, f)
    assert (f == h.astype(np.uint32) << np.uint32(16)).all()
    assert C.count_all_ones(h, 0x7F80) == np.count_nonzero((h & 0x7F80) == 0x7F80)
    assert not C.HARDWARE_F16  # the fast casts fall back to the integer kernels
    h2 = np.empty(u.shape[0], np.uint16)
    C.f32_to_f16_fast(u.view(np.float32), u, h2)
    assert (h2 == f16_oracle(u)).all()
    C.f16_to_f32_fast(h2, f.view(np.float32), f)
    assert (f == h2.view("<f2").astype(np.float32).view(np.uint32)).all()
    print("ok")
""")


def test_cast_kernels_without_jit():
    # STYLE.md rule 4: the kernel bodies also run as plain Python
    assert_runs_without_jit(NO_JIT_SCRIPT)


@pytest.mark.parametrize("start", [0, 1, 2047, 2049])
def test_f32_to_f16_fast_equals_the_integer_kernel(start):
    """The F16C path (when the CPU has it) gives the integer kernel's bits on every pattern:
    rounding ties, subnormals, overflow clamps, Inf and NaN payloads; any alignment and block."""
    u = patterns()[start:]
    ref = np.empty(u.shape[0], np.uint16)
    C.f32_to_f16(u, ref)
    out = np.empty(u.shape[0], np.uint16)
    C.f32_to_f16_fast(u.view(np.float32), u, out)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("start", [0, 1, 2047])
def test_f16_to_f32_fast_equals_the_integer_kernel(start):
    h = np.tile(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16), 2)[start:]
    ref = np.empty(h.shape[0], np.uint32)
    C.f16_to_f32(h, ref)
    out = np.empty(h.shape[0], np.float32)
    C.f16_to_f32_fast(h, out, out.view(np.uint32))
    np.testing.assert_array_equal(out.view(np.uint32), ref)


@pytest.mark.parametrize("n", [0, 1, 2048, 5000])
def test_fast_casts_on_gradient_like_data(n):
    """Mostly finite data with a few specials in one block (the fix-up path) and none in others."""
    x = (np.random.default_rng(n).standard_normal(n) * 0.01).astype(np.float32)
    x[: min(n, 3)] = np.array([np.inf, -1e6, np.nan], np.float32)[: min(n, 3)]
    ref = np.empty(n, np.uint16)
    C.f32_to_f16(x.view(np.uint32), ref)
    out = np.empty(n, np.uint16)
    C.f32_to_f16_fast(x, x.view(np.uint32), out)
    np.testing.assert_array_equal(out, ref)
    back, back_ref = np.empty(n, np.float32), np.empty(n, np.uint32)
    C.f16_to_f32(out, back_ref)
    C.f16_to_f32_fast(out, back, back.view(np.uint32))
    np.testing.assert_array_equal(back.view(np.uint32), back_ref)

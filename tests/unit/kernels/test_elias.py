"""Elias-omega transcoding of QSGD codes (kernels/cpu/elias.py) against a pure-Python oracle;
also without JIT."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsqueeze.kernels.cpu import elias as E
from tests import naive

from .nojit import assert_runs_without_jit


def omega(v: int) -> str:
    """Elias omega as a bit string (Elias 1975): groups of bin(v), bin(len - 1), ..., then 0."""
    code = "0"
    while v > 1:
        code = format(v, "b") + code
        v = v.bit_length() - 1
    return code


def oracle_stream(levels: np.ndarray, signs: np.ndarray, b: int) -> tuple[list[int], str]:
    counts, bits = [], []
    for lo in range(0, len(levels), b):
        prev, c = lo - 1, 0
        for j in range(lo, min(len(levels), lo + b)):
            if levels[j]:
                bits += [omega(j - prev), str(int(signs[j])), omega(int(levels[j]))]
                prev, c = j, c + 1
        counts.append(c)
    return counts, "".join(bits)


def to_bytes(bitstring: str) -> np.ndarray:
    """Bit ``i`` at byte ``i >> 3``, position ``i & 7`` (LSB first)."""
    out = np.zeros((len(bitstring) + 7) // 8, np.uint8)
    for i, ch in enumerate(bitstring):
        if ch == "1":
            out[i >> 3] |= 1 << (i & 7)
    return out


def test_omega_codes_are_the_textbook_ones():
    assert [omega(v) for v in (1, 2, 3, 4, 5, 16)] == [
        "0", "100", "110", "101000", "101010", "10100100000"]
    for v in list(range(1, 600)) + [2**20, 2**31 - 1]:
        assert E.omega_len(v) == len(omega(v))


def _codes(n: int, s: int, density: float, seed: int):
    g = np.random.default_rng(seed)
    levels = np.where(g.random(n) < density, g.integers(1, s + 1, n), 0)
    signs = g.integers(0, 2, n)
    w = 1 + s.bit_length()
    return levels, signs, w, naive.pack_bits((levels << 1) | signs, w)


@given(st.integers(1, 700), st.sampled_from([1, 2, 7, 255, 32767]),
       st.sampled_from([1, 3, 8, 512]), st.floats(0, 1), st.integers(0, 2**16))
@settings(max_examples=150, deadline=None)
def test_stream_equals_the_oracle_and_decodes_back(n, s, b, density, seed):
    levels, signs, w, codes = _codes(n, s, density, seed)
    nb = -(-n // b)
    counts = np.empty(nb, np.uint32)
    bits = E.elias_size(codes, n, b, w, counts)
    ref_counts, ref_bits = oracle_stream(levels, signs, b)
    assert bits == len(ref_bits) and counts.tolist() == ref_counts
    stream = np.zeros((bits + 7) // 8, np.uint8)
    assert E.fixed_to_elias(codes, n, b, w, stream) == bits
    np.testing.assert_array_equal(stream, to_bytes(ref_bits))
    back = np.zeros_like(codes)
    assert E.elias_to_fixed(stream, 8 * stream.shape[0], counts, n, b, w, s, back) == bits
    # zero levels come back with a clear sign bit: the stream holds nonzero levels only
    np.testing.assert_array_equal(back, naive.pack_bits((levels << 1) | (signs * (levels > 0)), w))


@pytest.mark.parametrize("bits,counts,s,b,err", [
    ("1", [1], 2, 4, -1),                     # stream ends inside omega(gap)
    ("0", [1], 2, 4, -1),                     # gap 1, then no sign bit
    ("00", [1], 2, 4, -1),                    # gap, sign, then no level
    ("1" * 40, [1], 2, 4, -2),                # ever longer omega groups
    ("101010" + "0" + "0", [1], 2, 4, -3),    # gap 5 in a bucket of 4 (positions 0..3)
    ("0" + "0" + "110", [1], 2, 4, -4),       # level 3 > s = 2
    ("", [5], 2, 4, -5),                      # 5 nonzeros in a bucket of 4
])
def test_hostile_streams_are_errors_not_reads_past_the_end(bits, counts, s, b, err):
    stream = to_bytes(bits) if bits else np.zeros(0, np.uint8)
    n, w = b, 1 + s.bit_length()
    out = np.zeros((n * w + 7) // 8, np.uint8)
    got = E.elias_to_fixed(stream, len(bits), np.array(counts, np.uint32), n, b, w, s, out)
    assert got == err and err in E.ERRORS


NO_JIT_SCRIPT = textwrap.dedent("""
    import numpy as np
    from fedsqueeze.kernels.cpu import elias as E
    from tests.unit.kernels.test_elias import _codes, oracle_stream, to_bytes
    levels, signs, w, codes = _codes(300, 7, 0.3, 1)
    counts = np.empty(3, np.uint32)
    bits = E.elias_size(codes, 300, 128, w, counts)
    stream = np.zeros((bits + 7) // 8, np.uint8)
    E.fixed_to_elias(codes, 300, 128, w, stream)
    assert (stream == to_bytes(oracle_stream(levels, signs, 128)[1])).all()
    back = np.zeros_like(codes)
    assert E.elias_to_fixed(stream, 8 * stream.shape[0], counts, 300, 128, w, 7, back) == bits
    print("ok")
""")


def test_elias_kernels_without_jit():
    # STYLE.md rule 4: the kernel bodies also run as plain Python
    assert_runs_without_jit(NO_JIT_SCRIPT)

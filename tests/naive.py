"""Plain-NumPy oracles of the kernels (STYLE.md section 6, the oracle tier).

This module imports only NumPy and never imports fedsqueeze, so an oracle cannot share a bug with
the code under test. Each engineer appends a clearly headed section.
"""

from __future__ import annotations

import numpy as np


# ------------------------------------------------------------------------------------------------
# IGC (seed 001): Walsh-Hadamard transform and Fastfood projection, METHODS.md section 2.4
# ------------------------------------------------------------------------------------------------

def hadamard(n: int) -> np.ndarray:
    """The unnormalised n x n Walsh-Hadamard matrix (Sylvester construction), float64."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"n = {n} is not a power of two")
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def fwht(x: np.ndarray) -> np.ndarray:
    """``H x`` along the last axis, by matrix product in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x @ hadamard(x.shape[-1])


def unpack_sign_bits(bits: np.ndarray, n: int) -> np.ndarray:
    """+-1.0 signs from packed bits (bit ``i % 8`` of byte ``i // 8``; a set bit means -1)."""
    b = (np.asarray(bits, dtype=np.uint8)[np.arange(n) // 8] >> (np.arange(n) % 8)) & 1
    return 1.0 - 2.0 * b


def fastfood_matrix(signs: np.ndarray, perms: np.ndarray, gauss: np.ndarray, n_rows: int,
                    d: int) -> np.ndarray:
    """The explicit D x d Fastfood matrix from per-block signs (+-1), permutations and
    Gaussians, each of shape (nb, L): block b is ``c_b H G_b Pi_b H B_b``, rows truncated to
    ``n_rows`` in total and columns to ``d``, with ``c_b = 1/sqrt(D ||G_b||^2)`` and
    ``(Pi x)_i = x[perm[i]]``."""
    nb, L = gauss.shape
    H = hadamard(L)
    blocks = []
    for b in range(nb):
        P = np.zeros((L, L))
        P[np.arange(L), perms[b]] = 1.0
        g = gauss[b].astype(np.float64)
        c = 1.0 / np.sqrt(n_rows * float(g @ g))
        blocks.append(c * (H @ np.diag(g) @ P @ H @ np.diag(signs[b].astype(np.float64))))
    return np.vstack(blocks)[:n_rows, :d]


# ------------------------------------------------------------------------------------------------
# Count sketch (FetchSGD, METHODS.md section 6.9) and PowerSGD (section 6.8)
# ------------------------------------------------------------------------------------------------

def philox4x32_np(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on arrays of counters (broadcast), as METHODS.md 0.7 writes the rounds:
    returns the four output words as uint32 arrays."""
    m32 = np.uint64(0xFFFFFFFF)
    c = [np.asarray(v, dtype=np.uint64) & m32 for v in np.broadcast_arrays(c0, c1, c2, c3)]
    k0, k1 = np.uint64(k0), np.uint64(k1)
    for r in range(10):
        if r:
            k0 = (k0 + np.uint64(0x9E3779B9)) & m32
            k1 = (k1 + np.uint64(0xBB67AE85)) & m32
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & m32
        hi1, lo1 = p1 >> np.uint64(32), p1 & m32
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return [v.astype(np.uint32) for v in c]


def count_sketch_hashes(idx, rows: int, cols: int, seed: int):
    """Buckets ``h_j(i) = (w0 c) >> 32`` (int64) and signs ``1 - 2 (w1 & 1)`` (float32), each
    ``(rows, len(idx))``, from Philox(c0 = i, c1 = j, c2 = 0, c3 = 12 << 24), key = ``seed``."""
    idx = np.asarray(idx, dtype=np.uint64)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    b = np.empty((rows, idx.shape[0]), np.int64)
    s = np.empty((rows, idx.shape[0]), np.float32)
    for j in range(rows):
        w0, w1, _, _ = philox4x32_np(idx, j, 0, 12 << 24, k0, k1)
        b[j] = (w0.astype(np.uint64) * np.uint64(cols)) >> np.uint64(32)
        s[j] = 1.0 - 2.0 * (w1 & 1).astype(np.float32)
    return b, s


def count_sketch(x, rows: int, cols: int, seed: int) -> np.ndarray:
    """The float32 ``(rows, cols)`` table: ``S[j, h_j(i)] += s_j(i) x_i`` in increasing ``i``."""
    x = np.asarray(x, dtype=np.float32)
    b, s = count_sketch_hashes(np.arange(x.shape[0]), rows, cols, seed)
    table = np.zeros((rows, cols), np.float32)
    for j in range(rows):
        np.add.at(table[j], b[j], s[j] * x)
    return table


def count_sketch_query(table, n: int, seed: int) -> np.ndarray:
    """``median_j s_j(i) S[j, h_j(i)]`` for ``i < n`` (float32; even rows: mean of the middle 2)."""
    rows, cols = table.shape
    b, s = count_sketch_hashes(np.arange(n), rows, cols, seed)
    vals = s * table[np.arange(rows)[:, None], b]
    return np.median(vals, axis=0).astype(np.float32)


def gram_schmidt(a) -> np.ndarray:
    """Orthonormal columns of ``a`` by classical Gram-Schmidt in float64 (full column rank)."""
    a = np.asarray(a, dtype=np.float64)
    q = np.zeros_like(a)
    for i in range(a.shape[1]):
        v = a[:, i] - q[:, :i] @ (q[:, :i].T @ a[:, i])
        q[:, i] = v / np.linalg.norm(v)
    return q


def powersgd_two_phases(m, q0):
    """Single-worker PowerSGD on one matrix for two rounds in float64 (Vogels et al. 2019):
    ``P = M Q0`` (approximation ``P Q0^T``), ``P^ = orth(P)``, ``Q = M^T P^`` (approximation
    ``P^ Q^T``). Returns both approximations and ``P^``; they do not depend on column signs."""
    m = np.asarray(m, dtype=np.float64)
    q0 = np.asarray(q0, dtype=np.float64)
    p = m @ q0
    p_hat = np.linalg.qr(p)[0]
    q = m.T @ p_hat
    return p @ q0.T, p_hat @ q.T, p_hat


# ------------------------------------------------------------------------------------------------
# Sparse codecs: top-k / random-k selection, delta varint, bitmap, Golomb-Rice, STC and HDQ values
# (METHODS.md sections 0.5, 1.1-1.3, 6.2, 6.3, 6.10)
# ------------------------------------------------------------------------------------------------

def topk_indices(v, k: int) -> np.ndarray:
    """Sorted indices of the ``k`` largest ``|v|``, ties by smaller index (full sort)."""
    a = np.abs(np.asarray(v, dtype=np.float64))
    order = np.lexsort((np.arange(a.shape[0]), -a))
    return np.sort(order[:k]).astype(np.int64)


def smallest_keys(keys, k: int) -> np.ndarray:
    """Sorted indices of the ``k`` smallest unsigned ``keys``, ties by smaller index."""
    keys = np.asarray(keys)
    order = np.lexsort((np.arange(keys.shape[0]), keys))
    return np.sort(order[:k]).astype(np.int64)


def randk_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Random-k mask: the ``k`` smallest 64-bit keys ``(w1 << 32) | w0`` of Philox block
    ``(c0 = i, c1 = 0, c2 = 0, c3 = 11 << 24)`` (purpose RANDK), key = ``seed``."""
    w0, w1, _, _ = philox4x32_np(np.arange(n), 0, 0, 11 << 24, seed & 0xFFFFFFFF,
                                 (seed >> 32) & 0xFFFFFFFF)
    keys = (w1.astype(np.uint64) << np.uint64(32)) | w0.astype(np.uint64)
    return smallest_keys(keys, k)


def gaps(idx) -> list[int]:
    """``g_0 = i_0``, ``g_j = i_j - i_{j-1} - 1``."""
    idx = [int(i) for i in idx]
    return [i - p - 1 for i, p in zip(idx, [-1] + idx[:-1])]


def varint_encode(idx) -> bytes:
    """Delta + unsigned LEB128 bytes of sorted indices (one Python loop per byte)."""
    out = bytearray()
    for g in gaps(idx):
        while True:
            byte, g = g & 0x7F, g >> 7
            out.append(byte | (0x80 if g else 0))
            if not g:
                break
    return bytes(out)


def bitmap_encode(idx, n: int) -> bytes:
    """``ceil(n / 8)`` bytes; bit ``i % 8`` of byte ``i // 8`` set iff ``i`` in ``idx``."""
    bits = np.zeros(8 * ((n + 7) // 8), dtype=np.uint8)
    bits[np.asarray(idx, dtype=np.int64)] = 1
    return np.packbits(bits, bitorder="little").tobytes()


def rice_encode(idx, b: int) -> tuple[bytes, int]:
    """Golomb-Rice stream of the gaps: ``g >> b`` ones, a zero, ``b`` low bits LSB first.
    Returns ``(bytes, nbits)``."""
    bits: list[int] = []
    for g in gaps(idx):
        bits += [1] * (g >> b) + [0] + [(g >> t) & 1 for t in range(b)]
    arr = np.zeros(8 * ((len(bits) + 7) // 8), dtype=np.uint8)
    arr[:len(bits)] = bits
    return np.packbits(arr, bitorder="little").tobytes(), len(bits)


def stc_values(v, k: int) -> np.ndarray:
    """STC reconstruction: ``mu sign(v_j)`` on the top-k (``mu`` = float32 of the float64 mean
    of ``|v_j|``; sign bit set iff ``v_j < 0``), 0 elsewhere."""
    v = np.asarray(v, dtype=np.float32)
    idx = topk_indices(v, k)
    mu = np.float32(np.abs(v[idx].astype(np.float64)).mean())
    out = np.zeros_like(v)
    out[idx] = np.where(v[idx] < 0, -mu, mu)
    return out


def hdq_values(v, k: int, bits) -> np.ndarray:
    """HDQ reconstruction with nearest rounding: top-k, equal-count tiers by rank (``|v|``
    descending, index ascending), per tier ``j = floor((|v| - lo)/(hi - lo) (2^b - 1) + 1/2)``
    and ``lo + j (hi - lo)/(2^b - 1)`` in float64, rounded to float32, signed."""
    v = np.asarray(v, dtype=np.float32)
    a = np.abs(v.astype(np.float64))
    ranked = np.lexsort((np.arange(v.shape[0]), -a))[:k]
    out = np.zeros_like(v)
    H = len(bits)
    for h, b in enumerate(bits):
        members = ranked[(h * k) // H:((h + 1) * k) // H]
        if members.shape[0] == 0:
            continue
        mags = a[members]
        lo, hi, top = mags.min(), mags.max(), 2**b - 1
        j = np.zeros(members.shape[0]) if hi == lo else np.floor((mags - lo) / (hi - lo) * top + 0.5)
        rec = (lo + j * (hi - lo) / top).astype(np.float32)
        out[members] = np.where(v[members] < 0, -rec, rec)
    return out


# ------------------------------------------------------------------------------------------------
# FedCompress (seed 002): 1-D k-means (assignment, k-means++ seeding, Lloyd), LSB-first id
# packing, the model encoding ME and a direct convolution, METHODS.md sections 0.5, 3.4 and 3.5
# ------------------------------------------------------------------------------------------------

def kmeans_assign(x, c) -> np.ndarray:
    """Nearest centroid of every value: ``argmin_j |x - c_j|`` in float32, ties to the lowest j."""
    x = np.asarray(x, np.float32)
    c = np.asarray(c, np.float32)
    return np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)


def kmeanspp_seed(x, u) -> np.ndarray:
    """k-means++ seeding from uniforms ``u`` (one per centre): the first centre is
    ``x[min(floor(u0 n), n-1)]``; centre s is the first i with cumsum(d2)[i] > u_s sum(d2) and
    d2[i] > 0 (the last i with d2 > 0 if none); uniform like centre 0 when sum(d2) = 0."""
    x = np.asarray(x, np.float32)
    x64 = x.astype(np.float64)
    n = x.shape[0]
    pick = min(int(u[0] * n), n - 1)
    out = [x[pick]]
    d2 = (x64 - x64[pick]) ** 2
    for s in range(1, len(u)):
        cs = np.cumsum(d2)
        if cs[-1] > 0:
            hit = np.flatnonzero((cs > u[s] * cs[-1]) & (d2 > 0))
            pick = int(hit[0]) if hit.size else int(np.flatnonzero(d2 > 0)[-1])
        else:
            pick = min(int(u[s] * n), n - 1)
        out.append(x[pick])
        d2 = np.minimum(d2, (x64 - x64[pick]) ** 2)
    return np.array(out, np.float32)


def kmeans_lloyd(x, c, iters: int):
    """Up to ``iters`` Lloyd steps (float64 sums, empty clusters keep their centre), stopping when
    an assignment pass changes nothing. Returns (centres, ids, steps)."""
    x = np.asarray(x, np.float32)
    c = np.array(c, np.float32)
    idx = kmeans_assign(x, c)
    changed, steps = x.shape[0] > 0, 0
    while steps < iters and changed:
        sums = np.bincount(idx, weights=x.astype(np.float64), minlength=c.shape[0])
        counts = np.bincount(idx, minlength=c.shape[0])
        nz = counts > 0
        c[nz] = (sums[nz] / counts[nz]).astype(np.float32)
        steps += 1
        new = kmeans_assign(x, c)
        changed = bool((new != idx).any())
        idx = new
    return c, idx, steps


def pack_lsb_first(values, width: int) -> bytes:
    """Bit-pack: value i occupies stream bits [i w, (i+1) w), stream bit p is bit p % 8 of byte
    p // 8, least significant bit of a value first; ceil(n w / 8) bytes."""
    bits = [(int(v) >> t) & 1 for v in values for t in range(width)]
    out = bytearray((len(bits) + 7) // 8)
    for p, b in enumerate(bits):
        out[p // 8] |= b << (p % 8)
    return bytes(out)


def me_bytes(parts, layout) -> bytes:
    """The FedCompress model encoding: per clustered tensor ``u8 k | 3 zero bytes | f32[k] |
    packed ids (ceil(log2 k) bits) | zero pad to 4``, every other tensor ``f32[numel]``."""
    out = b""
    for part, (_, clustered) in zip(parts, layout, strict=True):
        if clustered:
            codebook, ids = part
            k = len(codebook)
            width = int(np.ceil(np.log2(k)))
            packed = pack_lsb_first(ids, width)
            out += bytes([k, 0, 0, 0]) + np.asarray(codebook, "<f4").tobytes() + packed
            out += bytes(-len(packed) % 4)
        else:
            out += np.asarray(part, "<f4").tobytes()
    return out


def conv2d_direct(x, w, b, pad: int) -> np.ndarray:
    """Stride-1 cross-correlation with zero padding, float64: x (B, C, H, W), w (O, C, kh, kw)."""
    x = np.pad(np.asarray(x, np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    w = np.asarray(w, np.float64)
    o_, _, kh, kw = w.shape
    oh, ow = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = np.zeros((x.shape[0], o_, oh, ow))
    for a in range(kh):
        for c in range(kw):
            out += np.einsum("bchw,oc->bohw", x[:, :, a:a + oh, c:c + ow], w[:, :, a, c])
    return out + np.asarray(b, np.float64)[None, :, None, None]


# ------------------------------------------------------------------------------------------------
# QSGD / sign family (1/5): Philox words for codec randomness (METHODS.md 0.7)
# ------------------------------------------------------------------------------------------------
MASK32 = 0xFFFFFFFF


def philox_words(n: int, key: tuple[int, int], c1: int = 0, c2: int = 0, c3: int = 0,
                 c0_start: int = 0) -> np.ndarray:
    """``n`` words: word ``i`` is word ``i % 4`` of block ``c0 = c0_start + i // 4``."""
    nb = (n + 3) // 4
    c0 = (np.arange(nb, dtype=np.uint64) + np.uint64(c0_start)) & np.uint64(MASK32)
    words = philox4x32_np(c0, c1, c2, c3, key[0], key[1])
    return np.stack(words, axis=1).reshape(-1)[:n]


# ------------------------------------------------------------------------------------------------
# QSGD / sign family (2/5): bit packing, LSB first, values may straddle bytes (METHODS.md 0.5)
# ------------------------------------------------------------------------------------------------
def pack_bits(codes: np.ndarray, width: int) -> np.ndarray:
    """``ceil(n * width / 8)`` bytes; bits of ``codes`` above ``width`` are ignored."""
    c = np.asarray(codes, dtype=np.uint64)
    bits = (c[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)
    stream = bits.reshape(-1).astype(np.uint8)
    nbytes = (c.shape[0] * width + 7) // 8
    stream = np.concatenate([stream, np.zeros(8 * nbytes - stream.shape[0], np.uint8)])
    return (stream.reshape(-1, 8) << np.arange(8, dtype=np.uint8)).sum(axis=1).astype(np.uint8)


def unpack_bits(packed: np.ndarray, width: int, n: int) -> np.ndarray:
    """The first ``n`` values of ``width`` bits (uint64)."""
    p = np.asarray(packed, dtype=np.uint8)
    stream = ((p[:, None] >> np.arange(8, dtype=np.uint8)) & 1).reshape(-1)[: n * width]
    bits = stream.reshape(n, width).astype(np.uint64)
    return (bits << np.arange(width, dtype=np.uint64)).sum(axis=1).astype(np.uint64)


# ------------------------------------------------------------------------------------------------
# QSGD / sign family (3/5): fixed-order float64 sums, eight lanes (j % 8), combined
# ((0+1)+(2+3))+((4+5)+(6+7)); segment statistics in pieces of 4096
# ------------------------------------------------------------------------------------------------
def lane_sum(values: np.ndarray) -> float:
    """Sum of float64 ``values`` in the kernels' eight-lane order (sequential within a lane)."""
    v = np.asarray(values, dtype=np.float64)
    pad = np.zeros((-v.shape[0]) % 8)
    rows = np.concatenate([v, pad]).reshape(-1, 8)
    if rows.shape[0] == 0:
        return 0.0
    lanes = np.cumsum(rows, axis=0)[-1]  # cumsum is sequential by definition
    return float(((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))
                 + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7])))


def segment_stats(x: np.ndarray, bounds, piece: int = 4096) -> np.ndarray:
    """``(T, 4)``: ``(sum x, sum x^2, sum |x|, max |x|)`` per segment, pieces added in order."""
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    out = np.zeros((len(bounds) - 1, 4))
    for t in range(len(bounds) - 1):
        for a in range(int(bounds[t]), int(bounds[t + 1]), piece):
            v = x64[a:min(int(bounds[t + 1]), a + piece)]
            out[t, 0] += lane_sum(v)
            out[t, 1] += lane_sum(v * v)
            out[t, 2] += lane_sum(np.abs(v))
            out[t, 3] = max(out[t, 3], float(np.abs(v).max()))
    return out


# ------------------------------------------------------------------------------------------------
# QSGD / sign family (4/5): QSGD (METHODS.md 4.1, rounding rule of kernels/cpu/quantize.py)
# ------------------------------------------------------------------------------------------------
QSGD_ROUND = 13


def qsgd_width(s: int) -> int:
    """``1 + ceil(log2(s + 1))`` computed with logarithms (independent of ``bit_length``)."""
    return 1 + int(np.ceil(np.log2(s + 1) - 1e-12))


def qsgd_norms(x: np.ndarray, bucket: int) -> np.ndarray:
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    return np.array([np.sqrt(lane_sum(x64[a:a + bucket] ** 2))
                     for a in range(0, x64.shape[0], bucket)], dtype=np.float64).astype(np.float32)


def qsgd_scale24(norms: np.ndarray, s: int) -> np.ndarray:
    with np.errstate(divide="ignore", over="ignore"):
        sc = (np.float32(s) / norms.astype(np.float32)) * np.float32(2.0**24)
    return np.where((norms > 0) & np.isfinite(sc), sc, np.float32(0)).astype(np.float32)


def qsgd_codes(x: np.ndarray, s: int, bucket: int, key: tuple[int, int]) -> np.ndarray:
    """Per-element codes ``(level << 1) | sign`` (uint64)."""
    x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    sc = np.repeat(qsgd_scale24(qsgd_norms(x, bucket), s), bucket)[:n]
    r = np.minimum(np.abs(x) * sc, np.float32(s) * np.float32(2.0**24)).astype(np.float32)
    q = r.astype(np.int64)
    u = (philox_words(n, key, c3=QSGD_ROUND << 24) >> np.uint32(8)).astype(np.int64)
    level = (q >> 24) + (u < (q & 0xFFFFFF))
    return ((level << 1) | (x < 0)).astype(np.uint64)


def qsgd_encode(x: np.ndarray, s: int, bucket: int, key: tuple[int, int]):
    """``(norms f32, packed u8)`` as the kernel writes them."""
    return qsgd_norms(x, bucket), pack_bits(qsgd_codes(x, s, bucket, key), qsgd_width(s))


def qsgd_decode(norms: np.ndarray, packed: np.ndarray, s: int, bucket: int, n: int):
    codes = unpack_bits(packed, qsgd_width(s), n)
    unit = np.repeat(norms.astype(np.float32) / np.float32(s), bucket)[:n]
    val = (codes >> np.uint64(1)).astype(np.float32) * unit
    return np.where(codes & np.uint64(1), -val, val).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# QSGD / sign family (5/5): signs and TernGrad ternary codes (METHODS.md 6.5-6.7)
# ------------------------------------------------------------------------------------------------
TERNGRAD = 14


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Bit ``i`` (LSB first) is ``x[i] < 0``."""
    return np.packbits(np.asarray(x) < 0, bitorder="little")


def unpack_signs(packed: np.ndarray, bounds, scales, n: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(packed, np.uint8), bitorder="little")[:n].astype(bool)
    mag = np.repeat(np.asarray(scales, np.float32), np.diff(np.asarray(bounds)))
    return np.where(bits, -mag, mag).astype(np.float32)


def ternary_codes(x: np.ndarray, bounds, clips, scales, key: tuple[int, int]) -> np.ndarray:
    """TernGrad codes 0 (drop), 1 (+), 2 (-) with ``P(keep) = floor(|g|/s * 2^24) / 2^24``."""
    x = np.asarray(x, dtype=np.float32)
    reps = np.diff(np.asarray(bounds))
    cv = np.repeat(np.asarray(clips, np.float32), reps)
    s = np.repeat(np.asarray(scales, np.float32), reps)
    g = np.minimum(np.abs(x), cv)
    with np.errstate(divide="ignore", invalid="ignore"):
        f24 = np.where(s > 0, (g / s) * np.float32(2.0**24), 0).astype(np.uint32)
    u = philox_words(x.shape[0], key, c3=TERNGRAD << 24) >> np.uint32(8)
    keep = u < f24
    return np.where(keep, np.where(x < 0, 2, 1), 0).astype(np.uint8)


def ternary_decode(packed: np.ndarray, bounds, scales, n: int) -> np.ndarray:
    codes = unpack_bits(packed, 2, n)
    s = np.repeat(np.asarray(scales, np.float32), np.diff(np.asarray(bounds)))
    return np.select([codes == 1, codes == 2], [s, -s], np.float32(0)).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# FedLite (seed 004): grouped product quantisation of split-learning activations, its k-means
# (assignment, k-means++ seeding, Lloyd), decode, codebook-gradient sums and the SPLIT_ACT byte
# layout, METHODS.md sections 5.2-5.5. NumPy only; plain loops where the order of float sums matters.
# ------------------------------------------------------------------------------------------------

def pq_points(z, q: int) -> np.ndarray:
    """``z`` (B x d_a) zero-padded to q*m columns, as (B*q, m) sub-vectors (``m = ceil(d_a/q)``)."""
    z = np.asarray(z, np.float32)
    b, d_a = z.shape
    m = -(-d_a // q)
    buf = np.zeros((b, q * m), np.float32)
    buf[:, :d_a] = z
    return buf.reshape(b * q, m)


def pq_group_ids(n_points: int, q: int, R: int, grouping: str) -> np.ndarray:
    """Group of every sub-vector p = b*q + j: ``floor(j R / q)`` ("position") or the 3P reshape
    of R runs of consecutive sub-vectors ("sample")."""
    p = np.arange(n_points)
    if grouping == "position":
        return (p % q) * R // q
    return p // (n_points // R)


def pq_assign(points, centroids, gid) -> np.ndarray:
    """Nearest centroid of the point's group; distances summed in float32 over increasing d, ties
    to the lowest centroid id."""
    x = np.asarray(points, np.float32)
    c = np.asarray(centroids, np.float32)[np.asarray(gid)]  # (N, L, m)
    acc = np.zeros(c.shape[:2], np.float32)
    for d in range(x.shape[1]):
        t = x[:, d, None] - c[:, :, d]
        acc = acc + t * t
    return np.argmin(acc, axis=1)


def pq_sums(points, codes, gid, R: int, L: int):
    """float64 sums (R, L, m) and counts (R, L) of the points of every (group, code), added in
    increasing point order."""
    x = np.asarray(points, np.float32)
    sums = np.zeros((R, L, x.shape[1]))
    counts = np.zeros((R, L), np.int64)
    for p in range(x.shape[0]):
        sums[gid[p], codes[p]] += x[p].astype(np.float64)
        counts[gid[p], codes[p]] += 1
    return sums, counts


def pq_kmeanspp(points, gid, u) -> np.ndarray:
    """k-means++ centres (R, L, m) per group from uniforms u (R, L): the rule of kmeanspp_seed on
    the group's points in increasing order, with float64 squared distances summed over d."""
    x = np.asarray(points, np.float32)
    R, L = np.asarray(u).shape
    out = np.zeros((R, L, x.shape[1]), np.float32)
    for r in range(R):
        xs = x[np.flatnonzero(np.asarray(gid) == r)]
        x64 = xs.astype(np.float64)
        n = xs.shape[0]

        def dist(c):
            acc = np.zeros(n)
            for d in range(xs.shape[1]):
                acc = acc + (x64[:, d] - np.float64(c[d])) ** 2
            return acc

        pick = min(int(u[r, 0] * n), n - 1)
        out[r, 0] = xs[pick]
        d2 = dist(xs[pick])
        for s in range(1, L):
            cs = np.cumsum(d2)
            if cs[-1] > 0:
                hit = np.flatnonzero((cs > u[r, s] * cs[-1]) & (d2 > 0))
                pick = int(hit[0]) if hit.size else int(np.flatnonzero(d2 > 0)[-1])
            else:
                pick = min(int(u[r, s] * n), n - 1)
            out[r, s] = xs[pick]
            d2 = np.minimum(d2, dist(xs[pick]))
    return out


def pq_lloyd(points, centroids, gid, iters: int):
    """Up to ``iters`` Lloyd updates (float32 mean of float64 sums; empty clusters keep their
    centre), stopping when an assignment changes nothing; returns (centroids, codes, steps)."""
    c = np.array(centroids, np.float32)
    R, L = c.shape[:2]
    codes = pq_assign(points, c, gid)
    changed, steps = True, 0
    while steps < iters and changed:
        sums, counts = pq_sums(points, codes, gid, R, L)
        nz = counts > 0
        c[nz] = (sums[nz] / counts[nz][:, None]).astype(np.float32)
        steps += 1
        new = pq_assign(points, c, gid)
        changed = bool((new != codes).any())
        codes = new
    return c, codes, steps


def pq_decode(centroids, codes, gid, d_a: int, B: int) -> np.ndarray:
    """z_tilde (B x d_a): every sub-vector replaced by its centroid, padding columns dropped."""
    sub = np.asarray(centroids, np.float32)[np.asarray(gid), np.asarray(codes)]
    return sub.reshape(B, -1)[:, :d_a]


def split_act_payload(*, B: int, q: int, R: int, L_eff: int, d_a: int, label_bits: int,
                      grouping: int, step: int, centroids, codes, labels) -> bytes:
    """SPLIT_ACT payload from METHODS.md 5.5: 16-byte preamble, f32 centroids, LSB-first codes
    at ceil(log2 L_eff) bits padded to 4, labels at label_bits padded to 4."""
    pre = (np.array([B, q, R, L_eff], "<u2").tobytes() + np.array([d_a], "<u4").tobytes()
           + bytes([label_bits, grouping]) + np.array([step], "<u2").tobytes())
    width = int(L_eff - 1).bit_length()
    packed = pack_lsb_first(codes, width) if width else b""
    lab = pack_lsb_first(labels, label_bits) if label_bits else b""
    return (pre + np.asarray(centroids, "<f4").tobytes() + packed + bytes(-len(packed) % 4)
            + lab + bytes(-len(lab) % 4))

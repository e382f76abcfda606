"""Counter-based randomness: one Philox4x32-10 stream per (seed, round, client, purpose).

Every random quantity that more than one rank must reproduce, or that must not depend on the
number of ranks, comes from here (METHODS.md section 0.7). Nothing here touches global RNG state.

>>> int(random_u32(0, purpose=Purpose.SAMPLING, stream=0, round=0, n=1)[0]) == int(
...     random_u32(0, purpose=Purpose.SAMPLING, stream=0, round=0, n=1)[0])
True
"""

from __future__ import annotations

import enum

import numpy as np

from .kernels.cpu import philox as _k

__all__ = [
    "Purpose",
    "key_of",
    "counter3",
    "philox_block",
    "random_u32",
    "uniform24",
    "uniform53",
    "normal",
    "permutation",
    "derive_seed",
    "numpy_generator",
]


class Purpose(enum.IntEnum):
    """Purpose ids of METHODS.md section 0.7; they occupy the top 8 bits of counter word ``c3``."""

    INIT = 1
    SAMPLING = 2
    DATA_SHUFFLE = 3
    PARTITION = 4
    SYNTH_DATA = 5
    FF_SIGN = 6
    FF_PERM = 7
    FF_GAUSS = 8
    DENSE_PROJ = 9
    KSUB_SELECT = 10
    RANDK = 11
    SKETCH_HASH = 12
    QSGD_ROUND = 13
    TERNGRAD = 14
    HDQ_ROUND = 15
    KMEANS_INIT = 16
    OOD_GEN = 17
    POWERSGD_INIT = 18
    FRAMEWORK_SEED = 19
    DROPOUT = 20
    MESSAGE = 21
    FAULT = 22


_U32 = 0xFFFFFFFF


def key_of(seed: int) -> tuple[np.uint32, np.uint32]:
    """Philox key ``(seed mod 2^32, seed >> 32)`` of a 64-bit seed."""
    seed = int(seed)
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return np.uint32(seed & _U32), np.uint32((seed >> 32) & _U32)


def counter3(purpose: int, sub_id: int = 0) -> np.uint32:
    """Counter word ``c3 = (purpose << 24) | sub_id``."""
    if not 0 <= sub_id < 2**24:
        raise ValueError(f"sub_id must be in [0, 2**24), got {sub_id}")
    return np.uint32((int(purpose) << 24) | sub_id)


def philox_block(counter: tuple[int, int, int, int], key: tuple[int, int]) -> np.ndarray:
    """One Philox4x32-10 block: four u32 words (the known-answer-test entry point)."""
    w = _k.philox4x32(*(np.uint32(c) for c in counter), np.uint32(key[0]), np.uint32(key[1]))
    return np.array(w, dtype=np.uint32)


def _args(seed: int, purpose: int, stream: int, round: int, sub_id: int):
    k0, k1 = key_of(seed)
    return np.uint32(stream & _U32), np.uint32(round & _U32), counter3(purpose, sub_id), k0, k1


def random_u32(
    seed: int, *, purpose: int, stream: int = 0, round: int = 0, sub_id: int = 0, n: int,
    c0_start: int = 0,
) -> np.ndarray:
    """``n`` u32 words; word ``i`` is word ``i % 4`` of block ``c0 = c0_start + i // 4``."""
    out = np.empty(n, dtype=np.uint32)
    c1, c2, c3, k0, k1 = _args(seed, purpose, stream, round, sub_id)
    _k.fill_u32(out, np.uint32(c0_start), c1, c2, c3, k0, k1)
    return out


def uniform24(seed: int, *, purpose: int, stream: int = 0, round: int = 0, sub_id: int = 0,
              n: int) -> np.ndarray:
    """``n`` float32 uniforms in [0, 1): ``(word >> 8) * 2^-24`` of :func:`random_u32`."""
    w = random_u32(seed, purpose=purpose, stream=stream, round=round, sub_id=sub_id, n=n)
    return ((w >> np.uint32(8)).astype(np.float64) * 2.0**-24).astype(np.float32)


def uniform53(seed: int, *, purpose: int, stream: int = 0, round: int = 0, sub_id: int = 0,
              n: int) -> np.ndarray:
    """``n`` float64 uniforms in [0, 1) from two words each (value ``i``: block ``i // 2``)."""
    out = np.empty(n, dtype=np.float64)
    _k.fill_uniform53(out, *_args(seed, purpose, stream, round, sub_id))
    return out


def normal(seed: int, *, purpose: int, stream: int = 0, round: int = 0, sub_id: int = 0,
           n: int) -> np.ndarray:
    """``n`` standard normals (Box-Muller in float64, rounded to float32)."""
    out = np.empty(n, dtype=np.float32)
    _k.fill_normal(out, *_args(seed, purpose, stream, round, sub_id))
    return out


def permutation(seed: int, n: int, *, purpose: int, stream: int = 0, round: int = 0,
                sub_id: int = 0) -> np.ndarray:
    """A Fisher-Yates permutation of ``range(n)`` (int64)."""
    out = np.empty(n, dtype=np.int64)
    _k.permutation_into(out, *_args(seed, purpose, stream, round, sub_id))
    return out


def derive_seed(seed: int, *, purpose: int, stream: int = 0, round: int = 0,
                sub_id: int = 0) -> int:
    """A 64-bit seed for one (seed, round, stream, purpose): words 0 and 1 of block ``c0 = 0``.

    The FL layer hands codecs ``derive_seed(run_seed, purpose=MESSAGE, stream=client, round=t)``,
    so a codec's randomness is keyed by run, round and client without knowing about any of them.
    """
    w = random_u32(seed, purpose=purpose, stream=stream, round=round, sub_id=sub_id, n=2)
    return int(w[0]) | (int(w[1]) << 32)


def numpy_generator(seed: int, purpose: int, stream: int = 0) -> np.random.Generator:
    """A NumPy ``Generator(Philox)`` keyed by (seed, purpose, stream), for once-per-run CPU work
    (data partitioning, synthetic data) where NumPy's distributions are convenient."""
    k = derive_seed(seed, purpose=purpose, stream=stream)
    return np.random.Generator(np.random.Philox(key=k))

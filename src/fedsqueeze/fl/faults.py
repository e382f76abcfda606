"""Simulated faulty clients (``fl.faulty_fraction``, ``fl.fault``): for robustness experiments and
for the tests that show the server rejects bad updates and hostile payloads and carries on."""

from __future__ import annotations

import numpy as np

from .. import rng

__all__ = ["pick", "corrupt_update", "corrupt_payload"]


def pick(cfg, t: int, client: int) -> str | None:
    """The fault of ``client`` in round ``t`` (None if healthy); depends only on (seed, t, c)."""
    p = cfg.fl.faulty_fraction
    if p <= 0:
        return None
    u = rng.uniform53(cfg.seed, purpose=rng.Purpose.FAULT, stream=client, round=t, n=1)[0]
    return cfg.fl.fault if u < p else None


def corrupt_update(update: np.ndarray, fault: str, scale: float) -> np.ndarray:
    out = update.copy()
    if fault == "nan":
        out[:: max(1, out.shape[0] // 7)] = np.nan
    elif fault == "inf":
        out[0] = np.inf
    elif fault == "scale":
        out *= np.float32(scale)
    return out


def corrupt_payload(sections, fault: str | None, seed: int, t: int, client: int):
    """``garbage``: random bytes of the same length after the u32 n_i; ``truncate``: half of it."""
    if fault not in ("garbage", "truncate"):
        return sections
    body = b"".join(bytes(memoryview(s).cast("B")) for s in sections[1:])
    if fault == "truncate":
        return (sections[0], body[: len(body) // 2])
    noise = rng.random_u32(seed, purpose=rng.Purpose.FAULT, stream=client, round=t,
                           sub_id=1, n=(len(body) + 3) // 4)
    return (sections[0], noise.view(np.uint8)[: len(body)].tobytes())

"""Small value types shared by strategies, downlink policies and the server (no logic)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from .. import rng
from ..comm.tags import Kind

__all__ = ["UP_PRE", "message_seed", "Downlink", "Upload"]

UP_PRE = struct.Struct("<I")  # u32 n_i, the FL preamble of every uplink


def message_seed(run_seed: int, t: int, client: int, codec=None) -> int:
    """The ``seed`` handed to codecs for (round ``t``, ``client``): counter-based, rank-independent.
    A codec may define its own derivation (``Compressor.message_seed``, e.g. a shared mask)."""
    if codec is not None:
        return codec.message_seed(run_seed, t, client)
    return rng.derive_seed(run_seed, purpose=rng.Purpose.MESSAGE, stream=client, round=t)


@dataclass(eq=False)
class Downlink:
    """One downlink payload. Reuse the same object for every client that gets identical bytes."""

    sections: tuple[Any, ...]
    theoretical_bits: float
    flags: int = 0
    codec: int = 0
    kind: Kind = Kind.DOWN_MODEL


@dataclass
class Upload:
    """What a client's encode step produced."""

    sections: tuple[Any, ...]
    theoretical_bits: float
    diagnostics: dict[str, float] = field(default_factory=dict)



"""AdaQuantFL's codec: QSGD whose level count ``s`` arrives with each encode (METHODS.md 4.2-4.4).

The payload is QSGD's (the ``u16 s`` preamble says which ``s`` was used); the level schedule
itself lives in the ``adaquant`` method (:mod:`fedsqueeze.methods.adaquant`), which hands the
round's ``s_k`` to the client as ``state={"s": s_k}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .qsgd import _CODINGS, MAX_LEVELS, QSGDFamily, _check_int
from .registry import register

__all__ = ["AdaQuant"]


@register
class AdaQuant(QSGDFamily):
    """QSGD with a per-message level count ``s`` taken from ``state`` (default ``s0``).

    Parameters
    ----------
    s0 : int
        Levels when no state is given (the paper's ``s_0 = 2``).
    s_max : int
        Largest ``s`` an encode may use or a payload may carry (255: at most 9 bits/coordinate).
    bucket : int
        QSGD bucket length.
    coding : {"fixed", "elias"}
        Code layout (as :class:`~fedsqueeze.compress.qsgd.QSGD`).

    Examples
    --------
    >>> import numpy as np
    >>> c = AdaQuant()
    >>> x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    >>> enc, state = c.encode(x, seed=1, state={"s": 5})
    >>> enc.meta["s"], enc.meta["w"], state
    (5, 4, {'s': 5})
    >>> c.parse(enc.payload(), 1000).meta["s"]
    5
    """

    codec_id = "adaquant"

    def __init__(self, *, s0: int = 2, s_max: int = 255, bucket: int = 512,
                 coding: str = "fixed") -> None:
        self.s_max = _check_int("s_max", s_max, 1, MAX_LEVELS)
        self.s0 = _check_int("s0", s0, 1, self.s_max)
        self.bucket = _check_int("bucket", bucket, 1, 2**31 - 1)
        if coding not in _CODINGS:
            raise ValueError(f"coding = {coding!r}, expected one of {sorted(_CODINGS)}")
        self.coding = coding

    def _params(self) -> dict[str, Any]:
        return {"s0": self.s0, "s_max": self.s_max, "bucket": self.bucket, "coding": self.coding}

    def _levels(self, state: Any) -> int:
        if state is None:
            return self.s0
        if not isinstance(state, Mapping) or "s" not in state:
            raise TypeError(f"adaquant state must be a mapping with key 's', got {state!r}")
        return _check_int("state['s']", state["s"], 1, self.s_max)

    def _accepts(self, s: int) -> bool:
        return s <= self.s_max

    def _max_levels(self) -> int:
        return self.s_max

"""Random-k sparsification with a regenerated mask (METHODS.md 6.3).

Payload (after the FL layer's ``u32 n_i``): ``u32 k | f32[k]`` values in increasing index order.
Bytes ``4 + 4k`` (D = 4,810, rho = 0.01: 200, i.e. 228 on the wire with header and ``n_i``);
theoretical bits ``32 k``. Decoded values are scaled by ``D / k`` (unbiased), except with
``error_feedback = True``, where they are kept as sent (contractive, as error feedback needs).

The index set is not sent. It is the ``k`` indices with the smallest 64-bit Philox keys
``(w1 << 32) | w0`` of block ``c0 = index`` (purpose RANDK, ``c1 = c2 = 0``) under the 64-bit
``seed`` given to :meth:`RandK.encode`; ties go to the smaller index. The receiver needs that seed:

* ``encode`` stores it in ``Encoded.meta["seed"]``, so ``decode`` of an encoder's output works.
* ``parse(payload, n, seed=...)`` must be given the same seed (``TypeError`` if it is missing).
  The FL layer knows it without extra bytes: it is :meth:`RandK.message_seed` of the run seed and
  the frame's round and client (the client drops out of the key when ``shared=True``).
"""

from __future__ import annotations

import struct

import numpy as np

from .. import rng
from ..comm.wire import SectionReader
from ..kernels.cpu import topk as _topk
from .base import Compressor, Encoded, as_flat_f32, check_out, require_finite
from .registry import register
from .sparse import check_rho, k_of

__all__ = ["RandK", "randk_indices"]

_PRE = struct.Struct("<I")  # k


_SELECT_FROM = 1 << 16
"""From this length on, the mask comes from ``topk.randk_select`` (no 64-bit key array)."""


def randk_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted int64 indices of the ``k`` smallest Philox RANDK keys among ``range(n)``."""
    k0, k1 = rng.key_of(seed)
    c3 = rng.counter3(rng.Purpose.RANDK)
    z = np.uint32(0)
    out = np.empty(min(k, n), dtype=np.int64)
    if n >= _SELECT_FROM:
        _topk.randk_select(out.shape[0], z, z, c3, k0, k1, np.empty(n, np.uint16),
                           np.empty(_topk.RANDK_BINS, np.int64), out)
        return out
    keys = np.empty(n, dtype=np.uint64)
    _topk.randk_keys(keys, z, z, c3, k0, k1)
    _topk.smallest_k(keys, out.shape[0], np.empty(_topk.HIST_BINS, np.int64), out)
    return out


@register
class RandK(Compressor):
    """Keep ``k = max(1, ceil(rho D))`` entries at seeded random positions, scaled by ``D / k``.

    Unbiased (variance factor ``D/k - 1``); with ``error_feedback`` the values are not scaled
    (see below). The positions are regenerated from the seed, so only
    the values travel. ``parse`` therefore takes the message seed as a keyword (see the module
    docstring); ``needs_seed`` tells callers so.

    Parameters
    ----------
    rho : float
        Kept fraction in ``(0, 1]``.
    shared : bool
        Same mask for every client of a round. Only :meth:`message_seed` reads it; the FL layer
        keys ``encode`` and ``parse`` with it.
    error_feedback : bool
        Whether the FL worker keeps residuals for this codec. With error feedback the kept
        values are decoded **unscaled** (the contractive random-k of Stich, Cordonnier, Jaggi,
        "Sparsified SGD with memory", 2018): the residual ``e <- v - C(v)`` then satisfies
        ``||e|| <= ||v||``. With the ``D / k`` scaling the residual of every kept coordinate
        would be ``(1 - D/k) v_j``, growing geometrically over the rounds.

    Examples
    --------
    >>> import numpy as np
    >>> codec = RandK(rho=0.5)
    >>> x = np.arange(1, 7, dtype=np.float32)
    >>> enc, _ = codec.encode(x, seed=42)
    >>> enc.nbytes, codec.theoretical_bits(enc)
    (16, 96.0)
    >>> y = codec.decode(codec.parse(enc.payload(), 6, seed=42))
    >>> bool(np.all((y == 0) | (y == 2 * x))), int(np.count_nonzero(y))
    (True, 3)
    """

    codec_id = "randk"
    stochastic = True
    needs_seed = True
    """``parse`` requires ``seed=``: the mask is not on the wire."""

    def __init__(self, *, rho: float = 0.01, shared: bool = False,
                 error_feedback: bool = False) -> None:
        self.rho = check_rho(rho)
        for name, val in (("shared", shared), ("error_feedback", error_feedback)):
            if not isinstance(val, bool):
                raise TypeError(f"{name} must be a bool, got {val!r}")
        self.shared = shared
        self.error_feedback = error_feedback

    def _params(self):
        return {"rho": self.rho, "shared": self.shared, "error_feedback": self.error_feedback}

    def message_seed(self, run_seed: int, t: int, client: int) -> int:
        """The seed METHODS.md 6.3 keys the mask with: (run_seed, RANDK, round ``t``, stream =
        ``client``, or 0 when ``shared``)."""
        stream = 0 if self.shared else int(client)
        return rng.derive_seed(run_seed, purpose=rng.Purpose.RANDK, stream=stream, round=t)

    def encode(self, x, *, seed: int, state=None):
        v = as_flat_f32(x)
        n = v.shape[0]
        k = k_of(self.rho, n)
        idx = randk_indices(n, k, seed)
        return Encoded({"k": k, "seed": int(seed)}, (_PRE.pack(k), v[idx].astype("<f4")), n), state

    def parse(self, payload, n: int, *, seed: int | None = None) -> Encoded:
        """Validate ``payload`` for ``n`` elements; ``seed`` is the encoder's seed (required)."""
        r = SectionReader(payload, self.codec_id)
        (k,) = r.struct(_PRE, "preamble")
        expected = k_of(self.rho, n)
        self._require(k == expected, f"randk: k = {k}, expected {expected} for D = {n}, "
                                     f"rho = {self.rho}")
        values = r.array("<f4", k, "values")
        r.finish()
        require_finite(values, "randk: values")
        if seed is None:
            raise TypeError("randk.parse(payload, n, seed=...) needs the encoder's seed: the mask "
                            "is regenerated from it (the FL layer passes message_seed(run_seed, "
                            "round, client))")
        rng.key_of(seed)  # range check
        return Encoded({"k": k, "seed": int(seed)}, (_PRE.pack(k), values), n)

    def decode(self, enc: Encoded, *, out=None):
        out = check_out(out, enc.n)
        k = enc.meta["k"]
        idx = randk_indices(enc.n, k, enc.meta["seed"])
        out[:] = 0.0
        if k:
            # unbiased D/k scaling; none with error feedback (a scaled random-k is not a
            # contraction, so the worker's residual would grow without bound)
            scale = np.float32(1.0 if self.error_feedback else enc.n / k)
            out[idx] = scale * np.frombuffer(enc.sections[1], dtype="<f4", count=k)
        return out

    def max_nbytes(self, n: int) -> int:
        return _PRE.size + 4 * k_of(self.rho, n)

    def theoretical_bits(self, enc: Encoded) -> float:
        return 32.0 * enc.meta["k"]

    def diagnostics(self, enc: Encoded) -> dict[str, float]:
        k = enc.meta["k"]
        return {"kept_fraction": k / enc.n if enc.n else 0.0, "k": float(k)}

"""IGC projections and codecs (METHODS.md section 2): shared codec checks, statistics of A^T A,
linearity of aggregation, per-layer layout, subspace schedules and validation."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import compress
from fedsqueeze.compress.subspace import (
    DenseGaussian,
    Fastfood,
    IGCKSub,
    IGCStatic,
    IGCTimeVarying,
    PerLayer,
    layer_dims,
    make_projection,
)
from fedsqueeze.errors import WireFormatError

from .common import (
    check_config_json,
    check_deterministic,
    check_nbytes,
    check_repr,
    check_roundtrip,
    check_truncation,
    sample_vector,
)

# (codec config, n): global fastfood/dense, a K-subspace codec, per-layer with a matching layout
CODECS = [
    ({"id": "igc_static", "d": 16}, 300),
    ({"id": "igc_static", "d": 64, "block_log2": 8, "hash_seed": 2**63 + 5}, 1000),
    ({"id": "igc_ksub", "d": 8, "K": 3, "select": "philox"}, 7),
    ({"id": "igc_timevarying", "d": 32, "projection": "dense"}, 500),
    ({"id": "igc_static", "d": 6, "scope": "per_layer", "layout": [40, 8, 80, 2]}, 130),
]


def ids(case):
    return f"{case[0]['id']}-d{case[0]['d']}-n{case[1]}"


@pytest.mark.parametrize("case", CODECS, ids=ids)
def test_shared_codec_checks(case):
    cfg, n = case
    codec = compress.from_config(cfg)
    x = sample_vector(n, seed=n)
    check_roundtrip(codec, x)
    check_config_json(codec)
    check_repr(codec)
    enc = check_nbytes(codec, x)
    assert enc.nbytes == 4 * cfg["d"] and codec.theoretical_bits(enc) == 32 * cfg["d"]
    check_deterministic(codec, x)
    check_truncation(codec, x)


def test_three_codecs_registered():
    assert {"igc_static", "igc_ksub", "igc_timevarying"} <= set(compress.available())


# -- A^T A close to the identity in expectation ---------------------------------------------
def gram(A) -> np.ndarray:
    eye = np.eye(A.dim, dtype=np.float32)
    F = np.stack([A.forward(eye[j]).astype(np.float64) for j in range(A.dim)], axis=1)
    return F.T @ F


def identity_z_scores(make, samples: int) -> np.ndarray:
    """|mean(A^T A) - I| over ``samples`` independent subspaces, in standard errors."""
    G = np.array([gram(make(s)) for s in range(samples)])
    dev = np.abs(G.mean(axis=0) - np.eye(G.shape[1]))
    se = G.std(axis=0, ddof=1) / np.sqrt(samples)
    return np.where(se > 0, dev / np.maximum(se, 1e-300), np.where(dev < 1e-6, 0.0, np.inf))


class _MisScaled(Fastfood):
    """A deliberately wrong Fastfood (columns 5 % too long): the statistical test must catch it."""

    def _forward(self, x, out, add):
        super()._forward(x, out, add)
        out *= np.float32(1.05)


FF = {"fastfood": lambda D, d, s: Fastfood(D, d, seed=3, subspace=s, block_log2=4),
      "fastfood_one_block": lambda D, d, s: Fastfood(D, d, seed=4, subspace=s, block_log2=None),
      "dense": lambda D, d, s: DenseGaussian(D, d, seed=3, subspace=s)}


@pytest.mark.parametrize("kind", sorted(FF))
@pytest.mark.parametrize("D,d", [(100, 8), (37, 5)])
def test_gram_is_identity_in_expectation(kind, D, d):
    z = identity_z_scores(lambda s: FF[kind](D, d, s), samples=300)
    assert z.max() < 4.5, f"max z-score {z.max():.2f}"


def test_gram_test_detects_a_misscaled_projection():
    z = identity_z_scores(lambda s: _MisScaled(100, 8, seed=3, subspace=s, block_log2=4), 300)
    assert z.max() > 4.5


def test_fastfood_and_dense_spread_agree():
    """Statistical agreement with the dense oracle: off-diagonal spread within a factor of 2."""
    off = ~np.eye(8, dtype=bool)
    sd = {k: np.array([gram(FF[k](100, 8, s)) for s in range(200)]).std(axis=0)[off].mean()
          for k in ("fastfood", "dense")}
    assert 0.5 < sd["fastfood"] / sd["dense"] < 2.0
    assert abs(sd["dense"] - 0.1) < 0.02  # 1/sqrt(D) for z/sqrt(D) entries


@pytest.mark.parametrize("make", [lambda: Fastfood(300, 12, seed=1, subspace=2, block_log2=5),
                                  lambda: DenseGaussian(300, 12, seed=1, subspace=2),
                                  lambda: make_projection("fastfood", 300, 12, seed=1,
                                                          layout=[100, 150, 50])])
def test_adjoint_identity(make):
    A = make()
    g = np.random.default_rng(0)
    x, y = g.standard_normal(12).astype(np.float32), g.standard_normal(300).astype(np.float32)
    lhs = float(A.forward(x).astype(np.float64) @ y)
    rhs = float(x.astype(np.float64) @ A.transpose(y))
    assert abs(lhs - rhs) <= 1e-5 * (1 + abs(lhs))


def test_dense_matches_its_matrix_and_chunks():
    A = DenseGaussian(5000, 3, seed=7, subspace=1, tensor=2)  # two Philox row chunks
    M = A.matrix()
    x = np.array([1.0, -2.0, 0.5], np.float32)
    np.testing.assert_allclose(A.forward(x), M @ x, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(A.chunk(0)[:10], A.chunk(1)[:10])


def test_single_block_when_block_log2_covers_D():
    A = Fastfood(1000, 16, seed=0, block_log2=10)
    assert A.nb == 1 and A.L == 1024


# -- linearity: aggregation in subspace coordinates ------------------------------------------
@pytest.mark.parametrize("cfg", [c for c, _ in CODECS[:4]], ids=lambda c: c["id"])
def test_aggregate_in_subspace_equals_aggregate_of_decoded(cfg):
    codec = compress.from_config(cfg)
    n, weights = 257, [3.0, 1.0, 7.0, 2.0]
    xs = [sample_vector(n, seed=s) for s in range(len(weights))]
    encs = [codec.encode(x, seed=0, state={"round": 5})[0] for x in xs]
    agg = codec.aggregate_encoded(encs, weights)
    decoded = np.array([codec.decode(e).astype(np.float64) for e in encs])
    want = (np.array(weights)[:, None] * decoded).sum(0) / sum(weights)
    np.testing.assert_allclose(codec.decode(agg), want, rtol=1e-5, atol=1e-6)


def test_aggregate_refuses_mixed_subspaces():
    codec = IGCTimeVarying(d=4)
    x = sample_vector(50)
    encs = [codec.encode(x, seed=0, state={"round": r})[0] for r in (1, 2)]
    assert codec.aggregate_encoded(encs) is None


# -- subspaces, schedules, regeneration ------------------------------------------------------
def test_subspace_from_state_and_parse():
    codec = IGCTimeVarying(d=8, hash_seed=9)
    x = sample_vector(100)
    enc, _ = codec.encode(x, seed=0, state={"round": 4})
    assert enc.meta["subspace"] == 4
    same = codec.decode(codec.parse(enc.payload(), 100, round=4))
    other = codec.decode(codec.parse(enc.payload(), 100))
    np.testing.assert_array_equal(same, codec.decode(enc))
    assert not np.array_equal(same, other)


@pytest.mark.parametrize("select", ["mod", "philox"])
def test_ksub_schedule(select):
    codec = IGCKSub(d=4, K=5, select=select, hash_seed=3)
    ks = [codec.subspace_for(t) for t in range(200)]
    assert set(ks) == set(range(5))
    assert ks == [IGCKSub(d=4, K=5, select=select, hash_seed=3).subspace_for(t)
                  for t in range(200)]
    if select == "mod":
        assert ks[:7] == [0, 1, 2, 3, 4, 0, 1]


def test_static_ignores_round():
    assert {IGCStatic(d=2).subspace_for(t) for t in range(10)} == {0}


@pytest.mark.parametrize("kind", ["fastfood", "dense"])
def test_every_instance_regenerates_the_same_matrix(kind):
    a = make_projection(kind, 200, 8, seed=123, subspace=6)
    b = make_projection(kind, 200, 8, seed=123, subspace=6)
    c = make_projection(kind, 200, 8, seed=123, subspace=7)
    x = sample_vector(8)
    assert a.forward(x).tobytes() == b.forward(x).tobytes()
    assert a.forward(x).tobytes() != c.forward(x).tobytes()


# -- per-layer layout -----------------------------------------------------------------------
@pytest.mark.parametrize("d,sizes", [(10, [100, 50, 30]), (3, [1, 1, 98]), (64, [4810]),
                                     (7, [5, 5, 5, 5, 5, 5, 5]), (100, [640, 64, 640, 10])])
def test_layer_dims(d, sizes):
    dims = layer_dims(d, sizes)
    assert sum(dims) == d and min(dims) >= 1 and len(dims) == len(sizes)
    floors = [max(1, d * n // sum(sizes)) for n in sizes]
    assert all(abs(a - b) <= 1 for a, b in zip(dims, floors, strict=True))


def test_layer_dims_examples():
    assert layer_dims(10, [100, 50, 30]) == [6, 3, 1]  # remainder 2 to the two largest
    with pytest.raises(ValueError, match="smaller than the number of tensors"):
        layer_dims(2, [5, 5, 5])


def test_per_layer_is_block_diagonal():
    A = make_projection("fastfood", 130, 6, seed=1, layout=[40, 8, 80, 2])
    assert isinstance(A, PerLayer) and [p.dim for p in A.parts] == layer_dims(6, [40, 8, 80, 2])
    x = np.zeros(6, np.float32)
    x[A.col_off[2]] = 1.0  # a column of tensor 2 only touches rows of tensor 2
    y = A.forward(x)
    assert np.count_nonzero(y[:48]) == 0 and np.count_nonzero(y[128:]) == 0
    assert np.count_nonzero(y[48:128]) > 0


# -- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,match", [
    ({"d": 0}, "d = 0"), ({"d": 16, "block_log2": 3}, "block_log2"),
    ({"projection": "sparse"}, "projection"), ({"scope": "per_layer"}, "layout"),
    ({"layout": [3, 4]}, "layout"), ({"hash_seed": -1}, "hash_seed")])
def test_constructor_validates(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IGCStatic(**kwargs)


def test_dense_size_limit_and_parse_size_check():
    with pytest.raises(ValueError, match="2\\*\\*31"):
        DenseGaussian(2**20, 2**12, seed=0)
    codec = IGCStatic(d=4, scope="per_layer", layout=[3, 5])
    with pytest.raises(WireFormatError, match="layout"):
        codec.parse(bytes(16), 9)


def test_decode_out_and_add_checks():
    A = Fastfood(20, 4, seed=0)
    with pytest.raises(ValueError, match="add=True"):
        A.forward(np.zeros(4, np.float32), add=True)
    with pytest.raises(ValueError, match="theta has 3"):
        A.forward(np.zeros(3, np.float32))

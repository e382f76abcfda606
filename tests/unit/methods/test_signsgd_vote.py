"""signSGD with majority vote (METHODS.md 6.6) driven through its hooks, without MPI."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze import config
from fedsqueeze.compress.identity import Identity
from fedsqueeze.compress.sign import EFSignSGD, SignSGD
from fedsqueeze.errors import WireFormatError, ConfigError, UpdateRejected
from fedsqueeze.fl.strategy import FedAvgClient, ServerContext, get_method
from fedsqueeze.methods.signsgd_vote import SignSGDVote, SignVoteOptions

D = 50


def make_server(eta_s: float = 0.01, codec=None, seed: int = 0) -> SignSGDVote:
    codec = codec or SignSGD()
    cfg = config.from_dict({"seed": seed, "data": {"clients": 5}, "sampling": {"fraction": 1.0},
                            "compress": {"up": codec.get_config()},
                            "fl": {"method": "signsgd_vote", "server_lr": 7.0}})
    w0 = np.random.default_rng(seed).standard_normal(D).astype(np.float32)
    return SignSGDVote(ServerContext(cfg, SignVoteOptions(eta_s=eta_s), D, w0, codec, codec, 5,
                                     np.ones(5)))


def vote_round(server, deltas, weights, t=0, codec=None):
    codec = codec or SignSGD()
    server.begin_round(t, np.arange(len(deltas)), np.asarray(weights))
    for c, (d, n) in enumerate(zip(deltas, weights, strict=True)):
        server.accumulate(t, c, n, codec.encode(np.asarray(d, np.float32), seed=c)[0].payload())
    return server.end_round(t)


def test_matches_reference_over_rounds():
    server = make_server(eta_s=0.03)
    g = np.random.default_rng(1)
    w = server.weights.copy()
    for t in range(4):  # rounds build one trajectory
        deltas = g.standard_normal((5, D)).astype(np.float32)
        deltas[:, :3] = 0.0  # sign(0) = +1 on the wire
        cols = vote_round(server, deltas, np.ones(5), t)
        v = np.where(deltas < 0, -1, 1).sum(axis=0)
        w = (w + np.float32(0.03) * np.sign(v).astype(np.float32)).astype(np.float32)
        np.testing.assert_array_equal(server.weights, w)
        assert cols["voters"] == 5


def test_votes_are_unweighted_and_ties_do_not_move():
    server = make_server(eta_s=1.0)
    w0 = server.weights.copy()
    up, down = np.ones(D, np.float32), -np.ones(D, np.float32)
    cols = vote_round(server, [up, down, down], [1000, 1, 1])
    np.testing.assert_array_equal(server.weights, w0 - 1.0)  # two small clients win
    cols = vote_round(server, [up, down], [1, 1], t=1)
    np.testing.assert_array_equal(server.weights, w0 - 1.0)  # a tie: sign(0) = 0
    assert cols["vote_ties"] == 1.0


def test_scaled_decodes_vote_by_sign_only():
    codec = EFSignSGD()
    server = make_server(eta_s=0.5, codec=codec)
    w0 = server.weights.copy()
    big, small = np.full(D, 5.0, np.float32), np.full(D, -0.01, np.float32)
    vote_round(server, [big, small, small], [1, 1, 1], codec=codec)
    np.testing.assert_array_equal(server.weights, w0 - np.float32(0.5))


def test_rejected_update_casts_no_vote():
    codec = Identity()  # a codec that can carry a NaN to the server
    server = make_server(codec=codec)
    w0 = server.weights.copy()
    server.begin_round(0, np.arange(1), np.ones(1))
    with pytest.raises(WireFormatError, match="NaN"):  # rejected by the decode path
        server.accumulate(0, 0, 1, codec.encode(np.full(D, np.nan, np.float32), seed=0)[0]
                          .payload())
    assert server.end_round(0)["voters"] == 0
    np.testing.assert_array_equal(server.weights, w0)


@pytest.mark.parametrize("options", [{"eta_s": 0}, {"eta_s": -1e-3}, {"eta": 1.0}])
def test_options_validated(options):
    with pytest.raises(ConfigError):
        get_method("signsgd_vote", options)


def test_registered_pair():
    strategy, program, opts = get_method("signsgd_vote", {})
    assert strategy is SignSGDVote and program is FedAvgClient and opts.eta_s == 1e-3

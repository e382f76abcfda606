"""Model registry, parameter counts (METHODS 7.8/7.9), deterministic Philox init, flat vectors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedsqueeze import rng
from fedsqueeze.errors import ConfigError
from fedsqueeze.models import (
    available_models,
    build_model,
    flat_params,
    init_params,
    num_params,
    set_flat_params,
)

# name -> (input_shape, num_classes, D from METHODS.md 7.8 / 7.9 or None where it gives none)
SPECS = {
    "digits_mlp": ((1, 8, 8), 10, 4_810),
    "digits_cnn": ((1, 8, 8), 10, 5_130),
    "mlp1d": ((1, 40), 10, 15_210),
    "cnn1d": ((1, 40), 10, 6_730),
    "cnn1d_wide": ((1, 40), 10, 1_034_810),
    "mlr": ((60,), 10, 610),
    "mnist_2nn": ((1, 28, 28), 10, 199_210),
    "mnist_cnn": ((1, 28, 28), 10, 1_663_370),
    "femnist_cnn": ((1, 28, 28), 62, None),
    "char_gru": ((32,), 101, None),
    "shakespeare_lstm": ((80,), 81, None),
    "resnet20": ((3, 32, 32), 10, None),
}
SMALL = ["digits_mlp", "digits_cnn", "mlp1d", "cnn1d", "cnn1d_wide", "mlr", "char_gru",
         "resnet20"]


def _build(name, seed=0):
    shape, classes, _ = SPECS[name]
    return build_model(name, input_shape=shape, num_classes=classes, seed=seed)


def _batch(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    if model.input_dtype == torch.int64:
        return torch.randint(0, 81, (n, *model.input_shape), generator=g)
    return torch.randn((n, *model.input_shape), generator=g)


def test_registry_lists_all():
    assert available_models() == sorted(SPECS)


def test_unknown_model_lists_names():
    with pytest.raises(ConfigError, match=r"unknown model 'vgg'.*digits_cnn.*mlr"):
        build_model("vgg", input_shape=(1, 8, 8), num_classes=10, seed=0)


@pytest.mark.parametrize("name", [n for n, s in SPECS.items() if s[2] is not None])
def test_param_counts_match_methods_table(name):
    assert num_params(_build(name)) == SPECS[name][2]


@pytest.mark.parametrize("name", ["resnet20", "char_gru"])
def test_param_counts_of_extra_models(name):
    """ResNet-20 (option A) has 0.27M weights; char_gru is embedding + GRU + linear."""
    counts = {"resnet20": 269_722, "char_gru": 101 * 16 + 3 * (16 * 64 + 64 * 64 + 2 * 64)
              + 64 * 101 + 101}
    assert num_params(_build(name)) == counts[name]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_forward_shape(name):
    m = _build(name)
    assert m(_batch(m)).shape == (3, SPECS[name][1])


@pytest.mark.parametrize("name", SMALL)
def test_two_builds_bit_identical(name):
    a, b = flat_params(_build(name, seed=7)), flat_params(_build(name, seed=7))
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
    assert not np.array_equal(a, flat_params(_build(name, seed=8)))


@pytest.mark.parametrize("name", SMALL)
def test_build_leaves_global_rng_alone(name):
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()
    _build(name)
    assert torch.equal(torch_state, torch.get_rng_state())
    np.testing.assert_array_equal(np_state[1], np.random.get_state()[1])


@pytest.mark.parametrize(("name", "index", "fan_in"), [
    ("digits_mlp", 0, 64), ("digits_mlp", 1, 64), ("digits_mlp", 3, 64),
    ("digits_cnn", 0, 9), ("digits_cnn", 3, 144), ("cnn1d", 2, 96), ("mlr", 1, 60),
    ("cnn1d_wide", 4, 2560)])
def test_linear_conv_values_follow_philox_rule(name, index, fan_in):
    p = list(_build(name, seed=3).parameters())[index].detach().numpy().ravel()
    u = rng.uniform24(3, purpose=rng.Purpose.INIT, stream=index, n=p.size).astype(np.float64)
    bound = 1.0 / math.sqrt(fan_in)
    np.testing.assert_allclose(p, bound * (2 * u - 1), rtol=1e-6, atol=0)
    assert np.abs(p).max() <= np.float32(bound)


def test_recurrent_and_embedding_rules():
    m = _build("char_gru", seed=2)
    emb, w_ih = m.embedding.weight.detach().numpy(), m.rnn.weight_ih_l0.detach().numpy()
    np.testing.assert_array_equal(
        emb.ravel(), rng.normal(2, purpose=rng.Purpose.INIT, stream=0, n=emb.size))
    u = rng.uniform24(2, purpose=rng.Purpose.INIT, stream=1, n=w_ih.size).astype(np.float64)
    np.testing.assert_allclose(w_ih.ravel(), (2 * u - 1) / 8.0, rtol=1e-6)  # 1/sqrt(64)


def test_batchnorm_starts_at_identity():
    m = _build("resnet20")
    bn = m.stem.bn
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)


def test_init_rejects_unknown_layer():
    with pytest.raises(TypeError, match="no deterministic init rule for PReLU"):
        init_params(nn.Sequential(nn.Linear(2, 2), nn.PReLU()), 0)


@pytest.mark.parametrize("name", ["digits_cnn", "char_gru"])
def test_flat_roundtrip_and_order(name):
    m = _build(name)
    vec = flat_params(m)
    first = next(m.parameters()).detach().numpy().ravel()
    np.testing.assert_array_equal(vec[:first.size], first)
    new = np.arange(vec.size, dtype=np.float32) / vec.size
    set_flat_params(m, new)
    np.testing.assert_array_equal(flat_params(m), new)
    np.testing.assert_array_equal(next(m.parameters()).detach().numpy().ravel(),
                                  new[:first.size])


@pytest.mark.parametrize("bad", [np.zeros(5, np.float32), np.zeros((2, 2565), np.float32)])
def test_set_flat_params_rejects_wrong_size(bad):
    with pytest.raises(ValueError, match=r"expected \(5130,\)"):
        set_flat_params(_build("digits_cnn"), bad)


def test_digits_cnn_embedding():
    m = _build("digits_cnn")
    x = _batch(m, n=4)
    e = m.embed(x)
    assert e.shape == (4, 32)
    torch.testing.assert_close(m.fc(e), m(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "shape"), [("digits_cnn", (64,)), ("mnist_cnn", (1, 30, 30)),
                                             ("char_gru", (1, 8, 8))])
def test_bad_input_shape(name, shape):
    with pytest.raises(ConfigError, match=f"model '{name}' needs"):
        build_model(name, input_shape=shape, num_classes=10, seed=0)

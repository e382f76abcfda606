"""Split-learning cuts: prefix then suffix reproduces the model, forward and backward."""

from __future__ import annotations

import pytest
import torch

from fedsqueeze.errors import ConfigError
from fedsqueeze.models import build_model, split_model

CASES = [  # name, input_shape, classes, cut, d_a
    ("digits_cnn", (1, 8, 8), 10, "conv1", 16 * 8 * 8),
    ("cnn1d", (1, 40), 10, "conv1", 32 * 40),
    ("char_gru", (32,), 101, "embedding", 32 * 16),
    ("femnist_cnn", (1, 28, 28), 62, "conv2", 64 * 7 * 7),
    ("resnet20", (3, 32, 32), 10, "layer1", 16 * 32 * 32),
    ("mlp1d", (1, 40), 10, "fc1", 100),
    ("digits_cnn", (1, 8, 8), 10, 4, 32 * 8 * 8),
]


def _inputs(model, seed):
    g = torch.Generator().manual_seed(seed)
    if model.input_dtype == torch.int64:
        return torch.randint(0, 101, (5, *model.input_shape), generator=g)
    return torch.randn((5, *model.input_shape), generator=g)


@pytest.mark.parametrize(("name", "shape", "classes", "cut", "d_a"), CASES)
def test_prefix_then_suffix_equals_model(name, shape, classes, cut, d_a):
    model = build_model(name, input_shape=shape, num_classes=classes, seed=1)
    prefix, suffix = split_model(model, cut)
    x = _inputs(model, 0)
    z = prefix(x)
    assert prefix.d_a == suffix.d_a == d_a and z.shape == (5, d_a)
    torch.testing.assert_close(suffix(z), model(x), rtol=0, atol=0)


@pytest.mark.parametrize(("name", "shape", "classes", "cut", "d_a"), CASES[:3])
def test_gradients_through_the_cut_match(name, shape, classes, cut, d_a):
    model = build_model(name, input_shape=shape, num_classes=classes, seed=2)
    x = _inputs(model, 1)
    model(x).square().sum().backward()
    full = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    prefix, suffix = split_model(model, cut)
    z = prefix(x)
    z_server = z.detach().requires_grad_(True)  # what the server receives
    suffix(z_server).square().sum().backward()
    z.backward(z_server.grad)  # the client applies the returned gradient
    for g, p in zip(full, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-6)


def test_parts_share_the_model_parameters():
    model = build_model("digits_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    prefix, suffix = split_model(model, "conv1")
    ids = {id(p) for p in prefix.parameters()} | {id(p) for p in suffix.parameters()}
    assert ids == {id(p) for p in model.parameters()}
    assert [n for n, _ in prefix.named_parameters()] == ["conv1.weight", "conv1.bias"]


def test_split_by_name_builds_deterministically():
    p1, _ = split_model("cnn1d", "conv1", input_shape=(1, 40), num_classes=10, seed=4)
    p2, _ = split_model("cnn1d", "conv1", input_shape=(1, 40), num_classes=10, seed=4)
    assert torch.equal(p1.conv1.weight, p2.conv1.weight)


@pytest.mark.parametrize(("cut", "match"), [
    ("conv9", r"unknown cut 'conv9'.*conv1, conv2, embedding"),
    (0, r"expected 1\.\.5"), (6, r"expected 1\.\.5"), (True, "integer cut")])
def test_bad_cuts(cut, match):
    model = build_model("digits_cnn", input_shape=(1, 8, 8), num_classes=10, seed=0)
    with pytest.raises(ConfigError, match=match):
        split_model(model, cut)


def test_name_needs_shapes():
    with pytest.raises(ConfigError, match="needs input_shape and num_classes"):
        split_model("digits_cnn", "conv1")

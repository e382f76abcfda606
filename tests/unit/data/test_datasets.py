"""Loaders: registry errors, digits, IDX, CIFAR pickles, LEAF JSON, Dataset validation."""

from __future__ import annotations

import numpy as np
import pytest

from fedsqueeze.data import Dataset, available_datasets, load_dataset
from fedsqueeze.data.datasets import LEAF_LETTERS
from fedsqueeze.errors import ConfigError

from .files import write_cifar, write_idx, write_leaf


def test_available_lists_every_dataset():
    assert available_datasets() == sorted(
        ["digits", "synthetic", "mnist", "cifar10", "leaf", "mnist1d", "chars"])


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*cifar10.*digits"):
        load_dataset("nope", seed=0)


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("digits", {"bogus": 1}, r"unknown option.*bogus.*allowed.*test_frac"),
    ("mnist", {}, r"reads local files: pass path="),
    ("digits", {"path": "/x"}, r"generated and takes no path"),
    ("digits", {"test_frac": 1.5}, r"test_frac = 1.5"),
])
def test_option_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_dataset(name, seed=0, **kwargs)


# ---------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits0():
    return load_dataset("digits", seed=0)


def test_digits_shapes_and_scale(digits0):
    assert digits0.input_shape == (1, 8, 8) and digits0.num_classes == 10
    assert digits0.x_train.dtype == np.float32 and digits0.y_train.dtype == np.int64
    assert len(digits0.y_train) + len(digits0.y_test) == 1797
    assert digits0.x_train.min() == 0.0 and digits0.x_train.max() == 1.0
    np.testing.assert_array_equal(digits0.x_train * 16, np.round(digits0.x_train * 16))


def test_digits_split_is_stratified(digits0):
    tr = np.bincount(digits0.y_train, minlength=10)
    te = np.bincount(digits0.y_test, minlength=10)
    np.testing.assert_array_equal(te, np.round(0.2 * (tr + te)).astype(int))


@pytest.mark.parametrize(("seed_a", "seed_b", "same"), [(0, 0, True), (0, 1, False)])
def test_digits_split_keyed_by_seed(digits0, seed_a, seed_b, same):
    a = digits0 if seed_a == 0 else load_dataset("digits", seed=seed_a)
    b = load_dataset("digits", seed=seed_b)
    assert np.array_equal(a.x_test, b.x_test) == same


# ---------------------------------------------------------------- MNIST IDX


def _idx_arrays(n: int, seed: int):
    g = np.random.default_rng(seed)
    return g.integers(0, 256, (n, 28, 28), dtype=np.uint8), g.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_idx(tmp_path, gz):
    xtr, ytr = _idx_arrays(7, 1)
    xte, yte = _idx_arrays(3, 2)
    write_idx(tmp_path, "train", xtr, ytr, gz=gz)
    write_idx(tmp_path, "test", xte, yte, gz=gz)
    ds = load_dataset("mnist", seed=0, path=str(tmp_path))
    assert ds.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.x_train[:, 0], xtr.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.y_test, yte.astype(np.int64))
    assert ds.x_test.max() <= 1.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"image_magic": 2049}, r"magic 2049, expected 2051"),
    ({"label_magic": 2051}, r"magic 2051, expected 2049"),
    ({"claimed_count": 8}, r"bytes, expected 16 \+ 8\*28\*28"),
])
def test_mnist_rejects_bad_headers(tmp_path, kwargs, match):
    x, y = _idx_arrays(4, 3)
    write_idx(tmp_path, "train", x, y, **kwargs)
    write_idx(tmp_path, "test", x, y)
    with pytest.raises(ValueError, match=match):
        load_dataset("mnist", seed=0, path=str(tmp_path))


@pytest.mark.parametrize(("n_labels", "write_test", "error", "match"), [
    (4, False, FileNotFoundError, "t10k-images-idx3-ubyte"),
    (3, True, ValueError, "has 4 images but .* has 3 labels"),
])
def test_mnist_missing_file_and_count_mismatch(tmp_path, n_labels, write_test, error, match):
    x, y = _idx_arrays(4, 3)
    write_idx(tmp_path, "train", x, y[:n_labels])
    if write_test:
        write_idx(tmp_path, "test", x, y)
    with pytest.raises(error, match=match):
        load_dataset("mnist", seed=0, path=str(tmp_path))


# ---------------------------------------------------------------- CIFAR-10


def _cifar_batches(per_batch: int):
    g = np.random.default_rng(5)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    return {n: (g.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                [int(v) for v in g.integers(0, 10, per_batch)]) for n in names}


@pytest.mark.parametrize("point_at", ["parent", "dir"])
def test_cifar_layout_and_normalisation(tmp_path, point_at):
    batches = _cifar_batches(4)
    directory = write_cifar(tmp_path, batches)
    ds = load_dataset("cifar10", seed=0, path=str(tmp_path if point_at == "parent" else directory))
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 2, 3)), 1.0, atol=1e-5)
    # channel-major planes: byte 1024 * c + 32 * row + col is pixel (c, row, col)
    raw = batches["test_batch"][0][2]
    mean, std = np.array(ds.meta["mean"]), np.array(ds.meta["std"])
    c, row, col = 2, 5, 7
    expect = (raw[1024 * c + 32 * row + col] / 255.0 - mean[c]) / std[c]
    assert ds.x_test[2, c, row, col] == pytest.approx(expect, rel=1e-6)
    assert ds.y_test.tolist() == batches["test_batch"][1]


def test_cifar_rejects_malformed_batch(tmp_path):
    batches = _cifar_batches(2)
    batches["data_batch_3"] = (np.zeros((2, 100), np.uint8), [0, 1])
    write_cifar(tmp_path, batches)
    with pytest.raises(ValueError, match=r"data_batch_3: data shape \(2, 100\)"):
        load_dataset("cifar10", seed=0, path=str(tmp_path))


# ---------------------------------------------------------------- LEAF JSON


def _femnist_user(n: int, seed: int):
    g = np.random.default_rng(seed)
    return {"x": g.random((n, 784)).round(3).tolist(), "y": g.integers(0, 62, n).tolist()}


def test_leaf_femnist_users_become_groups(tmp_path):
    users = {"u0": _femnist_user(3, 0), "u1": _femnist_user(2, 1), "u2": _femnist_user(4, 2)}
    write_leaf(tmp_path, "train", [{"u0": users["u0"]}, {"u1": users["u1"], "u2": users["u2"]}])
    write_leaf(tmp_path, "test", [{"u1": _femnist_user(1, 3), "u0": _femnist_user(2, 4)}])
    ds = load_dataset("leaf", seed=0, path=str(tmp_path))
    assert ds.input_shape == (1, 28, 28) and ds.num_classes == 62
    assert ds.meta["users"] == ["u0", "u1", "u2"]
    assert [len(g) for g in ds.train_groups] == [3, 2, 4]
    assert [len(g) for g in ds.test_groups] == [2, 1, 0]
    np.testing.assert_allclose(ds.x_train[ds.train_groups[1]].reshape(2, 784),
                               np.array(users["u1"]["x"], np.float32))
    assert ds.y_train[ds.train_groups[2]].tolist() == users["u2"]["y"]


def test_leaf_shakespeare_vocabulary(tmp_path):
    write_leaf(tmp_path, "train", [{"a": {"x": ["ab\n", "z}~"], "y": ["c", "é"]}}])
    write_leaf(tmp_path, "test", [{"a": {"x": ["AB "], "y": [" "]}}])
    ds = load_dataset("leaf", seed=0, path=str(tmp_path))
    assert len(LEAF_LETTERS) == 80 and ds.num_classes == 81
    assert ds.x_train.dtype == np.int64 and ds.input_shape == (3,)
    idx = LEAF_LETTERS.index
    assert ds.x_train.tolist() == [[idx("a"), idx("b"), idx("\n")], [idx("z"), idx("}"), 80]]
    assert ds.y_train.tolist() == [idx("c"), 80]
    assert ds.y_test.tolist() == [idx(" ")]


@pytest.mark.parametrize(("max_users", "seed"), [(2, 0), (2, 1), (3, 7)])
def test_leaf_vectors_and_seeded_subset(tmp_path, max_users, seed):
    users = {f"f_{i:05d}": {"x": [[float(i), 1.0]] * (i + 1), "y": [float(i % 3)] * (i + 1)}
             for i in range(5)}
    write_leaf(tmp_path, "train", [users])
    write_leaf(tmp_path, "test", [users])
    ds = load_dataset("leaf", seed=seed, path=str(tmp_path), max_users=max_users)
    again = load_dataset("leaf", seed=seed, path=str(tmp_path), max_users=max_users)
    assert ds.meta["users"] == again.meta["users"]
    assert len(ds.meta["users"]) == max_users
    assert ds.meta["users"] == sorted(ds.meta["users"])  # order of appearance is kept
    assert ds.input_shape == (2,)
    for name, g in zip(ds.meta["users"], ds.train_groups, strict=True):
        i = int(name[2:])
        assert np.all(ds.x_train[g, 0] == i) and np.all(ds.y_train[g] == i % 3)


@pytest.mark.parametrize(("train", "match"), [
    ({"x": [[0.0]], "y": [0.5]}, "non-integer labels"),
    ({"x": [[0.0], [0.0, 1.0]], "y": [0, 1]}, "differing lengths"),
    ({"x": ["abc", "ab"], "y": ["d", "c"]}, r"strings of lengths \[2, 3\]"),
    ({"x": [[0.0, 1.0]], "y": [0, 1]}, "has 1 x and 2 y"),
])
def test_leaf_rejects_malformed_users(tmp_path, train, match):
    write_leaf(tmp_path, "train", [{"a": train}])
    write_leaf(tmp_path, "test", [{"a": {"x": [[0.0]], "y": [0.0]}}])
    with pytest.raises(ValueError, match=match):
        load_dataset("leaf", seed=0, path=str(tmp_path))


# ---------------------------------------------------------------- Dataset validation


def _tiny(**changes):
    base = dict(x_train=np.zeros((4, 2), np.float32), y_train=np.array([0, 1, 0, 1]),
                x_test=np.zeros((1, 2), np.float32), y_test=np.array([1]), num_classes=2,
                input_shape=(2,), name="tiny")
    base.update(changes)
    return Dataset(**base)


@pytest.mark.parametrize(("changes", "match"), [
    ({"x_train": np.zeros((4, 2), np.float64)}, "dtype float64"),
    ({"y_train": np.array([0, 1, 0, 2])}, r"outside \[0, 2\)"),
    ({"input_shape": (3,)}, "expected"),
    ({"train_groups": [np.array([0, 1]), np.array([1, 2])], "test_groups": [np.array([0])] * 2},
     "overlap"),
    ({"train_groups": [np.arange(4)]}, "both be given"),
])
def test_dataset_validation(changes, match):
    with pytest.raises(ValueError, match=match):
        _tiny(**changes)


def test_dataset_accepts_valid_groups():
    ds = _tiny(train_groups=[np.array([0, 2]), np.array([1, 3])],
               test_groups=[np.array([], np.int64), np.array([0])])
    assert ds.num_train == 4


def test_a_cifar_batch_that_names_a_callable_is_refused(tmp_path):
    import os
    import pickle

    from fedsqueeze.data.datasets import _read_cifar_batch

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    f = tmp_path / "data_batch_1"
    f.write_bytes(pickle.dumps({b"data": Evil(), b"labels": [0]}))
    with pytest.raises(ValueError, match="not allowed"):
        _read_cifar_batch(f)


def test_digits_are_read_without_importing_sklearn_and_equal_its_loader():
    import subprocess
    import sys

    from sklearn.datasets import load_digits

    from fedsqueeze.data.datasets import _digits_arrays

    data, target = _digits_arrays()
    ref = load_digits()
    np.testing.assert_array_equal(data, ref.data)
    np.testing.assert_array_equal(target, ref.target)
    code = ("import sys; from fedsqueeze.data.datasets import load_digits; load_digits(seed=0); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

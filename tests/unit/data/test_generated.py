"""Generated datasets: FedProx Synthetic, MNIST-1D, chars."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

from fedsqueeze import rng
from fedsqueeze.data import load_dataset
from fedsqueeze.data.synthetic import CHARS_VOCAB, generate_synthetic

# ---------------------------------------------------------------- Synthetic


@pytest.mark.parametrize(("alpha", "beta", "iid"), [(0.0, 0.0, False), (1.0, 1.0, False),
                                                    (0.5, 0.5, True)])
def test_synthetic_structure_and_determinism(alpha, beta, iid):
    kw = {"alpha": alpha, "beta": beta, "iid": iid, "num_users": 12}
    a = load_dataset("synthetic", seed=3, **kw)
    b = load_dataset("synthetic", seed=3, **kw)
    c = load_dataset("synthetic", seed=4, **kw)
    assert a.input_shape == (60,) and a.num_classes == 10 and len(a.train_groups) == 12
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.y_train[:50], c.y_train[:50])
    for gtr, gte in zip(a.train_groups, a.test_groups, strict=True):
        n = len(gtr) + len(gte)
        assert n >= 50 and len(gtr) == int(0.9 * n)


def test_synthetic_counts_follow_reference_lognormal():
    xs, _ = generate_synthetic(rng.numpy_generator(9, rng.Purpose.SYNTH_DATA), alpha=1, beta=1,
                               iid=False, num_users=5)
    expect = rng.numpy_generator(9, rng.Purpose.SYNTH_DATA).lognormal(4, 2, 5).astype(int) + 50
    assert [len(x) for x in xs] == expect.tolist()


def _pooled_within_device_variance(xs):
    centred = np.concatenate([x - x.mean(axis=0) for x in xs])
    return centred.var(axis=0)


def test_synthetic_covariance_is_reference_diagonal():
    gen = rng.numpy_generator(11, rng.Purpose.SYNTH_DATA)
    xs, _ = generate_synthetic(gen, alpha=1, beta=1, iid=False, num_users=60)
    var = _pooled_within_device_variance(xs)
    expect = np.arange(1, 61, dtype=np.float64) ** -1.2
    assert sum(len(x) for x in xs) > 3000
    np.testing.assert_allclose(var, expect, rtol=0.08)


@pytest.mark.parametrize(("iid", "beta", "spread_small"), [(True, 0.0, True), (False, 1.0, False)])
def test_synthetic_device_means(iid, beta, spread_small):
    """IID devices share mean 0; non-IID means v_k ~ N(B_k, 1) differ between devices."""
    gen = rng.numpy_generator(2, rng.Purpose.SYNTH_DATA)
    xs, _ = generate_synthetic(gen, alpha=1, beta=beta, iid=iid, num_users=30)
    means = np.array([x.mean(axis=0) for x in xs])
    assert (np.abs(means).mean() < 0.3) == spread_small


def test_synthetic_iid_labels_share_one_linear_rule():
    """With iid every device labels by the same (W, b): a point's label ignores its device."""
    gen = rng.numpy_generator(5, rng.Purpose.SYNTH_DATA)
    xs, ys = generate_synthetic(gen, alpha=0, beta=0, iid=True, num_users=4)
    gen = rng.numpy_generator(5, rng.Purpose.SYNTH_DATA)
    gen.lognormal(4, 2, 4)
    w, b = gen.normal(0, 1, (60, 10)), gen.normal(0, 1, 10)
    for x, y in zip(xs, ys, strict=True):
        np.testing.assert_array_equal(np.argmax(x @ w + b, axis=1), y)


# ---------------------------------------------------------------- MNIST-1D


def test_mnist1d_restores_global_state():
    pytest.importorskip("mnist1d")
    np_before, py_before = np.random.get_state(), random.getstate()
    ds = load_dataset("mnist1d", seed=0, num_samples=200)
    np_after, py_after = np.random.get_state(), random.getstate()
    assert py_before == py_after
    np.testing.assert_array_equal(np_before[1], np_after[1])
    assert np_before[2:] == np_after[2:]
    assert ds.input_shape == (1, 40) and ds.x_train.shape == (160, 1, 40)
    assert set(np.unique(ds.y_train)) <= set(range(10))


def test_mnist1d_missing_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "mnist1d", None)
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match="pip install mnist1d"):
        load_dataset("mnist1d", seed=0)


# ---------------------------------------------------------------- chars


@pytest.fixture
def source_dir(tmp_path):
    (tmp_path / "b_mod.py").write_text("def f(x):\n    return x + 1  # é\n" * 6, encoding="utf-8")
    (tmp_path / "a_mod.py").write_text("import os\nprint(os.sep)\n" * 8, encoding="utf-8")
    (tmp_path / "_private.py").write_text("x = 1\n" * 100, encoding="utf-8")
    (tmp_path / "tiny.py").write_text("x = 1\n", encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("seq_len", "stride"), [(8, None), (5, 3)])
def test_chars_windows_follow_text(source_dir, seq_len, stride):
    ds = load_dataset("chars", seed=0, source_dir=str(source_dir), seq_len=seq_len,
                      stride=stride, min_windows=3)
    assert ds.meta["users"] == ["a_mod.py", "b_mod.py"]
    assert ds.num_classes == len(CHARS_VOCAB) + 1 == 101 and ds.input_shape == (seq_len,)
    step = seq_len if stride is None else stride
    for j, name in enumerate(ds.meta["users"]):
        text = (source_dir / name).read_text(encoding="utf-8")
        codes = [CHARS_VOCAB.index(c) if c in CHARS_VOCAB else 100 for c in text]
        windows = np.concatenate([ds.x_train[ds.train_groups[j]], ds.x_test[ds.test_groups[j]]])
        nexts = np.concatenate([ds.y_train[ds.train_groups[j]], ds.y_test[ds.test_groups[j]]])
        for i in (0, len(windows) - 1):
            assert windows[i].tolist() == codes[i * step:i * step + seq_len]
            assert nexts[i] == codes[i * step + seq_len]
        assert len(ds.test_groups[j]) == int(np.ceil(0.1 * len(windows)))


def test_chars_unknown_characters_map_to_100(source_dir):
    ds = load_dataset("chars", seed=0, source_dir=str(source_dir), seq_len=8, min_windows=3)
    assert "é" not in CHARS_VOCAB
    assert 100 in set(ds.x_train[ds.train_groups[1]].ravel())
    assert 100 not in set(ds.x_train[ds.train_groups[0]].ravel())


@pytest.mark.parametrize("max_files", [1, 3])
def test_chars_from_stdlib_is_deterministic_and_capped(max_files):
    a = load_dataset("chars", seed=0, max_files=max_files, max_windows=40)
    b = load_dataset("chars", seed=5, max_files=max_files, max_windows=40)
    assert len(a.train_groups) == max_files and a.meta["users"] == b.meta["users"]
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert all(len(g) + len(h) == 40 for g, h in zip(a.train_groups, a.test_groups, strict=True))

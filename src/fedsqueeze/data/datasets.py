"""Dataset container, the loader registry, and the file-backed loaders (METHODS.md section 7).

Every loader reads local files or generates data; nothing is downloaded. Loaders are looked up
by name in :data:`LOADERS` and imported on first use, so importing this module imports neither
scikit-learn nor any optional package.

=============  ===========================================  ========================
name           source                                       ``input_shape``
=============  ===========================================  ========================
``digits``     ``sklearn.datasets.load_digits`` (bundled)   ``(1, 8, 8)``
``synthetic``  FedProx Synthetic(alpha, beta), seeded       ``(60,)``
``mnist``      IDX files under ``path`` (optionally .gz)    ``(1, 28, 28)``
``cifar10``    ``cifar-10-batches-py`` pickles at ``path``  ``(3, 32, 32)``
``leaf``       LEAF JSON ``train/`` and ``test/`` dirs      per kind (see below)
``mnist1d``    the ``mnist1d`` package, procedural          ``(1, 40)``
``chars``      the standard library's own ``.py`` sources   ``(seq_len,)`` int64
=============  ===========================================  ========================

Inputs are float32, except token sequences (``leaf`` Shakespeare, ``chars``) which are int64
indices; labels are int64. Seeded splits draw from ``rng.numpy_generator(seed, PARTITION,
stream=SPLIT_STREAM)`` (the stream layout is documented in :mod:`fedsqueeze.data.partition`).

>>> ds = load_dataset("digits", seed=0)
>>> ds.x_train.shape[1:], ds.num_classes, len(ds.x_train) + len(ds.x_test)
((1, 8, 8), 10, 1797)
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib
import inspect
import json
import pickle
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .. import rng
from ..errors import ConfigError

__all__ = ["Dataset", "load_dataset", "available_datasets", "LOADERS", "SPLIT_STREAM",
           "LEAF_LETTERS"]

SPLIT_STREAM = 1
"""Philox stream (purpose PARTITION) of seeded train/test splits and user subsets."""

LEAF_LETTERS = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]"
                "abcdefghijklmnopqrstuvwxyz}")
"""LEAF Shakespeare vocabulary (``ALL_LETTERS``, 80 characters); unknown characters map to 80."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test pair held in memory, with optional natural client groups.

    Attributes
    ----------
    x_train, x_test : ndarray
        Inputs, float32 (or int64 token indices), shape ``(n, *input_shape)``.
    y_train, y_test : ndarray
        int64 labels in ``[0, num_classes)``.
    num_classes : int
    input_shape : tuple of int
    name : str
    train_groups, test_groups : list of ndarray or None
        Natural partition (LEAF users, FedProx devices, source files): int64 index arrays into
        ``x_train`` / ``x_test``, one per client, pairwise disjoint. ``test_groups[j]`` belongs to
        the same client as ``train_groups[j]``.
    meta : mapping
        Small JSON-able facts a consumer may need (normalisation mean/std, vocabulary).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    train_groups: list[np.ndarray] | None = None
    test_groups: list[np.ndarray] | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype not in (np.float32, np.int64):
                raise ValueError(f"{self.name}: x_{split} dtype {x.dtype}, expected float32/int64")
            if y.dtype != np.int64 or y.ndim != 1:
                raise ValueError(f"{self.name}: y_{split} must be 1-D int64, got {y.dtype} "
                                 f"with shape {y.shape}")
            if x.shape != (len(y), *self.input_shape):
                raise ValueError(f"{self.name}: x_{split} shape {x.shape}, expected "
                                 f"({len(y)}, *{self.input_shape})")
            if len(y) and (y.min() < 0 or y.max() >= self.num_classes):
                raise ValueError(f"{self.name}: y_{split} outside [0, {self.num_classes})")
            groups = getattr(self, f"{split}_groups")
            if groups is not None:
                _check_groups(groups, len(y), f"{self.name}: {split}_groups")
        if (self.train_groups is None) != (self.test_groups is None) or (
                self.train_groups is not None
                and len(self.train_groups) != len(self.test_groups)):
            raise ValueError(f"{self.name}: train_groups and test_groups must both be given "
                             "with one entry per client")

    @property
    def num_train(self) -> int:
        """Number of training samples."""
        return len(self.y_train)


def _check_groups(groups: Sequence[np.ndarray], n: int, what: str) -> None:
    counts = np.zeros(n, dtype=np.int64)
    for g in groups:
        if g.dtype != np.int64 or g.ndim != 1:
            raise ValueError(f"{what}: groups must be 1-D int64 index arrays")
        if len(g) and (g.min() < 0 or g.max() >= n):
            raise ValueError(f"{what}: index outside [0, {n})")
        np.add.at(counts, g, 1)
    if counts.max(initial=0) > 1:
        raise ValueError(f"{what}: groups overlap")


LOADERS: Mapping[str, str] = MappingProxyType({
    "digits": "datasets:load_digits",
    "mnist": "datasets:load_mnist",
    "cifar10": "datasets:load_cifar10",
    "leaf": "datasets:load_leaf",
    "synthetic": "synthetic:load_synthetic",
    "mnist1d": "synthetic:load_mnist1d",
    "chars": "synthetic:load_chars",
})
"""Dataset name -> ``module:function`` inside ``fedsqueeze.data`` (imported on first use)."""


def available_datasets() -> list[str]:
    """Sorted names accepted by :func:`load_dataset`."""
    return sorted(LOADERS)


def _loader(name: str) -> Callable[..., Dataset]:
    if name not in LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(available_datasets())}")
    module, func = LOADERS[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), func)


def load_dataset(name: str, *, seed: int, path: str | None = None, **options: Any) -> Dataset:
    """Load or generate dataset ``name``.

    Parameters
    ----------
    name : str
        One of :func:`available_datasets`.
    seed : int
        Run seed; keys seeded splits and generators (ignored by fixed splits).
    path : str, optional
        Local directory for file-backed datasets (``mnist``, ``cifar10``, ``leaf``).
    **options
        Loader-specific options; unknown ones raise :class:`~fedsqueeze.errors.ConfigError`.

    Returns
    -------
    Dataset
    """
    loader = _loader(name)
    params = inspect.signature(loader).parameters
    allowed = sorted(k for k, p in params.items()
                     if p.kind is p.KEYWORD_ONLY and k not in ("seed", "path"))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"dataset {name!r}: unknown option(s) {unknown}; allowed: {allowed}")
    if "path" in params:
        if path is None:
            raise ConfigError(f"dataset {name!r} reads local files: pass path=")
        return loader(seed=seed, path=Path(path), **options)
    if path is not None:
        raise ConfigError(f"dataset {name!r} is generated and takes no path (got {path!r})")
    return loader(seed=seed, **options)


def split_generator(seed: int) -> np.random.Generator:
    """The generator of seeded train/test splits and subsets (PARTITION, ``SPLIT_STREAM``)."""
    return rng.numpy_generator(seed, rng.Purpose.PARTITION, SPLIT_STREAM)


# ---------------------------------------------------------------------------- digits


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``digits.csv.gz`` (pixels 0..16, then the label), read straight from the
    installed package: importing scikit-learn (SciPy and all) would take 1-3 s on every rank."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as _sk_digits  # a layout we do not know

    bunch = _sk_digits()
    return bunch.data, bunch.target


def load_digits(*, seed: int, test_frac: float = 0.2) -> Dataset:
    """scikit-learn digits: stratified split keyed by ``seed``, inputs ``/16`` (METHODS 7.1).

    Per class ``k`` with ``n_k`` samples, ``round(test_frac * n_k)`` seeded picks go to test.
    """
    if not 0.0 < test_frac < 1.0:
        raise ConfigError(f"digits: test_frac = {test_frac}, expected in (0, 1)")
    data, target = _digits_arrays()
    x = (data.astype(np.float64) / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = target.astype(np.int64)
    gen = split_generator(seed)
    test = np.zeros(len(y), dtype=bool)
    for k in range(10):
        idx = np.flatnonzero(y == k)
        test[gen.permutation(idx)[: int(round(test_frac * len(idx)))]] = True
    return Dataset(x[~test], y[~test], x[test], y[test], 10, (1, 8, 8), "digits")


# ---------------------------------------------------------------------------- MNIST (IDX)

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _read_maybe_gz(directory: Path, stem: str) -> tuple[bytes, Path]:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            opener = gzip.open if candidate.suffix == ".gz" else open
            with opener(candidate, "rb") as f:
                return f.read(), candidate
    raise FileNotFoundError(f"mnist: neither {directory / stem} nor {stem}.gz exists")


def read_idx_images(raw: bytes, where: str) -> np.ndarray:
    """Parse an IDX3 image file (magic 2051) into ``uint8[n, rows, cols]``."""
    if len(raw) < 16:
        raise ValueError(f"{where}: {len(raw)} bytes, too short for an IDX3 header")
    magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
    if magic != 2051:
        raise ValueError(f"{where}: magic {magic}, expected 2051 (IDX3 images)")
    if len(raw) != 16 + n * rows * cols:
        raise ValueError(f"{where}: {len(raw)} bytes, expected 16 + {n}*{rows}*{cols}")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def read_idx_labels(raw: bytes, where: str) -> np.ndarray:
    """Parse an IDX1 label file (magic 2049) into ``uint8[n]``."""
    if len(raw) < 8:
        raise ValueError(f"{where}: {len(raw)} bytes, too short for an IDX1 header")
    magic, n = struct.unpack(">II", raw[:8])
    if magic != 2049:
        raise ValueError(f"{where}: magic {magic}, expected 2049 (IDX1 labels)")
    if len(raw) != 8 + n:
        raise ValueError(f"{where}: {len(raw)} bytes, expected 8 + {n}")
    return np.frombuffer(raw, dtype=np.uint8, offset=8)


def load_mnist(*, seed: int, path: Path) -> Dataset:
    """MNIST from IDX files in ``path`` (METHODS 7.4): pixels scaled to [0, 1], shape (1, 28, 28).

    ``seed`` is unused: the train/test split is the files' own.
    """
    arrays = []
    for split in ("train", "test"):
        img_raw, img_file = _read_maybe_gz(path, _IDX_FILES[split][0])
        lab_raw, lab_file = _read_maybe_gz(path, _IDX_FILES[split][1])
        images = read_idx_images(img_raw, str(img_file))
        labels = read_idx_labels(lab_raw, str(lab_file))
        if len(images) != len(labels):
            raise ValueError(f"mnist: {img_file} has {len(images)} images but {lab_file} "
                             f"has {len(labels)} labels")
        if labels.size and labels.max() > 9:
            raise ValueError(f"mnist: {lab_file} holds label {labels.max()}, expected 0..9")
        x = (images.astype(np.float32) / np.float32(255.0))[:, None]
        arrays += [x, labels.astype(np.int64)]
    shape = arrays[0].shape[1:]
    if arrays[2].shape[1:] != shape:
        raise ValueError(f"mnist: train images {shape[1:]} but test images {arrays[2].shape[2:]}")
    return Dataset(*arrays, 10, shape, "mnist")


# ---------------------------------------------------------------------------- CIFAR-10


_CIFAR_GLOBALS = frozenset({("numpy.core.multiarray", "_reconstruct"),
                            ("numpy._core.multiarray", "_reconstruct"),
                            ("numpy", "ndarray"), ("numpy", "dtype")})


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain containers and NumPy arrays only: a batch file that names any other
    global (a function to call) is refused, so a hostile file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR "
                                         "batch")
        return super().find_class(module, name)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    if not file.is_file():
        raise FileNotFoundError(f"cifar10: missing batch file {file}")
    with open(file, "rb") as f:
        try:
            batch = _CifarUnpickler(f, encoding="bytes").load()  # a local file, never the wire
        except (pickle.UnpicklingError, EOFError) as exc:
            raise ValueError(f"cifar10: {file} is not a CIFAR batch: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise ValueError(f"cifar10: {file} is not a CIFAR batch (needs b'data' and b'labels')")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise ValueError(f"cifar10: {file}: data shape {data.shape} with {len(labels)} labels, "
                         "expected (n, 3072) and n labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"cifar10: {file} holds labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(*, seed: int, path: Path) -> Dataset:
    """CIFAR-10 python batches (METHODS 7.5), normalised per channel by the training mean/std.

    ``path`` is the ``cifar-10-batches-py`` directory or its parent. ``meta`` holds the mean and
    std (of [0, 1] pixels) so that other inputs (OOD images) can be normalised the same way.
    """
    root = path / "cifar-10-batches-py" if (path / "cifar-10-batches-py").is_dir() else path
    train = [_read_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    xtr = np.concatenate([b[0] for b in train]).astype(np.float64) / 255.0
    ytr = np.concatenate([b[1] for b in train])
    xte, yte = _read_cifar_batch(root / "test_batch")
    mean = xtr.mean(axis=(0, 2, 3))
    std = xtr.std(axis=(0, 2, 3))
    std = np.where(std > 0, std, 1.0)

    def norm(x: np.ndarray) -> np.ndarray:
        return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32)

    return Dataset(norm(xtr), ytr, norm(xte.astype(np.float64) / 255.0), yte, 10, (3, 32, 32),
                   "cifar10", meta={"mean": mean.tolist(), "std": std.tolist()})


# ---------------------------------------------------------------------------- LEAF JSON


def _read_leaf_dir(directory: Path) -> dict[str, dict[str, list]]:
    if not directory.is_dir():
        raise FileNotFoundError(f"leaf: missing directory {directory}")
    files = sorted(directory.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"leaf: no .json files in {directory}")
    users: dict[str, dict[str, list]] = {}
    for file in files:
        with open(file, encoding="utf-8") as f:
            blob = json.load(f)
        if not isinstance(blob, dict) or "users" not in blob or "user_data" not in blob:
            raise ValueError(f"leaf: {file} lacks 'users'/'user_data'")
        for u in blob["users"]:
            data = blob["user_data"][u]
            if len(data["x"]) != len(data["y"]):
                raise ValueError(f"leaf: {file}: user {u!r} has {len(data['x'])} x "
                                 f"and {len(data['y'])} y")
            entry = users.setdefault(u, {"x": [], "y": []})
            entry["x"].extend(data["x"])
            entry["y"].extend(data["y"])
    return users


def _leaf_kind(sample_x: Any) -> str:
    if isinstance(sample_x, str):
        return "shakespeare"
    return "femnist" if len(sample_x) == 784 else "vector"


def _leaf_arrays(xs: list, ys: list, kind: str, where: Path) -> tuple[np.ndarray, np.ndarray]:
    if kind == "shakespeare":
        table, unknown = {c: i for i, c in enumerate(LEAF_LETTERS)}, len(LEAF_LETTERS)
        if len({len(t) for t in xs}) != 1:
            raise ValueError(f"leaf: strings of lengths {sorted({len(t) for t in xs})} in {where}")
        x = np.array([[table.get(c, unknown) for c in t] for t in xs], dtype=np.int64)
        return x, np.array([table.get(c, unknown) for c in ys], dtype=np.int64)
    try:
        x = np.asarray(xs, dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"leaf: samples of differing lengths in {where}") from exc
    yf = np.asarray(ys, dtype=np.float64)
    if not np.array_equal(yf, np.round(yf)):
        raise ValueError(f"leaf: non-integer labels in {where}")
    return (x.reshape(-1, 1, 28, 28) if kind == "femnist" else x), yf.astype(np.int64)


def load_leaf(*, seed: int, path: Path, num_classes: int | None = None,
              max_users: int | None = None) -> Dataset:
    """LEAF JSON (METHODS 7.6): one client per user, in order of first appearance in ``train/``.

    The kind follows from the data: strings are Shakespeare (int64 indices over
    :data:`LEAF_LETTERS`, unknown = 80, 81 classes); 784-vectors are FEMNIST images
    (1, 28, 28), 62 classes; other vectors (FedProx Synthetic JSON) keep their length and take
    ``max(y) + 1`` classes. ``max_users`` keeps a seeded subset of users (in their order).
    Users with test data but no training data are dropped.
    """
    train, test = _read_leaf_dir(path / "train"), _read_leaf_dir(path / "test")
    names = [u for u in train if train[u]["x"]]
    if not names:
        raise ValueError(f"leaf: no user in {path / 'train'} has samples")
    if max_users is not None and max_users < len(names):
        keep = np.sort(split_generator(seed).choice(len(names), max_users, replace=False))
        names = [names[i] for i in keep]
    kind = _leaf_kind(train[names[0]]["x"][0])
    arrays, groups = [], []
    for split, src in ((path / "train", train), (path / "test", test)):
        xs, ys = [], []
        for u in names:
            data = src.get(u, {"x": [], "y": []})
            xs.extend(data["x"])
            ys.extend(data["y"])
        sizes = [len(src[u]["y"]) if u in src else 0 for u in names]
        edges = np.concatenate([[0], np.cumsum(sizes)])
        groups.append([np.arange(edges[i], edges[i + 1], dtype=np.int64)
                       for i in range(len(names))])
        if xs:
            arrays += _leaf_arrays(xs, ys, kind, split)
        else:
            arrays += [np.zeros((0, *arrays[0].shape[1:]), arrays[0].dtype), np.zeros(0, np.int64)]
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise ValueError(f"leaf: train samples {arrays[0].shape[1:]} but test samples "
                         f"{arrays[2].shape[1:]} in {path}")
    if num_classes is None:
        num_classes = {"shakespeare": len(LEAF_LETTERS) + 1, "femnist": 62}.get(
            kind, int(max(arrays[1].max(), arrays[3].max(initial=0))) + 1)
    meta: dict[str, Any] = {"kind": kind, "users": names}
    if kind == "shakespeare":
        meta["vocab"] = LEAF_LETTERS
    return Dataset(*arrays, int(num_classes), arrays[0].shape[1:], "leaf", *groups, meta)

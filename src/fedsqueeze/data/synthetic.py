"""Generated datasets: FedProx Synthetic(alpha, beta), MNIST-1D and the ``chars`` text task.

* ``synthetic`` reproduces the distribution of ``litian96/FedProx``
  ``data/synthetic_1_1/generate_synthetic.py`` and ``data/synthetic_iid/generate_iid.py``
  (METHODS.md section 7.3) with a seeded generator
  ``rng.numpy_generator(seed, Purpose.SYNTH_DATA)``; the draws follow the reference order.
* ``mnist1d`` calls the ``mnist1d`` package's procedural ``make_dataset`` (never its download
  path), saving and restoring the global ``numpy.random`` and ``random`` states it reseeds.
* ``chars`` is next-character prediction on the Python standard library's own ``.py`` files,
  one client per file. Its content depends on the Python version that runs it.
"""

from __future__ import annotations

import random
import string
import sysconfig
from pathlib import Path

import numpy as np

from .. import rng
from ..errors import ConfigError
from .datasets import Dataset

__all__ = ["load_synthetic", "generate_synthetic", "load_mnist1d", "load_chars", "CHARS_VOCAB"]

CHARS_VOCAB = string.printable
"""``chars`` vocabulary: the 100 printable ASCII characters; index 100 is "unknown"."""


def generate_synthetic(
    gen: np.random.Generator, *, alpha: float, beta: float, iid: bool, num_users: int,
    dimension: int = 60, num_classes: int = 10,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-device ``(x, y)`` of FedProx Synthetic(alpha, beta), in the reference's draw order.

    ``alpha`` and ``beta`` are standard deviations, as in the reference code. With ``iid`` the
    ``generate_iid.py`` variant is drawn (shared ``W, b ~ N(0, 1)``, ``x ~ N(0, Sigma)``) and
    ``alpha``, ``beta`` are not used. ``x ~ N(v, diag((j+1)^-1.2))`` is drawn as
    ``v + sqrt(diag) * z``, which has the reference's distribution.

    Returns
    -------
    xs, ys : lists of float64 ``(n_k, dimension)`` and int64 ``(n_k,)`` arrays, one per device.
    """
    counts = gen.lognormal(4, 2, num_users).astype(np.int64) + 50
    sd = np.sqrt(np.arange(1, dimension + 1, dtype=np.float64) ** -1.2)
    if iid:
        mean_x = np.zeros((num_users, dimension))
        w_all = gen.normal(0, 1, (dimension, num_classes))
        b_all = gen.normal(0, 1, num_classes)
    else:
        mean_w = gen.normal(0, alpha, num_users)
        big_b = gen.normal(0, beta, num_users)
        mean_x = np.stack([gen.normal(big_b[i], 1, dimension) for i in range(num_users)])
    xs, ys = [], []
    for i in range(num_users):
        if iid:
            w, b = w_all, b_all
        else:
            w = gen.normal(mean_w[i], 1, (dimension, num_classes))
            b = gen.normal(mean_w[i], 1, num_classes)  # mean_b = mean_W in the reference
        x = mean_x[i] + sd * gen.standard_normal((int(counts[i]), dimension))
        xs.append(x)
        ys.append(np.argmax(x @ w + b, axis=1).astype(np.int64))  # argmax softmax = argmax
    return xs, ys


def load_synthetic(*, seed: int, alpha: float = 1.0, beta: float = 1.0, iid: bool = False,
                   num_users: int = 30, train_frac: float = 0.9) -> Dataset:
    """FedProx Synthetic(alpha, beta): one client per device, per-device train/test split.

    Each device's samples are shuffled (the reference's ``random.shuffle``, here from the same
    seeded generator) and the first ``int(train_frac * n)`` go to train (0.9 in FedProx; 0.8
    in DAdaQuant).
    """
    if num_users < 1 or alpha < 0 or beta < 0 or not 0.0 < train_frac < 1.0:
        raise ConfigError(f"synthetic: num_users = {num_users}, alpha = {alpha}, beta = {beta}, "
                          f"train_frac = {train_frac}; expected >= 1, >= 0, >= 0, in (0, 1)")
    gen = rng.numpy_generator(seed, rng.Purpose.SYNTH_DATA)
    xs, ys = generate_synthetic(gen, alpha=alpha, beta=beta, iid=iid, num_users=num_users)
    parts: dict[str, list] = {"train": [], "test": []}
    for x, y in zip(xs, ys, strict=True):
        order = gen.permutation(len(y))
        cut = int(train_frac * len(y))
        parts["train"].append((x[order[:cut]], y[order[:cut]]))
        parts["test"].append((x[order[cut:]], y[order[cut:]]))
    arrays, groups = [], []
    for split in ("train", "test"):
        sizes = [len(p[1]) for p in parts[split]]
        edges = np.concatenate([[0], np.cumsum(sizes)])
        groups.append([np.arange(edges[i], edges[i + 1], dtype=np.int64)
                       for i in range(num_users)])
        arrays += [np.concatenate([p[0] for p in parts[split]]).astype(np.float32),
                   np.concatenate([p[1] for p in parts[split]])]
    return Dataset(*arrays, 10, (60,), "synthetic", groups[0], groups[1],
                   {"alpha": alpha, "beta": beta, "iid": bool(iid)})


def load_mnist1d(*, seed: int, num_samples: int = 5000, train_split: float = 0.8,
                 data_seed: int = 42) -> Dataset:
    """MNIST-1D from the ``mnist1d`` package (METHODS 7.2), shape ``(1, 40)``.

    The data come from the package's own seed ``data_seed`` (42 gives the reference set), not
    from the run seed; ``seed`` is accepted for a uniform interface. Global ``numpy.random``
    and ``random`` states are restored afterwards.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:
        raise ImportError("dataset 'mnist1d' needs the 'mnist1d' package "
                          "(pip install mnist1d); it generates the data locally") from exc
    args = get_dataset_args()
    args.num_samples, args.train_split, args.seed = int(num_samples), float(train_split), data_seed
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)

    def x_of(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.float32)[:, None, :]

    xtr, xte = x_of(data["x"]), x_of(data["x_test"])
    return Dataset(xtr, np.asarray(data["y"], np.int64), xte, np.asarray(data["y_test"], np.int64),
                   10, xtr.shape[1:], "mnist1d")


def _stdlib_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob("*.py") if p.is_file() and p.name[0] != "_")


def load_chars(*, seed: int, seq_len: int = 32, stride: int | None = None, max_files: int = 16,
               max_windows: int = 256, min_windows: int = 20, test_frac: float = 0.1,
               source_dir: str | None = None) -> Dataset:
    """Next-character prediction on the standard library's ``.py`` files, one client per file.

    Files are the top-level ``*.py`` of ``sysconfig.get_paths()["stdlib"]`` (or
    ``source_dir``) whose names do not start with ``_`` (this skips generated, platform-specific
    modules such as ``_sysconfigdata_*``), in sorted name order; the first ``max_files`` with at least
    ``min_windows`` windows are used. A file's text (UTF-8, undecodable bytes replaced) is mapped
    to :data:`CHARS_VOCAB` indices (unknown = 100); window ``i`` starts at ``i * stride``
    (default ``stride = seq_len``), ``x`` is ``seq_len`` tokens and ``y`` the next one. At most
    ``max_windows`` windows per file are kept; the last ``ceil(test_frac * n)`` of them are the
    file's test windows. Deterministic: ``seed`` is not used.
    """
    stride = seq_len if stride is None else stride
    if min(seq_len, stride, max_files, max_windows, min_windows) < 1 or not 0 < test_frac < 1:
        raise ConfigError(f"chars: seq_len={seq_len}, stride={stride}, max_files={max_files}, "
                          f"max_windows={max_windows}, min_windows={min_windows} must be >= 1 "
                          f"and test_frac={test_frac} in (0, 1)")
    directory = Path(source_dir or sysconfig.get_paths()["stdlib"])
    table = np.full(128, len(CHARS_VOCAB), dtype=np.int64)
    table[[ord(c) for c in CHARS_VOCAB]] = np.arange(len(CHARS_VOCAB))
    users, parts = [], {"train": [], "test": []}
    for file in _stdlib_files(directory):
        if len(users) == max_files:
            break
        points = np.frombuffer(file.read_text("utf-8", errors="replace").encode("utf-32-le"),
                               dtype="<u4")
        text = np.where(points < 128, table[np.minimum(points, 127)], len(CHARS_VOCAB))
        n = (len(text) - seq_len - 1) // stride + 1 if len(text) > seq_len else 0
        n = min(n, max_windows)
        if n < min_windows:
            continue
        starts = np.arange(n) * stride
        x = text[starts[:, None] + np.arange(seq_len)]
        y = text[starts + seq_len]
        n_test = int(np.ceil(test_frac * n))
        parts["train"].append((x[: n - n_test], y[: n - n_test]))
        parts["test"].append((x[n - n_test:], y[n - n_test:]))
        users.append(file.name)
    if not users:
        raise ValueError(f"chars: no .py file in {directory} yields {min_windows} windows")
    arrays, groups = [], []
    for split in ("train", "test"):
        edges = np.concatenate([[0], np.cumsum([len(p[1]) for p in parts[split]])])
        groups.append([np.arange(edges[i], edges[i + 1], dtype=np.int64)
                       for i in range(len(users))])
        arrays += [np.concatenate([p[0] for p in parts[split]]),
                   np.concatenate([p[1] for p in parts[split]])]
    return Dataset(*arrays, len(CHARS_VOCAB) + 1, (seq_len,), "chars", groups[0], groups[1],
                   {"vocab": CHARS_VOCAB, "users": users})

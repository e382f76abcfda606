"""Writers of tiny dataset files (IDX, CIFAR pickles, LEAF JSON) for the loader tests.

Tests call these with ``tmp_path``; nothing is committed or downloaded.
"""

from __future__ import annotations

import gzip
import json
import pickle
import struct
from pathlib import Path

import numpy as np


def write_idx(directory: Path, split: str, images: np.ndarray, labels: np.ndarray, *,
              gz: bool = False, image_magic: int = 2051, label_magic: int = 2049,
              claimed_count: int | None = None) -> None:
    """Write ``{split}-images-idx3-ubyte`` and ``{split}-labels-idx1-ubyte`` (optionally .gz)."""
    n, rows, cols = images.shape
    count = n if claimed_count is None else claimed_count
    img = struct.pack(">IIII", image_magic, count, rows, cols) + images.astype(np.uint8).tobytes()
    lab = struct.pack(">II", label_magic, len(labels)) + labels.astype(np.uint8).tobytes()
    prefix = "train" if split == "train" else "t10k"
    for stem, raw in ((f"{prefix}-images-idx3-ubyte", img), (f"{prefix}-labels-idx1-ubyte", lab)):
        if gz:
            with gzip.open(directory / f"{stem}.gz", "wb") as f:
                f.write(raw)
        else:
            (directory / stem).write_bytes(raw)


def write_cifar(root: Path, batches: dict[str, tuple[np.ndarray, list[int]]]) -> Path:
    """Write ``cifar-10-batches-py/<name>`` pickles of ``{b"data": uint8[n, 3072], b"labels"}``."""
    directory = root / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    for name, (data, labels) in batches.items():
        with open(directory / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
    return directory


def write_leaf(root: Path, split: str, files: list[dict[str, dict[str, list]]]) -> None:
    """Write ``root/split/part{i}.json``, each from ``{user: {"x": [...], "y": [...]}}``."""
    directory = root / split
    directory.mkdir(parents=True, exist_ok=True)
    for i, users in enumerate(files):
        blob = {"users": list(users), "num_samples": [len(d["y"]) for d in users.values()],
                "user_data": users}
        (directory / f"part{i}.json").write_text(json.dumps(blob), encoding="utf-8")

"""FedCompress distillation inputs: dead leaves (:mod:`fedsqueeze.data.ood`) or a local folder.

``ood.source = "folder:<path>"`` reads, in sorted file-name order, every ``.npy`` array (one
image ``(H, W[, C])`` or a stack ``(N, H, W[, C])``, integers in 0..255 or floats in [0, 1]) and
every binary PGM/PPM (``P5``/``P6``, 8 bit) under ``path``; other image formats are read when
Pillow is installed. Images are resized (bilinear) to the dataset's ``H x W``, converted to its
channel count, and preprocessed like the dead-leaves images (:func:`preprocess_images`). Nothing
is downloaded. The first ``size`` images are used; fewer is an error.

>>> import numpy as np
>>> from fedsqueeze.data.datasets import Dataset
>>> ds = Dataset(np.zeros((1, 1, 8, 8), np.float32), np.zeros(1, np.int64),
...              np.zeros((1, 1, 8, 8), np.float32), np.zeros(1, np.int64), 10, (1, 8, 8), "digits")
>>> ood_inputs(ds, "dead_leaves", 3, seed=0).shape
(3, 1, 8, 8)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.ood import ood_like
from ..errors import ConfigError

__all__ = ["ood_inputs", "read_folder", "preprocess_images"]


def preprocess_images(x: np.ndarray, dataset) -> np.ndarray:
    """``(N, C, H, W)`` images in [0, 1] -> the dataset's input space (as ``ood_like`` does)."""
    if dataset.name == "digits":
        x = np.round(x * np.float32(16.0)) / np.float32(16.0)
    elif "mean" in dataset.meta and "std" in dataset.meta:
        mean = np.asarray(dataset.meta["mean"], np.float64)[:, None, None]
        std = np.asarray(dataset.meta["std"], np.float64)[:, None, None]
        x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)


def _read_pnm(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while pos < len(raw) and raw[pos:pos + 1].isspace():
            pos += 1
        if raw[pos:pos + 1] == b"#":
            pos = raw.index(b"\n", pos)
            continue
        end = pos
        while end < len(raw) and not raw[end:end + 1].isspace():
            end += 1
        fields.append(raw[pos:end])
        pos = end
    magic, w, h, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    c = {b"P5": 1, b"P6": 3}.get(magic)
    if c is None or maxval != 255:
        raise ConfigError(f"{path}: only 8-bit binary P5/P6 files are read (got {magic!r})")
    data = np.frombuffer(raw, np.uint8, count=w * h * c, offset=pos + 1)
    return data.reshape(h, w, c)


def _read_other(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise ConfigError(f"{path}: reading {path.suffix} files needs Pillow; use .npy, "
                          ".pgm or .ppm") from None
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_folder(path: str | Path, limit: int) -> list[np.ndarray]:
    """Up to ``limit`` images ``(H, W, C)`` scaled to [0, 1] (float32), in file-name order."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"ood.source: {folder} is not a folder")
    images: list[np.ndarray] = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        if len(images) >= limit:
            break
        suffix = f.suffix.lower()
        if suffix == ".npy":
            a = np.load(f, allow_pickle=False)
            if a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (1, 3, 4)):
                stack = a[None]  # one image (H, W[, C])
            elif a.ndim in (3, 4):
                stack = a  # a stack (N, H, W[, C])
            else:
                raise ConfigError(f"{f}: array of shape {a.shape} is not an image or a stack")
        elif suffix in (".pgm", ".ppm"):
            stack = _read_pnm(f)[None]
        elif suffix in (".png", ".jpg", ".jpeg", ".bmp"):
            stack = _read_other(f)[None]
        else:
            continue
        for img in stack:
            img = np.asarray(img)
            scale = 255.0 if img.dtype.kind in "ui" else 1.0
            img = img.astype(np.float32) / np.float32(scale)
            images.append(img[..., None] if img.ndim == 2 else img)
    return images[:limit]


def _fit_image(img: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(img[..., :3].transpose(2, 0, 1)))[None]
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = x[0].clamp(0.0, 1.0)
    if x.shape[0] != c:
        if c not in (1, 3):
            raise ConfigError(f"ood.source: cannot map {x.shape[0]}-channel images to {c}")
        x = x.mean(dim=0, keepdim=True).expand(c, h, w)
    return np.ascontiguousarray(x.numpy())


def ood_inputs(dataset, source: str, size: int, *, seed: int) -> np.ndarray:
    """``size`` distillation inputs shaped and preprocessed like ``dataset.x_train``."""
    if source == "dead_leaves":
        return ood_like(dataset, size, seed=seed)
    if not source.startswith("folder:"):
        raise ConfigError(f"ood.source = {source!r}, expected 'dead_leaves' or 'folder:<path>'")
    shape = tuple(dataset.input_shape)
    if len(shape) != 3:
        raise ConfigError(f"ood.source = folder: needs image inputs (C, H, W), got {shape}")
    imgs = read_folder(source[len("folder:"):], size)
    if len(imgs) < size:
        raise ConfigError(f"ood.source = {source!r}: {len(imgs)} images, ood.size = {size}")
    c, h, w = shape
    x = np.stack([_fit_image(i, c, h, w) for i in imgs])
    return preprocess_images(x, dataset)

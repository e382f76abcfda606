"""Codec registry: ids to classes. Codec modules are imported on the first lookup."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from ..errors import UnknownCodecError

_REGISTRY: dict[str, type] = {}

_NOT_CODECS = {"base", "registry", "common"}
_loaded = False


def _load_all() -> None:
    """Import every module of this package once, so each registers its codecs."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    pkg = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in _NOT_CODECS and not info.name.startswith("_"):
            importlib.import_module(f"{__package__}.{info.name}")


def register(cls: type) -> type:
    """Class decorator: register a :class:`~fedsqueeze.compress.base.Compressor` by its ``codec_id``."""
    cid = cls.codec_id
    if not cid:
        raise ValueError(f"{cls.__name__} has no codec_id")
    if cid in _REGISTRY and _REGISTRY[cid] is not cls:
        raise ValueError(f"codec id {cid!r} registered twice")
    _REGISTRY[cid] = cls
    return cls


def available() -> list[str]:
    """Sorted ids of every codec."""
    _load_all()
    return sorted(_REGISTRY)


def get_class(codec_id: str) -> type:
    """The class registered as ``codec_id`` (:class:`UnknownCodecError` listing the known ids)."""
    if codec_id not in _REGISTRY:
        _load_all()
    try:
        return _REGISTRY[codec_id]
    except KeyError:
        raise UnknownCodecError(
            f"unknown codec id {codec_id!r}; available: {', '.join(available())}") from None


def from_config(config: Mapping[str, Any]):
    """Build a codec from ``{"id": ..., **params}``."""
    if "id" not in config:
        raise UnknownCodecError(f"codec config {dict(config)!r} has no 'id'; available: "
                                f"{', '.join(available())}")
    return get_class(str(config["id"])).from_config(config)

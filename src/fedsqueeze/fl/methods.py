"""Imports every built-in method module so that each registers itself (see ``strategy.register_method``)."""

from __future__ import annotations

import importlib
import pkgutil

from . import strategy as _strategy  # noqa: F401  (fedavg)

_PKG = "fedsqueeze.methods"


def _load() -> None:
    try:
        pkg = importlib.import_module(_PKG)
    except ModuleNotFoundError:
        return
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{_PKG}.{info.name}")


_load()

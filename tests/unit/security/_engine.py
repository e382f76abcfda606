"""The frame fuzzer of ``benchmarks/fuzz_frames.py``, loaded once for the security tests.

The benchmark and the tests share one mutation engine and one server-side decode path, so what
the short test run checks is exactly what the 100,000-frame benchmark run measures.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "fuzz_frames.py"


@functools.cache
def fuzz():
    """The ``benchmarks/fuzz_frames.py`` module (imported by path: benchmarks is no package)."""
    name = "fedsqueeze_bench_fuzz_frames"
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is created
    spec.loader.exec_module(mod)
    return mod


@functools.cache
def target(codec_id: str):
    """A codec's valid UP_UPDATE frames and decode path, warmed up (kernels compiled)."""
    t = fuzz().Target.build(codec_id)
    fuzz().warm_up(t)
    return t

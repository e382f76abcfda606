"""IGC scale benchmark: a 100M-parameter float32 vector projected to d and back (METHODS 2.7, 8.2).

Measures the wall time of ``z = A^T x`` and ``y = A z`` with the Fastfood projection and the
peak memory of the whole step, counted from just before ``x`` is allocated (so ``x``, ``y``, ``z``
and every workspace count). Peak memory is taken three ways: a psutil RSS sampler thread (every
2 ms), ``resource.getrusage`` ``ru_maxrss`` (high-water mark; only informative when it moves past
the warm-up peak) and ``tracemalloc`` (NumPy buffers). The budget checked is ``3 * 4 D`` bytes.

Not part of the test suite. Run one mode per process so high-water marks stay clean::

    python benchmarks/igc_scale.py                         # D = 1e8, d = 65,536, cache off
    python benchmarks/igc_scale.py --cache on              # keep the 8.1 D-byte block cache
    python benchmarks/igc_scale.py --D 10000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
import tracemalloc

import numpy as np
import psutil

from fedsqueeze.compress.subspace import Fastfood


class PeakRSS:
    """Samples the process RSS in a background thread; ``peak`` is the highest value seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.proc, self.interval = psutil.Process(), interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def run(D: int, d: int, block_log2: int | None, cache: str, seed: int, repeat: int = 1) -> dict:
    # warm up: compile the kernels on a small problem of the same types
    Fastfood(4096, min(d, 1024), seed=seed, cache=cache).transpose(np.ones(4096, np.float32))
    Fastfood(4096, min(d, 1024), seed=seed, cache=cache).forward(np.ones(min(d, 1024),
                                                                         np.float32))
    A = Fastfood(D, d, seed=seed, subspace=1, block_log2=block_log2, cache=cache,
                 cache_budget=1 << 62)
    proc = psutil.Process()
    base_rss, base_maxrss = proc.memory_info().rss, maxrss_bytes()
    tracemalloc.start()
    with PeakRSS() as sampler:
        t0 = time.perf_counter()
        x = np.random.default_rng(seed).standard_normal(D, dtype=np.float32)
        t_x = time.perf_counter() - t0
        times, y = [], None
        for _ in range(repeat):  # with the cache on, the first pass also generates the blocks
            t1, c1 = time.perf_counter(), time.process_time()
            z = A.transpose(x)
            t2, c2 = time.perf_counter(), time.process_time()
            y = A.forward(z, out=y)  # later passes reuse the output buffer
            t3, c3 = time.perf_counter(), time.process_time()
            times.append((t2 - t1, t3 - t2, c2 - c1, c3 - c2))
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    vec = 4 * D
    z64 = z.astype(np.float64)
    rel = float(z64 @ z64) / float(np.linalg.norm(x)) ** 2  # x^T A A^T x / x^T x, no D-size copy
    out = {
        "D": D, "d": d, "L": A.L, "blocks": A.nb, "cache": cache, "cache_bytes": A.cache_nbytes
        if A.use_cache else 0,
        "t_make_x_s": t_x,
        "t_transpose_s": [t[0] for t in times], "t_forward_s": [t[1] for t in times],
        "cpu_transpose_s": [t[2] for t in times], "cpu_forward_s": [t[3] for t in times],
        "vector_bytes": vec,
        "peak_rss_delta_bytes": sampler.peak - base_rss,
        "peak_rss_delta_x_vector": (sampler.peak - base_rss) / vec,
        "maxrss_delta_bytes": maxrss_bytes() - base_maxrss,
        "tracemalloc_peak_bytes": traced_peak,
        "tracemalloc_peak_x_vector": traced_peak / vec,
        "budget_3x_ok": (sampler.peak - base_rss) <= 3 * vec,
        "xAATx_over_xx": rel,  # ~ d/D for a random x: A A^T is close to a rank-d projection
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
    }
    del x, y, z
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--D", type=int, default=100_000_000)
    ap.add_argument("--d", type=int, default=65_536)
    ap.add_argument("--block-log2", type=int, default=None)
    ap.add_argument("--cache", choices=["off", "on"], default="off")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1, help="passes of A^T x then A z")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    a = ap.parse_args(argv)
    res = run(a.D, a.d, a.block_log2, a.cache, a.seed, a.repeat)
    gib = 2.0**30
    print(f"D = {res['D']:,}  d = {res['d']:,}  L = {res['L']:,}  blocks = {res['blocks']:,}  "
          f"cache = {res['cache']} ({res['cache_bytes'] / gib:.2f} GiB)")
    for name, key in (("A^T x", "transpose"), ("A z", "forward")):
        print(f"{name:6s}  wall " + "  ".join(f"{t:7.2f} s" for t in res[f"t_{key}_s"])
              + "   cpu " + "  ".join(f"{t:7.2f} s" for t in res[f"cpu_{key}_s"]))
    print(f"peak RSS delta   {res['peak_rss_delta_bytes'] / gib:6.2f} GiB = "
          f"{res['peak_rss_delta_x_vector']:.2f} x the vector ({res['vector_bytes'] / gib:.2f} GiB)"
          f"  budget 3x: {'ok' if res['budget_3x_ok'] else 'EXCEEDED'}")
    print(f"tracemalloc peak {res['tracemalloc_peak_bytes'] / gib:6.2f} GiB = "
          f"{res['tracemalloc_peak_x_vector']:.2f} x;  ru_maxrss delta "
          f"{res['maxrss_delta_bytes'] / gib:.2f} GiB;  load avg {res['load_avg_1m']:.1f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0 if res["budget_3x_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

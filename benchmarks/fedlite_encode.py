"""FedLite encode cost: grouped PQ of a 128 x 4,096 activation batch against the forward pass of
the prefix that produces it (METHODS.md 5.2; seed 004 issue item 3).

Prefixes with d_a = 4,096 from the model zoo (every rank runs torch with one thread, as
``fl.world`` sets it, and the Numba kernels are serial):

* ``femnist_cnn`` cut ``conv2`` (the FEMNIST CNN split after its second conv layer, METHODS 8.5
  large setup) on 1 x 32 x 32 inputs: 64 x 8 x 8;
* ``resnet20`` cut ``layer1`` (ResNet split after its first stage) on 3 x 16 x 16: 16 x 16 x 16;
* ``resnet20`` cut ``stem`` (one conv + BN + ReLU) on 3 x 16 x 16: the cheapest 4,096 prefix.

Timed, in turn so that all see the same machine load: the prefix forward (no grad, and forward
+ backward), GPQ encode from a cold start (k-means++) and warm (the centroids of the previous,
different batch: the steady state of a client), and decode. Inputs are Gaussian and the prefixes
freshly initialised; the table also gives the Lloyd updates used (``steps``), the bit ratio
``4 B d_a / (centroid + code bytes)`` and the relative distortion ``|z - z_tilde| / |z|``.
The encode includes zero padding, transposition, k-means, final assignment and bit packing. On a
shared machine the median is noisy: the minimum of ``--repeat`` runs is the figure to compare.
Not part of the test suite::

    python benchmarks/fedlite_encode.py                      # q = 64, R = 1, L = 16, I = 10
    python benchmarks/fedlite_encode.py --q 256 --L 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from fedsqueeze.compress.activations import GPQ
from fedsqueeze.models import split_model

PREFIXES = [("femnist_cnn", "conv2", (1, 32, 32)), ("resnet20", "layer1", (3, 16, 16)),
            ("resnet20", "stem", (3, 16, 16))]


def timed(fns: dict, repeat: int) -> dict[str, dict[str, float]]:
    """Run the functions in turn, ``repeat`` rounds, so that all of them see the same machine
    load; minimum and median per function, in ms."""
    ts: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return {k: {"min_ms": 1e3 * min(v), "median_ms": 1e3 * float(np.median(v))}
            for k, v in ts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--q", type=int, default=64)
    ap.add_argument("--R", type=int, default=1)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gpq = GPQ(q=args.q, R=args.R, L=args.L, iters=args.iters)
    out: dict = {"config": vars(args), "machine": platform.processor() or platform.machine(),
                 "results": []}
    rng = np.random.default_rng(0)
    for name, cut, shape in PREFIXES:
        prefix, _ = split_model(name, cut, input_shape=shape, num_classes=10, seed=0)
        # two batches: the warm start of batch 1 is the codebook of batch 0 (a client's steady
        # state: k-means starts from its previous batch's centroids)
        x0, x1 = (torch.from_numpy(rng.standard_normal((args.batch, *shape)).astype(np.float32))
                  for _ in range(2))
        with torch.no_grad():
            z0, z1 = prefix(x0).numpy(), prefix(x1).numpy()
        if z1.dtype != np.float32 or z1.shape != (args.batch, prefix.d_a):
            raise AssertionError(f"{name}/{cut}: activations {z1.dtype} {z1.shape}")
        gpq.encode(z0, seed=0, client=0, round=0)  # compile / load the kernels
        _, prev = gpq.encode(z0, seed=0, client=0, round=0)
        code_cold, _ = gpq.encode(z1, seed=0, client=0, round=0)
        code, _ = gpq.encode(z1, seed=0, client=0, round=0, state=prev)

        def fwd_bwd(prefix=prefix, x=x1):
            prefix.zero_grad()
            prefix(x).sum().backward()

        def fwd(prefix=prefix, x=x1):
            with torch.no_grad():
                prefix(x)

        t = timed({"forward": fwd, "forward_backward": fwd_bwd,
                   "encode_cold": lambda z=z1: gpq.encode(z, seed=0, client=0, round=0),
                   "encode_warm": lambda z=z1, s=prev: gpq.encode(z, seed=0, client=0, round=0,
                                                                  state=s),
                   "decode": lambda c=code: gpq.decode(c)}, args.repeat)
        g = code.geometry
        wire = 4 * g.R * g.L_eff * g.m + code.packed.nbytes
        rel = float(np.linalg.norm(z1 - gpq.decode(code)) / np.linalg.norm(z1))
        row = {"prefix": f"{name}/{cut}", "input": list(shape), "B": int(z1.shape[0]),
               "d_a": int(z1.shape[1]), "m": g.m, "L_eff": g.L_eff,
               "forward": t["forward"], "forward_backward": t["forward_backward"],
               "encode_cold": t["encode_cold"], "encode_warm": t["encode_warm"],
               "decode": t["decode"], "kmeans_steps_cold": code_cold.kmeans_steps,
               "kmeans_steps_warm": code.kmeans_steps, "distortion_warm": rel,
               "bit_ratio": 4 * z1.size / wire,
               "encode_warm_over_forward": t["encode_warm"]["min_ms"] / t["forward"]["min_ms"],
               "encode_cold_over_forward": t["encode_cold"]["min_ms"] / t["forward"]["min_ms"]}
        out["results"].append(row)
    print(f"GPQ q={args.q} R={args.R} L={args.L} I={args.iters}, batch {args.batch} x d_a, "
          f"float32, torch threads 1; min of {args.repeat} runs in ms (median in brackets)")
    hdr = (f"{'prefix':<18} {'d_a':>5} {'m':>3} {'forward':>16} {'fwd+bwd':>16} "
           f"{'encode warm':>16} {'steps':>5} {'encode cold':>16} {'steps':>5} {'decode':>6} "
           f"{'warm/fwd':>8} {'cold/fwd':>8} {'ratio':>6} {'dist':>5}")
    print(hdr)
    print("-" * len(hdr))

    def cell(d):
        return f"{d['min_ms']:7.2f} ({d['median_ms']:6.2f})"

    for r in out["results"]:
        print(f"{r['prefix']:<18} {r['d_a']:>5} {r['m']:>3} {cell(r['forward']):>16} "
              f"{cell(r['forward_backward']):>16} {cell(r['encode_warm']):>16} "
              f"{r['kmeans_steps_warm']:>5} {cell(r['encode_cold']):>16} "
              f"{r['kmeans_steps_cold']:>5} {r['decode']['min_ms']:6.2f} "
              f"{r['encode_warm_over_forward']:8.2f} {r['encode_cold_over_forward']:8.2f} "
              f"{r['bit_ratio']:6.1f} {r['distortion_warm']:5.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

"""FedLite encode cost: grouped PQ of a 128 x 4,096 activation batch against the forward pass of
the prefix that produces it (METHODS.md 5.2; seed 004 issue item 3).

Prefixes with d_a = 4,096 from the model zoo (every rank runs torch with one thread, as
``fl.world`` sets it, and the Numba kernels are serial):

* ``femnist_cnn`` cut ``conv2`` (the FEMNIST CNN split after its second conv layer, METHODS 8.5
  large setup) on 1 x 32 x 32 inputs: 64 x 8 x 8;
* ``resnet20`` cut ``layer1`` (ResNet split after its first stage) on 3 x 16 x 16: 16 x 16 x 16;
* ``resnet20`` cut ``stem`` (one conv + BN + ReLU) on 3 x 16 x 16: the cheapest 4,096 prefix.

Timed: the prefix forward (no grad, and forward + backward), GPQ encode from a cold start
(k-means++) and warm (the previous batch's centroids, the steady state of a client), and decode.
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


def timed(fn, repeat: int) -> dict[str, float]:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return {"min_ms": 1e3 * min(ts), "median_ms": 1e3 * float(np.median(ts))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--q", type=int, default=64)
    ap.add_argument("--R", type=int, default=1)
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gpq = GPQ(q=args.q, R=args.R, L=args.L, iters=args.iters)
    out: dict = {"config": vars(args), "machine": platform.processor() or platform.machine(),
                 "results": []}
    for name, cut, shape in PREFIXES:
        prefix, _ = split_model(name, cut, input_shape=shape, num_classes=10, seed=0)
        x = torch.from_numpy(np.random.default_rng(0).standard_normal(
            (args.batch, *shape)).astype(np.float32))
        with torch.no_grad():
            z = prefix(x).numpy()
        gpq.encode(z, seed=0, client=0, round=0)  # compile / load the kernels

        def fwd_bwd(prefix=prefix, x=x):
            prefix.zero_grad()
            prefix(x).sum().backward()

        with torch.no_grad():
            fwd = timed(lambda prefix=prefix, x=x: prefix(x), args.repeat)
        fb = timed(fwd_bwd, args.repeat)
        cold = timed(lambda z=z: gpq.encode(z, seed=0, client=0, round=0), args.repeat)
        code, state = gpq.encode(z, seed=0, client=0, round=0)
        warm = timed(lambda z=z, s=state: gpq.encode(z, seed=0, client=0, round=0, state=s),
                     args.repeat)
        dec = timed(lambda c=code: gpq.decode(c), args.repeat)
        row = {"prefix": f"{name}/{cut}", "input": list(shape), "d_a": int(z.shape[1]),
               "forward": fwd, "forward_backward": fb, "encode_cold": cold, "encode_warm": warm,
               "decode": dec, "kmeans_steps": code.kmeans_steps,
               "encode_warm_over_forward": warm["min_ms"] / fwd["min_ms"]}
        out["results"].append(row)
        print(f"{row['prefix']:<20} d_a={row['d_a']}  forward {fwd['min_ms']:8.2f} ms "
              f"(+backward {fb['min_ms']:8.2f})  encode warm {warm['min_ms']:7.2f} ms, cold "
              f"{cold['min_ms']:7.2f} ms  decode {dec['min_ms']:5.2f} ms  "
              f"encode/forward = {row['encode_warm_over_forward']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()

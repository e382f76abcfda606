"""FedLite encode cost: grouped PQ of a 128 x 4,096 activation batch against the forward pass of
the prefix that produces it (METHODS.md 5.2; seed 004 issue item 3).

Prefixes with d_a = 4,096 from the model zoo (every rank runs torch with one thread, as
``fl.world`` sets it, and the Numba kernels are serial):

* ``femnist_cnn`` cut ``conv2`` (the FEMNIST CNN split after its second conv layer, METHODS 8.5
  large setup) on 1 x 32 x 32 inputs: 64 x 8 x 8;
* ``resnet20`` cut ``layer1`` (ResNet split after its first stage) on 3 x 16 x 16: 16 x 16 x 16;
* ``resnet20`` cut ``stem`` (one conv + BN + ReLU) on 3 x 16 x 16: the cheapest 4,096 prefix.

Timed, in turn so that all see the same machine load: the prefix forward (no grad, and forward
+ backward), GPQ encode from a cold start (k-means++) and warm (the previous batch's centroids,
the steady state of a client), and decode.
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

        def fwd(prefix=prefix, x=x):
            with torch.no_grad():
                prefix(x)

        code, state = gpq.encode(z, seed=0, client=0, round=0)
        t = timed({"forward": fwd, "forward_backward": fwd_bwd,
                   "encode_cold": lambda z=z: gpq.encode(z, seed=0, client=0, round=0),
                   "encode_warm": lambda z=z, s=state: gpq.encode(z, seed=0, client=0, round=0,
                                                                  state=s),
                   "decode": lambda c=code: gpq.decode(c)}, args.repeat)
        fwd, fb, cold, warm, dec = (t[k] for k in ("forward", "forward_backward", "encode_cold",
                                                   "encode_warm", "decode"))
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

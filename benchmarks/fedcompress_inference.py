"""Inference time of a clustered model against the dense one (METHODS.md 3.4 item 8).

Two measurements, each the median of ``--runs`` timed forward passes after ``--warmup`` warm-ups,
at every ``--batch`` size, on one CPU thread:

(i)  ordinary dense path: the torch model with its dense weights against the same torch model
     with the stripped clustered weights (``c[idx]`` written back; expected ratio about 1.0);
(ii) LUT path: a Numba forward pass whose clustered convolutions keep the weights as bit-packed
     cluster ids + codebook and gather one output channel's weights per tile
     (:func:`fedsqueeze.kernels.cpu.kmeans.lut_conv2d`), against the same Numba loops on dense
     weights (:func:`~fedsqueeze.kernels.cpu.kmeans.dense_conv2d`); the torch dense time over
     the LUT time is reported too.

The LUT path supports ``nn.Sequential`` chains of stride-1 ``Conv2d``, ``ReLU``,
``AdaptiveAvgPool2d(1)``, ``Flatten`` and ``Linear`` (``digits_cnn``); for other models (e.g.
``cnn1d_wide``, Conv1d) only (i) is measured and the Numba columns are ``null``.
Weights: the final model of a run log (``--h5``; a FedCompress model is already clustered and its
codebook is read back from the distinct values) or the model's Philox initialisation clustered
with k-means++ and ``--k`` centroids. Not part of the test suite::

    python benchmarks/fedcompress_inference.py                       # digits_cnn, k = 8
    python benchmarks/fedcompress_inference.py --h5 runs/fedcompress.h5 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch
from torch import nn

from fedsqueeze.compress.clustering import index_width, kmeans_1d, pack_ids
from fedsqueeze.fl.train import flat_params, set_flat_params
from fedsqueeze.kernels.cpu import kmeans as K
from fedsqueeze.methods.weight_clustering import clustered_mask


def load_model(args) -> tuple[object, np.ndarray, tuple[int, ...], str]:
    """A model builder, the weights to benchmark, the input shape and a description."""
    from fedsqueeze.data.datasets import load_dataset
    from fedsqueeze.models import build_model

    if args.h5:
        from fedsqueeze.log.reader import read_run

        run = read_run(args.h5)
        cfg = run.config
        ds = load_dataset(cfg["data"]["name"], seed=cfg["seed"], path=cfg["data"]["path"],
                          **cfg["data"]["options"])
        if run.model is None:
            raise SystemExit(f"{args.h5}: the run wrote no final model")

        def factory() -> nn.Module:
            return build_model(cfg["model"]["name"], input_shape=ds.input_shape,
                               num_classes=ds.num_classes, seed=cfg["seed"])
        return factory, run.model, tuple(ds.input_shape), f"{args.h5} ({cfg['fl']['method']})"

    def factory() -> nn.Module:
        return build_model(args.model, input_shape=tuple(args.input_shape),
                           num_classes=args.classes, seed=args.seed)
    w = flat_params(factory())
    return factory, w, tuple(args.input_shape), f"{args.model} Philox init, seed {args.seed}"


def cluster(model: nn.Module, k: int, seed: int, mode: str) -> dict[int, tuple]:
    """Codebook and ids of every clustered parameter (by index). A tensor that already holds at
    most ``k`` distinct values keeps them as its codebook; others are clustered (k-means++)."""
    out = {}
    for i, (p, on) in enumerate(zip(model.parameters(), clustered_mask(model, mode),
                                    strict=True)):
        if not on:
            continue
        w = p.detach().reshape(-1).numpy()
        values, inverse = np.unique(w, return_inverse=True)
        if 2 <= values.size <= k:
            out[i] = (values.astype(np.float32), inverse.astype(np.uint8))
        else:
            out[i] = kmeans_1d(w, k, seed=seed, sub_id=i, iters=10)
    return out


def stripped(model: nn.Module, parts: dict[int, tuple]) -> nn.Module:
    """``model`` with ``c[idx]`` written into its clustered parameters (in place)."""
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            if i in parts:
                cb, ids = parts[i]
                p.copy_(torch.from_numpy(cb[ids]).view_as(p))
    return model


class NumbaNet:
    """A Numba/NumPy forward pass of a Sequential chain; ``lut`` keeps clustered convs packed."""

    def __init__(self, model: nn.Module, parts: dict[int, tuple], lut: bool) -> None:
        index = {id(p): i for i, p in enumerate(model.parameters())}
        self.ops: list[tuple] = []
        for m in model.modules():
            if isinstance(m, nn.Sequential):
                continue
            if isinstance(m, nn.Conv2d):
                if m.stride != (1, 1) or m.dilation != (1, 1) or m.groups != 1 or \
                        m.padding[0] != m.padding[1] or not isinstance(m.padding, tuple):
                    raise ValueError(f"unsupported convolution {m}")
                kh, kw = m.kernel_size
                bias = (m.bias.detach().numpy() if m.bias is not None
                        else np.zeros(m.out_channels, np.float32))
                i = index[id(m.weight)]
                if lut and i in parts:
                    cb, ids = parts[i]
                    self.ops.append(("lut", pack_ids(ids, cb.size), cb, bias,
                                     np.empty(m.in_channels * kh * kw, np.float32),
                                     (index_width(cb.size), kh, kw), m.padding[0],
                                     m.out_channels))
                else:
                    w = np.ascontiguousarray(m.weight.detach().numpy().reshape(m.out_channels, -1))
                    self.ops.append(("conv", w, bias, (kh, kw), m.padding[0], m.out_channels))
            elif isinstance(m, nn.ReLU):
                self.ops.append(("relu",))
            elif isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1)):
                self.ops.append(("gap",))
            elif isinstance(m, nn.Flatten):
                self.ops.append(("flatten",))
            elif isinstance(m, nn.Linear):
                self.ops.append(("linear", np.ascontiguousarray(m.weight.detach().numpy().T),
                                 m.bias.detach().numpy()))
            elif next(m.children(), None) is None:
                raise ValueError(f"unsupported layer {type(m).__name__} for the LUT path")
            else:
                raise ValueError(f"unsupported container {type(m).__name__} for the LUT path")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for op in self.ops:
            kind = op[0]
            if kind in ("lut", "conv"):
                geom, pad, c_out = op[-3:]
                kh, kw = geom[-2:]
                xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x
                oh, ow = xp.shape[2] - kh + 1, xp.shape[3] - kw + 1
                out = np.empty((x.shape[0], c_out, oh, ow), np.float32)
                cols = np.empty((x.shape[0], x.shape[1] * kh * kw, oh * ow), np.float32)
                if kind == "lut":
                    K.lut_conv2d(xp, op[1], op[2], op[3], op[4], cols, out, geom)
                else:
                    K.dense_conv2d(xp, op[1], op[2], cols, out, geom)
                x = out
            elif kind == "relu":
                np.maximum(x, 0, out=x)
            elif kind == "gap":
                x = x.mean(axis=(2, 3), keepdims=True, dtype=np.float32)
            elif kind == "flatten":
                x = x.reshape(x.shape[0], -1)
            else:
                x = x @ op[1] + op[2]
        return x


def median_time(fn, x, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--h5", help="run log whose final model is benchmarked")
    ap.add_argument("--model", default="digits_cnn")
    ap.add_argument("--input-shape", type=int, nargs="+", default=[1, 8, 8])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--k", type=int, default=8, help="centroids when the weights are not clustered")
    ap.add_argument("--cluster-layers", default="auto", choices=["auto", "conv", "conv+linear"])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    factory, w, shape, what = load_model(args)
    dense, clustered = factory(), factory()
    set_flat_params(dense, w)
    set_flat_params(clustered, w)
    dense.eval()
    parts = cluster(dense, args.k, args.seed, args.cluster_layers)
    clustered = stripped(clustered, parts).eval()
    try:
        nb_dense, nb_lut = NumbaNet(dense, parts, lut=False), NumbaNet(clustered, parts, lut=True)
    except ValueError as exc:  # layers the LUT path does not support: measure (i) only
        print(f"LUT path not measured: {exc}")
        nb_dense = nb_lut = None
    g = np.random.default_rng(args.seed)
    rows = []
    for b in args.batch:
        x = g.random((b, *shape), dtype=np.float32)
        xt = torch.from_numpy(x)
        with torch.no_grad():
            ref = clustered(xt).numpy()
            if nb_lut is not None:
                np.testing.assert_allclose(nb_lut(x.copy()), ref, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(nb_dense(x.copy()), dense(xt).numpy(), rtol=1e-4,
                                           atol=1e-5)
            t = {"torch_dense": median_time(dense, xt, args.runs, args.warmup),
                 "torch_clustered": median_time(clustered, xt, args.runs, args.warmup)}
        if nb_lut is not None:
            t["numba_dense"] = median_time(lambda a: nb_dense(a.copy()), x, args.runs,
                                           args.warmup)
            t["numba_lut"] = median_time(lambda a: nb_lut(a.copy()), x, args.runs, args.warmup)
        else:
            t["numba_dense"] = t["numba_lut"] = None
        lut = t["numba_lut"]
        rows.append({"batch": b, **{f"t_{k}_s": v for k, v in t.items()},
                     "ratio_dense_path": t["torch_dense"] / t["torch_clustered"],
                     "ratio_lut_vs_numba_dense": None if lut is None else t["numba_dense"] / lut,
                     "ratio_lut_vs_torch_dense": None if lut is None else t["torch_dense"] / lut})
    ks = sorted({int(cb.size) for cb, _ in parts.values()})
    result = {"weights": what, "k": ks, "n_params": int(flat_params(dense).size),
              "runs": args.runs, "warmup": args.warmup, "threads": 1,
              "host": platform.node(), "cpu": platform.processor(), "rows": rows}
    print(f"{what}; clustered tensors use k = {ks}; median of {args.runs} runs, 1 thread")
    print(f"{'batch':>5} {'torch dense':>12} {'torch clust':>12} {'(i) ratio':>9} "
          f"{'numba dense':>12} {'numba LUT':>12} {'(ii) ratio':>10} {'torch/LUT':>9}")
    for r in rows:
        line = (f"{r['batch']:>5} {r['t_torch_dense_s'] * 1e6:>10.1f}us "
                f"{r['t_torch_clustered_s'] * 1e6:>10.1f}us {r['ratio_dense_path']:>9.3f} ")
        if r["t_numba_lut_s"] is not None:
            line += (f"{r['t_numba_dense_s'] * 1e6:>10.1f}us "
                     f"{r['t_numba_lut_s'] * 1e6:>10.1f}us "
                     f"{r['ratio_lut_vs_numba_dense']:>10.3f} "
                     f"{r['ratio_lut_vs_torch_dense']:>9.3f}")
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()

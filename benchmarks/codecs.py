"""Encode/decode throughput of every registered codec, next to memcpy and plain torch versions.

Throughput is GB/s of float32 input (``4 n`` bytes per call, also for decode), the best of a few
repetitions, single thread (torch is limited to one thread as well). The clock is the process
CPU time by default (``--clock wall`` for wall time): on a shared machine it leaves out the time
the process waits for a core. memcpy is ``np.copyto`` between two preallocated 100 MB arrays,
measured in the same process with the same clock, its repetitions interleaved with those of each
codec row (memcpy, encode, decode, memcpy, ...), so the ratio columns compare like with like
even when the load of a shared machine changes during the run.
Decode includes ``parse`` of the payload, as on a server, and writes into a preallocated buffer.

    python benchmarks/codecs.py                       # every codec, 1M and 25M elements
    python benchmarks/codecs.py --sizes 1e6 --codecs qsgd signsgd
    python benchmarks/codecs.py --markdown docs/performance-codecs.md

Every id in ``fedsqueeze.compress.available()`` gets a row with its default config (codecs added
later are picked up automatically; :data:`CONFIGS` can give one a better default). A codec that
fails at some size gets ``error: ...`` in its row instead of stopping the run.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

from fedsqueeze import compress
from fedsqueeze.compress.base import parse_payload
from fedsqueeze.kernels.cpu import bitpack

CONFIGS: dict[str, list[dict]] = {
    # extra rows besides each codec's default config: the 4-bit QSGD of the speed target
    "qsgd": [{}, {"s": 7}],
}
MAX_SECONDS = 1.5
"""Stop repeating a measurement once one call took longer than this."""
CLOCK = {"process": time.process_time, "wall": time.perf_counter}
_clock = time.process_time


def best_time(fn: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t0 = _clock()
        fn()
        dt = _clock() - t0
        best = min(best, dt)
        if dt > MAX_SECONDS:
            break
    return best


_MEM = (np.empty(25_000_000, np.float32), np.ones(25_000_000, np.float32))


def _memcpy() -> None:
    np.copyto(_MEM[0], _MEM[1])


def memcpy_gbs(repeat: int) -> float:
    _memcpy()
    return _MEM[0].nbytes / best_time(_memcpy, max(repeat, 5)) / 1e9


def best_times(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Best time of each function, the repetitions interleaved (f0, f1, ..., f0, f1, ...) so that
    a change of load on a shared machine hits all of them alike."""
    best = [math.inf] * len(fns)
    for _ in range(repeat):
        slow = False
        for i, fn in enumerate(fns):
            t0 = _clock()
            fn()
            dt = _clock() - t0
            best[i] = min(best[i], dt)
            slow |= dt > MAX_SECONDS
        if slow:
            break
    return best


# -- plain torch versions of the same methods (one byte per code, torch.topk, ...) -------------
def _torch_qsgd(s: int, bucket: int = 512):
    def enc(x, g):
        n = x.numel()
        v = torch.nn.functional.pad(x, (0, (-n) % bucket)).view(-1, bucket)
        norms = v.double().norm(dim=1).float()
        r = v.abs() * (s / norms.clamp_min(1e-30))[:, None]
        lev = r.floor()
        lev += torch.rand(r.shape, generator=g) < (r - lev)
        return norms, (lev * torch.sign(v)).to(torch.int16 if s > 127 else torch.int8)

    def dec(e, n):
        norms, codes = e
        return (codes.float() * (norms / s)[:, None]).view(-1)[:n]
    return enc, dec


def _torch_terngrad(x, g):
    sigma = x.std(unbiased=False)
    c = x.clamp(-2.5 * sigma, 2.5 * sigma)
    s = c.abs().max()
    keep = torch.rand(x.shape, generator=g) < c.abs() / s
    return s, (torch.sign(c) * keep).to(torch.int8)


def _torch_topk(x, g, rho=0.01):
    k = max(1, math.ceil(rho * x.numel()))
    idx = torch.topk(x.abs(), k, sorted=False).indices
    return idx, x[idx]


def _torch_randk(x, g, rho=0.01):
    n = x.numel()
    k = max(1, math.ceil(rho * n))
    idx = torch.randperm(n, generator=g)[:k]
    return idx, x[idx] * (n / k)


def _torch_stc(x, g, rho=0.01):
    idx, v = _torch_topk(x, g, rho)
    return idx, v.abs().mean(), (v < 0).to(torch.uint8)


def _scatter(e, n):
    out = torch.zeros(n)
    out[e[0]] = e[1]
    return out


def _torch_hdq(x, g, rho=0.01, bits=(8, 4, 2)):
    # top-k, ranks by |v| (topk sorted), equal-count tiers, per-tier uniform levels, one byte each
    k = max(1, math.ceil(rho * x.numel()))
    mag, idx = torch.topk(x.abs(), k, sorted=True)
    neg = (x[idx] < 0).to(torch.uint8)
    tiers = []
    for h, b in enumerate(bits):
        a, z = h * k // len(bits), (h + 1) * k // len(bits)
        m = mag[a:z]
        lo, hi = m.min(), m.max()
        lev = ((m - lo) / (hi - lo).clamp_min(1e-30) * (2**b - 1)).round().to(torch.uint8)
        tiers.append((idx[a:z], neg[a:z], lev, lo, hi, b))
    return tiers


def _torch_hdq_dec(tiers, n):
    out = torch.zeros(n)
    for idx, neg, lev, lo, hi, b in tiers:
        mag = lo + lev.float() * ((hi - lo) / (2**b - 1))
        out[idx] = torch.where(neg.bool(), -mag, mag)
    return out


def _torch_countsketch(n: int, rows: int = 5, ratio: float = 50.0):
    # FetchSGD's CSVec: bucket and sign tables precomputed once (int32 / float32), index_add_
    c = max(1, math.ceil(n / ratio))
    g = torch.Generator().manual_seed(0)
    buckets = torch.randint(0, c, (rows, n), generator=g, dtype=torch.int32)
    signs = (torch.randint(0, 2, (rows, n), generator=g) * 2 - 1).float()

    def enc(x, _g):
        table = torch.zeros(rows, c)
        for j in range(rows):
            table[j].index_add_(0, buckets[j], signs[j] * x)
        return table

    def dec(table, _n):
        return torch.stack([signs[j] * table[j][buckets[j]] for j in range(rows)]).median(0)[0]
    return enc, dec


def _torch_powersgd(n: int, rank: int = 2):
    from fedsqueeze.compress.powersgd import near_square

    a, b = near_square(n)
    q = torch.linalg.qr(torch.randn(b, rank, generator=torch.Generator().manual_seed(0)))[0]

    def enc(x, _g):  # epfml/powersgd: P = M Q, then orthonormalise P (QR) for the next phase
        p = x.view(a, b) @ q
        return p, torch.linalg.qr(p)[0]

    def dec(e, _n):
        return (e[0] @ q.T).view(-1)
    return enc, dec


def _torch_fastfood(n: int, d: int = 1024):
    # the codec's own cached Fastfood blocks as tensors; all blocks at once, FWHT by butterflies
    from fedsqueeze.compress.subspace import Fastfood

    ff = Fastfood(n, d, seed=0)
    bits, perm, gauss, scales = ff.blocks()
    nb, L = gauss.shape
    sign = torch.from_numpy(1.0 - 2.0 * np.unpackbits(bits, axis=1, bitorder="little")[:, :L]
                            .astype(np.float32))
    perm = torch.from_numpy(perm.astype(np.int64))
    inv = torch.argsort(perm, dim=1)
    gauss = torch.from_numpy(gauss)
    scale = torch.from_numpy(scales.astype(np.float32))[:, None]

    def fwht(y):
        h = 1
        while h < L:
            y = y.view(nb, -1, 2, h)
            y = torch.cat([y[:, :, :1] + y[:, :, 1:], y[:, :, :1] - y[:, :, 1:]], dim=2)
            h *= 2
        return y.reshape(nb, L)

    def enc(x, _g):  # A^T g = sum_b c_b B_b H Pi_b^T G_b H g_b
        y = torch.nn.functional.pad(x, (0, nb * L - n)).view(nb, L)
        y = fwht(y) * gauss
        y = torch.gather(y, 1, inv)
        return (fwht(y) * sign * scale).sum(0)[:d]

    def dec(z, _n):  # A z = stacked c_b H G_b Pi_b H B_b z
        y = sign * torch.nn.functional.pad(z, (0, L - d))[None, :]
        y = torch.gather(fwht(y), 1, perm) * gauss
        return (fwht(y) * scale).view(-1)[:n]
    return enc, dec


def _torch_kmeans(x, g, k=8, iters=10):
    # 1-D k-means++ seeding and Lloyd steps; nearest centre by bucketize on the sorted midpoints
    c = x[torch.randint(0, x.numel(), (1,), generator=g)]
    d2 = (x - c) ** 2
    for _ in range(k - 1):
        c = torch.cat([c, x[torch.multinomial(d2, 1, generator=g)]])
        d2 = torch.minimum(d2, (x - c[-1]) ** 2)
    for _ in range(iters + 1):
        c = c.sort().values
        ids = torch.bucketize(x, (c[1:] + c[:-1]) / 2)
        cnt = torch.bincount(ids, minlength=k)
        tot = torch.zeros(k).index_add_(0, ids, x)
        c = torch.where(cnt > 0, tot / cnt.clamp_min(1), c)
    return c, ids.to(torch.uint8)


TORCH: dict[str, tuple[str, Callable, Callable]] = {
    "identity": ("clone", lambda x, g: x.clone(), lambda e, n: e.clone()),
    "fp16": ("x.half()", lambda x, g: x.half(), lambda e, n: e.float()),
    "bf16": ("x.bfloat16()", lambda x, g: x.bfloat16(), lambda e, n: e.float()),
    "signsgd": ("(x<0) as uint8", lambda x, g: (x < 0).to(torch.uint8),
                lambda e, n: 1.0 - 2.0 * e.float()),
    "ef_signsgd": ("mean|x|, uint8 signs", lambda x, g: (x.abs().mean(), (x < 0).to(torch.uint8)),
                   lambda e, n: e[0] * (1.0 - 2.0 * e[1].float())),
    "terngrad": ("int8 codes", _torch_terngrad, lambda e, n: e[0] * e[1].float()),
    "topk": ("torch.topk", _torch_topk, _scatter),
    "randk": ("randperm", _torch_randk, _scatter),
    "stc": ("torch.topk", _torch_stc,
            lambda e, n: _scatter((e[0], e[1] * (1.0 - 2.0 * e[2].float())), n)),
    "hdq": ("topk, uint8 levels", _torch_hdq, _torch_hdq_dec),
    "clustered": ("k-means++, bucketize", _torch_kmeans, lambda e, n: e[0][e[1].long()]),
}
SIZED: dict[str, tuple[str, Callable]] = {
    # torch versions that build per-size tables once, outside the timed calls
    "countsketch": ("CSVec index_add_", _torch_countsketch),
    "powersgd": ("matmul + QR", _torch_powersgd),
    "igc_static": ("batched FWHT", _torch_fastfood),
    "igc_ksub": ("batched FWHT", _torch_fastfood),
    "igc_timevarying": ("batched FWHT", _torch_fastfood),
}


def torch_row(codec_id: str, cfg: dict, x: np.ndarray, repeat: int):
    if codec_id in ("qsgd", "adaquant"):
        s = cfg.get("s", cfg.get("s0", 2))
        label, (enc, dec) = f"int8 codes (s={s})", _torch_qsgd(s)
    elif codec_id in TORCH:
        label, enc, dec = TORCH[codec_id]
    elif codec_id in SIZED:
        label, make = SIZED[codec_id]
        enc, dec = make(x.shape[0])
    else:
        return "-", None, None
    t = torch.from_numpy(x)
    g = torch.Generator().manual_seed(0)
    e = enc(t, g)
    dec(e, t.numel())
    # interleaved with the memcpy exactly like the codec rows (codec_row), so that both sides
    # start every call with the caches the 100 MB memcpy left behind: timed back to back, a 1M
    # torch call found its 4 MB input and output still in cache and the codec call did not
    _, te, td = best_times([_memcpy, lambda: enc(t, g), lambda: dec(e, t.numel())], repeat)
    return label, x.nbytes / te / 1e9, x.nbytes / td / 1e9


# -- measurements -----------------------------------------------------------------------------
def codec_row(codec, x: np.ndarray, repeat: int) -> tuple[float, float, float, float]:
    """``(encode GB/s, decode GB/s, payload bits per element, memcpy GB/s)``; memcpy is timed
    interleaved with the encode and decode calls."""
    n = x.shape[0]
    warm = x[:1000]
    codec.decode(parse_payload(codec, codec.encode(warm, seed=0)[0].payload(), 1000, 0))
    enc, _ = codec.encode(x, seed=1)
    payload = enc.payload()
    out = np.empty(n, np.float32)
    tm, te, td = best_times([_memcpy, lambda: codec.encode(x, seed=1),
                             lambda: codec.decode(parse_payload(codec, payload, n, 1), out=out)],
                            repeat)
    return (x.nbytes / te / 1e9, x.nbytes / td / 1e9, 8.0 * len(payload) / n,
            _MEM[0].nbytes / tm / 1e9)


def pack_row(n: int, repeat: int) -> tuple[float, float]:
    """The plain 4-bit pack/unpack kernels, in GB/s of the float32 vector the codes stand for."""
    codes = np.random.default_rng(0).integers(0, 16, n).astype(np.uint8)
    packed = np.empty((n + 1) // 2, np.uint8)
    back = np.empty(n, np.uint8)
    bitpack.pack_bits(codes[:16], 4, packed)
    bitpack.unpack_bits(packed, 4, 16, back)
    te = best_time(lambda: bitpack.pack_bits(codes, 4, packed), repeat)
    td = best_time(lambda: bitpack.unpack_bits(packed, 4, n, back), repeat)
    return 4 * n / te / 1e9, 4 * n / td / 1e9


def fmt(v) -> str:
    return v if isinstance(v, str) else f"{v:.2f}"


def run(sizes: list[int], codec_ids: list[str], repeat: int) -> tuple[list[list], float]:
    torch.set_num_threads(1)
    mem = memcpy_gbs(repeat)
    rows = []
    for n in sizes:
        x = (np.random.default_rng(1).standard_normal(n) * 0.01).astype(np.float32)
        e, d = pack_row(n, repeat)
        rows.append([f"{n:,}", "kernel pack_bits w=4", "4", fmt(e), fmt(d), fmt(e / mem),
                     fmt(d / mem), "-", "-", "-"])
        for cid in codec_ids:
            for extra in CONFIGS.get(cid, [{}]):
                cfg = {"id": cid, **extra}
                name = cid + "".join(f" {k}={v}" for k, v in extra.items())
                try:
                    codec = compress.from_config(cfg)
                    e, d, bits, m = codec_row(codec, x, repeat)
                    cells = [f"{bits:.2f}", fmt(e), fmt(d), fmt(e / m), fmt(d / m)]
                except Exception as exc:  # report and go on: every codec gets a row
                    cells = ["-", f"error: {type(exc).__name__}: {str(exc)[:60]}", "-", "-", "-"]
                try:
                    label, te, td = torch_row(cid, extra, x, repeat)
                    tcells = [label, fmt(te) if te else "-", fmt(td) if td else "-"]
                except Exception as exc:
                    tcells = [f"error: {type(exc).__name__}", "-", "-"]
                rows.append([f"{n:,}", name] + cells + tcells)
                print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows, mem


HEADERS = ["n", "codec", "bits/elem", "encode GB/s", "decode GB/s", "enc/memcpy", "dec/memcpy",
           "torch version", "torch enc GB/s", "torch dec GB/s"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=float, default=[1e6, 25e6])
    ap.add_argument("--codecs", nargs="+", default=None, help="codec ids (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--clock", choices=sorted(CLOCK), default="process")
    ap.add_argument("--markdown", type=Path, default=None, help="also write a markdown table")
    args = ap.parse_args(argv)
    global _clock
    _clock = CLOCK[args.clock]
    ids = args.codecs or compress.available()
    rows, mem = run([int(s) for s in args.sizes], ids, args.repeat)
    head = (f"{args.clock} time; memcpy (np.copyto, 100 MB, same process) at start: {mem:.2f} "
            "GB/s (the codec rows divide by a memcpy timed interleaved with their own calls); "
            f"{platform.processor() or platform.machine()}, numpy {np.__version__}, "
            f"torch {torch.__version__} (1 thread)")
    print(head)
    print(tabulate(rows, HEADERS, tablefmt="github"))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("# Codec throughput\n\n" + head + "\n\n"
                                 + tabulate(rows, HEADERS, tablefmt="github") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

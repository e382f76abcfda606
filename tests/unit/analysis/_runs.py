"""Small seeded run logs for the analysis tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsqueeze.log import RunWriter

N_CLIENTS = 4


def write_run(path: Path, *, seed: int, method: str, settings: dict, n_rounds: int = 6,
              state: str | None = None, eval_every: int = 1) -> Path:
    """A finished run with random (seeded) bytes, times and a rising accuracy."""
    rng = np.random.default_rng(seed)
    config = {"method": method, "compress": {"id": method, **settings},
              "fl": {"rounds": n_rounds, "clients": N_CLIENTS}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with RunWriter(path, config=config, meta={"method": method}, n_params=50) as w:
        acc = np.sort(rng.uniform(0.1, 0.9, n_rounds))
        for t in range(n_rounds):
            clients = np.sort(rng.choice(N_CLIENTS, size=2, replace=False))
            up = rng.integers(100, 10_000, size=2)
            down = rng.integers(1_000, 50_000, size=2)
            times = rng.uniform(0.01, 0.2, size=6)
            w.append_clients({"round": t, "client": clients, "bytes_up": up, "bytes_down": down})
            w.append_round({
                "round": t, "n_sampled": 2, "bytes_up": int(up.sum()),
                "bytes_down": int(down.sum()),
                "test_accuracy": acc[t] if t % eval_every == 0 else np.nan,
                "wall_s": float(times.sum() + rng.uniform(0.0, 0.1)),
                **dict(zip(("t_train", "t_encode", "t_decode", "t_wait", "t_aggregate",
                            "t_evaluate"), times.tolist(), strict=True))})
            w.flush()
        if state is not None:
            w.set_status(state, error="boom" if state == "failed" else None)
    return path

"""One federated run on a communicator: every rank calls :func:`run`. Rank 0 serves and writes
the HDF5 log; ranks 1..P-1 are workers. Checkpoints and ``--resume`` live here."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RunConfig
from ..errors import WorkerLost
from .strategy import get_roles
from .world import build_world, check_ranks

__all__ = ["run", "run_paths", "RunResult"]


class RunResult(dict):
    """Summary returned on rank 0 (``h5`` path, totals, final row); empty on workers."""


def run_paths(cfg: RunConfig) -> dict[str, Path]:
    out = Path(cfg.log.out)
    name = cfg.log.name or cfg.name
    return {"h5": out / f"{name}.h5", "ckpt": out / f"{name}.ckpt",
            "state": out / f"{name}.client_state", "plot": out / f"{name}.png"}


def _save_checkpoint(server, paths, t: int) -> Path:
    """Server state + every worker's client-state snapshot, written atomically."""
    from ..comm.tags import SYSTEM_CLIENT, Kind
    from ..comm.wire import pack_frame
    from . import protocol as P

    ck = paths["ckpt"]
    ck.mkdir(parents=True, exist_ok=True)
    alive = [w for w in server.workers if w not in server.lost]  # fl.on_worker_loss = continue
    for w in alive:
        task = P.TaskList(P.Cmd.CHECKPOINT, t, np.zeros(0, np.int64), np.zeros(0, np.int64),
                          np.zeros(0, bool), 0)
        server.tx.send_frame(w, int(Kind.CONTROL), pack_frame(Kind.CONTROL, task.sections(),
                                                              round=t, client=SYSTEM_CLIENT))
    for w in alive:
        server.tx.recv_frame(w, int(Kind.METRICS), timeout=server.cfg.fl.worker_timeout_s)
    if paths["state"].exists():  # the shared disk store of client state
        dst = ck / "client_state"
        tmp = ck / "client_state.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(paths["state"], tmp)
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(tmp, dst)
    # the client state a lost rank held is gone: such a checkpoint resumes like a partial one
    _save_server_state(ck, t, server.strategy.state_dict(), server, complete=not server.lost)
    return ck


def _save_server_state(ck: Path, t: int, state: dict, server, *, complete: bool) -> None:
    """``server.npz``: strategy state before round ``t``; ``complete`` = worker snapshots too."""
    ck.mkdir(parents=True, exist_ok=True)
    arrays = {f"strategy/{k}": np.asarray(v) for k, v in state.items()}
    tmp = ck / "server.tmp.npz"
    np.savez(tmp, next_round=np.int64(t), totals=np.array([server.total_up, server.total_down]),
             n_workers=np.int64(len(server.workers)), complete=np.bool_(complete), **arrays)
    os.replace(tmp, ck / "server.npz")


def _load_checkpoint(paths) -> tuple[int, dict, np.ndarray] | None:
    f = paths["ckpt"] / "server.npz"
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        state = {k[len("strategy/"):]: z[k] for k in z.files if k.startswith("strategy/")}
        return int(z["next_round"]), state, z["totals"]


def run(cfg: RunConfig, comm: Any, *, resume: bool = False, progress: bool = True) -> RunResult:
    """Run ``cfg`` on ``comm`` (all ranks). Returns the summary on rank 0."""
    from ..comm.transport import MPITransport

    if comm.Get_size() < 2:
        raise SystemExit("fedsqueeze run needs at least 2 MPI ranks (1 server + workers): "
                         "mpiexec -n 4 python -m fedsqueeze run ...")
    tx = MPITransport(comm, checksum=cfg.fl.checksum)
    world = build_world(cfg)
    check_ranks(world, tx.size)
    paths = run_paths(cfg)
    ck = _load_checkpoint(paths) if resume else None
    if resume == "required" and ck is None:
        from ..errors import ConfigError

        raise ConfigError(f"--resume: no checkpoint at {paths['ckpt'] / 'server.npz'}")
    server_cls, worker_cls = get_roles(cfg.fl.method)
    if tx.rank == 0:
        # a fresh run never sees the client state (error-feedback residuals, ...) or the
        # checkpoint an earlier run of the same name left behind; a resumed one gets its own
        shutil.rmtree(paths["state"], ignore_errors=True)
        if ck is None:
            shutil.rmtree(paths["ckpt"], ignore_errors=True)
        elif (paths["ckpt"] / "client_state").exists():
            shutil.copytree(paths["ckpt"] / "client_state", paths["state"])
    comm.Barrier()  # the shared client-state folder is ready before any worker opens it
    if tx.rank != 0:
        _ignore_preemption_signals()
        worker = worker_cls(world, tx, state_dir=paths["state"], ckpt_dir=paths["ckpt"])
        snap = paths["ckpt"] / f"rank{tx.rank}.state.npz"
        if ck is not None and snap.exists() and hasattr(worker.store, "restore"):
            worker.store.restore(snap)
        worker.run()
        return RunResult()
    return _serve(cfg, world, tx, paths, ck, progress, server_cls)


def _serve(cfg, world, tx, paths, ck, progress, Server) -> RunResult:
    from ..log.writer import RunWriter, collect_provenance
    from .server import Preempted

    paths["h5"].parent.mkdir(parents=True, exist_ok=True)
    start, state = (ck[0], ck[1]) if ck else (0, None)
    meta = collect_provenance(tx.size, _mpi_library())
    meta.update({"run_seed": cfg.seed, "method": cfg.fl.method, "codec_up": cfg.compress.up["id"],
                 "codec_down": cfg.compress.down["id"], "dataset": cfg.data.name,
                 "n_clients": cfg.data.clients, "n_workers": tx.size - 1,
                 "resumed_from_round": start})
    strategy_cols = (list(getattr(world.strategy_cls, "round_columns", []))
                     + list(getattr(Server, "extra_round_columns", [])))
    round_cols = [("n_received", "u4"), ("n_rejected", "u4"), ("n_missing", "u4"),
                  ("client_state_bytes", "u8"),
                  ("distortion", "f8"), ("kept_fraction", "f8"),
                  ("compression_ratio", "f8")] + strategy_cols
    client_cols = ([("sent_bytes", "u8"), ("status", "u1")]
                   + list(getattr(Server, "extra_client_columns", [])))
    h5 = paths["h5"]
    previous = None
    if ck is not None and h5.exists():
        # the resumed run writes the same file: rows of rounds before the checkpoint are
        # carried over from the interrupted log, which is kept beside it
        previous = h5.with_name(f"{h5.stem}.interrupted-{start}.h5")
        os.replace(h5, previous)
    bar = _progress_bar(cfg, start) if progress else None
    with RunWriter(h5, config=cfg.to_dict(), meta=meta, n_params=world.n_params,
                   round_columns=round_cols, client_columns=client_cols) as log:
        log.write_partition(world.parts)
        if previous is not None:
            _carry_over(previous, log, start)
        server = Server(world, tx, log, start_round=start, strategy_state=state,
                        checkpoint=lambda t, s: _save_checkpoint(s, paths, t),
                        progress=bar.update if bar else None)
        if ck is not None:
            server.total_up, server.total_down = int(ck[2][0]), int(ck[2][1])
        t0 = time.perf_counter()
        preempted = None
        try:
            summary = server.run()
        except Preempted as exc:
            log.set_status("preempted", error=str(exc))
            log.write_model(server.strategy.weights)
            _close(bar)
            server.stop_workers(cfg.fl.rounds)
            preempted = exc
        except (WorkerLost, Exception) as exc:  # noqa: BLE001 - log every failure, then re-raise
            if isinstance(exc, WorkerLost) and getattr(server, "round_start_state", None):
                t_fail, state = server.round_start_state
                _save_server_state(paths["ckpt"], t_fail, state, server, complete=False)
                log.event(t_fail, "error", "checkpoint",
                          f"server state before round {t_fail} saved in {paths['ckpt']} "
                          "(client state of the lost rank is gone)")
            log.event(-1, "error", type(exc).__name__[:32], f"{exc}\n{traceback.format_exc()}")
            log.set_status("failed", error=f"{type(exc).__name__}: {exc}")
            log.write_model(server.strategy.weights)
            log.flush()
            _close(bar)
            raise
        if preempted is None:
            server.stop_workers(cfg.fl.rounds)
            log.write_model(server.strategy.weights)
            log.set_status("completed", last_round=cfg.fl.rounds - 1)
            _close(bar)
    if preempted is not None:
        print(f"fedsqueeze: {preempted}; continue with --resume (checkpoint {paths['ckpt']})",
              file=sys.stderr)
        raise SystemExit(3)
    summary.update(h5=str(h5), seconds=time.perf_counter() - t0)
    return RunResult(summary)


def _ignore_preemption_signals() -> None:
    """Workers outlive SLURM's warning signal: the server checkpoints, then tells them to stop."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)


def _carry_over(old: Path, log, start: int) -> None:
    """Copy every table row of rounds ``< start`` from an interrupted log into ``log``."""
    from ..log import read_run

    r = read_run(old)
    for _, row in r.rounds[r.rounds["round"] < start].iterrows():
        log.append_round(row.to_dict())
    for table, append in (("clients", log.append_clients), ("comm", log.append_comm)):
        df = getattr(r, table)
        df = df[df["round"] < start]
        if len(df):
            append({c: df[c].to_numpy() for c in df.columns})
    if len(r.setup):
        log.append_setup({c: r.setup[c].to_numpy() for c in r.setup.columns})
    for _, row in r.system[r.system["round"] < start].iterrows():
        log.append_system(int(row["round"]), int(row["bytes"]))
    for _, ev in r.events.iterrows():
        log.event(int(ev["round"]), str(ev["level"]), str(ev["code"]), str(ev["message"]))
    log.event(start, "info", "resumed", f"resumed at round {start} from {old.name}")
    log.flush()


class _Bar:
    def __init__(self, total: int, start: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=start, unit="round", dynamic_ncols=True,
                        file=sys.stderr, disable=None)

    def update(self, t: int, row: dict, total_bytes: int) -> None:
        acc = row.get("test_accuracy", float("nan"))
        self.bar.set_postfix_str(f"acc={acc:.3f} sent={total_bytes / 1e6:.2f} MB", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _progress_bar(cfg, start: int) -> _Bar | None:
    if not cfg.log.progress:
        return None
    return _Bar(cfg.fl.rounds, start)


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _mpi_library() -> str:
    try:
        from mpi4py import MPI

        return MPI.Get_library_version().strip().splitlines()[0]
    except Exception:  # noqa: BLE001
        return "unknown"


def config_json(cfg: RunConfig) -> str:
    return json.dumps(cfg.to_dict(), indent=1, sort_keys=True)

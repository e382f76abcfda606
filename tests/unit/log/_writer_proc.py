"""A RunWriter in its own process, for the SIGKILL and concurrent-reader tests.

    python _writer_proc.py PATH N_ROUNDS SLEEP_S [hold]

Writes rounds 0..N_ROUNDS-1 (N_ROUNDS < 0: forever), flushing after each and printing
``flushed <round>``; with ``hold`` it then prints ``holding`` and sleeps until killed instead of
closing. Every value is a function of the round (see ``expected_round``), so a reader can check
each row it sees.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from fedsqueeze.log import RunWriter

COMM_PER_ROUND = 3
CONFIG = {"method": "proc", "fl": {"rounds": 10}}


def expected_round(t: int) -> dict[str, float]:
    return {"round": t, "bytes_up": 1000 + t, "bytes_down": 2000 + 2 * t,
            "test_accuracy": t / 1000.0, "wall_s": 0.5}


def message(t: int) -> str:
    return f"round {t} " + "é" * (t % 50)


def main(path: str, n_rounds: int, sleep_s: float, hold: bool) -> None:
    w = RunWriter(path, config=CONFIG, meta={"method": "proc"}, n_params=4)
    t = 0
    while n_rounds < 0 or t < n_rounds:
        w.append_comm({"round": t, "client": np.arange(COMM_PER_ROUND), "direction": 1,
                       "header_bytes": 24, "payload_bytes": t + np.arange(COMM_PER_ROUND)})
        w.append_clients({"round": t, "client": np.arange(COMM_PER_ROUND),
                          "bytes_up": 24 + t + np.arange(COMM_PER_ROUND)})
        w.event(t, "info", "tick", message(t))
        w.append_round(expected_round(t))
        w.flush()
        print(f"flushed {t}", flush=True)
        t += 1
        time.sleep(sleep_s)
    if hold:
        print("holding", flush=True)
        time.sleep(3600)
    w.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), len(sys.argv) > 4)

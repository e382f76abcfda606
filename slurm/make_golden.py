"""Regenerate slurm/golden/*.sbatch: reference renders of slurm/run.sbatch and slurm/sweep.sbatch.

    python slurm/make_golden.py            # rewrite the golden files
    python slurm/make_golden.py --check    # exit 1 if a golden file differs from a fresh render

tests/unit/launch/test_render.py compares fresh renders of CASES with these files, so a change
to a template or to ``render_sbatch`` shows up as a reviewed diff of slurm/golden/. The inputs
are fixed here (not read from jobs/) so that editing a job file never changes a golden file.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedsqueeze.launch.slurm import SlurmOptions, render_sbatch

HERE = Path(__file__).resolve().parent

#: name -> (template, options, render keywords)
CASES: dict[str, tuple[str, dict, dict]] = {
    "sweep": ("sweep.sbatch",
              {"time": "00:20:00", "cpus_per_task": 1, "partition": "gpu", "account": "proj",
               "gpus_per_node": 3, "mem": "16G", "max_parallel": 4,
               "extra": ["--constraint=v100", "--exclusive"]},
              {"job_name": "quickstart_sweep", "ntasks": 3, "array": "0-7%4",
               "output": "runs/quickstart_sweep/logs/quickstart_sweep-%4a.out"}),
    "sweep_cpu": ("sweep.sbatch",
                  {"time": "10", "overcommit": True, "signal": "B:USR2@30"},
                  {"job_name": "tiny", "ntasks": 3, "array": "0-3",
                   "output": "runs/tiny/logs/tiny-%4a.out"}),
    "run": ("run.sbatch",
            {"time": "02:00:00", "nodes": 2, "ntasks_per_node": 4, "gpus_per_node": 4,
             "cpus_per_task": 8, "qos": "normal"},
            {"job_name": "quickstart", "ntasks": 8, "output": "slurm-%x-%j.out"}),
}


def render_cases() -> dict[str, str]:
    """Fresh renders of every case, by golden file name."""
    out = {}
    for name, (template, options, kw) in CASES.items():
        text = (HERE / template).read_text()
        out[f"{name}.sbatch"] = render_sbatch(text, SlurmOptions.parse(options), **kw)
    return out


def main(argv: list[str]) -> int:
    golden = HERE / "golden"
    golden.mkdir(exist_ok=True)
    stale = []
    for fname, text in render_cases().items():
        path = golden / fname
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(fname)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"stale golden renders: {', '.join(stale)}; run python slurm/make_golden.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

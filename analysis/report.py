"""Summary tables and plots for fedsqueeze runs (thin wrapper over fedsqueeze.analysis.report).

    python analysis/report.py runs/sweep_qsgd runs/sweep_topk -o reports/qsgd_vs_topk --target 0.9
"""

from __future__ import annotations

import argparse
import sys

from fedsqueeze.analysis import report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+",
                        help="run-log files (.h5) or sweep folders (manifest.json or *.h5)")
    parser.add_argument("-o", "--out", required=True, help="output folder")
    parser.add_argument("--target", type=float, default=None,
                        help="target test accuracy for the bytes-to-target column")
    args = parser.parse_args(argv)
    out = report(args.inputs, args.out, target_accuracy=args.target)
    print(f"{len(out['summary'])} runs -> {out['summary_md']}, {out['summary_csv']}")
    for name, path in out["plots"].items():
        print(f"  {name}: {path}")
    for path, reason in out["skipped"]:
        print(f"  skipped {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

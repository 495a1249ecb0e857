"""Logged loss terms of training runs at chosen steps, as a Markdown table.

    python benchmarks/log_terms.py RUN [RUN ...] [--terms self/image cross/image] [--every 500]

Reads each run's ``log.csv`` (`muni.training.logging.read_log`) and prints, per run, the mean of
every named term over the logging windows in each `every`-step stretch, so a plateau and the
step where a run leaves it (Digits-ITA: ``self/image`` falls from about 52 to about 30 when the
image decoder starts to place the digit in its quadrant) can be read off. Terms are the
batch means the training loop logs (``cross/<m>``, ``self/<m>``, ``rate``, ...).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from muni.training.logging import read_log


def table(runs: list[Path], terms: list[str], every: int) -> str:
    lines = []
    for run in runs:
        rows = read_log(run / "log.csv")
        last = max(r["step"] for r in rows)
        ends = list(range(every, last + every, every))
        lines += [f"\n{run}\n", "| term | " + " | ".join(f"≤ {min(e, last)}" for e in ends) + " |",
                  "| --- |" + " --- |" * len(ends)]
        for term in terms:
            cells = []
            for e in ends:
                vals = [r[term] for r in rows if e - every < r["step"] <= e and term in r]
                vals = [v for v in vals if math.isfinite(v)]
                cells.append(f"{sum(vals) / len(vals):.1f}" if vals else "–")
            lines.append(f"| {term} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--terms", nargs="+", default=["self/image", "cross/image", "cross/audio", "rate"])
    ap.add_argument("--every", type=int, default=500)
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "log.csv").is_file()]
    if missing:
        print(f"log_terms: no log.csv in {', '.join(missing)}", file=sys.stderr)
        return 2
    print(table(args.runs, args.terms, args.every))
    return 0


if __name__ == "__main__":
    sys.exit(main())

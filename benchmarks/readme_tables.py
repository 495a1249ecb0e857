"""The README's summary tables, cut from a `muni bench` results.json (mean ± std over seeds).

    python benchmarks/readme_tables.py docs/results/quick/results.json

Prints one markdown table per suite with the columns the README shows; every cell is computed
from the file, so the README's numbers can be checked against the committed report.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

COLUMNS = {
    "polymnist-quadrant": [("Single-L→I Digit", "single_digit"), ("Multi-L→I Both", "multi_both"),
                           ("Uncond. coherence", "uncond_coherence"),
                           ("one-to-many, digit given", "one_to_many_digit"),
                           ("one-to-many, quadrant given", "one_to_many_quadrant")],
    "digits-ita": [("(I+A)→T digit", "image+audio->text:digit"), ("(T+A)→I digit", "text+audio->image:digit"),
                   ("(T+A)→I quadrant", "text+audio->image:quadrant"), ("(T+I)→A digit", "image+text->audio:digit"),
                   ("Uncond. T–A digit", "uncond_pair:text-audio:digit"),
                   ("Uncond. coherence (all)", "uncond_coherence")],
}
COLUMNS["ablation"] = COLUMNS["polymnist-quadrant"]


def table(suite: str, results: dict[str, list[dict]]) -> str:
    cols = COLUMNS[suite]
    lines = ["| row | " + " | ".join(h for h, _ in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for row, runs in results.items():
        cells = []
        for _, key in cols:
            vals = [r["metrics"][key]["value"] for r in runs if key in r["metrics"]]
            cells.append(f"{np.mean(vals):.3f} ± {np.std(vals):.3f}" if len(vals) > 1 else f"{vals[0]:.3f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results.json of a muni bench run")
    report = json.load(open(ap.parse_args().results))
    for suite, body in report["suites"].items():
        print(f"### {suite} ({report['minutes_per_run']} min per run)\n")
        print(table(suite, body["results"]) + "\n")


if __name__ == "__main__":
    main()

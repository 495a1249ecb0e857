"""`muni bench`: the paper's tables, the ablation and the cost figures in one reproducible run."""

from __future__ import annotations

from pathlib import Path

from muni.bench import SUITES, expand, run_bench
from muni.data import PRESETS


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="train, evaluate and tabulate a benchmark suite")
    p.add_argument("--suite", nargs="+", default=["polymnist-quadrant"], choices=[*SUITES, "all"],
                   help="suites to run; all = every suite")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--seeds", type=int, default=3, help="training seeds per row")
    p.add_argument("--ablation-seeds", type=int, default=None,
                   help="training seeds of the ablation suite (default: --seeds)")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="wall-clock training budget per run (same for every method; 0 = the preset's steps)")
    p.add_argument("--n", type=int, default=500, help="evaluation conditions per task")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--out", default="bench", help="output directory (rerun to resume)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    report = run_bench(expand(args.suite), args.preset, args.seeds, Path(args.out), args.minutes, args.n,
                       args.eval_seed, ablation_seeds=args.ablation_seeds)
    print(f"wrote {Path(args.out) / 'REPORT.md'} ({report['wall_time_s'] / 60:.1f} min)")
    return 0

"""`muni bench`: the paper's tables, the ablation and the cost figures in one reproducible run."""

from __future__ import annotations

from pathlib import Path

from muni.bench import SUITES, expand, run_bench
from muni.commands.evaluate import CLASSIFIERS_HELP
from muni.data import PRESETS
from muni.errors import ConfigError
from muni.training.distributed import DEVICES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="train, evaluate and tabulate a benchmark suite")
    p.add_argument("--suite", nargs="+", default=["polymnist-quadrant"], choices=[*SUITES, "all"],
                   help="suites to run; all = every suite")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--seeds", type=int, default=3, help="training seeds per row")
    p.add_argument("--ablation-seeds", type=int, default=None,
                   help="training seeds of the ablation suite (default: --seeds)")
    p.add_argument("--minutes", nargs="+", default=["5"], metavar="[SUITE=]MINUTES",
                   help="wall-clock training budget per run, the same for every method of a suite "
                        "(0 = the preset's steps); SUITE=MINUTES sets one suite's, e.g. 2 digits-ita=6")
    p.add_argument("--n", type=int, default=500, help="evaluation conditions per task")
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--out", default="bench", help="output directory (rerun to resume)")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="train and report only these rows of each suite (e.g. MUNI); default: all")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="where the rows train: auto = CUDA (bf16 autocast, TF32) when torch sees a GPU, "
                        "else the CPU; evaluation runs on the CPU")
    p.add_argument("--classifiers", default="separate", choices=["separate", "shared"], help=CLASSIFIERS_HELP)
    p.set_defaults(func=cmd_bench)


def parse_minutes(items: list[str]) -> dict[str, float]:
    """``["2", "digits-ita=6"]`` -> ``{"*": 2.0, "digits-ita": 6.0}`` ("*": every other suite)."""
    out: dict[str, float] = {}
    for item in items:
        suite, _, value = item.rpartition("=")
        suite = suite or "*"
        if suite != "*" and suite not in SUITES:
            raise ConfigError(f"--minutes {item!r}: unknown suite {suite!r}; choose from {', '.join(SUITES)}")
        try:
            out[suite] = float(value)
        except ValueError:
            raise ConfigError(f"--minutes {item!r}: {value!r} is not a number of minutes") from None
        if not out[suite] >= 0:
            raise ConfigError(f"--minutes {item!r}: the budget must be >= 0 minutes")
    out.setdefault("*", 5.0)
    return out


def cmd_bench(args) -> int:
    report = run_bench(expand(args.suite), args.preset, args.seeds, Path(args.out), parse_minutes(args.minutes), args.n,
                       args.eval_seed, ablation_seeds=args.ablation_seeds, rows=args.rows, device=args.device,
                       classifiers=args.classifiers)
    print(f"wrote {Path(args.out) / 'REPORT.md'} ({report['wall_time_s'] / 60:.1f} min)")
    return 0

"""`muni eval`: evaluation classifiers, benchmark runs and side-by-side comparisons.

    muni eval classifiers polymnist-quadrant [--preset quick] [--classifiers shared]
    muni eval run --model oracle --dataset digits-ita --out runs/eval/oracle-ita
    muni eval run --model runs/muni-pq/checkpoint --dataset polymnist-quadrant --out DIR
    muni eval run --model RUN --dataset polymnist-quadrant --sample guidance=6 --out DIR
    muni eval compare a/results.json b/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from muni.commands.data import DATASET_HELP, dataset_arg
from muni.data import PRESETS, load_dataset
from muni.errors import InputError
from muni.evaluation.reference import REFERENCE_MODELS

CLASSIFIERS_HELP = ("evaluation classifiers: separate = one net per modality (the default; every committed "
                    "table), shared = one net for alike modalities such as PolyMNIST-QL's views (about 3x "
                    "faster to train there, view0 digit accuracy lower; docs/results/classifiers.md)")


def _classifiers(args: argparse.Namespace) -> int:
    from muni.evaluation.classifiers import SHARING, load_or_train_classifiers

    clf = load_or_train_classifiers(args.dataset, args.preset, args.data_seed, SHARING[args.classifiers],
                                    data_dir=args.data_dir)
    print(f"evaluation classifiers for {args.dataset} ({args.preset}, {clf.sharing}): {clf.info.get('path', '')}")
    for m, acc in clf.accuracy.items():
        print(f"  {m:10s} " + "  ".join(f"{f} {v:.4f}" for f, v in acc.items()))
    return 0


def _load_model(spec: str, args: argparse.Namespace):
    """A reference model by name (over the test split), or a checkpoint path."""
    if spec in REFERENCE_MODELS:
        test = load_dataset(args.dataset, "test", args.preset, args.data_seed, args.data_dir)
        return REFERENCE_MODELS[spec](test), spec
    if not Path(spec).exists():
        raise InputError(f"--model {spec!r} is neither a checkpoint path nor one of "
                         f"{', '.join(REFERENCE_MODELS)}")
    from muni.registry import load_model

    return load_model(spec), Path(spec).name


def _run(args: argparse.Namespace) -> int:
    from muni.evaluation.report import markdown_report, run_evaluation
    from muni.methods.base import sampling_options

    model, name = _load_model(args.model, args)
    if set(model.modalities) != set(load_dataset(args.dataset, "test", args.preset, args.data_seed,
                                                 args.data_dir).modalities):
        raise InputError(f"model modalities {sorted(model.modalities)} do not match dataset {args.dataset}")
    results = run_evaluation(model, args.dataset, args.preset, args.n, args.seed, args.out,
                             args.name or name, matrix_n=args.matrix_n, batch_size=args.batch_size,
                             data_seed=args.data_seed, data_dir=args.data_dir,
                             sampling=sampling_options(model, args.sample), sharing=args.classifiers)
    print(markdown_report(results).split("## Every number")[0].rstrip())
    print(f"\nwrote {args.out}/results.json, results.md, metrics.png, samples/")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from muni.evaluation.report import compare_markdown

    results = []
    for p in args.results:
        path = Path(p)
        if path.is_dir():
            path = path / "results.json"
        if not path.exists():
            raise InputError(f"no results file {str(path)!r}")
        results.append(json.loads(path.read_text()))
    print(compare_markdown(results), end="")
    return 0


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate models (classifiers, benchmark runs, comparisons)")
    sub = p.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", parser_class=type(p))
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    def common(q):
        q.add_argument("--preset", default="quick", choices=PRESETS)
        q.add_argument("--data-seed", type=int, default=0, help="seed of the dataset build")
        q.add_argument("--data-dir", default=None, help="raw data directory (default $MUNI_DATA_DIR)")
        q.add_argument("--classifiers", default="separate", choices=["separate", "shared"], help=CLASSIFIERS_HELP)

    c = sub.add_parser("classifiers", help="train (or load) the evaluation classifiers; print accuracies")
    c.add_argument("dataset", type=dataset_arg, help=DATASET_HELP)
    common(c)
    c.set_defaults(func=_classifiers)

    r = sub.add_parser("run", help="run every benchmark task; write results.json, tables, sheets")
    r.add_argument("--model", required=True,
                   help=f"checkpoint path or a reference model: {', '.join(REFERENCE_MODELS)}")
    r.add_argument("--dataset", required=True, type=dataset_arg, help=DATASET_HELP)
    r.add_argument("--n", type=int, default=500, help="conditions per task (default 500)")
    r.add_argument("--matrix-n", type=int, default=None, help="conditions per cell of the matrix")
    r.add_argument("--seed", type=int, default=0, help="evaluation seed: fixes the conditions")
    r.add_argument("--batch-size", type=int, default=250)
    r.add_argument("--name", default=None, help="row name in the tables (default: the model)")
    r.add_argument("--sample", nargs="+", metavar="KEY=VALUE", default=None,
                   help="sampler options for every generate call, e.g. guidance=6 prior_nfe=16 "
                        "conditional_sampler=posterior (MUNI); the same keys as muni sample --sample")
    r.add_argument("--out", required=True, help="output directory")
    common(r)
    r.set_defaults(func=_run)

    k = sub.add_parser("compare", help="print several results side by side (one Markdown table)")
    k.add_argument("results", nargs="+", help="results.json files (or their folders)")
    k.set_defaults(func=_compare)

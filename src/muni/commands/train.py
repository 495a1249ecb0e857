"""`muni train`: train any registered method on a benchmark dataset.

    muni train --method muni --dataset polymnist-quadrant --preset quick [--set key=value ...]
    muni train --spec run.json --out DIR           # a RunSpec file (what `muni bench` passes)

``--set`` keys are ``model.<field>`` (the method's config, e.g. ``model.beta=1``,
``model.codec.width=64``) or ``train.<field>`` (`muni.training.TrainConfig`, e.g.
``train.steps=500``). ``--dry-run`` prints the resolved run spec and exits.
Works under ``torchrun --nproc_per_node N -m muni train ...`` (DDP; rank 0 writes).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from muni.config import to_dict
from muni.commands.data import DATASET_HELP, dataset_arg
from muni.data import PRESETS as DATA_PRESETS
from muni.errors import ConfigError
from muni.paths import check_out_dir
from muni.registry import METHODS
from muni.run import RUN_FILE, RunSpec, run_training
from muni.training.distributed import DEVICES


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a method on a dataset")
    p.add_argument("--method", default=None, choices=list(METHODS), help="default: muni")
    p.add_argument("--dataset", default=None, type=dataset_arg,
                   help=DATASET_HELP + "; default: polymnist-quadrant")
    p.add_argument("--preset", default=None, choices=list(DATA_PRESETS), help="default: quick")
    p.add_argument("--seed", type=int, default=None, help="training seed (init, data order, subsets; default 0)")
    p.add_argument("--data-seed", type=int, default=None, help="dataset recipe seed (default 0)")
    p.add_argument("--data-dir", default=None, help="raw data directory (default: $MUNI_DATA_DIR)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<method>-<dataset>-<preset>-s<seed>)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; stops at a step boundary")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last checkpoint; alone (no --method, "
                        "--dataset, --preset, --seed, --data-seed), as the run's own run.json says, "
                        "with --set / --minutes on top")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides: model.<field>=v, train.<field>=v or data.<field>=v")
    p.add_argument("--spec", default=None, metavar="FILE",
                   help="train this run spec (a run.json) instead of --method/--dataset/--preset/--seed/--set")
    p.add_argument("--device", default=None, choices=DEVICES,
                   help="where to train (train.device): auto = CUDA with bf16 autocast and TF32 when torch "
                        "sees a GPU, else the CPU in fp32; cuda without a GPU falls back to the CPU, saying so")
    p.add_argument("--dry-run", action="store_true", help="print the resolved run spec and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log losses, sample sheets and sounds to <out>/tensorboard "
                        "(pip install 'muni[tensorboard]')")
    p.set_defaults(func=cmd_train)


CHOICES = ("method", "dataset", "preset", "seed", "data_seed")
DEFAULTS = {"method": "muni", "dataset": "polymnist-quadrant", "preset": "quick", "seed": 0, "data_seed": 0}


def spec_from_args(args) -> RunSpec:
    chosen = {k: getattr(args, k) for k in CHOICES if getattr(args, k) is not None}
    if args.spec is None:
        run_json = Path(args.out) / RUN_FILE if args.out else None
        if args.resume and not chosen and run_json is not None and run_json.is_file():
            return RunSpec.load(run_json).updated(args.overrides, args.minutes)
        c = {**DEFAULTS, **chosen}
        return RunSpec.resolve(c["method"], c["dataset"], c["preset"], c["seed"], args.overrides,
                               data_seed=c["data_seed"], minutes=args.minutes)
    if chosen:
        raise ConfigError(f"--spec gives the whole run; it cannot be combined with "
                          f"{', '.join('--' + k.replace('_', '-') for k in chosen)}")
    if args.overrides or args.minutes is not None:
        raise ConfigError("--spec gives the whole run; --set and --minutes cannot change it")
    return RunSpec.load(args.spec)


def cmd_train(args) -> int:
    spec = spec_from_args(args)
    if args.device is not None:  # also beside --spec or --resume: where a run trains is not what it trains
        spec = spec.updated([f"train.device={args.device}"])
    out = Path(args.out or f"runs/{spec.method}-{spec.dataset}-{spec.preset}-s{spec.train.seed}")
    spec.check_buildable(args.overrides)
    if args.dry_run:
        print(json.dumps({"method": spec.method, "dataset": spec.dataset, "preset": spec.preset,
                          "data_seed": spec.data_seed, "out": str(out), "hash": spec.hash(),
                          "model": to_dict(spec.model), "train": to_dict(spec.train),
                          "data": to_dict(spec.data)}, indent=2))
        return 0
    if os.environ.get("RANK", "0") == "0":  # the rank that will write (before dist.setup)
        check_out_dir(out)  # before the data loads and the model builds
    run_training(spec, out, resume=args.resume, data_dir=args.data_dir, progress=not args.no_progress,
                 tensorboard=args.tensorboard)
    return 0

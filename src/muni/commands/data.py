"""`muni data build|show|info`: build, look at and describe the benchmark datasets."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from muni.errors import InputError, MuniError
from muni.data import DATASETS, PRESETS, get_spec, load_dataset
from muni.modalities.writers import sample_sheet, write_batch


def _seed(text: str) -> int:
    """argparse type: a dataset seed numpy accepts (0 <= seed < 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < 2 ** 32:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32), got {value}")
    return value


def _common(p: argparse.ArgumentParser, split: bool = False) -> None:
    p.add_argument("dataset", choices=list(DATASETS), help="dataset name")
    p.add_argument("--preset", default="quick", choices=PRESETS)
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--data-dir", default=None, help="raw data directory (default: $MUNI_DATA_DIR)")
    if split:
        p.add_argument("--split", default="test", choices=("train", "test"))


def add_parser(subparsers) -> None:
    data = subparsers.add_parser("data", help="build, show and describe datasets")
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True,
                              parser_class=type(data))
    p = sub.add_parser("build", help="build and cache both splits")
    _common(p)
    p.set_defaults(func=cmd_build)
    p = sub.add_parser("show", help="write a sample sheet and per-modality files")
    _common(p, split=True)
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("info", help="counts, shapes and class balance")
    _common(p)
    p.set_defaults(func=cmd_info)


def _load(args, split: str):
    return load_dataset(args.dataset, split, preset=args.preset, seed=args.seed, data_dir=args.data_dir)


def cmd_build(args) -> int:
    t = time.time()
    for split in ("train", "test"):
        ds = _load(args, split)
        print(f"{args.dataset} {split}: {len(ds)} samples")
    print(f"cached in {ds.info['cache']} ({time.time() - t:.1f}s)")
    return 0


def cmd_show(args) -> int:
    if args.n < 1:
        raise InputError(f"--n must be >= 1, got {args.n}")
    ds = _load(args, args.split)
    idx = torch.arange(min(args.n, len(ds)))
    batch = ds.batch(idx)
    out = Path(args.out)
    try:
        written = [sample_sheet(batch, ds.modalities, out / f"{args.dataset}-{args.split}-sheet.png")]
        for name, m in ds.modalities.items():
            written += write_batch(m, batch[name], out, f"{args.dataset}-{args.split}-{name}")
    except OSError as e:  # disk full, unwritable --out
        raise MuniError(f"--out {str(out)!r}: could not write the sheets: {e.strerror or e}") from None
    print(f"wrote {len(written)} files to {out} (sheet: {written[0].name})")
    return 0


def cmd_info(args) -> int:
    spec = get_spec(args.dataset)
    print(f"{spec.name}: {spec.description}")
    for split in ("train", "test"):
        ds = _load(args, split)
        print(f"\n[{split}] {len(ds)} samples, recipe {ds.info['recipe_hash']}, cache {ds.info['cache']}")
        for name, m in ds.modalities.items():
            extra = f", {m.num_classes} classes" if m.num_classes else ""
            print(f"  {name:10s} {m.kind:12s} shape {tuple(m.shape)}{extra}")
        for name, f in ds.factors.items():
            counts = torch.bincount(f)
            if len(counts) <= 10:
                print(f"  factor {name:10s} counts {counts.tolist()}")
            else:
                print(f"  factor {name:10s} {int((counts > 0).sum())} distinct values")
    return 0

"""`muni data build|show|info|import|export`: build, look at, describe, import and export datasets.

    muni data build digits-ita --preset quick
    muni data import my-data/spec.toml --name mine [--force]      # users' own data (muni.data.userdata)
    muni data export digits-ita exported/ [--preset quick]         # folders + CSV + spec.toml
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from muni.errors import InputError, MuniError
from muni.data import DATASETS, PRESETS, check_dataset, get_spec, is_imported, load_dataset
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


def dataset_arg(text: str) -> str:
    """argparse type: a built-in dataset or one imported with `muni data import` (`check_dataset`)."""
    try:
        return check_dataset(text)
    except MuniError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


DATASET_HELP = f"a built-in dataset ({', '.join(DATASETS)}) or one imported with muni data import"


def _common(p: argparse.ArgumentParser, split: bool = False) -> None:
    p.add_argument("dataset", type=dataset_arg, help=DATASET_HELP)
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
    p = sub.add_parser("import", help="import your own dataset from a TOML spec into the cache")
    p.add_argument("spec", help="the dataset spec (TOML; see muni.data.userdata)")
    p.add_argument("--name", default=None, help="dataset name (default: the spec's name)")
    p.add_argument("--force", action="store_true", help="replace an imported dataset of that name")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser("export", help="write a dataset as folders, a CSV and a spec.toml for muni data import")
    _common(p)
    p.add_argument("out", help="output folder (new or empty)")
    p.set_defaults(func=cmd_export)


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


def cmd_import(args) -> int:
    from muni.data.userdata import import_dataset

    t = time.time()
    entry = import_dataset(args.spec, args.name, force=args.force, builtin=DATASETS)
    for split in ("train", "test"):
        ds = load_dataset(entry.name, split)
        absent = ", ".join(f"{k} absent in {int((~v).sum())}" for k, v in ds.present.items())
        print(f"{entry.name} {split}: {len(ds)} samples" + (f" ({absent})" if absent else ""))
    print(f"modalities: {', '.join(f'{n} ({m.kind} {tuple(m.shape)})' for n, m in ds.modalities.items())}")
    print(f"imported into {entry} ({time.time() - t:.1f}s); train with muni train --dataset {entry.name}")
    return 0


def cmd_export(args) -> int:
    from muni.data.export import export_dataset

    splits = {s: _load(args, s) for s in ("train", "test")}
    out = export_dataset(splits, args.out, data_dir=args.data_dir)
    print(f"wrote {args.dataset} to {out}; import it with muni data import {out / 'spec.toml'} --name NAME")
    return 0


def cmd_info(args) -> int:
    if is_imported(args.dataset):
        print(f"{args.dataset}: imported from a spec (muni data import)")
    else:
        spec = get_spec(args.dataset)
        print(f"{spec.name}: {spec.description}")
    for split in ("train", "test"):
        ds = _load(args, split)
        print(f"\n[{split}] {len(ds)} samples, recipe {ds.info['recipe_hash']}, cache {ds.info['cache']}")
        for name, m in ds.modalities.items():
            extra = f", {m.num_classes} classes" if m.num_classes else ""
            print(f"  {name:10s} {m.kind:12s} shape {tuple(m.shape)}{extra}")
        for name, present in ds.present.items():
            print(f"  {name:10s} absent in {int((~present).sum())} samples")
        for name, f in ds.factors.items():
            counts = torch.bincount(f[f >= 0], minlength=1)
            if len(counts) <= 10:
                print(f"  factor {name:10s} counts {counts.tolist()}")
            else:
                print(f"  factor {name:10s} {int((counts > 0).sum())} distinct values")
    return 0

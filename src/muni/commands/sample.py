"""`muni sample`: generate from a trained checkpoint, conditionally or unconditionally.

    muni sample RUN_OR_CKPT --given digit=7 quadrant=2 --n 16 --out DIR
    muni sample RUN_OR_CKPT --unconditional --n 16 --out DIR
    muni sample RUN_OR_CKPT --given digit=7 --sample guidance=6 prior_nfe=16 --out DIR

Given values by modality kind: categorical by index or class name, image by PNG path (its size
must match the modality; 8- or 16-bit), text by a string, audio by a WAV path (its sample rate
must match; 8-, 16-, 32-bit or float). Every bad argument is one clear error (exit 2); nothing
is written before all inputs parse.

``--n`` is at most `MAX_N`; the samples are drawn in batches of `SAMPLE_BATCH` with a progress
bar, every sample is written, and ``sheet.png`` shows the first `SHEET_ROWS`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from muni.errors import InputError, MuniError
from muni.modalities.base import Modality

MAX_N = 4096          # samples per command: memory and output size grow with --n
SAMPLE_BATCH = 256    # samples per `generate` call
SHEET_ROWS = 64       # rows of sheet.png


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sample", help="generate from a trained checkpoint")
    p.add_argument("checkpoint", help="run directory or ckpt-<step> directory")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--given", nargs="+", metavar="NAME=VALUE", help="observed modalities")
    mode.add_argument("--unconditional", action="store_true", help="joint sample of all modalities")
    p.add_argument("--targets", nargs="+", default=None, help="modalities to generate (default: all others)")
    p.add_argument("--n", type=int, default=16, help="number of samples")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", nargs="+", metavar="KEY=VALUE", default=None,
                   help="sampler options of the checkpoint's method, e.g. guidance=6 prior_nfe=16 "
                        "conditional_sampler=posterior temperature=0.5 (MUNI); refused by name when "
                        "the method lacks one")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.set_defaults(func=cmd_sample)


def parse_value(m: Modality, value: str) -> torch.Tensor:
    """One given value as a model-format sample (no batch dim), or `InputError`."""
    if m.kind == "categorical":
        names = [str(c) for c in m.params.get("class_names", [])]
        if value in names:
            return torch.tensor(names.index(value))
        try:
            idx = int(value)
        except ValueError:
            raise InputError(f"{m.name}={value!r}: expected a class index 0..{m.num_classes - 1}"
                             + (f" or a class name ({', '.join(names)})" if names else "")) from None
        if not 0 <= idx < m.num_classes:
            raise InputError(f"{m.name}={value}: class index outside 0..{m.num_classes - 1}")
        return torch.tensor(idx)
    if m.kind == "text":
        from muni.modalities.text import UNK_ID, encode, split_words

        vocab = m.params["vocab"]
        unknown = [w for w in split_words(value) if w not in vocab]
        if unknown:
            raise InputError(f"{m.name}: words not in the vocabulary: {', '.join(unknown)}")
        try:
            ids = encode(value, vocab, m.shape[0])
        except InputError as e:  # too long: name the modality
            raise InputError(f"{m.name}: {e}") from None
        assert UNK_ID not in ids
        return torch.from_numpy(ids)
    path = Path(value)
    if not path.is_file():
        raise InputError(f"{m.name}={value!r}: no such file")
    if m.kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            img = Image.open(path)
            img.load()
            if img.mode.startswith("I"):  # 16-bit greyscale PNG: scale its own range, not 8 bits
                arr = np.asarray(img, np.float32) / 65535.0
                arr = np.repeat(arr[None], m.shape[0], 0)
            else:
                img = img.convert("RGB" if m.shape[0] == 3 else "L")
                arr = np.asarray(img, np.float32) / 255.0
                arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise InputError(f"{m.name}={value!r}: not a readable image ({e})") from None
        if tuple(arr.shape[1:]) != tuple(m.shape[1:]):
            raise InputError(f"{m.name}={value!r}: image is {arr.shape[2]}x{arr.shape[1]}, "
                             f"this model needs {m.shape[2]}x{m.shape[1]}")
        if not (0 <= arr.min() and arr.max() <= 1):
            raise InputError(f"{m.name}={value!r}: pixel values outside the image's range")
        return torch.from_numpy(np.ascontiguousarray(arr))
    if m.kind == "audio":
        from muni.modalities.audio import fix_length, log_mel, num_samples, read_wav

        try:
            rate, wave = read_wav(path.read_bytes())
        except (ValueError, OSError) as e:
            raise InputError(f"{m.name}={value!r}: {e}") from None
        if rate != m.params["sample_rate"]:
            raise InputError(f"{m.name}={value!r}: sample rate {rate} Hz, this model needs "
                             f"{m.params['sample_rate']} Hz")
        if wave.ndim != 1:
            raise InputError(f"{m.name}={value!r}: expected a mono WAV, got {wave.shape[1]} channels")
        return log_mel(fix_length([wave], num_samples(m.params)), m.params)[0]
    raise InputError(f"{m.name}: cannot parse a value of kind {m.kind}")


def parse_given(items: list[str], modalities: dict[str, Modality], n: int) -> dict[str, torch.Tensor]:
    given = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--given expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        if name not in modalities:
            raise InputError(f"--given: unknown modality {name!r}; this model has: {', '.join(modalities)}")
        if name in given:
            raise InputError(f"--given: modality {name!r} given twice")
        x = parse_value(modalities[name], value)
        given[name] = x.unsqueeze(0).expand(n, *x.shape).clone()
    return given


def check_options(args) -> None:
    """Refuse out-of-range numeric options before anything is loaded or written."""
    if not 1 <= args.n <= MAX_N:
        raise InputError(f"--n must be in 1..{MAX_N}, got {args.n} (run the command again with "
                         f"another --seed for more samples)")
    if not -2 ** 63 <= args.seed < 2 ** 64:
        raise InputError(f"--seed must be in [-2**63, 2**64), got {args.seed}")


def generate_batches(model, given: dict[str, torch.Tensor], targets: list[str], n: int,
                     generator: torch.Generator, options: dict) -> dict[str, torch.Tensor]:
    """``model.generate`` for `n` samples in batches of at most `SAMPLE_BATCH` (a progress bar
    when there is more than one); `given` holds `n` rows, or nothing (unconditional)."""
    from tqdm.auto import tqdm

    from muni.methods.base import generate_with

    parts = []
    with tqdm(total=n, desc="sample", unit="sample", disable=n <= SAMPLE_BATCH) as bar:
        for start in range(0, n, SAMPLE_BATCH):
            k = min(SAMPLE_BATCH, n - start)
            rows = {name: x[start:start + k] for name, x in given.items()}
            parts.append(generate_with(model, rows, targets, n=None if given else k, generator=generator,
                                       **options))
            bar.update(k)
    return {t: torch.cat([p[t] for p in parts]) for t in parts[0]}


def cmd_sample(args) -> int:
    from muni.methods.base import sampling_options
    from muni.modalities.writers import sample_sheet, write_batch
    from muni.paths import check_out_dir
    from muni.registry import load_model

    check_options(args)
    folder = Path(args.out)
    check_out_dir(folder)  # before the checkpoint loads; nothing is created until the end
    model = load_model(args.checkpoint, ema=not args.no_ema)
    options = sampling_options(model, args.sample)
    mods = model.modalities
    given = {} if args.unconditional else parse_given(args.given, mods, args.n)
    targets = args.targets or [m for m in mods if m not in given]
    for t in targets:
        if t not in mods:
            raise InputError(f"--targets: unknown modality {t!r}; this model has: {', '.join(mods)}")
    g = torch.Generator().manual_seed(args.seed)
    out = generate_batches(model, given, targets, args.n, g, options)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files = [sample_sheet({k: v[:SHEET_ROWS] for k, v in {**given, **out}.items()}, mods,
                              folder / "sheet.png")]
        for name, x in out.items():
            files += write_batch(mods[name], x, folder, name)
        (folder / "sample.json").write_text(json.dumps({
            "checkpoint": str(args.checkpoint), "given": args.given or [], "targets": targets,
            "n": args.n, "seed": args.seed, "options": options}, indent=2))
    except OSError as e:  # disk full, permissions changed under us, ...
        if created:  # leave no half-written sample folder behind
            shutil.rmtree(folder, ignore_errors=True)
        raise MuniError(f"--out {str(folder)!r}: could not write the samples: {e.strerror or e}") from None
    print(f"wrote {len(files)} files to {folder}")
    return 0

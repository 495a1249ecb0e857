"""`muni train`: train any registered method on a benchmark dataset.

    muni train --method muni --dataset polymnist-quadrant --preset quick [--set key=value ...]

``--set`` keys are ``model.<field>`` (the method's config, e.g. ``model.beta=1``,
``model.codec.width=64``) or ``train.<field>`` (`muni.training.TrainConfig`, e.g.
``train.steps=500``). ``--dry-run`` prints the resolved configs and exits.
Works under ``torchrun --nproc_per_node N -m muni train ...`` (DDP; rank 0 writes).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import torch

from muni.config import apply_overrides, to_dict
from muni.data import DATASETS, PRESETS as DATA_PRESETS, dataset_modalities, load_dataset
from muni.errors import ConfigError
from muni.registry import METHODS, PRESETS, build_model, model_config
from muni.training import TrainConfig, train
from muni.training import distributed as dist


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a method on a dataset")
    p.add_argument("--method", default="muni", choices=list(METHODS))
    p.add_argument("--dataset", default="polymnist-quadrant", choices=list(DATASETS))
    p.add_argument("--preset", default="quick", choices=list(DATA_PRESETS))
    p.add_argument("--seed", type=int, default=0, help="training seed (init, data order, subsets)")
    p.add_argument("--data-seed", type=int, default=0, help="dataset recipe seed")
    p.add_argument("--data-dir", default=None, help="raw data directory (default: $MUNI_DATA_DIR)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<method>-<dataset>-<preset>-s<seed>)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget; stops at a step boundary")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides: model.<field>=v or train.<field>=v")
    p.add_argument("--dry-run", action="store_true", help="print the resolved configs and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """Split ``--set`` items into (model, train) overrides by their prefix."""
    model, tr = [], []
    for item in overrides:
        key = item.split("=", 1)[0]
        if key.startswith("model."):
            model.append(item[len("model."):])
        elif key.startswith("train."):
            tr.append(item[len("train."):])
        else:
            raise ConfigError(f"--set key {key!r} must start with 'model.' or 'train.' "
                              f"(e.g. model.beta=1.0, train.steps=500)")
    return model, tr


def resolve(method: str, dataset: str, preset: str, seed: int, overrides: list[str]):
    """The model config and `TrainConfig` of a run, presets first, overrides last.

    A bad override is a `ConfigError` naming the whole ``--set`` item.
    """
    model_over, train_over = split_overrides(overrides)
    mcfg = model_config(method, dataset, preset)
    tcfg = apply_overrides(TrainConfig(seed=seed), PRESETS[preset][dataset]["train"])
    for prefix, items in (("model", model_over), ("train", train_over)):
        for item in items:
            try:
                if prefix == "model":
                    mcfg = apply_overrides(mcfg, [item])
                else:
                    tcfg = apply_overrides(tcfg, [item])
            except ConfigError as e:
                raise ConfigError(f"--set {prefix + '.' + item!r}: {e}") from None
    tcfg.check()
    return mcfg, tcfg


def build_checked(method: str, modalities, mcfg, device="cpu", overrides: list[str] = ()):
    """`build_model`, with a config the backbones cannot be built from reported as `ConfigError`."""
    try:
        return build_model(method, modalities, mcfg).to(device)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        model_over = [o for o in overrides if o.startswith("model.")]
        hint = f"check --set {' '.join(model_over)}" if model_over else "check the preset"
        raise ConfigError(f"cannot build {method} with this model config ({e}); {hint}") from None


def run_meta(method: str, dataset: str, preset: str, data_seed: int, modalities, mcfg) -> dict:
    return {"method": method, "dataset": dataset, "preset": preset, "data_seed": data_seed,
            "model_config": to_dict(mcfg), "modalities": [m.to_json() for m in modalities.values()]}


def cmd_train(args) -> int:
    mcfg, tcfg = resolve(args.method, args.dataset, args.preset, args.seed, args.overrides)
    for flag, v in (("--seed (train.seed)", tcfg.seed), ("--data-seed", args.data_seed)):
        if not 0 <= v < 2 ** 63:  # torch / numpy seeds; checked before any work
            raise ConfigError(f"{flag} must be in 0..2**63-1, got {v}")
    if args.minutes is not None:
        tcfg = apply_overrides(tcfg, [f"minutes={args.minutes}"])
        try:
            tcfg.check()
        except ConfigError:
            raise ConfigError(f"--minutes must be >= 0, got {args.minutes}") from None
    out = Path(args.out or f"runs/{args.method}-{args.dataset}-{args.preset}-s{args.seed}")
    modalities = dataset_modalities(args.dataset, args.preset)
    with torch.device("meta"), warnings.catch_warnings():  # validates the model config in
        warnings.simplefilter("ignore")                      # milliseconds, allocates nothing
        build_checked(args.method, modalities, mcfg, "meta", args.overrides)
    if args.dry_run:
        print(json.dumps({"method": args.method, "dataset": args.dataset, "preset": args.preset,
                          "out": str(out), "model": to_dict(mcfg), "train": to_dict(tcfg)}, indent=2))
        return 0
    if os.environ.get("RANK", "0") == "0":  # the rank that will write (before dist.setup)
        from muni.cli import check_out_dir
        check_out_dir(out)  # before the data loads and the model builds
    device = dist.setup()
    try:
        train_set = load_dataset(args.dataset, "train", args.preset, args.data_seed, args.data_dir)
        test_set = load_dataset(args.dataset, "test", args.preset, args.data_seed, args.data_dir)
        load_peak = process_peak_rss_mib()
        can_reset = reset_peak_rss()  # the dataset build/load peaks above training: count training alone
        torch.manual_seed(args.seed)  # model init
        model = build_checked(args.method, modalities, mcfg, device, args.overrides)
        meta = run_meta(args.method, args.dataset, args.preset, args.data_seed, modalities, mcfg)
        if dist.is_main():
            n_params = sum(p.numel() for p in model.parameters())
            print(f"muni train: {args.method} on {args.dataset}/{args.preset}, {n_params / 1e6:.2f}M parameters, "
                  f"{tcfg.steps} steps x batch {tcfg.batch_size} -> {out}")
        t0 = time.time()
        result = train(model, train_set, tcfg, out, resume=args.resume, meta=meta,
                       on_sample=SampleSheets(test_set), progress=not args.no_progress)
        if dist.is_main():
            from muni.registry import load_model
            final = load_model(out)
            SampleSheets(test_set, n=16)(final, result.steps_done, out, name="final")
            summary = {"steps_done": result.steps_done, "wall_time_s": round(time.time() - t0, 1),
                       "train_wall_time_s": round(result.wall_time_s, 1),
                       "samples_per_s": round(result.samples_per_s, 1), "stopped_reason": result.stopped_reason,
                       "peak_rss_mib": round(max(load_peak, process_peak_rss_mib()), 1),
                       "train_peak_rss_mib": round(train_peak_rss_mib(), 1) if can_reset else None,
                       "final_losses": result.final_losses}
            (out / "summary.json").write_text(json.dumps(summary, indent=2))
            print(f"done: {result.steps_done} steps, {result.samples_per_s:.0f} samples/s "
                  f"({result.stopped_reason}); samples in {out / 'samples' / 'final'}")
    finally:
        dist.cleanup()
    return 0


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count of this process (Linux >= 4.0: ``/proc/self/clear_refs``);
    False where the system does not allow it (then no training peak is reported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    return True


def process_peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB (``ru_maxrss``; on Linux `reset_peak_rss`
    restarts it too)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train_peak_rss_mib() -> float:
    """Peak resident memory in MiB since the last `reset_peak_rss` (``VmHWM``, Linux); the
    peak CUDA memory since then is added when a GPU is used."""
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    if torch.cuda.is_available():
        rss += torch.cuda.max_memory_allocated() / 2 ** 20
    return rss


class SampleSheets:
    """Sample sheets a person opens: unconditional, and conditional on each single modality.

    Rows of a conditional sheet show the given test sample's modalities beside the generated
    ones; the conditions are the first `n` test samples, so sheets of different runs match.
    """

    def __init__(self, test_set, n: int = 8, seed: int = 0):
        self.test_set, self.n, self.seed = test_set, n, seed

    def __call__(self, model, step: int, out_dir, name: str | None = None) -> None:
        from muni.modalities.writers import sample_sheet

        folder = Path(out_dir) / "samples" / (name or f"step-{step:07d}")
        folder.mkdir(parents=True, exist_ok=True)
        names = list(model.modalities)
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            gen = model.generate({}, names, n=self.n, generator=g)
            sample_sheet(gen, model.modalities, folder / "unconditional.png")
            real = self.test_set.batch(torch.arange(self.n))
            for given in names:
                targets = [m for m in names if m != given]
                out = model.generate({given: real[given]}, targets, generator=g)
                sample_sheet({given: real[given], **out}, model.modalities, folder / f"given-{given}.png",
                             captions=[f"given {given}"] * self.n)

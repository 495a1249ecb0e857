"""A training run's one identity (`RunSpec`) and the function that trains it (`run_training`).

A `RunSpec` holds everything that decides what a run trains: method, dataset, preset, dataset
seed, the resolved model config and the resolved `TrainConfig` (training seed and wall-clock
budget included). It is resolved once from presets and ``--set`` overrides (`RunSpec.resolve`),
written by `run_training` as ``run.json`` beside the checkpoints and stored in every
checkpoint's metadata, so a checkpoint directory alone rebuilds its model. ``spec.hash()`` is
the one test of whether two runs are the same: `muni bench` reuses a run whose spec hash matches
the one its settings resolve to now.

Run directory::

    out/
      .lock               held by the one process training here (`run_lock`)
      run.json            the RunSpec (written before the first step)
      summary.json        steps reached, throughput, wall time, peak memory, final losses
      latest, ckpt-<step>/, log.csv, samples/   (`muni.training`)
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from muni.config import apply_overrides, check_ranges, config_hash, from_dict, to_dict
from muni.data import dataset_modalities, load_dataset
from muni.data.base import make_incomplete
from muni.errors import CheckpointError, ConfigError, InputError, MuniError
from muni.registry import build_model, method_spec, model_config, run_preset
from muni.training import TrainConfig, distributed as dist, train
from muni.training.loop import FIXED, LATE_DEFAULTS, check_trainable_on
from muni.training.checkpoint import write_json_atomic

RUN_FILE, SUMMARY_FILE, LOCK_FILE = "run.json", "summary.json", ".lock"
BUDGET_STEP_CAP = 10 ** 7  # train.steps under a bench's wall-clock budget (never reached)


@dataclass
class DataConfig:
    """How a run uses its dataset (``--set data.<field>=v``). Omitted from a spec's dict (and
    so from its hash) while at its defaults: runs from before it keep their identity."""

    incomplete: float = 0.0                  # share of the training tuples made incomplete: each
    # keeps a uniformly drawn non-empty proper subset of its modalities (`muni.data.base.
    # make_incomplete`, seeded by the data seed); the test split stays complete

    def __post_init__(self) -> None:
        check_ranges("data.", self, [("incomplete", 0 <= self.incomplete <= 1, "in [0, 1]")])


@dataclass
class RunSpec:
    """What a training run trains; `resolve` builds one, `hash` identifies it."""

    method: str
    dataset: str
    preset: str
    model: Any                               # the method's config dataclass, resolved
    train: TrainConfig                       # optimisation, seed, budget (train.minutes)
    data_seed: int = 0                       # seed of the dataset build
    data: DataConfig = dataclasses.field(default_factory=DataConfig)  # how the dataset is used

    # ------------------------------------------------------------------ building
    @classmethod
    def resolve(cls, method: str = "muni", dataset: str = "polymnist-quadrant", preset: str = "quick",
                seed: int = 0, overrides: list[str] | tuple[str, ...] = (), *, data_seed: int = 0,
                minutes: float | None = None) -> RunSpec:
        """Presets first, then ``--set`` overrides (``model.<field>=v`` / ``train.<field>=v`` /
        ``data.<field>=v``), then the wall-clock budget. A bad item is a `ConfigError` naming it."""
        mcfg = model_config(method, dataset, preset)
        tcfg = apply_overrides(TrainConfig(seed=seed), run_preset(preset, dataset)["train"])
        if not 0 <= data_seed < 2 ** 63:
            raise ConfigError(f"--data-seed must be in 0..2**63-1, got {data_seed}")
        return cls(method, dataset, preset, mcfg, tcfg, data_seed).updated(overrides, minutes)

    def updated(self, overrides: list[str] | tuple[str, ...] = (), minutes: float | None = None) -> RunSpec:
        """This spec with ``--set`` overrides and a wall-clock budget applied on top."""
        parts = {"model": self.model, "train": self.train, "data": self.data}
        for item in overrides:
            key = item.split("=", 1)[0]
            prefix, _, rest = item.partition(".")
            if prefix not in parts or not rest:
                raise ConfigError(f"--set key {key!r} must start with 'model.', 'train.' or 'data.' "
                                  f"(e.g. model.beta=1.0, train.steps=500, data.incomplete=0.5)")
            try:
                parts[prefix] = apply_overrides(parts[prefix], [rest])
            except ConfigError as e:
                raise ConfigError(f"--set {item!r}: {e}") from None
        tcfg = parts["train"]
        if minutes is not None:
            if not minutes >= 0:
                raise ConfigError(f"--minutes must be >= 0, got {minutes}")
            tcfg = dataclasses.replace(tcfg, minutes=float(minutes))
        tcfg.check()
        if parts["data"].incomplete > 0 and not getattr(method_spec(self.method).model, "handles_missing", True):
            raise ConfigError(f"data.incomplete={parts['data'].incomplete}: {self.method} cannot train on "
                              f"incomplete tuples (it models whole tuples)")
        if not 0 <= tcfg.seed < 2 ** 63:  # torch / numpy seeds
            raise ConfigError(f"--seed (train.seed) must be in 0..2**63-1, got {tcfg.seed}")
        return dataclasses.replace(self, model=parts["model"], train=tcfg, data=parts["data"])

    def budgeted(self, minutes: float) -> RunSpec:
        """This run under a wall-clock budget alone: the preset's step cap is lifted, so fast
        methods are not stopped early while slow ones use the whole budget (`muni bench`).
        Staged methods split the budget by their stages' budget fractions (`Method.stages`)."""
        if not minutes:
            return self
        return dataclasses.replace(self, train=dataclasses.replace(
            self.train, steps=BUDGET_STEP_CAP, minutes=float(minutes)))

    def modalities(self):
        return dataset_modalities(self.dataset, self.preset)

    def build_model(self, device: str | torch.device = "cpu", overrides: list[str] | tuple[str, ...] = ()):
        """The model, initialised from the current torch seed; a config its backbones cannot be
        built from is a `ConfigError` naming the ``model.*`` `overrides` it was resolved with."""
        try:
            return build_model(self.method, self.modalities(), self.model).to(device)
        except (ValueError, RuntimeError, ZeroDivisionError) as e:
            model_over = [o for o in overrides if o.startswith("model.")]
            hint = f"check --set {' '.join(model_over)}" if model_over else "check the preset"
            raise ConfigError(f"cannot build {self.method} with this model config ({e}); {hint}") from None

    def check_buildable(self, overrides: list[str] | tuple[str, ...] = ()) -> None:
        """Build the model on the meta device: validates the config in milliseconds."""
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.build_model("meta", overrides)

    # ------------------------------------------------------------------ identity and io
    def to_dict(self) -> dict[str, Any]:
        out = {"method": self.method, "dataset": self.dataset, "preset": self.preset,
               "data_seed": self.data_seed, "model_config": to_dict(self.model),
               "train_config": {k: v for k, v in to_dict(self.train).items()
                                if k not in LATE_DEFAULTS or v != LATE_DEFAULTS[k]}}
        if self.data != DataConfig():
            out["data_config"] = to_dict(self.data)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, where: str = "run spec") -> RunSpec:
        """Inverse of `to_dict`; fields added to a config since take their defaults."""
        try:
            method = d["method"]
            return cls(method, d["dataset"], d["preset"],
                       from_dict(method_spec(method).config, d["model_config"]),
                       from_dict(TrainConfig, d["train_config"]), int(d.get("data_seed", 0)),
                       from_dict(DataConfig, d.get("data_config") or {}))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: not a muni run spec (bad or missing {e})") from None
        except ConfigError as e:
            raise CheckpointError(f"{where}: {e}") from None

    def hash(self) -> str:
        """A short stable hash of everything that decides what the run trains."""
        return config_hash(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunSpec:
        """From a spec file, or a run directory's ``run.json``."""
        path = Path(path)
        file = path / RUN_FILE if path.is_dir() else path
        try:
            d = json.loads(file.read_text())
        except OSError as e:
            raise InputError(f"{file}: cannot read the run spec ({e.strerror or e})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: not valid JSON ({e})") from None
        if not isinstance(d, dict):
            raise CheckpointError(f"{file}: not a muni run spec")
        return cls.from_dict(d, where=str(file))

    def check_resumable(self, old: RunSpec) -> None:
        """Refuse to continue run `old` as this spec when a setting that cannot change mid-run
        differs: method, dataset, preset, data seed, any data or model field, train.batch_size
        or train.seed. The other train fields may change; the checkpoints record the change."""
        mine, theirs = self.to_dict(), old.to_dict()
        fixed = [(k, theirs[k], mine[k]) for k in ("method", "dataset", "preset", "data_seed")]
        fixed += [(f"data.{k}", v, getattr(self.data, k)) for k, v in to_dict(old.data).items()]
        if mine["method"] == theirs["method"]:
            a, b = _flat(theirs["model_config"], "model."), _flat(mine["model_config"], "model.")
            fixed += [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))]
        fixed += [(f"train.{k}", theirs["train_config"][k], mine["train_config"][k]) for k in FIXED]
        changed = [f"{k} ({a!r} -> {b!r})" for k, a, b in fixed if a != b]
        if changed:
            raise ConfigError(f"--resume cannot change {', '.join(changed)} mid-run; the optimiser "
                              f"and bookkeeping settings (train.lr, train.steps, ...) can change")

    def checkpoint_meta(self, modalities) -> dict[str, Any]:
        """What every checkpoint stores: this spec and the modalities (with their parameters,
        e.g. a text vocabulary), so a checkpoint directory alone rebuilds the model."""
        return {**self.to_dict(), "modalities": [m.to_json() for m in modalities.values()]}


def refiner_start_note(model: torch.nn.Module, steps: int) -> str | None:
    """One line naming the decoders whose refiner waits for a training step
    (``codec.private_start``), and whether this run's step cap reaches it; None if none waits."""
    starts = {name: dec.start for name, dec in getattr(model, "decoders", {}).items()
              if getattr(dec, "start", 0) > 0}
    if not starts:
        return None
    first = min(starts.values())
    line = (f"private refiners of {', '.join(sorted(starts))} learn from step {first} on "
            f"(codec.private_start); until then they decode as mean decoders")
    if first >= steps:
        line += f": this run stops at step {steps} at the latest, so they never learn"
    return line


def _flat(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Nested config dicts as ``{"model.codec.width": 16, ...}``."""
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold the run directory `out` for this process; a second process is refused with one line.

    An advisory ``flock`` on ``out/.lock``, which records the holder's pid for the message. The
    kernel releases it when the holder exits however it dies (SIGKILL included), so a lock file
    left by a killed process is stale by construction and the next run takes it.

    Raises
    ------
    MuniError
        When another process holds `out`.
    """
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise MuniError(f"{out} is in use by another muni process (pid {holder}); wait for it to "
                            f"finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def run_training(spec: RunSpec, out: str | os.PathLike, *, resume: bool = False,
                 data_dir: str | os.PathLike | None = None, progress: bool = True,
                 log=print, tensorboard: bool = False) -> dict[str, Any] | None:
    """Train `spec` into the run directory `out`: ``run.json``, checkpoints, ``log.csv``,
    sample sheets, ``summary.json`` (and TensorBoard events in ``out/tensorboard`` with
    `tensorboard`). Works under ``torchrun`` (rank 0 writes, and holds the run's lock: a second
    process training into `out` is refused, `run_lock`).

    Returns the summary (rank 0; None on the other ranks).
    """
    out = Path(out)
    if tensorboard:
        from muni.training.tensorboard import TensorBoard

        TensorBoard.require()  # before the run directory is made
    writer = os.environ.get("RANK", "0") == "0"  # the rank that will write (before dist.setup)
    with run_lock(out) if writer else contextlib.nullcontext():
        return _run_training(spec, out, resume, data_dir, progress, log, tensorboard)


def _run_training(spec: RunSpec, out: Path, resume: bool, data_dir: str | os.PathLike | None,
                  progress: bool, log, tensorboard: bool = False) -> dict[str, Any] | None:
    from muni.training.resources import process_peak_rss_mib, reset_peak_rss, train_peak_rss_mib
    from muni.training.sheets import SampleSheets

    if resume and (out / RUN_FILE).is_file():
        spec.check_resumable(RunSpec.load(out))  # before run.json is replaced
    board = None
    if tensorboard and os.environ.get("RANK", "0") == "0":
        from muni.training.tensorboard import TensorBoard

        board = TensorBoard(out / "tensorboard")  # before any work: a missing package fails fast
    device = dist.setup(spec.train.device)
    try:
        train_set = make_incomplete(load_dataset(spec.dataset, "train", spec.preset, spec.data_seed, data_dir),
                                    spec.data.incomplete, spec.data_seed)
        test_set = load_dataset(spec.dataset, "test", spec.preset, spec.data_seed, data_dir)
        load_peak = process_peak_rss_mib()
        can_reset = reset_peak_rss()  # the dataset build/load peaks above training: count training alone
        torch.manual_seed(spec.train.seed)  # model init
        model = spec.build_model(device)
        check_trainable_on(model, train_set)  # before run.json is written
        tcfg = spec.train
        if dist.is_main():
            log(dist.choose_device(spec.train.device)[1])
            n_params = sum(p.numel() for p in model.parameters())
            log(f"muni train: {spec.method} on {spec.dataset}/{spec.preset}, {n_params / 1e6:.2f}M parameters, "
                f"{tcfg.steps} steps x batch {tcfg.batch_size} -> {out}")
            note = refiner_start_note(model, tcfg.steps)
            if note:
                log(note)
            out.mkdir(parents=True, exist_ok=True)
            spec.save(out / RUN_FILE)
        t0 = time.time()
        result = train(model, train_set, tcfg, out, resume=resume, meta=spec.checkpoint_meta(model.modalities),
                       on_sample=SampleSheets(test_set, tensorboard=board), progress=progress,
                       on_log=board.scalars if board is not None else None)
        if not dist.is_main():
            return None
        from muni.registry import load_model

        SampleSheets(test_set, n=16, tensorboard=board)(load_model(out), result.steps_done, out, name="final")
        summary = {"run_hash": spec.hash(), "steps_done": result.steps_done,
                   "wall_time_s": round(time.time() - t0, 1),
                   "train_wall_time_s": round(result.wall_time_s, 1),
                   "samples_per_s": round(result.samples_per_s, 1), "stopped_reason": result.stopped_reason,
                   "torch_threads": torch.get_num_threads(),  # train.num_threads, or torch's default
                   # train.num_threads=0 (adaptive): (step, threads) whenever other processes changed the count
                   "thread_changes": [list(c) for c in result.thread_changes[:100]],
                   # CPUs other processes used on average while it trained: > 0.25 = not alone
                   "other_cpus": None if result.other_cpus is None else round(result.other_cpus, 2),
                   "device": str(device), "precision": result.precision, "compiled": spec.train.compile,
                   "peak_rss_mib": round(max(load_peak, process_peak_rss_mib()), 1),
                   "train_peak_rss_mib": round(train_peak_rss_mib(), 1) if can_reset else None,
                   "final_losses": result.final_losses}
        write_json_atomic(out / SUMMARY_FILE, summary)
        log(f"done: {result.steps_done} steps, {result.samples_per_s:.0f} samples/s "
            f"({result.stopped_reason}); samples in {out / 'samples' / 'final'}")
        return summary
    finally:
        if board is not None:
            board.close()
        dist.cleanup()


def holds_spec(run: str | os.PathLike, spec: RunSpec) -> bool:
    """Whether the run directory `run` was trained from `spec` (same hash); False for a missing,
    unreadable or foreign ``run.json``."""
    try:
        return RunSpec.load(run).hash() == spec.hash()
    except (CheckpointError, InputError):
        return False


def finished_summary(run: str | os.PathLike, spec: RunSpec) -> dict[str, Any] | None:
    """The summary of a finished run in `run` whose spec is `spec` (same hash), else None."""
    run = Path(run)
    if not holds_spec(run, spec):
        return None
    try:
        summary = json.loads((run / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("run_hash") == spec.hash() else None

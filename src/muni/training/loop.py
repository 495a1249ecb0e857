"""The training loop: a function over a built model and dataset (edm2 / nanoGPT style).

`train` never constructs models or datasets. The same code runs in one process and under
``torchrun`` (see `muni.training.distributed`): every rank computes, rank 0 alone writes the
log, the checkpoints and calls ``on_sample``.

Per step::

    idx    = this rank's shard of the next global batch   (seeded epoch-wise permutation)
    losses = model.loss(dataset.batch(idx), present=...)  (through DDP when world > 1; the
                                                          presence mask only for incomplete tuples)
    check the loss terms (averaged over ranks) are finite, else rewind and raise
    backward; clip the global grad norm; AdamW step with linear warmup; EMA update
    log / checkpoint / on_sample at their intervals; stop at the time budget

Randomness. The data order comes from a generator seeded with ``cfg.seed`` (identical on all
ranks: each takes a disjoint contiguous slice of the same global batch). The global torch RNG
is seeded ``cfg.seed + rank`` (numpy and python's too), so noise differs across ranks. A
method needing the same random choice on every rank (e.g. the modality subset of a step) uses
`muni.training.distributed.shared_generator()` inside ``loss``. ``on_sample`` runs under a
forked RNG, so sampling never changes the training trajectory.

Batch and LR. ``cfg.batch_size`` is global; gradients are averaged over ranks by DDP, so a run
on N ranks follows the single-process run with the same global batch and ``lr``.

Device and precision. The loss runs under ``torch.autocast`` in bf16 when ``cfg.precision``
resolves to it (`precision_on`: by default on CUDA, with TF32 for the fp32 matmuls left), in
fp32 otherwise; the backward runs outside the autocast, as torch advises, and bf16 needs no
gradient scaler. ``cfg.compile`` passes the loss module through ``torch.compile``.

Divergence. A non-finite loss term or gradient norm at step ``s + 1`` raises
`TrainingDivergedError`. The state at ``s`` is the one whose next step fails (resuming it would
replay that step bitwise), so the run is rewound (`checkpoint.rewind`) to the newest checkpoint
before ``s``, which was followed by finite steps; pruning never deletes it. A resume may change
the optimisation settings (`RESUMABLE`): they take effect, and every checkpoint records the
changes in ``changes``.

Exact resume. A checkpoint holds weights, EMA, optimizer state, the data-order generator and
position, every rank's RNG states and the open logging window; on CPU with a fixed
``num_threads`` a resumed run reproduces the uninterrupted run's losses and weights bitwise.

Threads. ``num_threads = 0`` (the default) trains on the CPU with torch's thread count while the
machine is otherwise idle and with fewer while other processes keep CPUs busy
(`threads.ThreadGovernor`, measured every 2 s); the starting count is back when `train` returns, and
`TrainResult.thread_changes` lists every change. A fixed ``num_threads`` is never changed. Either
way `TrainResult.other_cpus` is the CPUs other processes used on average while it trained: a
throughput is only worth reporting where it is near 0.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from muni.config import to_dict
from muni.data.base import MultimodalDataset
from muni.errors import CheckpointError, ConfigError, MuniError
from muni.methods.base import PRECISIONS as AUTOCAST_PRECISIONS, Method, autocast, stage_at
from muni.training import checkpoint as ckpt
from muni.training import distributed
from muni.training.ema import EMA
from muni.training.logging import CsvLog, format_terms
from muni.training.threads import ThreadGovernor


_log = logging.getLogger(__name__)


class TrainingDivergedError(MuniError):
    """A loss term or the gradient norm became NaN/Inf; the run was rewound to a good checkpoint."""


PRECISIONS = ("auto", *AUTOCAST_PRECISIONS)  # train.precision: auto resolves by device (`precision_on`)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of one training run (the model has its own config)."""

    steps: int = 20000                         # optimizer steps of the whole run (resume continues to it)
    batch_size: int = 256                      # GLOBAL batch; each of the N ranks draws batch_size / N
    lr: float = 1e-3                           # AdamW learning rate after warmup, same at any world size
    weight_decay: float = 0.0                  # AdamW decoupled decay, on weights with dim >= 2 only
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW moment decays
    warmup_steps: int = 0                      # linear warmup: lr * min(1, (step + 1) / warmup_steps)
    grad_clip: float = 1.0                     # max global gradient norm; 0 = no clipping
    ema_decay: float = 0.999                   # EMA of the weights (used by on_sample); 0 = off
    seed: int = 0                              # data order; torch/numpy/python RNG get seed + rank
    log_every: int = 100                       # steps per log.csv row and progress-bar update
    ckpt_every: int = 1000                     # steps between checkpoints; 0 = only at the end
    sample_every: int = 0                      # steps between on_sample calls; 0 = never
    minutes: float = 0.0                       # wall-clock budget of this call; stops at a step boundary; 0 = none
    num_threads: int = 0                       # torch CPU threads (fix it for bitwise resume); 0 = adaptive: torch's count, fewer while other processes keep CPUs busy
    keep_last: int = 2                         # newest checkpoints kept (>= 1), plus the one before the latest
    device: str = "auto"                       # auto (CUDA when torch sees a GPU, else CPU), cpu or cuda (falls back to CPU, saying so)
    precision: str = "auto"                    # auto (bf16 autocast + TF32 on CUDA, fp32 on CPU), fp32, or bf16 (autocast on either)
    compile: bool = False                      # torch.compile the loss; the first steps pay the compilation

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `ConfigError` naming the first out-of-range field."""
        rules = [("steps", self.steps >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                 ("lr", 0 < self.lr < float("inf"), "a finite number > 0"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                 ("betas", len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
                  "two numbers in [0, 1)"),
                 ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
                 ("grad_clip", self.grad_clip >= 0, ">= 0"),
                 ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
                 ("log_every", self.log_every >= 1, ">= 1"),
                 ("ckpt_every", self.ckpt_every >= 0, ">= 0"),
                 ("sample_every", self.sample_every >= 0, ">= 0"),
                 ("minutes", self.minutes >= 0, ">= 0"), ("num_threads", self.num_threads >= 0, ">= 0"),
                 ("keep_last", self.keep_last >= 1, ">= 1"),
                 ("device", self.device in distributed.DEVICES, "one of " + ", ".join(distributed.DEVICES)),
                 ("precision", self.precision in PRECISIONS, "one of " + ", ".join(PRECISIONS))]
        for name, ok, want in rules:
            if not ok:
                raise ConfigError(f"train.{name} must be {want}, got {getattr(self, name)!r}")


@dataclass
class TrainResult:
    """What a `train` call achieved."""

    steps_done: int                                          # global step reached (including resumed steps)
    wall_time_s: float                                       # wall time of this call's training steps
    samples_per_s: float                                     # global samples per second in this call
    final_losses: dict[str, float] = field(default_factory=dict)  # means of the last logging window
    stopped_reason: str = "completed"                        # "completed" or "time budget (<minutes> min)"
    precision: str = "fp32"                                  # what train.precision meant on the model's device
    thread_changes: list[tuple[int, int]] = field(default_factory=list)  # (step, threads) set by the thread governor
    other_cpus: float | None = None                          # CPUs other processes used on average (CPU runs, Linux)


class DataOrder:
    """Epoch-wise permutations of ``range(n)`` cut into global batches; yields this rank's shard.

    Like ``DistributedSampler`` + ``drop_last`` but computed directly: every rank draws the
    same permutation from a generator seeded with `seed`, takes global batch ``i`` as
    ``perm[i*B:(i+1)*B]`` and keeps the contiguous slice ``rank``. The state is the generator
    state at the start of the current epoch plus the position in it.
    """

    def __init__(self, n: int, global_batch: int, seed: int, rank: int, world_size: int) -> None:
        self.n, self.batch, self.rank, self.world_size = n, global_batch, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self._new_epoch()

    def _new_epoch(self) -> None:
        self.epoch_state = self.generator.get_state()
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos = 0

    def next(self) -> torch.Tensor:
        """This rank's indices of the next global batch, ``(batch // world_size,)`` int64."""
        if self.pos + self.batch > self.n:
            self._new_epoch()
        global_idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        per = self.batch // self.world_size
        return global_idx[self.rank * per:(self.rank + 1) * per]

    def state(self) -> tuple[torch.Tensor, int]:
        return self.epoch_state, self.pos

    def restore(self, epoch_state: torch.Tensor, pos: int) -> None:
        self.generator.set_state(epoch_state)
        self._new_epoch()
        self.pos = pos


FIXED = ("batch_size", "seed")  # a resume cannot change these: data order and RNG streams
RESUMABLE = ("lr", "weight_decay", "betas", "warmup_steps", "grad_clip", "ema_decay",
             "precision", "compile")  # recorded when changed
# Fields added after runs were made with specs lacking them: a spec writes them only when set
# away from these defaults, so every earlier run keeps its hash (`muni.run.RunSpec.to_dict`).
LATE_DEFAULTS = {"device": "auto", "precision": "auto", "compile": False}


def precision_on(cfg: TrainConfig, device: torch.device) -> str:
    """The precision `cfg.precision` means on `device`: ``bf16`` (autocast) or ``fp32``."""
    if cfg.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg.precision


def _lr_at(cfg: TrainConfig, step: int) -> float:
    return cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    try:  # the fused kernel: 3.6 ms against foreach's 15.9 ms per MUNI quick step, 1 idle CPU thread
          # (2.1 against 9.2 at 2; benchmarks/optimizer_step.py, 2026-12-02)
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)
    except (RuntimeError, TypeError):  # a torch or device without it
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2 ** 32)
    random.seed(seed)


def _prepare_out_dir(out_dir: Path, resume: bool) -> str | None:
    """Rank 0's checks of the output directory; an error message or None."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        return f"output directory {out_dir} is not writable: {e.strerror or e}"
    if not resume and ckpt.checkpoint_steps(out_dir):
        return (f"{out_dir} already holds checkpoints (ckpt-{ckpt.checkpoint_steps(out_dir)[-1]}); "
                f"pass resume=True (--resume) to continue it, or choose a new directory")
    ckpt.clean_stale_temps(out_dir)
    return None


class _Window:
    """Sums of the logged terms since the last log row (identical on every rank)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, terms: dict[str, float]) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()}


def _save(out_dir: Path, step: int, model: nn.Module, ema: EMA | None, opt: torch.optim.Optimizer,
          order_state: tuple[torch.Tensor, int], rng: dict[str, torch.Tensor], window: _Window,
          elapsed_s: float, cfg: TrainConfig, meta: dict[str, Any],
          changes: list[dict[str, Any]]) -> Path:
    """Collective: gather every rank's RNG state; rank 0 writes; every rank gets the path."""
    rngs = distributed.all_gather_object(rng)
    result: tuple[str | None, str | None] = (None, None)
    if distributed.is_main():
        opt_tensors, opt_json = ckpt.flatten_optimizer(opt.state_dict())
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
        if ema is not None:
            tensors.update({f"ema/{k}": v for k, v in ema.state_dict().items()})
        tensors.update({f"optim/{k}": v for k, v in opt_tensors.items()})
        for r, states in enumerate(rngs):
            tensors.update({f"rng/{r}/{k}": v for k, v in states.items()})
        tensors["data/generator"] = order_state[0]
        info = {"config": to_dict(cfg), "meta": meta, "world_size": len(rngs),
                "optimizer": opt_json, "data_pos": order_state[1], "elapsed_s": elapsed_s,
                "window": {"sums": window.sums, "count": window.count}, "changes": changes}
        try:
            result = (str(ckpt.save_checkpoint(out_dir, step, tensors, info,
                                               keep_last=cfg.keep_last)), None)
        except OSError as e:
            result = (None, f"could not write checkpoint {step} in {out_dir}: {e}")
    path, error = distributed.broadcast_object(result)
    if error:
        raise CheckpointError(error)
    return Path(path)


def _restore(ck: ckpt.Checkpoint, model: nn.Module, ema: EMA | None, opt: torch.optim.Optimizer,
             order: DataOrder, window: _Window, cfg: TrainConfig) -> tuple[float, dict[str, list]]:
    """Load a checkpoint's state into the run, with `cfg`'s optimiser settings; returns the
    elapsed training time it records and the settings that differ, ``{name: [old, new]}``."""
    w = distributed.world()
    info, old, new = ck.info, ck.config, to_dict(cfg)
    missing = [k for k in ("config", "optimizer", "data_pos", "window", "elapsed_s", "world_size")
               if k not in info]
    if missing:
        raise CheckpointError(f"{ck.path}: not a training checkpoint (no {', '.join(missing)})")
    for name in FIXED:
        if old.get(name) != new[name]:
            raise CheckpointError(f"{ck.path}: cannot resume with train.{name}="
                                  f"{getattr(cfg, name)!r}; the run used {old.get(name)!r}")
    if info.get("world_size") != w.size:
        raise CheckpointError(f"{ck.path}: written by {info.get('world_size')} rank(s), resumed on "
                              f"{w.size}; per-rank RNG streams cannot be continued exactly")
    ckpt.load_state_into(model, ck.group("model"))
    if ema is not None:
        ema_state = ck.group("ema")
        if not ema_state:
            raise CheckpointError(f"{ck.path}: holds no EMA weights but train.ema_decay="
                                  f"{cfg.ema_decay}")
        ema.load_state_dict(ema_state)
    try:
        opt.load_state_dict(ckpt.unflatten_optimizer(ck.group("optim"), info["optimizer"]))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise CheckpointError(f"{ck.path}: optimizer state does not fit this model ({e})") from None
    fresh = _optimizer(model, cfg).param_groups  # every hyperparameter comes from `cfg`, not the file
    for group, want in zip(opt.param_groups, fresh):
        group.update({k: v for k, v in want.items() if k != "params"})
    sums, count = (info.get("window") or {}).get("sums"), (info.get("window") or {}).get("count")
    if not (isinstance(sums, dict) and type(count) is int and count >= 0 and (count > 0 or not sums)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in sums.values())):
        raise CheckpointError(f"{ck.path}: field 'window' must hold 'sums' (numbers) and 'count' (>= 0)")
    if "data/generator" not in ck.tensors:
        raise CheckpointError(f"{ck.path}: holds no data-order state (data/generator)")
    order.restore(ck.tensors["data/generator"], info["data_pos"])
    ckpt.restore_rng(ck.group(f"rng/{w.rank}"))
    window.sums, window.count = dict(sums), count
    was = {**LATE_DEFAULTS, **old}  # a checkpoint from before a field existed ran at its default
    changed = {k: [was.get(k), v] for k, v in new.items()
               if k in RESUMABLE and was.get(k) != (list(v) if isinstance(v, tuple) else v)}
    return float(info["elapsed_s"]), changed


def _reduce_terms(losses: dict[str, torch.Tensor], spent: float) -> tuple[dict[str, float], float]:
    """Loss terms averaged over ranks and the fraction of the time budget spent, the largest
    over ranks (one all-reduce; every rank gets the same values, so they stop together)."""
    if "loss" not in losses:
        raise MuniError(f"model.loss(batch) must return a dict with a 'loss' entry; got keys "
                        f"{sorted(losses)}")
    keys = ["loss"] + sorted(k for k in losses if k != "loss")
    dev = losses["loss"].device
    vec = torch.stack([torch.as_tensor(losses[k], device=dev).detach().float().reshape(())
                       for k in keys])
    n = distributed.world().size
    spent_all = torch.zeros(n, device=dev)
    spent_all[distributed.world().rank] = spent
    vec = distributed.all_reduce_sum(torch.cat([vec, spent_all])).tolist()
    return {k: v / n for k, v in zip(keys, vec)}, max(vec[len(keys):])


def check_trainable_on(model: Method, dataset: MultimodalDataset) -> None:
    """Refuse (`ConfigError`) a method that cannot train on incomplete tuples, given such a dataset."""
    if not dataset.complete and not model.handles_missing:
        raise ConfigError(f"{type(model).__name__} cannot train on incomplete tuples, and dataset "
                          f"{dataset.name}/{dataset.split} has samples that lack a modality; train a "
                          f"method that handles them (muni, mvae, mmvae, mopoe, helvae) or keep "
                          f"complete tuples only")


def train(model: Method, dataset: MultimodalDataset, cfg: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, meta: dict[str, Any] | None = None,
          on_sample: Callable[[nn.Module, int, Path], None] | None = None,
          progress: bool = True, on_log: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Train `model` on `dataset` with AdamW; write log, checkpoints and samples to `out_dir`.

    Parameters
    ----------
    model : Method
        A built model on its device, exposing ``loss(batch) -> dict`` (``"loss"`` the scalar
        to minimise, other entries logged) and its training stages (`Method.stages`; the
        loop enters each at its step count, or at its share of a time budget).
    dataset : MultimodalDataset
        The training split; batches are ``dataset.batch(indices)`` (no DataLoader).
    cfg : TrainConfig
        Optimisation and bookkeeping settings. The model trains where it is (``cfg.device`` is
        read by `muni.run.run_training`, which builds it there); ``cfg.precision`` sets the
        forward's autocast (`precision_on`), ``cfg.compile`` wraps the loss in ``torch.compile``.
    out_dir : path
        Run directory: ``log.csv``, ``ckpt-<step>/``, ``latest``. Must be writable; a fresh run
        refuses a directory that already holds checkpoints.
    resume : bool
        Continue from ``out_dir``'s latest checkpoint (bitwise-exact on CPU with fixed
        ``num_threads``); ``batch_size``, ``seed`` and the world size must match; changed
        optimiser settings (`RESUMABLE`) take effect and are recorded in the checkpoints.
    meta : dict, optional
        JSON-serialisable facts stored in every checkpoint (method name, model config,
        dataset name/preset, modalities). ``meta["method"]`` is checked on resume.
    on_sample : callable, optional
        ``on_sample(model, step, out_dir)`` every ``cfg.sample_every`` steps on rank 0, with
        the EMA weights swapped in (when EMA is on), in eval mode, under ``torch.no_grad`` and
        a forked RNG.
    progress : bool
        Show a tqdm bar with the loss terms (rank 0).
    on_log : callable, optional
        ``on_log(row)`` on rank 0 with every row written to ``log.csv`` (e.g. TensorBoard).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingDivergedError
        A loss term or the gradient norm is NaN/Inf; the run is rewound to its newest
        checkpoint followed by finite steps (see the module docstring).
    ConfigError, CheckpointError, MuniError
        Bad config, unusable checkpoint, unwritable ``out_dir``.
    """
    cfg.check()
    if not isinstance(model, Method):
        raise ConfigError(f"train() needs a muni.methods.base.Method, got {type(model).__name__}")
    w = distributed.world()
    if cfg.batch_size % w.size:
        raise ConfigError(f"train.batch_size={cfg.batch_size} (global) is not divisible by the "
                          f"world size {w.size}; use a multiple of {w.size}")
    if len(dataset) < cfg.batch_size:
        raise ConfigError(f"train.batch_size={cfg.batch_size} exceeds the {len(dataset)} samples "
                          f"of dataset {dataset.name}/{dataset.split}")
    meta = dict(meta or {})
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"meta must be JSON-serialisable: {e}") from None
    out_dir = Path(out_dir)
    error = distributed.broadcast_object(_prepare_out_dir(out_dir, resume) if w.is_main else None)
    if error:
        raise MuniError(error)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    threads_start = torch.get_num_threads()
    _seed_all(cfg.seed + w.rank)
    device = next(model.parameters()).device  # cfg.device is where `muni train` builds it
    # adapts with num_threads=0; with a fixed count it only measures the other processes' load
    governor = ThreadGovernor(adapt=not cfg.num_threads) if device.type == "cpu" else None
    thread_changes: list[tuple[int, int]] = []
    precision = precision_on(cfg, device)
    if device.type == "cuda":  # fp32 matmuls outside autocast: TF32 unless fp32 was asked for
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "bf16"

    check_trainable_on(model, dataset)
    net = distributed.wrap(model, complete=dataset.complete)
    if cfg.compile:
        net = torch.compile(net)
    opt = _optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    order = DataOrder(len(dataset), cfg.batch_size, cfg.seed, w.rank, w.size)
    window = _Window()
    step, elapsed_before, changes = 0, 0.0, []
    if resume:
        ck = ckpt.load_checkpoint(out_dir, expect_method=meta.get("method"))
        elapsed_before, changed = _restore(ck, model, ema, opt, order, window, cfg)
        step, changes = ck.step, list(ck.info.get("changes") or [])
        if changed:
            changes.append({"step": step, "changed": changed})
            if w.is_main:
                _log.warning("resuming at step %d with changed settings: %s", step, ", ".join(
                    f"train.{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        del ck
    log = (CsvLog(out_dir / "log.csv", resume_step=step if resume else None,
                  log_every=cfg.log_every) if w.is_main else None)

    model.train()
    t0 = time.perf_counter()
    t_win, steps_win, steps_run = t0, 0, 0
    stopped, final = "completed", {}
    bar = tqdm(total=cfg.steps, initial=step, desc="train", dynamic_ncols=True,
               disable=not (progress and w.is_main))
    params = [p for p in model.parameters() if p.requires_grad]
    stages, spent = model.stages(), 0.0
    while step < cfg.steps:
        stage = stage_at(stages, step, spent if cfg.minutes > 0 else None)
        if stage > model.current_stage():  # same on every rank: step and spent are shared
            model.enter_stage(stage)
        idx = order.next()
        batch = {k: v.to(device, non_blocking=True) for k, v in dataset.batch(idx).items()}
        present = dataset.present_batch(idx)
        if present is not None:
            present = {k: v.to(device, non_blocking=True) for k, v in present.items()}
        distributed.set_step(cfg.seed, step)
        model.begin_step(step)
        with autocast(precision, device):
            losses = net(batch) if present is None else net(batch, present)
        spent = (time.perf_counter() - t0) / (cfg.minutes * 60) if cfg.minutes > 0 else 0.0
        terms, spent = _reduce_terms(losses, spent)
        stop = spent > 1.0
        grad_norm = float("nan")
        if all(math.isfinite(v) for v in terms.values()):
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
            grad_norm = float(norm)
        if not math.isfinite(grad_norm):
            bar.close()
            torch.set_num_threads(threads_start)
            good = distributed.broadcast_object(ckpt.rewind(out_dir, step) if w.is_main else None)
            what = ("gradient norm is " + str(grad_norm) if all(map(math.isfinite, terms.values()))
                    else "loss terms " + str(terms))
            fix = "lower train.lr, raise train.warmup_steps or lower train.grad_clip"
            raise TrainingDivergedError(
                f"training diverged at step {step + 1}: {what}. " + (
                    f"The run is rewound to ckpt-{good}, the last checkpoint followed by finite "
                    f"steps: {fix} and resume it (--resume)." if good is not None else
                    f"No checkpoint precedes it: {fix} and start the run again."))
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, norm)
        lr = _lr_at(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
        if ema is not None:
            ema.update(model, exact=model.frozen_parameter_names())
        step += 1
        if governor is not None and (n := governor.poll()) is not None:
            thread_changes.append((step, n))
            _log.warning("threads -> %d at step %d: other processes kept %.1f of %d CPUs busy",
                         n, step, governor.others, governor.n_cpus)
        steps_win += 1
        steps_run += 1
        window.add({**terms, "grad_norm": grad_norm})
        bar.update(1)
        last = step == cfg.steps or stop
        if step % cfg.log_every == 0 or last:  # a stop mid-window logs it but keeps it open
            now = time.perf_counter()
            final = window.means()
            row = {"step": step, "time_s": elapsed_before + now - t0,
                   "samples_per_s": steps_win * cfg.batch_size / max(now - t_win, 1e-9), "lr": lr}
            if log is not None:
                log.write({**row, **final})
                if on_log is not None:
                    on_log({**row, **final})
            bar.set_postfix(format_terms(final), refresh=False)
            t_win, steps_win = now, 0
            if step % cfg.log_every == 0:
                window = _Window()
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or last:
            _save(out_dir, step, model, ema, opt, order.state(), ckpt.capture_rng(), window,
                  elapsed_before + time.perf_counter() - t0, cfg, meta, changes)
        if cfg.sample_every and step % cfg.sample_every == 0 and w.is_main and on_sample:
            _sample(model, ema, on_sample, step, out_dir, device)
        if stop:
            stopped = f"time budget ({cfg.minutes:g} min)"
            break
    bar.close()
    torch.set_num_threads(threads_start)
    if governor is not None:
        governor.measure()  # the run's last seconds
    distributed.barrier()
    wall = time.perf_counter() - t0
    return TrainResult(steps_done=step, wall_time_s=wall,
                       samples_per_s=steps_run * cfg.batch_size / max(wall, 1e-9),
                       final_losses=final, stopped_reason=stopped, precision=precision,
                       thread_changes=thread_changes,
                       other_cpus=governor.others_mean if governor is not None else None)


def _sample(model: nn.Module, ema: EMA | None, on_sample: Callable[[nn.Module, int, Path], None],
            step: int, out_dir: Path, device: torch.device) -> None:
    """Call `on_sample` with EMA weights, in eval mode, without touching the training RNG."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        model.eval()
        try:
            if ema is None:
                on_sample(model, step, out_dir)
            else:
                with ema.applied(model):
                    on_sample(model, step, out_dir)
        finally:
            model.train()

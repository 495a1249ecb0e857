"""One code path for one process and for DDP under ``torchrun``.

The CLI calls `setup()` before building the model and `cleanup()` at the end; the training
loop only asks `world()` and wraps the model with `wrap()`. Without ``torchrun`` (no
``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) everything here is a no-op and the
model runs unwrapped.

Batch and learning-rate semantics: ``TrainConfig.batch_size`` is the GLOBAL batch; each rank
draws ``batch_size // world_size`` samples and DDP averages the gradients over ranks, so the
gradient is that of the mean loss over the global batch and ``lr`` means the same thing at any
world size (provided the method's loss is a per-sample mean, as every muni method's is).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """Where this process stands: ``rank`` in ``range(size)``; ``local_rank`` picks the GPU."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


DEVICES = ("auto", "cpu", "cuda")  # train.device / --device


def choose_device(want: str = "auto") -> tuple[str, str]:
    """The device type this process trains on, and one line saying why.

    ``auto`` takes CUDA when torch sees a GPU, else the CPU; ``cuda`` without a visible GPU falls
    back to the CPU (the line says so) rather than failing a job that a scheduler placed on a
    CPU node; ``cpu`` is the CPU even where a GPU is present.
    """
    if want not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {want!r}")
    cuda = torch.cuda.is_available()
    if want == "cpu":
        return "cpu", "device: cpu (--device cpu)"
    if cuda:
        return "cuda", f"device: cuda ({torch.cuda.get_device_name()}, --device {want})"
    if want == "cuda":
        return "cpu", "device: cpu -- --device cuda asked for a GPU but torch sees none; falling back to the CPU"
    return "cpu", "device: cpu (--device auto: torch sees no CUDA device)"


def setup(want: str = "auto") -> torch.device:
    """Join the process group described by torchrun's environment; return this rank's device.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and ``MASTER_ADDR``/``MASTER_PORT`` through
    the ``env://`` rendezvous). The device type is `choose_device` (`want`): on CUDA each rank
    takes the GPU ``LOCAL_RANK`` and the group uses NCCL, on the CPU gloo. Without torchrun it
    initialises no group.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = choose_device(want)[0] == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://",
                                rank=int(os.environ["RANK"]), world_size=size)
    return torch.device("cuda", local_rank) if cuda else torch.device("cpu")


def cleanup() -> None:
    """Leave the process group (no-op in a single process)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world() -> World:
    """This process's rank, the world size and the local rank (0, 1, 0 without DDP)."""
    if not dist.is_initialized():
        return World(0, 1, 0)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    """True on rank 0, the only rank that writes files and prints."""
    return world().is_main


class LossModule(nn.Module):
    """Adapter whose ``forward(batch)`` is ``model.loss(batch)``, so DDP can wrap a method.

    DDP hooks gradient all-reduce into ``forward``; muni models expose ``loss`` instead, so
    the loop calls this adapter (wrapped in DDP when there are several ranks).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        return self.model.loss(batch) if present is None else self.model.loss(batch, present=present)


def wrap(model: nn.Module, complete: bool = True) -> nn.Module:
    """``LossModule(model)``, inside DDP when the world has several ranks.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from
    the same weights. ``find_unused_parameters`` is on unless the method declares
    ``may_skip_parameters = False`` (`muni.methods.base.Method`): a method that need not touch
    every parameter every step (a frozen stage, a parameter used only by ``generate``) would
    otherwise make DDP wait forever for their gradients; the search costs one graph traversal
    per step, so a method that always touches everything skips it. Training on incomplete
    tuples (`complete` False) turns it on for every method: a modality absent from a whole
    batch has its encoder and decoder skipped.
    """
    module = LossModule(model)
    if world().size == 1:
        return module
    device = next(model.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=ids, find_unused_parameters=getattr(model, "may_skip_parameters", True) or not complete)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over ranks in place (identity in a single process); returns `x`."""
    if world().size > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def all_gather_object(obj):
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in a single process)."""
    if world().size == 1:
        return [obj]
    out = [None] * world().size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj):
    """Rank 0's `obj`, on every rank."""
    if world().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if world().size > 1:
        dist.barrier()


_current: tuple[int, int] | None = None  # (seed, step) of the step being computed by `train`


def set_step(seed: int, step: int) -> None:
    """Called by the training loop before every ``model.loss``; see `shared_generator`."""
    global _current
    _current = (seed, step)


def shared_generator(seed: int | None = None, step: int | None = None, *,
                     device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded identically on every rank for one training step.

    The global torch RNG is seeded ``seed + rank``, so draws from it differ across ranks (as
    they should for noise and time samples). A method whose objective needs the SAME random
    choice on every rank within a step (e.g. which modality subset a whole global batch
    drops) draws it from this generator instead. Inside ``model.loss`` during `train`, call it
    without arguments: it uses the run's seed and the current step, so resumed runs draw the
    same choices. Outside training pass `seed` and `step` explicitly.
    """
    if seed is None or step is None:
        if _current is None:
            raise RuntimeError("shared_generator() without seed/step is only valid inside "
                               "model.loss during muni.training.train")
        seed = _current[0] if seed is None else seed
        step = _current[1] if step is None else step
    g = torch.Generator(device=device)
    g.manual_seed((seed * 0x9E3779B1 + step * 0x85EBCA77 + 0x5EED) % (2 ** 63))
    return g

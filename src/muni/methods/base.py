"""The one model API every method (and every reference model) satisfies.

Training: ``loss(batch, present=None) -> dict[str, Tensor]`` where ``"loss"`` is the scalar to
minimise and every other entry is a logged term (detached scalars). Incomplete tuples: ``present``
maps modality names to (B,) bool masks of the samples that have them (a name missing from it is
present everywhere; a modality missing from ``batch`` is absent everywhere); absent entries of
``batch`` hold filler that no term may read (`presence`). A method that cannot train on
incomplete tuples declares ``handles_missing = False`` and the training loop refuses them.

Generation: ``generate(given, targets, n=None, generator=None, **options) -> dict[str, Tensor]``:
- ``given`` maps observed modality names to batches in model format (all the same size B);
- ``targets`` names the modalities to produce; the result holds exactly those, each in model
  format with batch size B (or ``n`` when ``given`` is empty);
- an empty ``given`` means unconditional joint sampling of ``targets`` (``n`` required);
- ``options`` are the method's sampler options, the fields of its ``Sampling`` dataclass
  (e.g. MUNI's ``guidance``, ``prior_nfe``); `sampling_options` parses and checks them, the one
  route by which ``muni sample --sample``, ``muni eval run --sample`` and the bench set them.
  One option every model takes: ``precision=bf16`` runs ``generate`` under bf16 autocast and
  returns fp32 (`generate_with`, which every caller of ``generate`` with options goes through).

Training stages: a method trained in stages (JointFlow: autoencoders, then the flow) declares
them with `Method.stages`; the training loop moves it from one to the next (`Stage`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from muni.config import from_dict
from muni.errors import ConfigError, InputError
from muni.modalities.base import KINDS, Modality, check_modality_names


@dataclass
class NoSampling:
    """Sampler options of a model that takes none."""


# Ranges of sampler options, by field name (every method's `Sampling` uses these names).
_OPTION_RULES = {
    "nfe": (lambda v: v >= 1, "an integer >= 1"),
    "prior_nfe": (lambda v: v >= 1, "an integer >= 1"),
    "decoder_nfe": (lambda v: v >= 1, "an integer >= 1"),
    "temperature": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "prior_temperature": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "guidance": (math.isfinite, "a finite number"),
}
PRECISIONS = ("fp32", "bf16")  # the sampler option every model takes (`generate_with`), and train.precision's


def sampling_options(model_or_cls: Any, options: dict[str, Any] | list[str] | tuple[str, ...] | None,
                     ) -> dict[str, Any]:
    """Parse and check sampler options against a model's ``Sampling`` dataclass.

    `options` is a dict (Python) or ``KEY=VALUE`` strings (``--sample`` on the command line);
    values are coerced to the field's type. Returns the options that were set, ready to pass
    to ``generate(**options)``.

    Raises
    ------
    InputError
        Naming an option the method does not take (and the ones it takes), or a bad value.

    >>> from muni.evaluation.reference import Oracle
    >>> sampling_options(Oracle, ["guidance=2"])
    Traceback (most recent call last):
    ...
    muni.errors.InputError: sampling option 'guidance' is not one Oracle takes; it takes: precision
    """
    cls = model_or_cls if isinstance(model_or_cls, type) else type(model_or_cls)
    spec = model_or_cls.Sampling
    if options is None:
        return {}
    if not isinstance(options, dict):
        parsed = {}
        for item in options:
            key, sep, value = str(item).partition("=")
            if not sep or not key:
                raise InputError(f"--sample expects KEY=VALUE, got {item!r}")
            parsed[key.strip()] = value
        options = parsed
    options = dict(options)
    precision = options.pop("precision", None)
    if precision is not None and precision not in PRECISIONS:
        raise InputError(f"sampling option precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    known = [f.name for f in dataclasses.fields(spec)]
    for key in options:
        if key not in known:
            raise InputError(f"sampling option {key!r} is not one {cls.__name__} takes; "
                             f"it takes: {', '.join([*known, 'precision'])}")
    try:
        values = dataclasses.asdict(from_dict(spec, options, prefix="sampling option "))
    except ConfigError as e:
        raise InputError(str(e)) from None
    out = {k: v for k, v in values.items() if k in options and v is not None}
    if precision is not None:
        out["precision"] = precision
    for key, v in out.items():
        ok, want = _OPTION_RULES.get(key, (lambda _: True, ""))
        if not isinstance(v, str) and not ok(v):
            raise InputError(f"sampling option {key} must be {want}, got {v!r}")
    return out


def autocast(precision: str, device: torch.device):
    """The autocast context of `precision` (one of `PRECISIONS`) on `device`: bf16 matmuls and
    convolutions (the reductions autocast keeps in fp32 stay there), or a no-op for fp32. The
    training loop's forward and `generate_with` both use it."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def generate_with(model: Any, given: dict[str, torch.Tensor], targets: list[str], n: int | None = None,
                  generator: torch.Generator | None = None, **options: Any) -> dict[str, torch.Tensor]:
    """``model.generate`` with the options `sampling_options` returned: ``precision=bf16`` runs it
    under bf16 autocast (matmuls and convolutions in bf16; on a CPU with AMX, or a GPU, about
    twice the samples per second) and casts the floating outputs back to fp32; the method's
    own options are passed through."""
    precision = options.pop("precision", "fp32")
    try:
        device = next(model.parameters()).device
    except (AttributeError, StopIteration):  # reference models hold no weights
        device = torch.device("cpu")
    with autocast(precision, device):
        out = model.generate(given, targets, n=n, generator=generator, **options)
    return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}


@dataclass(frozen=True)
class Stage:
    """One training stage of a method.

    A stage other than the last ends after `steps` optimizer steps counted from the start of
    the run, or, in a run with a wall-clock budget (``train.minutes``), once `budget_fraction`
    of the budget (cumulative over the stages) has passed; the budget then decides alone. The
    training loop never moves a method back to an earlier stage.
    """

    name: str
    steps: int = 0                       # length in steps (runs without a time budget)
    budget_fraction: float = 0.0         # share of the time budget (runs with one)


def stage_at(stages: tuple[Stage, ...], step: int, budget_spent: float | None) -> int:
    """Index of the stage a run is in at `step` (steps done), with `budget_spent` the fraction of
    the time budget spent (None: no budget)."""
    bound = 0.0
    for i, s in enumerate(stages[:-1]):
        bound += s.steps if budget_spent is None else s.budget_fraction
        if (step if budget_spent is None else budget_spent) < bound:
            return i
    return len(stages) - 1


class Method(nn.Module):
    """Base of every trainable method: an ``nn.Module`` with ``loss(batch) -> dict`` and
    `generate`, its sampler options (``Sampling``, a dataclass of optional fields, None meaning
    the model config's value) and its training stages (one by default)."""

    method: ClassVar[str] = ""
    Sampling: ClassVar[type] = NoSampling
    # Whether a training step may leave a parameter out of the loss's graph (a stage's frozen
    # part, an expert skipped by a sub-sampled ELBO). DDP then needs `find_unused_parameters`,
    # which costs one autograd-graph traversal per step; a method whose every step touches every
    # parameter declares False (`muni.training.distributed.wrap`).
    may_skip_parameters: ClassVar[bool] = True
    # Whether `loss` takes incomplete tuples (``present``); the training loop refuses an
    # incomplete dataset for a method that declares False.
    handles_missing: ClassVar[bool] = True

    def stages(self) -> tuple[Stage, ...]:
        """The training stages, in order (one stage, ``train``, unless a method declares more)."""
        return (Stage("train"),)

    def current_stage(self) -> int:
        """Index of the stage the model is in (kept in its own buffers, so it resumes)."""
        return 0

    def enter_stage(self, index: int) -> None:
        """Move to stage `index` (the training loop calls it, with increasing indices)."""
        if index != 0:
            raise ValueError(f"{type(self).__name__} has one training stage, not {index + 1}")

    def frozen_parameter_names(self) -> list[str]:
        """Parameters frozen in the current stage (the EMA copies them exactly)."""
        return []

    def begin_step(self, step: int) -> None:
        """The training loop calls it before each step's loss with the steps done so far (also
        after a resume), for objectives that change with training progress. No-op by default."""


def presence(names: list[str], batch: dict[str, torch.Tensor],
             present: dict[str, torch.Tensor] | None) -> torch.Tensor | None:
    """Which sample has which modality: (B, M) bool in `names` order, or None when every sample
    of `batch` has every modality (the complete-tuple fast path).

    A modality missing from `batch` is absent for every sample; one missing from `present` is
    present wherever it is in `batch`.

    Raises
    ------
    InputError
        A mask for an unknown modality, of the wrong shape or dtype, or a sample with no
        modality at all.
    """
    b = next(iter(batch.values())).shape[0]
    present = present or {}
    check_modality_names(present, dict.fromkeys(names), what="present")
    for name, m in present.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool or tuple(m.shape) != (b,):
            raise InputError(f"present[{name!r}] must be a bool tensor of shape ({b},), got "
                             f"{getattr(m, 'dtype', type(m).__name__)} {tuple(getattr(m, 'shape', ()))}")
    if all(n in batch for n in names) and all(bool(m.all()) for m in present.values()):
        return None
    ref = next(iter(batch.values()))
    cols = [present.get(n, torch.ones(b, dtype=torch.bool, device=ref.device)) if n in batch
            else torch.zeros(b, dtype=torch.bool, device=ref.device) for n in names]
    mask = torch.stack(cols, 1).to(ref.device)               # (B, M)
    if not bool(mask.any(1).all()):
        raise InputError(f"sample {int((~mask.any(1)).nonzero()[0])} of the batch has no modality present")
    return mask


def check_kind_weights(weights: dict[str, float]) -> None:
    """Refuse kind weights with an unknown kind or a weight that is not a finite number >= 0.

    >>> check_kind_weights({"imgae": 1.0})
    Traceback (most recent call last):
    ...
    muni.errors.ConfigError: kind_weights: unknown kind 'imgae'; the kinds are image, categorical, text, audio
    """
    for kind, w in weights.items():
        if kind not in KINDS:
            raise ConfigError(f"kind_weights: unknown kind {kind!r}; the kinds are {', '.join(KINDS)}")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"kind_weights.{kind}: expected a finite number >= 0, got {w!r}")


@runtime_checkable
class Generative(Protocol):
    """What the evaluation harness needs of a model."""

    modalities: dict[str, Modality]
    Sampling: type

    def generate(self, given: dict[str, torch.Tensor], targets: list[str], n: int | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]: ...


def check_generate_args(modalities: dict[str, Modality], given: dict[str, torch.Tensor],
                        targets: list[str], n: int | None) -> int:
    """Validate `generate` arguments at the boundary; return the batch size.

    Raises `InputError` naming the offending modality or argument.
    """
    if not isinstance(given, dict):
        raise InputError(f"given must be a dict of modality name -> tensor, got {type(given).__name__}")
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)):
        raise InputError(f"targets must be a list of modality names, got {targets!r}")
    if not targets:
        raise InputError("targets is empty: name at least one modality to generate")
    bad = [t for t in targets if not isinstance(t, str)]
    if bad:
        raise InputError(f"targets must be modality names (strings), got {bad[0]!r}")
    check_modality_names(given, modalities, what="given")
    check_modality_names(targets, modalities, what="targets")
    if len(set(targets)) != len(targets):
        raise InputError(f"targets has duplicates: {list(targets)}")
    sizes = set()
    for name, x in given.items():
        modalities[name].check_batch(x, what="given")
        sizes.add(x.shape[0])
    if len(sizes) > 1:
        raise InputError(f"given tensors have different batch sizes: "
                         f"{ {k: v.shape[0] for k, v in given.items()} }")
    if given:
        b = sizes.pop()
        if n is not None and n != b:
            raise InputError(f"n={n} disagrees with the batch size {b} of the given tensors")
        if b < 1:
            raise InputError("given tensors have batch size 0")
        return b
    if n is None or isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"unconditional generation needs n >= 1, got n={n!r}")
    return n


def check_generate_output(modalities: dict[str, Modality], out: dict[str, torch.Tensor],
                          targets: list[str], n: int) -> None:
    """Raise `InputError` naming the modality when a model's output breaks the protocol."""
    for name in targets:
        if name not in out:
            raise InputError(f"model did not return target modality {name!r}")
        modalities[name].check_batch(out[name], what="generated output")
        if out[name].shape[0] != n:
            raise InputError(f"generated {name!r} has batch size {out[name].shape[0]}, expected {n}")

"""The one model API every method (and every reference model) satisfies.

Training: ``loss(batch) -> dict[str, Tensor]`` where ``"loss"`` is the scalar to minimise and
every other entry is a logged term (detached scalars).

Generation: ``generate(given, targets, n=None, generator=None) -> dict[str, Tensor]``:
- ``given`` maps observed modality names to batches in model format (all the same size B);
- ``targets`` names the modalities to produce; the result holds exactly those, each in model
  format with batch size B (or ``n`` when ``given`` is empty);
- an empty ``given`` means unconditional joint sampling of ``targets`` (``n`` required).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch

from muni.errors import ConfigError, InputError
from muni.modalities.base import KINDS, Modality, check_modality_names


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

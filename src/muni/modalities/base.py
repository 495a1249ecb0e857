"""The modality layer every dataset and model shares.

A `Modality` declares what one entry of the batch dict is: its name, its kind, the shape of
one sample and, for discrete kinds, its number of classes / vocabulary. Batches everywhere
are ``dict[str, Tensor]`` keyed by modality name, in the *model format* below.

Model format per kind (first dimension is the batch):
    image        float32 in [0, 1], (B, C, H, W)
    categorical  int64 class index, (B,)
    text         int64 token ids, (B, L), padded with `PAD_ID` = 0 after the end token
    audio        float32 normalised log-mel spectrogram, (B, 1, n_mels, frames),
                 roughly in [-1, 1]; `params` carry what is needed to invert it to a WAV
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from muni.errors import InputError

Kind = Literal["image", "categorical", "text", "audio"]
KINDS: tuple[str, ...] = ("image", "categorical", "text", "audio")
PAD_ID = 0


@dataclass(frozen=True)
class Modality:
    """Declaration of one modality.

    Attributes:
        name: key of this modality in every batch dict.
        kind: one of ``KINDS``.
        shape: shape of one sample: (C, H, W) image, () categorical, (L,) text,
            (1, n_mels, frames) audio.
        num_classes: classes of a categorical modality, vocabulary size of text.
        params: kind-specific, JSON-serialisable facts: ``vocab`` (list of tokens) for text,
            ``class_names`` for categorical, spectrogram parameters for audio.
    """

    name: str
    kind: Kind
    shape: tuple[int, ...]
    num_classes: int | None = None
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.kind in ("categorical", "text") and not self.num_classes:
            raise ValueError(f"modality {self.name!r} of kind {self.kind} needs num_classes")

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("categorical", "text")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "num_classes": self.num_classes, "params": self.params}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Modality":
        return cls(name=d["name"], kind=d["kind"], shape=tuple(d["shape"]),
                   num_classes=d.get("num_classes"), params=dict(d.get("params") or {}))

    def check_batch(self, x: torch.Tensor, *, what: str = "input") -> None:
        """Raise `InputError` naming this modality when `x` is not a batch in model format."""
        if not isinstance(x, torch.Tensor):
            raise InputError(f"{what} for modality {self.name!r} must be a tensor, got {type(x).__name__}")
        if x.dim() != len(self.shape) + 1:
            raise InputError(f"{what} for modality {self.name!r} must be batch-first with shape "
                             f"(B, {', '.join(map(str, self.shape))}), got shape {tuple(x.shape)}")
        if tuple(x.shape[1:]) != tuple(self.shape):
            raise InputError(
                f"{what} for modality {self.name!r} has per-sample shape {tuple(x.shape[1:])}, "
                f"expected {tuple(self.shape)} (batch-first tensor of shape (B, {', '.join(map(str, self.shape))}))"
            )
        if self.is_discrete:
            if x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                raise InputError(f"{what} for modality {self.name!r} must hold integer ids, got {x.dtype}")
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= int(self.num_classes)):
                raise InputError(
                    f"{what} for modality {self.name!r} has ids outside [0, {self.num_classes - 1}]")
        elif x.dtype != torch.float32:
            raise InputError(f"{what} for modality {self.name!r} must be a float32 tensor, got {x.dtype}")
        elif x.numel() and not bool(torch.isfinite(x).all()):
            raise InputError(f"{what} for modality {self.name!r} contains NaN or infinite values")


def check_modality_names(names, modalities: dict[str, Modality], *, what: str) -> None:
    """Raise `InputError` when a name is not one of the model's modalities."""
    for n in names:
        if n not in modalities:
            raise InputError(f"unknown modality {n!r} in {what}; this model has: {', '.join(modalities)}")

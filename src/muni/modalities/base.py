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

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from muni.errors import InputError

Kind = Literal["image", "categorical", "text", "audio"]
KINDS: tuple[str, ...] = ("image", "categorical", "text", "audio")
PAD_ID = 0
# A modality name is a batch key and a file stem in every output: never a path.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


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
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise ValueError(f"modality name {self.name!r} must be a letter then up to 63 letters, "
                             f"digits or underscores")
        if self.kind not in KINDS:
            raise ValueError(f"modality {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if not all(type(d) is int and d >= 1 for d in self.shape):
            raise ValueError(f"modality {self.name!r}: shape {self.shape!r} must hold integers >= 1")
        if self.num_classes is not None and not (type(self.num_classes) is int and self.num_classes >= 1):
            raise ValueError(f"modality {self.name!r}: num_classes {self.num_classes!r} must be an "
                             f"integer >= 1")
        if self.kind in ("categorical", "text") and not self.num_classes:
            raise ValueError(f"modality {self.name!r} of kind {self.kind} needs num_classes")
        self._check_params()

    def _check_params(self) -> None:
        """The kind-specific `params` a checkpoint may carry: right types and sizes."""
        p, where = self.params, f"modality {self.name!r}: params"
        if not isinstance(p, dict):
            raise ValueError(f"{where} must be a JSON object, got {type(p).__name__}")
        want = {"image": 3, "categorical": 0, "text": 1, "audio": 3}[self.kind]
        if len(self.shape) != want:
            raise ValueError(f"modality {self.name!r}: a {self.kind} sample has {want} dimensions, "
                             f"shape {self.shape!r}")
        key = {"categorical": "class_names", "text": "vocab"}.get(self.kind)
        if key in p and not (isinstance(p[key], list) and len(p[key]) == self.num_classes
                             and all(isinstance(t, str) for t in p[key])):
            raise ValueError(f"{where}.{key} must be a list of {self.num_classes} strings")
        if self.kind == "audio":
            from muni.modalities.audio import AUDIO_PARAMS

            a = {**AUDIO_PARAMS, **p}
            for key in AUDIO_PARAMS:
                v = a[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise ValueError(f"{where}.{key} must be a finite number, got {v!r}")
            rules = [(all(type(a[k]) is int and a[k] >= 1 for k in ("sample_rate", "n_fft", "hop_length",
                                                                     "n_mels", "frames")),
                      "sample_rate, n_fft, hop_length, n_mels and frames must be integers >= 1"),
                     (a["hop_length"] <= a["n_fft"], "hop_length must be <= n_fft"),
                     (0 <= a["fmin"] < a["fmax"] <= a["sample_rate"] / 2, "needs 0 <= fmin < fmax <= sample_rate / 2"),
                     (a["log_eps"] > 0 and a["log_lo"] < a["log_hi"], "needs log_eps > 0 and log_lo < log_hi"),
                     (self.shape[0] == 1 and p.get("n_mels", self.shape[1]) == self.shape[1]
                      and p.get("frames", self.shape[2]) == self.shape[2],
                      "the shape must be (1, n_mels, frames)")]
            for ok, want in rules:
                if not ok:
                    raise ValueError(f"{where}: {want}")

    @property
    def is_discrete(self) -> bool:
        return self.kind in ("categorical", "text")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape),
                "num_classes": self.num_classes, "params": self.params}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Modality":
        """Inverse of `to_json`; a malformed entry is a `ValueError` naming the field."""
        if not isinstance(d, dict) or not isinstance(d.get("shape"), list):
            raise ValueError(f"modality entry {d!r} needs a name, a kind and a shape list")
        params = d.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"modality {d.get('name')!r}: params must be a JSON object")
        return cls(name=d.get("name"), kind=d.get("kind"), shape=tuple(d["shape"]),
                   num_classes=d.get("num_classes"), params=dict(params))

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

"""The dataset contract every benchmark follows.

A `MultimodalDataset` holds one split entirely in memory: ``storage[name]`` is a tensor with
the split's samples along dim 0, in a compact storage dtype (images as uint8), and
``batch(indices)`` returns the model format of `muni.modalities.base` in one vectorised step
(no per-item work). ``factors`` holds the ground-truth content of every sample (``digit``,
``quadrant``, and private factors such as ``writer`` or ``speaker``) for evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from muni.modalities.base import Modality


@dataclass
class MultimodalDataset(torch.utils.data.Dataset):
    """One split of a multimodal dataset, in memory.

    Attributes:
        name: dataset name (a key of `muni.data.DATASETS`).
        split: "train" or "test".
        modalities: the modality declarations, in a fixed order.
        storage: ``{name: (N, ...)}`` tensors; images uint8 in [0, 255], others as in model format.
        factors: ``{factor: (N,) int64}`` ground-truth content and private factors.
        info: recipe facts (preset, seed, recipe version, checksum) for reports.
    """

    name: str
    split: str
    modalities: dict[str, Modality]
    storage: dict[str, torch.Tensor]
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = {k: v.shape[0] for k, v in {**self.storage, **self.factors}.items()}
        if len(set(n.values())) > 1:
            raise ValueError(f"dataset {self.name}/{self.split}: inconsistent lengths {n}")
        missing = set(self.modalities) - set(self.storage)
        if missing:
            raise ValueError(f"dataset {self.name}/{self.split}: no storage for {sorted(missing)}")

    def __len__(self) -> int:
        return next(iter(self.storage.values())).shape[0]

    def batch(self, indices: torch.Tensor | list[int] | slice,
              modalities: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Samples at `indices` in model format: ``{name: (B, ...)}``."""
        names = list(self.modalities) if modalities is None else modalities
        out = {}
        for name in names:
            x = self.storage[name][indices]
            if self.modalities[name].kind == "image" and x.dtype == torch.uint8:
                x = x.float().div_(255.0)
            out[name] = x
        return out

    def factor_batch(self, indices) -> dict[str, torch.Tensor]:
        return {k: v[indices] for k, v in self.factors.items()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch([i]).items()}

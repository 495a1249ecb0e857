"""The dataset contract every benchmark follows.

A `MultimodalDataset` holds one split entirely in memory: ``storage[name]`` is a tensor with
the split's samples along dim 0, in a compact storage dtype (images as uint8), and
``batch(indices)`` returns the model format of `muni.modalities.base` in one vectorised step
(no per-item work). ``factors`` holds the ground-truth content of every sample (``digit``,
``quadrant``, and private factors such as ``writer`` or ``speaker``) for evaluation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
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
        present: ``{modality: (N,) bool}`` for modalities some samples lack (see above).
    """

    name: str
    split: str
    modalities: dict[str, Modality]
    storage: dict[str, torch.Tensor]
    factors: dict[str, torch.Tensor] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    present: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = {k: v.shape[0] for k, v in {**self.storage, **self.factors}.items()}
        n.update({f"present/{k}": v.shape[0] for k, v in self.present.items()})
        if len(set(n.values())) > 1:
            raise ValueError(f"dataset {self.name}/{self.split}: inconsistent lengths {n}")
        missing = set(self.modalities) - set(self.storage)
        if missing:
            raise ValueError(f"dataset {self.name}/{self.split}: no storage for {sorted(missing)}")
        for k, v in self.present.items():
            if k not in self.modalities or v.dtype != torch.bool or v.dim() != 1:
                raise ValueError(f"dataset {self.name}/{self.split}: present[{k!r}] must be a (N,) bool "
                                 f"mask of one of its modalities")
        # Fixed from here on (the masks are not edited in place); read on every training step.
        self._complete = all(bool(v.all()) for v in self.present.values())
        if self.present and len(self):
            none = ~torch.stack([self.present.get(k, torch.ones(len(self), dtype=torch.bool))
                                 for k in self.modalities]).any(0)
            if none.any():
                raise ValueError(f"dataset {self.name}/{self.split}: sample {int(none.nonzero()[0])} has "
                                 f"no modality present")

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

    @property
    def complete(self) -> bool:
        """Whether every sample has every modality."""
        return self._complete

    def present_batch(self, indices, modalities: list[str] | None = None) -> dict[str, torch.Tensor] | None:
        """``{name: (B,) bool}`` presence of the samples at `indices` (every name in `modalities`,
        default all), or None when the dataset is complete."""
        if self.complete:
            return None
        names = list(self.modalities) if modalities is None else modalities
        out = {k: self.present[k][indices] for k in names if k in self.present}
        b = next(iter(self.present.values()))[indices].shape[0]
        return {k: out[k] if k in out else torch.ones(b, dtype=torch.bool) for k in names}

    def factor_batch(self, indices) -> dict[str, torch.Tensor]:
        return {k: v[indices] for k, v in self.factors.items()}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.batch([i]).items()}


def make_incomplete(ds: MultimodalDataset, fraction: float, seed: int = 0) -> MultimodalDataset:
    """`ds` with a share `fraction` of its tuples made incomplete (the benchmark of training on
    partly-paired data): each chosen tuple keeps a uniformly drawn non-empty proper subset of
    its modalities; the others are marked absent and their storage rows zeroed. The choice
    depends on `seed` and the dataset alone. Returns `ds` itself when `fraction` is 0."""
    if fraction == 0:
        return ds
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    names, n = list(ds.modalities), len(ds)
    m = len(names)
    if m < 2:
        raise ValueError(f"dataset {ds.name} has one modality: no tuple can lose one")
    rng = np.random.default_rng([seed, 0x1C0])             # a stream of its own
    chosen = rng.permutation(n)[:round(fraction * n)]
    codes = rng.integers(1, 2 ** m - 1, size=len(chosen))  # non-empty, proper subsets kept
    keep = np.ones((n, m), dtype=bool)
    keep[chosen] = (codes[:, None] >> np.arange(m)) & 1 == 1
    keep = torch.from_numpy(keep)
    present = {k: ds.present.get(k, torch.ones(n, dtype=torch.bool)) & keep[:, i] for i, k in enumerate(names)}
    lost = ~torch.stack(list(present.values()), 1).any(1)  # tuples already partial may empty out
    for i, k in enumerate(names):
        present[k] = present[k] | (lost & (ds.present.get(k, torch.ones(n, dtype=torch.bool))))
    storage = {}
    for k, x in ds.storage.items():
        gone = ~present[k]
        storage[k] = x.clone() if gone.any() else x
        storage[k][gone] = 0
    info = {**ds.info, "incomplete": fraction}
    return dataclasses.replace(ds, storage=storage, present=present, info=info)


def complete_tuples(ds: MultimodalDataset) -> MultimodalDataset:
    """The samples of `ds` that have every modality and a known value (not -1) of every factor:
    what evaluation conditions on and compares with. Returns `ds` itself when that is all of it."""
    keep = torch.ones(len(ds), dtype=torch.bool)
    for v in ds.present.values():
        keep &= v
    for v in ds.factors.values():
        keep &= v >= 0
    if bool(keep.all()):
        return ds
    rows = keep.nonzero().flatten()
    return dataclasses.replace(ds, storage={k: v[rows] for k, v in ds.storage.items()},
                               factors={k: v[rows] for k, v in ds.factors.items()}, present={},
                               info={**ds.info, "complete_of": len(ds)})

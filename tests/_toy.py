"""A tiny model and in-memory dataset for training-infrastructure tests (reusable elsewhere).

`toy_dataset` holds an "image" modality (1x2x2 floats) and a 3-class "label"; `ToyModel` is a
denoising autoencoder plus a classifier head whose loss is a per-sample mean, so averaging
over DDP ranks equals the single-process loss on the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muni.data.base import MultimodalDataset
from muni.methods.base import Method
from muni.modalities.base import Modality


def toy_dataset(n: int = 64, seed: int = 0) -> MultimodalDataset:
    """`n` samples: ``image`` (n, 1, 2, 2) float in [0, 1] determined by ``label`` (n,) in {0,1,2}."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[0.1, 0.9, 0.1, 0.9], [0.9, 0.1, 0.9, 0.1], [0.5, 0.5, 0.9, 0.1]])
    image = (centers[label] + 0.05 * torch.randn(n, 4, generator=g)).clamp(0, 1).view(n, 1, 2, 2)
    mods = {"image": Modality("image", "image", (1, 2, 2)),
            "label": Modality("label", "categorical", (), num_classes=3)}
    return MultimodalDataset("toy", "train", mods, {"image": image, "label": label},
                             factors={"digit": label.clone()})


class ToyModel(Method):
    """Denoising autoencoder on ``image`` + classifier of ``label`` from ``image``.

    Parameters
    ----------
    noise : float
        Std of the input noise drawn from the global torch RNG (0 = deterministic loss).
    max_weight : float, optional
        Return a NaN loss whenever a weight's magnitude exceeds this (an overflow that a
        too-high learning rate causes): a state past it fails on every later step.
    """

    def __init__(self, noise: float = 0.1, max_weight: float | None = None) -> None:
        super().__init__()
        self.noise, self.max_weight = noise, max_weight
        self.enc = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
        self.dec = nn.Linear(16, 4)
        self.head = nn.Linear(16, 3)
        self.prior = nn.Parameter(torch.zeros(16))  # used by `generate` only (unused in `loss`)
        self.modalities = {"image": Modality("image", "image", (1, 2, 2)),
                           "label": Modality("label", "categorical", (), num_classes=3)}

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"].flatten(1)                                  # (B, 4)
        h = self.enc(x + self.noise * torch.randn_like(x))             # (B, 16)
        mse = F.mse_loss(self.dec(h), x)
        ce = F.cross_entropy(self.head(h), batch["label"])
        loss = mse + ce
        if self.max_weight is not None and max(p.abs().max() for p in self.parameters()) > self.max_weight:
            loss = loss * float("nan")
        return {"loss": loss, "mse": mse.detach(), "ce": ce.detach()}

    @torch.no_grad()
    def generate(self, given, targets, n=None, generator=None):
        b = next(iter(given.values())).shape[0] if given else n
        h = (self.enc(given["image"].flatten(1)) if "image" in given
             else self.prior + torch.randn(b, 16, generator=generator))
        out = {"image": self.dec(h).clamp(0, 1).view(b, 1, 2, 2), "label": self.head(h).argmax(1)}
        return {k: out[k] for k in targets}

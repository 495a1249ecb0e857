"""Hand-built tiny datasets and exact fake classifiers for the evaluation tests.

The fake images carry their content in two pixels (digit in channel 0, quadrant in channel 1
of pixel (0, 0)), and `FakeClassifiers` reads those pixels back, so every metric has a known
exact value.
"""

from __future__ import annotations

import torch

from muni.data.base import MultimodalDataset
from muni.evaluation.classifiers import content_factors
from muni.methods.base import check_generate_args
from muni.modalities.base import Modality

DIGIT_STEP, QUAD_STEP = 20, 50


def encode_images(digit: torch.Tensor, quadrant: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, 3, 4, 4) uint8 images: random texture, content in pixel (0, 0)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (len(digit), 3, 4, 4), generator=g, dtype=torch.uint8)
    x[:, 0, 0, 0] = (digit * DIGIT_STEP).to(torch.uint8)
    x[:, 1, 0, 0] = (quadrant * QUAD_STEP).to(torch.uint8)
    return x


def tiny_polymnist(repeats: int = 1, views: int = 3) -> MultimodalDataset:
    """Every (digit, quadrant) pair `repeats` times: 40 * repeats tuples."""
    d = torch.arange(10).repeat_interleave(4).repeat(repeats)
    q = torch.arange(4).repeat(10 * repeats)
    mods = {f"view{k}": Modality(f"view{k}", "image", (3, 4, 4)) for k in range(views)}
    mods["digit"] = Modality("digit", "categorical", (), 10)
    mods["quadrant"] = Modality("quadrant", "categorical", (), 4)
    storage = {f"view{k}": encode_images(d, q, k) for k in range(views)}
    storage.update(digit=d.clone(), quadrant=q.clone())
    return MultimodalDataset("polymnist-quadrant", "test", mods, storage, {"digit": d, "quadrant": q})


def tiny_ita(repeats: int = 1) -> MultimodalDataset:
    """Image / text / audio tuples: text = [digit + 1, quadrant + 11], audio carries the digit."""
    d = torch.arange(10).repeat_interleave(4).repeat(repeats)
    q = torch.arange(4).repeat(10 * repeats)
    mods = {"image": Modality("image", "image", (3, 4, 4)),
            "text": Modality("text", "text", (2,), 15),
            "audio": Modality("audio", "audio", (1, 32, 64))}
    audio = torch.rand(len(d), 1, 32, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    audio[:, 0, 0, 0] = d.float() / 10
    storage = {"image": encode_images(d, q, 0), "text": torch.stack([d + 1, q + 11], 1), "audio": audio}
    return MultimodalDataset("digits-ita", "test", mods, storage, {"digit": d, "quadrant": q})


class FakeClassifiers:
    """Reads the content back exactly; features = the first 6 values of the flattened sample."""

    def __init__(self, dataset: MultimodalDataset):
        self.modalities = dataset.modalities
        self.content = content_factors(dataset)
        self.accuracy = {m: {f: 1.0 for f in fs} for m, fs in self.content.items()}

    def usable(self, threshold: float = 0.9):
        return self, {}  # every head is exact

    def predict(self, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        kind = self.modalities[modality].kind
        if kind == "categorical":
            return {modality: x.long()}
        if kind == "text":
            return {"digit": (x[:, 0] - 1).clamp(0, 9), "quadrant": (x[:, 1] - 11).clamp(0, 3)}
        if kind == "audio":
            return {"digit": (x[:, 0, 0, 0] * 10).round().long().clamp(0, 9)}
        px = (x[:, :2, 0, 0] * 255).round().long()
        return {"digit": (px[:, 0] // DIGIT_STEP).clamp(0, 9), "quadrant": (px[:, 1] // QUAD_STEP).clamp(0, 3)}

    def features(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(1)[:, :6]


class HalfRightModel:
    """Given a digit, draws views of that digit when digit < 5, of digit + 1 otherwise."""

    def __init__(self, dataset: MultimodalDataset):
        self.dataset, self.modalities = dataset, dataset.modalities

    def generate(self, given, targets, n=None, generator=None):
        check_generate_args(self.modalities, given, targets, n)
        d = given["digit"]
        shown = torch.where(d < 5, d, (d + 1) % 10)
        idx = torch.stack([torch.nonzero(self.dataset.factors["digit"] == v).flatten()[0] for v in shown])
        return self.dataset.batch(idx, list(targets))


class BrokenModel:
    """Returns a wrong shape for one modality, or leaves one target out."""

    def __init__(self, dataset: MultimodalDataset, mode: str, victim: str):
        self.dataset, self.modalities, self.mode, self.victim = dataset, dataset.modalities, mode, victim

    def generate(self, given, targets, n=None, generator=None):
        b = check_generate_args(self.modalities, given, targets, n)
        out = self.dataset.batch(torch.arange(b) % len(self.dataset), list(targets))
        if self.mode == "missing":
            out.pop(self.victim, None)
        elif self.victim in out:
            out[self.victim] = out[self.victim][..., :-1]
        return out

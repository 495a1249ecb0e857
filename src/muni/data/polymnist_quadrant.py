"""PolyMNIST-Quadrant-Labels: K RGB views of one digit class in one quadrant, plus two labels.

Each tuple draws a digit class and a quadrant (all 40 combinations equally often). View k
shows a *different* MNIST instance (writer) of that class, resized and placed in that
quadrant over a random crop of background photograph k; strokes invert the crop colours as
in the original PolyMNIST, with the digit intensity as a smooth alpha:
``x = crop * (1 - a) + (1 - crop) * a``.

Quadrant convention (also for `muni.data.digits_ita`): 0 = upper-left, 1 = upper-right,
2 = lower-left, 3 = lower-right.

Factors: ``digit``, ``quadrant``, ``writer{k}`` (index into the split's MNIST source) and
``crop_y{k}``, ``crop_x{k}`` (crop corner in background k).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from muni.data.cache import SplitArrays
from muni.data.sources import load_backgrounds, load_mnist
from muni.modalities.base import Modality

RECIPE_VERSION = 1
QUADRANTS = ("upper-left", "upper-right", "lower-left", "lower-right")
DIGITS = tuple(str(d) for d in range(10))
CHUNK = 8192

PRESETS: dict[str, dict] = {
    "quick": dict(canvas=32, digit_size=16, n_train=20_000, n_test=2_000),
    "paper": dict(canvas=64, digit_size=28, n_train=220_000, n_test=10_000),
}


@dataclass(frozen=True)
class Config:
    """Recipe of PolyMNIST-Quadrant (defaults = the quick preset)."""

    n_views: int = 3
    canvas: int = 32
    digit_size: int = 16
    n_train: int = 20_000
    n_test: int = 2_000
    mnist_source: str = "idx"


def split_rng(name: str, seed: int, split: str) -> np.random.Generator:
    """Independent generator per (dataset, seed, split)."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), ("train", "test").index(split)])


def balanced_content(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(digit, quadrant), each (n,) int64, every one of the 40 pairs equally often (up to n % 40)."""
    pair = rng.permutation(np.arange(n) % 40)
    return pair % 10, pair // 10


def resize_digits(images: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) uint8 -> (N, size, size) float32 in [0, 1], antialiased bilinear, all at once."""
    x = torch.from_numpy(images).float().div_(255.0)[:, None]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x[:, 0].clamp_(0.0, 1.0).numpy()


def place_in_quadrant(digits: np.ndarray, quadrant: np.ndarray, canvas: int) -> np.ndarray:
    """Centre each (d, d) digit in its quadrant of a black canvas: (N, canvas, canvas) float32."""
    n, d = digits.shape[0], digits.shape[-1]
    half = canvas // 2
    off = (half - d) // 2
    out = np.zeros((n, canvas, canvas), np.float32)
    for q in range(4):
        sel = quadrant == q
        r, c = (q // 2) * half + off, (q % 2) * half + off
        out[sel, r:r + d, c:c + d] = digits[sel]
    return out


def sample_writers(rng: np.random.Generator, labels: np.ndarray, digit: np.ndarray,
                   k: int) -> np.ndarray:
    """(N, k) indices into `labels`: k *different* instances of class ``digit[i]`` per row."""
    out = np.empty((len(digit), k), np.int64)
    for c in range(10):
        pool, rows = np.flatnonzero(labels == c), np.flatnonzero(digit == c)
        pick = rng.integers(0, len(pool), (len(rows), k))
        while True:
            s = np.sort(pick, axis=1)
            dup = np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))
            if dup.size == 0:
                break
            pick[dup] = rng.integers(0, len(pool), (dup.size, k))
        out[rows] = pool[pick]
    return out


def modalities(cfg: Config) -> dict[str, Modality]:
    views = {f"view{k}": Modality(f"view{k}", "image", (3, cfg.canvas, cfg.canvas))
             for k in range(cfg.n_views)}
    return {**views,
            "digit": Modality("digit", "categorical", (), 10, {"class_names": list(DIGITS)}),
            "quadrant": Modality("quadrant", "categorical", (), 4, {"class_names": list(QUADRANTS)})}


def build(cfg: Config, split: str, seed: int, data_dir=None) -> tuple[SplitArrays, dict[str, str]]:
    """Build one split. Returns its arrays and the checksums of the sources used."""
    images, labels, mnist_sum = load_mnist(split, data_dir, cfg.mnist_source)
    backgrounds, bg_sum = load_backgrounds(cfg.n_views, data_dir)
    n = cfg.n_train if split == "train" else cfg.n_test
    rng = split_rng("polymnist-quadrant", seed, split)
    digit, quadrant = balanced_content(rng, n)
    writers = sample_writers(rng, labels, digit, cfg.n_views)
    c = cfg.canvas
    corners = [(rng.integers(0, bg.shape[0] - c + 1, n), rng.integers(0, bg.shape[1] - c + 1, n))
               for bg in backgrounds]
    small = resize_digits(images, cfg.digit_size)
    storage = {f"view{k}": np.empty((n, 3, c, c), np.uint8) for k in range(cfg.n_views)}
    ar = np.arange(c)
    starts = range(0, n, CHUNK)
    for s in tqdm(starts, desc=f"polymnist-quadrant {split}", disable=len(starts) < 4, leave=False):
        sl = slice(s, min(s + CHUNK, n))
        for k, bg in enumerate(backgrounds):
            ys, xs = corners[k][0][sl], corners[k][1][sl]
            crop = bg[ys[:, None, None] + ar[None, :, None], xs[:, None, None] + ar[None, None, :]]
            crop = crop.transpose(0, 3, 1, 2).astype(np.float32) / 255.0       # (b, 3, c, c)
            a = place_in_quadrant(small[writers[sl, k]], quadrant[sl], c)[:, None]
            x = crop * (1.0 - a) + (1.0 - crop) * a
            storage[f"view{k}"][sl] = np.rint(x * 255.0).astype(np.uint8)
    storage["digit"], storage["quadrant"] = digit, quadrant
    factors = {"digit": digit, "quadrant": quadrant}
    for k in range(cfg.n_views):
        factors[f"writer{k}"] = writers[:, k]
        factors[f"crop_y{k}"], factors[f"crop_x{k}"] = corners[k]
    return SplitArrays(storage, factors), {f"mnist_{split}": mnist_sum, "backgrounds": bg_sum}

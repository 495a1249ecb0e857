"""Sample quality and diversity in the evaluation classifiers' feature space.

- `frechet_distance`: the Fréchet distance between Gaussians fitted to two feature sets,
  ``|mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})`` (Heusel et al. 2017, Eq. 6), with the
  classifier's penultimate layer in place of Inception features.
- `sample_quality`: per generated modality, the Fréchet distance of unconditional samples to
  the real test split (bootstrap interval over the generated samples), and for datasets with
  several views of one shape the **cross-view diversity ratio**: mean feature distance between
  the views of one generated tuple over the same for real test tuples (1 = views differ in
  handwriting as much as real ones; 0 = copies).
- `diversity`: for a fixed condition, the mean pairwise feature distance among several
  generations, as a ratio to the same among real test samples with the same content; and the
  **coherent diversity**, the same ratio where a pair only counts when the classifier reads
  both samples as the requested content (an incoherent pair adds distance 0). Diversity alone
  rewards noise; coherent diversity does not: noise scores 0 (nothing is coherent), a model
  that returns one fixed sample per class scores 0 (coherent copies), real data scores about 1
  (`docs/results/reference.md`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from muni.data.base import MultimodalDataset
from muni.evaluation.coherence import (Metric, TaskResult, condition_indices,
                                       generate_batched, task_generator)
from muni.methods.base import Generative

N_BOOT_FD = 50


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets of shape (N, F).

    ``Tr((S_1 S_2)^{1/2})`` is computed as ``Tr((S_1^{1/2} S_2 S_1^{1/2})^{1/2})``, a symmetric
    PSD square root (eigendecomposition), exact where a general `sqrtm` is not.
    """
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
    r1 = _sqrtm_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def features_batched(classifiers, modality: str, x: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Penultimate-layer features of `x`, shape (N, F), as float64 numpy."""
    return torch.cat([classifiers.features(modality, x[s:s + batch_size])
                      for s in range(0, len(x), batch_size)]).double().numpy()


def _mean_pairwise(f: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Mean pairwise Euclidean distance within each group: (G, R, F) -> (G,).

    With `keep` (G, R) bool, a pair counts its distance only when both members are kept and
    0 otherwise (the denominator stays ``R (R - 1)``): the coherent diversity's sum.
    """
    d = np.linalg.norm(f[:, :, None] - f[:, None], axis=-1)  # (G, R, R)
    if keep is not None:
        d = d * (keep[:, :, None] & keep[:, None])
    r = f.shape[1]
    return d.sum((1, 2)) / (r * (r - 1))


def _coherent(classifiers, modality: str, x: torch.Tensor, content: dict[str, torch.Tensor]) -> np.ndarray:
    """(N,) bool: the classifier reads every content factor of `modality` in `x` as `content`."""
    pred = classifiers.predict(modality, x)
    ok = torch.ones(len(x), dtype=torch.bool)
    for f in classifiers.content[modality]:
        ok &= pred[f] == content[f]
    return ok.numpy()


def _cross_view_distance(classifiers, views: list[str], batch: dict[str, torch.Tensor]) -> np.ndarray:
    """Per tuple: mean over view pairs (i, j) of ``|f_i(x_i) - f_i(x_j)|``, averaged over both nets.

    Each view has its own classifier, so both views of a pair are embedded by one network.
    """
    out = []
    for a, b in itertools.combinations(views, 2):
        for net in (a, b):
            fa = features_batched(classifiers, net, batch[a])
            fb = features_batched(classifiers, net, batch[b])
            out.append(np.linalg.norm(fa - fb, axis=1))
    return np.mean(out, 0)


def _ratio_interval(gen: np.ndarray, real: np.ndarray, seed: int, n_boot: int = 1000) -> Metric:
    """mean(gen) / mean(real) with a bootstrap over both samples independently."""
    rng = np.random.default_rng(seed)
    boots = [gen[rng.integers(0, len(gen), len(gen))].mean() / real[rng.integers(0, len(real), len(real))].mean()
             for _ in range(n_boot)]
    return {"value": float(gen.mean() / real.mean()), "low": float(np.quantile(boots, 0.025)),
            "high": float(np.quantile(boots, 0.975)), "n": len(gen), "interval": "bootstrap95"}


def sample_quality(model: Generative, dataset: MultimodalDataset, classifiers, n: int, seed: int,
                   samples: dict[str, torch.Tensor] | None = None, batch_size: int = 250) -> TaskResult:
    """Fréchet distance per generated modality and the cross-view diversity ratio.

    `samples` reuses unconditional generations (e.g. those of `coherence.unconditional`, which
    draws the same ones from the same seed); otherwise they are generated here.
    """
    mods = [m for m in dataset.modalities if dataset.modalities[m].kind != "categorical"]
    if samples is None:
        samples = generate_batched(model, {}, list(dataset.modalities), n,
                                   task_generator(seed, "unconditional"), batch_size, "unconditional")
    real = dataset.batch(torch.arange(len(dataset)), mods)
    metrics: dict[str, Metric] = {}
    for m in mods:
        fr = features_batched(classifiers, m, real[m])
        fg = features_batched(classifiers, m, samples[m])
        rng = np.random.default_rng(seed)
        fd = frechet_distance(fr, fg)
        boots = [frechet_distance(fr, fg[rng.integers(0, len(fg), len(fg))]) for _ in range(N_BOOT_FD)]
        # resampling with replacement inflates the FD (duplicates shrink the covariance), so the
        # percentile interval is shifted back by the bootstrap's own bias (mean(boots) - fd)
        bias = float(np.mean(boots)) - fd
        metrics[f"frechet:{m}"] = {"value": fd, "low": max(0.0, float(np.quantile(boots, 0.025)) - bias),
                                   "high": float(np.quantile(boots, 0.975)) - bias, "n": len(fg),
                                   "interval": "bias-corrected-bootstrap95"}
    views = [m for m in mods if dataset.modalities[m].kind == "image"]
    shapes = {dataset.modalities[v].shape for v in views}
    if len(views) > 1 and len(shapes) == 1:
        idx = condition_indices(dataset, n, seed)
        gen = _cross_view_distance(classifiers, views, samples)
        ref = _cross_view_distance(classifiers, views, dataset.batch(idx, views))
        metrics["cross_view_diversity"] = _ratio_interval(gen, ref, seed)
    return TaskResult(metrics)


def diversity(model: Generative, dataset: MultimodalDataset, classifiers, n: int, seed: int,
              given: tuple[str, ...], repeats: int = 8, batch_size: int = 250) -> TaskResult:
    """Within-condition diversity of every generated non-label modality, relative to real data.

    For each of `n` conditions, the `given` modalities of one test tuple are repeated
    `repeats` times; the mean pairwise feature distance among the generations is divided by
    the same among `repeats` real test samples sharing the target's content factors with the
    condition (``diversity:<m>``; 1 = as varied as the data, 0 = one fixed output), and the
    coherent diversity (``coherent_diversity:<m>``, pairs counted only where both samples are
    read as the target's content factors of the condition; the real reference is scored the
    same way, so classifier errors affect both).
    """
    idx = condition_indices(dataset, n, seed)
    cond = {k: v.repeat_interleave(repeats, 0) for k, v in dataset.batch(idx, list(given)).items()}
    targets = [m for m in dataset.modalities if m not in given and dataset.modalities[m].kind != "categorical"
               and classifiers.content[m]]
    name = "diversity:" + "+".join(given)
    out = generate_batched(model, cond, targets, n * repeats, task_generator(seed, name), batch_size, name)
    g = torch.Generator().manual_seed(int(seed))
    metrics: dict[str, Metric] = {}
    for m in targets:
        fg = features_batched(classifiers, m, out[m]).reshape(n, repeats, -1)
        keys = torch.stack([dataset.factors[f] for f in classifiers.content[m]], 1)  # (N, F)
        ref_idx = []
        for i in idx.tolist():
            pool = torch.nonzero((keys == keys[i]).all(1)).flatten()
            ref_idx.append(pool[torch.randint(len(pool), (repeats,), generator=g)])
        xr = dataset.batch(torch.cat(ref_idx), [m])[m]
        fr = features_batched(classifiers, m, xr).reshape(n, repeats, -1)
        dg, dr = _mean_pairwise(fg), _mean_pairwise(fr)
        metrics[f"diversity:{m}"] = _ratio_interval(dg, dr, seed)
        want = {f: dataset.factors[f][idx].repeat_interleave(repeats) for f in classifiers.content[m]}
        cg = _coherent(classifiers, m, out[m], want).reshape(n, repeats)
        cr = _coherent(classifiers, m, xr, want).reshape(n, repeats)
        metrics[f"coherent_diversity:{m}"] = _ratio_interval(_mean_pairwise(fg, cg), _mean_pairwise(fr, cr), seed)
    return TaskResult(metrics, {k: v[:repeats * 2] for k, v in cond.items()},
                      {k: v[:repeats * 2] for k, v in out.items()})

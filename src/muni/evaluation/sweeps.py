"""Coherence against one sampler option (prior NFE, guidance) and sampling speed."""

from __future__ import annotations

import time
from typing import Any

import torch

from muni.evaluation import coherence
from muni.evaluation.report import WithSampling


def sweep(model, dataset, clf, n: int, seed: int, option: str, values, task: str = "unconditional",
          factors: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """For each value of sampler option `option`: unconditional coherence (value and interval),
    or, with ``task="labels"``, Single-L→I and one-to-many coherence given each label factor."""
    out = {}
    for v in values:
        wrapped = WithSampling(model, **{option: v})
        if task == "unconditional":
            m = coherence.unconditional(wrapped, dataset, clf, n, seed).metrics["uncond_coherence"]
            out[f"{v:g}"] = {k: m[k] for k in ("value", "low", "high")}
            continue
        row = {}
        for f in factors:
            m = coherence.labels_to_modalities(wrapped, dataset, clf, n, seed, (f,)).metrics
            row[f"single_{f}"] = m[f"single_{f}"]["value"]
            row[f"one_to_many_{f}"] = m[f"one_to_many_{f}"]["value"]
        out[f"{v:g}"] = row
    return out


@torch.no_grad()
def sampling_speed(model, n: int = 64, options: tuple[dict[str, Any], ...] = ()) -> dict[str, float]:
    """Unconditional samples per second with each of the sampler `options` (default: none)."""
    names = list(model.modalities)
    out = {}
    for kw in options or ({},):
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        WithSampling(model, **kw).generate({}, names, n=n, generator=g)
        key = ", ".join(f"{k}={v}" for k, v in kw.items()) or "default"
        out[key] = round(n / (time.perf_counter() - t), 1)
    return out

"""Coherence metrics: conditional accuracy, joint coherence, one-to-many, the cross-modal matrix.

Every metric is a function of ``(model, dataset, classifiers, n, seed)`` over the **test split**.
The conditions are a fixed set of test indices drawn from ``seed`` alone
(`condition_indices`), so two models evaluated with the same seed see exactly the same
conditions. A metric value is a dict ``{"value", "low", "high", "n", "interval"}``: a Wilson
95% interval for rates of 0/1 outcomes, a percentile bootstrap (fixed seed) otherwise, plus
``"chance"`` where the exact chance level of the `independent` reference model is known
(`chance_all_match`: generations drawn from the data, independently of the condition and of
each other; computed from the test split's factor frequencies, averaged over the conditions).

Content factors: every modality carries the factors its classifier reads
(``classifiers.content[m]``: views and captions carry digit and quadrant, audio the digit, a
categorical label itself). A generated modality is judged only on the factors its givens
determine, so given only ``digit`` a view is never scored on its quadrant.
"""

from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from muni.data.base import MultimodalDataset
from muni.methods.base import Generative, check_generate_output

Metric = dict[str, Any]
Predictions = dict[str, dict[str, torch.Tensor]]
N_BOOT = 1000
Z95 = 1.959963984540054


@dataclass
class TaskResult:
    """What one task produces: its metrics and its generations (for sample sheets)."""

    metrics: dict[str, Metric]
    given: dict[str, torch.Tensor] = field(default_factory=dict)
    generated: dict[str, torch.Tensor] = field(default_factory=dict)


# ----------------------------------------------------------------------------- intervals
def wilson(successes: int, n: int, z: float = Z95) -> Metric:
    """Rate with its Wilson score interval (Wilson 1927), good near 0 and 1."""
    if n <= 0:
        raise ValueError("wilson: n must be positive")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return {"value": p, "low": low, "high": high,
            "n": n, "interval": "wilson95"}


def bootstrap(scores: np.ndarray | torch.Tensor, seed: int, statistic=np.mean,
              n_boot: int = N_BOOT) -> Metric:
    """Statistic of per-condition scores with a percentile bootstrap 95% interval."""
    x = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = np.array([statistic(x[i]) for i in idx])
    return {"value": float(statistic(x)), "low": float(np.quantile(boots, 0.025)),
            "high": float(np.quantile(boots, 0.975)), "n": len(x), "interval": "bootstrap95"}


def rate(scores: torch.Tensor, seed: int) -> Metric:
    """Mean of per-condition scores in [0, 1]: Wilson when they are 0/1, else bootstrap."""
    s = scores.double().flatten()
    if bool(((s == 0) | (s == 1)).all()):
        return wilson(int(s.sum()), s.numel())
    return bootstrap(s.numpy(), seed)


# ----------------------------------------------------------------------------- conditions
def condition_indices(dataset: MultimodalDataset, n: int, seed: int) -> torch.Tensor:
    """The fixed test conditions: `n` indices into `dataset` chosen by `seed` only.

    Without replacement while ``n <= len(dataset)``, then whole further permutations.
    """
    g = torch.Generator().manual_seed(int(seed))
    reps = -(-n // len(dataset))
    return torch.cat([torch.randperm(len(dataset), generator=g) for _ in range(reps)])[:n]


def task_generator(seed: int, task: str) -> torch.Generator:
    """A generator seeded by the evaluation seed and the task name (same for every model)."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(task.encode()))


def generate_batched(model: Generative, given: dict[str, torch.Tensor], targets: list[str],
                     n: int, generator: torch.Generator, batch_size: int = 250,
                     desc: str = "generate") -> dict[str, torch.Tensor]:
    """Call ``model.generate`` in batches and check every output against the protocol."""
    outs: list[dict[str, torch.Tensor]] = []
    starts = range(0, n, batch_size)
    for s in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 2):
        b = min(batch_size, n - s)
        chunk = {k: v[s:s + b] for k, v in given.items()}
        with torch.no_grad():
            out = model.generate(chunk, list(targets), n=None if chunk else b, generator=generator)
        check_generate_output(model.modalities, out, list(targets), b)
        outs.append({k: out[k].detach().cpu() for k in targets})
    return {k: torch.cat([o[k] for o in outs]) for k in targets}


def predict(classifiers, outputs: dict[str, torch.Tensor]) -> Predictions:
    """Content-factor predictions of every modality in `outputs`."""
    return {m: classifiers.predict(m, x) for m, x in outputs.items()}


def carriers(classifiers, modalities, factor: str) -> list[str]:
    """The modalities among `modalities` whose content includes `factor`."""
    return [m for m in modalities if factor in classifiers.content[m]]


def _all_equal(preds: list[torch.Tensor]) -> torch.Tensor:
    first = preds[0]
    return torch.stack([p == first for p in preds]).all(0)


def _pairwise_agreement(preds: list[torch.Tensor]) -> torch.Tensor:
    """Per sample: fraction of pairs among `preds` that agree."""
    pairs = list(itertools.combinations(preds, 2))
    return torch.stack([(a == b).double() for a, b in pairs]).mean(0)


# ----------------------------------------------------------------------------- chance levels
def _factor_table(dataset: MultimodalDataset, factors: tuple[str, ...]) -> dict[tuple, float]:
    keys = torch.stack([dataset.factors[f] for f in factors], 1).tolist()
    values, counts = np.unique(np.array(keys).reshape(len(keys), -1), axis=0, return_counts=True)
    return {tuple(int(x) for x in v): c / len(keys) for v, c in zip(values, counts)}


def chance_all_match(dataset: MultimodalDataset, modal_factors: dict[str, tuple[str, ...]],
                     fixed: list[dict[str, int]]) -> float:
    """Exact chance that independent data draws satisfy a joint criterion, averaged over conditions.

    Each modality in `modal_factors` is drawn from a different random test tuple; the
    criterion holds when every modality's factors equal one common assignment that agrees
    with the condition's `fixed` values (free factors range over all their values). For one
    condition that is ``sum_a prod_m P_m(a restricted to m)``.
    """
    all_f = sorted({f for fs in modal_factors.values() for f in fs})
    tables = {m: _factor_table(dataset, fs) for m, fs in modal_factors.items()}
    values = {f: sorted(set(dataset.factors[f].tolist())) for f in all_f}
    total = 0.0
    for cond in fixed:
        free = [f for f in all_f if f not in cond]
        s = 0.0
        for combo in itertools.product(*(values[f] for f in free)):
            a = {**cond, **dict(zip(free, combo))}
            s += math.prod(tables[m].get(tuple(a[f] for f in fs), 0.0) for m, fs in modal_factors.items())
        total += s
    return total / len(fixed)


def _pair_chance(dataset: MultimodalDataset, factors: tuple[str, ...]) -> float:
    return sum(p * p for p in _factor_table(dataset, factors).values())


# ----------------------------------------------------------------------------- tasks
def labels_to_modalities(model: Generative, dataset: MultimodalDataset, classifiers, n: int,
                         seed: int, given: tuple[str, ...], batch_size: int = 250) -> TaskResult:
    """Given only label modalities, generate every other modality (PolyMNIST-QL tasks).

    With one given label `f`: ``single_<f>`` is the accuracy on `f` of every generated
    non-label modality (mean over them); ``one_to_many_<f>`` counts a sample coherent only
    when every such modality is right on `f` and all generated carriers of each other content
    factor (views and the generated label) agree on it; ``one_to_many_<f>_agreement`` is the
    raw mean pairwise agreement on those free factors. With several labels: ``multi_both`` is
    the fraction of (condition, view) pairs right on all given factors.
    """
    idx = condition_indices(dataset, n, seed)
    cond = dataset.batch(idx, list(given))
    factors_c = dataset.factor_batch(idx)
    targets = [m for m in dataset.modalities if m not in given]
    task = "given-" + "+".join(given)
    out = generate_batched(model, cond, targets, n, task_generator(seed, task), batch_size, task)
    pred = predict(classifiers, out)
    views = [m for m in targets if dataset.modalities[m].kind != "categorical"
             and set(given) <= set(classifiers.content[m])]  # the generations that can be judged
    if not views:
        return TaskResult({}, cond, out)
    right = {f: torch.stack([pred[m][f] == factors_c[f] for m in views]) for f in given}  # (V, n)
    metrics: dict[str, Metric] = {}
    fixed = [{f: int(factors_c[f][i]) for f in given} for i in range(n)]
    view_factors = {v: tuple(f for f in classifiers.content[v]) for v in views}
    if len(given) == 1:
        (f,) = given
        metrics[f"single_{f}"] = rate(right[f].double().mean(0), seed)
        metrics[f"single_{f}"]["chance"] = chance_all_match(dataset, {views[0]: (f,)}, fixed)
        free = [g for g in dict.fromkeys(x for v in views for x in classifiers.content[v]) if g != f]
        strict = right[f].all(0)
        agree = []
        for g in free:
            carry = carriers(classifiers, targets, g)
            strict = strict & _all_equal([pred[m][g] for m in carry])
            agree.append(_pairwise_agreement([pred[m][g] for m in carry]))
        if free:
            mf = {**view_factors, **{m: (m,) for m in targets if m in free}}
            metrics[f"one_to_many_{f}"] = rate(strict, seed)
            metrics[f"one_to_many_{f}"]["chance"] = chance_all_match(dataset, mf, fixed)
            metrics[f"one_to_many_{f}_agreement"] = rate(torch.stack(agree).mean(0), seed)
            metrics[f"one_to_many_{f}_agreement"]["chance"] = float(np.mean(
                [_pair_chance(dataset, (g,)) for g in free]))
    else:
        both = torch.stack([right[f] for f in given]).all(0).double().mean(0)
        metrics["multi_both"] = rate(both, seed)
        metrics["multi_both"]["chance"] = chance_all_match(dataset, {views[0]: tuple(given)}, fixed)
    return TaskResult(metrics, cond, out)


def many_to_one(model: Generative, dataset: MultimodalDataset, classifiers, n: int, seed: int,
                target: str, batch_size: int = 250) -> TaskResult:
    """Given every other modality of a real test tuple, generate `target` (Digits-ITA tasks).

    ``<G>-><t>:<f>`` is the accuracy of the target on each content factor `f` it carries (the
    given tuple's true factor is the reference), ``<G>-><t>:all`` all of them at once.
    """
    given = [m for m in dataset.modalities if m != target]
    idx = condition_indices(dataset, n, seed)
    cond = dataset.batch(idx, given)
    factors_c = dataset.factor_batch(idx)
    name = f"{'+'.join(given)}->{target}"
    out = generate_batched(model, cond, [target], n, task_generator(seed, name), batch_size, name)
    pred = classifiers.predict(target, out[target])
    judged = [f for f in classifiers.content[target]
              if any(f in classifiers.content[g] for g in given)]
    metrics = {}
    for f in judged:
        metrics[f"{name}:{f}"] = rate(pred[f] == factors_c[f], seed)
        metrics[f"{name}:{f}"]["chance"] = chance_all_match(
            dataset, {target: (f,)}, [{f: int(v)} for v in factors_c[f]])
    if len(judged) > 1:
        ok = torch.stack([pred[f] == factors_c[f] for f in judged]).all(0)
        metrics[f"{name}:all"] = rate(ok, seed)
        metrics[f"{name}:all"]["chance"] = chance_all_match(
            dataset, {target: tuple(judged)}, [{f: int(factors_c[f][i]) for f in judged} for i in range(n)])
    return TaskResult(metrics, cond, out)


def cohen_kappa(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cohen's kappa of two label vectors; 0 when the expected agreement is 1 (constant raters)."""
    a, b = a.long(), b.long()
    p_o = float((a == b).double().mean())
    k = int(max(a.max(), b.max())) + 1
    pa = torch.bincount(a, minlength=k).double() / len(a)
    pb = torch.bincount(b, minlength=k).double() / len(b)
    p_e = float((pa * pb).sum())
    return 0.0 if p_e >= 1 - 1e-12 else (p_o - p_e) / (1 - p_e)


def unconditional(model: Generative, dataset: MultimodalDataset, classifiers, n: int, seed: int,
                  batch_size: int = 250) -> TaskResult:
    """Joint samples of every modality: coherence, per factor, and pairwise agreement.

    ``uncond_coherence``: every carrier of every content factor agrees (views with each
    other and with the generated labels); ``uncond_<f>``: the same for one factor;
    ``uncond_pair:<a>-<b>:<f>``: raw agreement of two modalities on `f` with, beside it,
    ``...:kappa`` (Cohen's kappa, chance-corrected: a model that draws one favourite class
    everywhere scores 0, not 1).
    """
    mods = list(dataset.modalities)
    out = generate_batched(model, {}, mods, n, task_generator(seed, "unconditional"), batch_size,
                           "unconditional")
    pred = predict(classifiers, out)
    content = {m: tuple(classifiers.content[m]) for m in mods if classifiers.content[m]}
    factors = list(dict.fromkeys(f for m in content for f in content[m]))
    ok = {f: _all_equal([pred[m][f] for m in carriers(classifiers, mods, f)]) for f in factors}
    metrics = {"uncond_coherence": rate(torch.stack(list(ok.values())).all(0), seed)}
    metrics["uncond_coherence"]["chance"] = chance_all_match(dataset, content, [{}])
    for f in factors:
        metrics[f"uncond_{f}"] = rate(ok[f], seed)
        metrics[f"uncond_{f}"]["chance"] = chance_all_match(
            dataset, {m: (f,) for m in carriers(classifiers, mods, f)}, [{}])
    for a, b in itertools.combinations(content, 2):
        for f in content[a]:
            if f not in content[b]:
                continue
            key = f"uncond_pair:{a}-{b}:{f}"
            metrics[key] = rate(pred[a][f] == pred[b][f], seed)
            metrics[key]["chance"] = _pair_chance(dataset, (f,))
            both = np.stack([pred[a][f].numpy(), pred[b][f].numpy()], 1)
            metrics[key + ":kappa"] = bootstrap(
                both, seed, statistic=lambda x: cohen_kappa(torch.from_numpy(x[:, 0]),
                                                            torch.from_numpy(x[:, 1])), n_boot=200)
            metrics[key + ":kappa"]["chance"] = 0.0
    return TaskResult(metrics, {}, out)


def coherence_matrix(model: Generative, dataset: MultimodalDataset, classifiers, n: int,
                     seed: int, batch_size: int = 250) -> TaskResult:
    """Cross-modal coherence for every subset size k and every target modality.

    For each non-empty subset S of size k of the modalities and each target t outside S, the
    target is judged on the content factors S determines (``content(t) ∩ content(S)``; pairs
    with none are skipped); cell ``matrix:k=<k>:<t>`` is the mean accuracy over those subsets
    (bootstrap over conditions of the per-condition mean).
    """
    mods = list(dataset.modalities)
    idx = condition_indices(dataset, n, seed)
    factors_c = dataset.factor_batch(idx)
    scores: dict[tuple[int, str], list[torch.Tensor]] = {}
    subsets = [s for k in range(1, len(mods)) for s in itertools.combinations(mods, k)]
    for s in tqdm(subsets, desc="coherence matrix", leave=False):
        targets = [m for m in mods if m not in s]
        given_f = {f for m in s for f in classifiers.content[m]}
        judged = {t: [f for f in classifiers.content[t] if f in given_f] for t in targets}
        targets = [t for t in targets if judged[t]]
        if not targets:
            continue
        name = "matrix:" + "+".join(s)
        out = generate_batched(model, dataset.batch(idx, list(s)), targets, n,
                               task_generator(seed, name), batch_size, name)
        for t in targets:
            p = classifiers.predict(t, out[t])
            ok = torch.stack([p[f] == factors_c[f] for f in judged[t]]).all(0)
            scores.setdefault((len(s), t), []).append(ok.double())
    metrics = {f"matrix:k={k}:{t}": rate(torch.stack(v).mean(0), seed)
               for (k, t), v in sorted(scores.items())}
    return TaskResult(metrics)

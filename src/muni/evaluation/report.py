"""Benchmark reports: run every task of a dataset and write results.json, tables, sheets, plots.

`run_evaluation` runs the tasks of `TASKS[dataset]` on the test split with the fixed
conditions of `seed`, and writes under `out_dir`:
- ``results.json``: every metric with its interval and chance level, the config, seeds,
  versions (muni, torch, numpy, python), machine, wall time and classifier accuracies;
- ``results.md``: the paper-layout table (`LAYOUTS`), the chance row, the classifier
  accuracy line, the extra metrics (Fréchet, diversity), the cross-modal matrix, and a
  listing of every number;
- ``samples/<task>.png`` sample sheets (conditions beside generations), ``samples/*.wav``
  for audio, and ``metrics.png`` (bar chart with intervals and chance marks).
`compare_markdown` puts several results.json side by side in one table.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

import muni  # noqa: E402
from muni.data import load_dataset  # noqa: E402
from muni.data.base import MultimodalDataset  # noqa: E402
from muni.evaluation import coherence, frechet  # noqa: E402
from muni.data.base import complete_tuples  # noqa: E402
from muni.errors import MuniError  # noqa: E402
from muni.evaluation.classifiers import MIN_ACCURACY, SHARING, Classifiers, load_or_train_classifiers  # noqa: E402
from muni.methods.base import Generative, generate_with, sampling_options  # noqa: E402
from muni.modalities import writers  # noqa: E402

SHEET_ROWS = 8
log = logging.getLogger("muni.evaluation")
TaskFn = Callable[..., dict[str, coherence.TaskResult]]


def _polymnist_tasks(model, ds, clf, n, seed, batch_size, matrix_n) -> dict[str, coherence.TaskResult]:
    kw = dict(batch_size=batch_size)
    uncond = coherence.unconditional(model, ds, clf, n, seed, **kw)
    return {
        "given_digit": coherence.labels_to_modalities(model, ds, clf, n, seed, ("digit",), **kw),
        "given_quadrant": coherence.labels_to_modalities(model, ds, clf, n, seed, ("quadrant",), **kw),
        "given_both": coherence.labels_to_modalities(model, ds, clf, n, seed, ("digit", "quadrant"), **kw),
        "unconditional": uncond,
        "quality": frechet.sample_quality(model, ds, clf, n, seed, samples=uncond.generated, **kw),
        "diversity": frechet.diversity(model, ds, clf, min(n, 100), seed, ("digit", "quadrant"), **kw),
        "matrix": coherence.coherence_matrix(model, ds, clf, matrix_n, seed, **kw),
    }


def _ita_tasks(model, ds, clf, n, seed, batch_size, matrix_n) -> dict[str, coherence.TaskResult]:
    kw = dict(batch_size=batch_size)
    uncond = coherence.unconditional(model, ds, clf, n, seed, **kw)
    out = {f"to_{t}": coherence.many_to_one(model, ds, clf, n, seed, t, **kw) for t in ds.modalities}
    return {**out, "unconditional": uncond,
            "quality": frechet.sample_quality(model, ds, clf, n, seed, samples=uncond.generated, **kw),
            "diversity": frechet.diversity(model, ds, clf, min(n, 100), seed, ("text",), **kw),
            "matrix": coherence.coherence_matrix(model, ds, clf, matrix_n, seed, **kw)}


def _imported_tasks(model, ds, clf, n, seed, batch_size, matrix_n) -> dict[str, coherence.TaskResult]:
    """An imported dataset's tasks: each label modality given alone (when the dataset has label
    and other modalities), every modality from all the others, unconditional coherence, Fréchet
    distances, within-condition diversity given the labels, and the cross-modal matrix."""
    kw = dict(batch_size=batch_size)
    mods = ds.modalities
    labels = tuple(m for m, mod in mods.items() if mod.kind == "categorical" and clf.content[m])
    others = [m for m, mod in mods.items() if mod.kind != "categorical"]
    out: dict[str, coherence.TaskResult] = {}
    if others:
        out.update({f"given_{lab}": coherence.labels_to_modalities(model, ds, clf, n, seed, (lab,), **kw)
                    for lab in labels})
    if len(mods) > 1:
        out.update({f"to_{t}": coherence.many_to_one(model, ds, clf, n, seed, t, **kw) for t in mods})
    uncond = coherence.unconditional(model, ds, clf, n, seed, **kw)
    out["unconditional"] = uncond
    if others:
        out["quality"] = frechet.sample_quality(model, ds, clf, n, seed, samples=uncond.generated, **kw)
        if labels:
            out["diversity"] = frechet.diversity(model, ds, clf, min(n, 100), seed, labels, **kw)
    if len(mods) > 1:
        out["matrix"] = coherence.coherence_matrix(model, ds, clf, matrix_n, seed, **kw)
    return out


TASKS: dict[str, TaskFn] = {"polymnist-quadrant": _polymnist_tasks, "digits-ita": _ita_tasks}

# The paper-layout columns of each dataset: (header, metric key).
LAYOUTS: dict[str, list[tuple[str, str]]] = {
    "polymnist-quadrant": [
        ("Single-L→I Digit", "single_digit"), ("Single-L→I Quadrant", "single_quadrant"),
        ("Multi-L→I Both", "multi_both"), ("Uncond. coherence", "uncond_coherence"),
        ("1→many, digit given", "one_to_many_digit"), ("(agreement)", "one_to_many_digit_agreement"),
        ("1→many, quadrant given", "one_to_many_quadrant"),
        ("(agreement)", "one_to_many_quadrant_agreement")],
    "digits-ita": [
        ("(I+A)→T digit", "image+audio->text:digit"), ("(I+A)→T quadrant", "image+audio->text:quadrant"),
        ("(T+A)→I digit", "text+audio->image:digit"), ("(T+A)→I quadrant", "text+audio->image:quadrant"),
        ("(T+I)→A digit", "image+text->audio:digit"),
        ("Uncond. T–I digit", "uncond_pair:image-text:digit"),
        ("Uncond. T–I quadrant", "uncond_pair:image-text:quadrant"),
        ("Uncond. T–A digit", "uncond_pair:text-audio:digit"),
        ("Uncond. A–I digit", "uncond_pair:image-audio:digit"),
        ("Uncond. coherence (all)", "uncond_coherence")],
}


def layout_of(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The main-table columns of a result: the paper layout of a benchmark; for an imported
    dataset, each label given alone, each modality from the others, unconditional coherence."""
    if result["dataset"] in LAYOUTS:
        return LAYOUTS[result["dataset"]]
    keys = list(result["metrics"])
    cols = [(f"{k[7:]}→others", k) for k in keys if re.fullmatch(r"single_\w+", k)]
    for k in keys:
        if "->" in k and not k.startswith("matrix:") and ":" in k and not k.endswith(":kappa"):
            given, rest = k.split("->", 1)
            target, factor = rest.split(":", 1)
            if factor == "all" or f"{given}->{target}:all" not in result["metrics"]:
                cols.append((f"(others)→{target}" + ("" if factor == "all" else f" {factor}"), k))
    return cols + [("Uncond. coherence", "uncond_coherence")]


def machine_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def versions() -> dict[str, str]:
    return {"muni": muni.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


class WithSampling:
    """`model` whose `generate` always receives the sampler options `kwargs` (e.g. ``guidance``,
    ``prior_nfe``, ``conditional_sampler``, and ``precision`` for any model), parsed and checked
    by `sampling_options`: an option the method lacks is refused up front, by name."""

    def __init__(self, model: Generative, **kwargs: Any):
        self.model, self.modalities, self.Sampling = model, model.modalities, model.Sampling
        self.kwargs = sampling_options(model, kwargs)

    def generate(self, given, targets, n=None, generator=None):
        return generate_with(self.model, given, targets, n=n, generator=generator, **self.kwargs)


def run_evaluation(model: Generative, dataset_name: str, preset: str = "quick", n: int = 500,
                   seed: int = 0, out_dir: str | os.PathLike | None = None, model_name: str = "model",
                   *, classifiers: Classifiers | None = None, test: MultimodalDataset | None = None,
                   matrix_n: int | None = None, batch_size: int = 250, data_seed: int = 0,
                   data_dir=None, sampling: dict[str, Any] | None = None, sharing: str = "separate",
                   **overrides) -> dict[str, Any]:
    """Evaluate `model` on every task of `dataset_name` and (with `out_dir`) write the report.

    Parameters
    ----------
    model : any `Generative` over the dataset's modalities.
    n : conditions per task (the cross-modal matrix uses `matrix_n`, default ``min(n, 200)``).
    seed : evaluation seed: it alone fixes the conditions and the generators of every task.
    classifiers, test : reuse already loaded ones (else loaded or trained from the cache).
    sharing : which classifiers to load when `classifiers` is None (`classifiers.SHARING`).
    data_seed, data_dir, **overrides : which dataset build (as `muni.data.load_dataset`).
    sampling : options passed to every ``model.generate`` call (see `WithSampling`).

    Returns
    -------
    The results dict also written to ``results.json``.
    """
    if sampling:
        model = WithSampling(model, **sampling)
    t0 = time.perf_counter()
    test = complete_tuples(test or load_dataset(dataset_name, "test", preset, data_seed, data_dir, **overrides))
    if len(test) < 2:
        raise MuniError(f"dataset {dataset_name}: {len(test)} test samples have every modality and every "
                        f"label; evaluation conditions on complete tuples and needs more")
    clf = classifiers or load_or_train_classifiers(dataset_name, preset, data_seed, SHARING[sharing],
                                                   data_dir=data_dir, **overrides)
    clf, refused = clf.usable()
    for key, acc in refused.items():
        log.warning("classifier %s: held-out accuracy %.3f < %.2f; it scores no coherence", key, acc, MIN_ACCURACY)
    if not any(clf.content[m] for m in test.modalities if test.modalities[m].kind != "categorical"):
        raise MuniError(f"dataset {dataset_name}: no classifier reaches the held-out accuracy "
                        f"{MIN_ACCURACY} needed to score coherence ({', '.join(f'{k} {v:.3f}' for k, v in refused.items()) or 'no labels declared'}); "
                        f"declare labels the modalities show, or more training data")
    matrix_n = matrix_n or min(n, 200)
    tasks = TASKS.get(dataset_name, _imported_tasks)(model, test, clf, n, seed, batch_size, matrix_n)
    metrics = {k: v for t in tasks.values() for k, v in t.metrics.items()}
    results = {
        "model": model_name, "dataset": dataset_name, "preset": preset,
        "config": {"n": n, "matrix_n": matrix_n, "seed": seed, "data_seed": data_seed,
                   "batch_size": batch_size, "overrides": overrides, "sampling": sampling or {}},
        "metrics": metrics, "classifiers": getattr(clf, "sharing", "separate"), "classifier_accuracy": clf.accuracy,
        "refused_classifiers": refused,
        "test_tuples": len(test),
        "dataset_info": {k: test.info.get(k) for k in ("recipe_hash", "checksum", "config")},
        "versions": versions(), "machine": machine_info(),
        "wall_seconds": round(time.perf_counter() - t0, 2),
    }
    if out_dir is not None:
        write_report(results, tasks, test, Path(out_dir))
    return results


# ----------------------------------------------------------------------------- writing
def fmt(m: dict[str, Any] | None, digits: int = 3) -> str:
    if m is None:
        return "–"
    return f"{m['value']:.{digits}f} [{m['low']:.{digits}f}, {m['high']:.{digits}f}]"


def fmt_chance(c: float | None) -> str:
    return "–" if c is None else f"{c:.4f}" if c >= 1e-3 or c == 0 else f"{c:.2e}"


def _cell(metrics: dict[str, Any], key: str) -> str:
    s = fmt(metrics.get(key))
    if key + ":kappa" in metrics:
        s += f" κ {metrics[key + ':kappa']['value']:.2f}"
    return s


def accuracy_line(acc: dict[str, dict[str, float]], sharing: str | None = None) -> str:
    """The classifiers' held-out accuracies in one line (naming `sharing`, `--classifiers`, unless
    it is the default ``separate``)."""
    parts = []
    for m, fs in acc.items():
        if all(v == 1.0 for v in fs.values()) and set(fs) == {m}:
            continue  # a label is its own prediction
        parts.append(f"{m}: " + ", ".join(f"{f} {v:.4f}" for f, v in fs.items()))
    which = f" (`--classifiers {sharing}`)" if sharing not in (None, "separate") else ""
    return f"Classifier held-out accuracy{which} — " + "; ".join(parts)


def results_table(groups: dict[str, list[dict[str, Any]]] | list[tuple[str, list[dict[str, Any]]]],
                  layout: list[tuple[str, str]], *, intervals: bool = True, bold_best: bool = False,
                  chance: bool = True) -> str:
    """The paper-layout table, one row per (name, results) (`muni eval compare` and `muni bench`).

    A row of one result shows each metric with its 95% interval (`intervals`) or its value; a
    row of several results (training seeds) shows mean ± std. `bold_best` bolds the best mean
    of each column; `chance` adds the exact chance row of the independent model.
    """
    groups = list(groups.items()) if isinstance(groups, dict) else list(groups)
    values = [{k: [r["metrics"][k]["value"] for r in rs if k in r["metrics"]] for _, k in layout}
              for _, rs in groups]
    best = {k: max((np.mean(v[k]) for v in values if v[k]), default=None) for _, k in layout}
    lines = ["| model | " + " | ".join(h for h, _ in layout) + " |", "| --- |" + " --- |" * len(layout)]
    for (row, rs), vals_of in zip(groups, values):
        cells = []
        for _, k in layout:
            vals = vals_of[k]
            if not vals:
                cells.append("–")
                continue
            if len(rs) == 1 and intervals:
                s = _cell(rs[0]["metrics"], k)
            else:
                s = f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")
            cells.append(f"**{s}**" if bold_best and np.isclose(np.mean(vals), best[k]) else s)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if chance:
        first = groups[0][1][0]["metrics"]
        lines.append("| *chance (exact, independent)* | "
                     + " | ".join(fmt_chance(first.get(k, {}).get("chance")) for _, k in layout) + " |")
    return "\n".join(lines)


def main_table(results: list[dict[str, Any]]) -> str:
    """The paper-layout table: one row per result, then the chance row of the independent model."""
    return results_table([(r["model"], [r]) for r in results], layout_of(results[0]))


def _mean_or_na(values: list, fmt: str = ".0f") -> str:
    """Mean of the figures, or "n/a" when a run lacks one (runs made before it was recorded)."""
    return "n/a" if any(v is None for v in values) else format(float(np.mean(values)), fmt)


SHARED_CPUS = 0.25  # other processes' average CPU use above which a training run was not alone


def cost_table(groups: dict[str, list[dict[str, Any]]]) -> str:
    """Parameters, steps, throughput, wall time, peak memory, the CPUs other processes used while
    it trained, sampling speed and the wall time of one evaluation (``muni eval run``'s tasks,
    classifiers loaded) per row; a note below names the rows with runs that shared the machine
    (other processes above `SHARED_CPUS` on average), whose throughput and steps are too low."""
    lines = ["| method | parameters | steps reached | train samples/s | train wall time (s) "
             "| peak RSS in training (MiB) | peak RSS of the process (MiB) "
             "| other processes' CPUs in training | sampling samples/s | evaluation wall time (s) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    shared = []
    for row, rs in groups.items():
        tr = [r["training"] for r in rs]
        samp = rs[0]["sampling"]
        lines.append(f"| {row} | {rs[0]['parameters'] / 1e6:.2f}M | {np.mean([t['steps_done'] for t in tr]):.0f} "
                     f"| {np.mean([t['samples_per_s'] for t in tr]):.0f} "
                     f"| {np.mean([t['train_wall_time_s'] for t in tr]):.0f} "
                     f"| {_mean_or_na([t.get('train_peak_rss_mib') for t in tr])} "
                     f"| {_mean_or_na([t.get('peak_rss_mib') for t in tr])} "
                     f"| {_mean_or_na([t.get('other_cpus') for t in tr], '.2f')} "
                     f"| {', '.join(f'{k}: {v}' for k, v in samp.items())} "
                     f"| {_mean_or_na([r.get('eval_wall_time_s') for r in rs])} |")
        busy = [t["other_cpus"] for t in tr if (t.get("other_cpus") or 0) > SHARED_CPUS]
        if busy:
            shared.append(f"{row} ({len(busy)} of {len(tr)} runs; up to {max(busy):.2f} CPUs)")
    if shared:
        lines += ["", "**Not alone:** other processes kept CPUs busy while these trained, so their "
                  "steps and throughput are below what the machine gives one run: " + "; ".join(shared) + "."]
    return "\n".join(lines)


def plot_sweep(sweeps: dict[str, dict[str, dict[str, float]]], xlabel: str, path: Path) -> None:
    """Coherence (with intervals) against a swept sampler option, one line per row."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for row, sw in sweeps.items():
        xs = [float(k) for k in sw]
        ax.errorbar(xs, [v["value"] for v in sw.values()],
                    yerr=[[v["value"] - v["low"] for v in sw.values()], [v["high"] - v["value"] for v in sw.values()]],
                    marker="o", label=row, capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("unconditional coherence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def extra_table(results: list[dict[str, Any]]) -> str:
    """Per-factor coherence, Fréchet distances and diversity ratios."""
    keys = [k for k in results[0]["metrics"]
            if re.fullmatch(r"uncond_[a-z]+", k) and k != "uncond_coherence"
            or k.startswith(("frechet:", "diversity:", "coherent_diversity:", "cross_view"))]
    lines = ["| model | " + " | ".join(keys) + " |", "| --- |" + " --- |" * len(keys)]
    for r in results:
        lines.append(f"| {r['model']} | " + " | ".join(fmt(r["metrics"].get(k), 2) for k in keys) + " |")
    return "\n".join(lines)


def matrix_table(result: dict[str, Any]) -> str:
    cells = {tuple(k.split(":")[1:]): v for k, v in result["metrics"].items() if k.startswith("matrix:")}
    ks = sorted({k for k, _ in cells}, key=lambda s: int(s[2:]))
    targets = list(dict.fromkeys(t for _, t in cells))
    lines = ["| given subset size | " + " | ".join(targets) + " |", "| --- |" + " --- |" * len(targets)]
    for k in ks:
        lines.append(f"| {k[2:]} | " + " | ".join(fmt(cells.get((k, t))) for t in targets) + " |")
    return "\n".join(lines)


def listing(result: dict[str, Any]) -> str:
    lines = ["| metric | value | 95% interval | interval | n | chance |", "| --- | --- | --- | --- | --- | --- |"]
    for k, m in result["metrics"].items():
        c = m.get("chance")
        lines.append(f"| `{k}` | {m['value']:.4f} | [{m['low']:.4f}, {m['high']:.4f}] | {m['interval']} "
                     f"| {m['n']} | {fmt_chance(c)} |")
    return "\n".join(lines)


def markdown_report(result: dict[str, Any]) -> str:
    c = result["config"]
    mach = result["machine"]
    head = (f"# {result['model']} on {result['dataset']} ({result['preset']})\n\n"
            f"n = {c['n']} conditions per task (matrix {c['matrix_n']}), evaluation seed {c['seed']}, "
            f"data seed {c['data_seed']}; {mach['cpu_count']} CPUs, GPU {mach['gpu'] or 'none'}; "
            f"wall time {result['wall_seconds']:.1f} s. Cells: value [95% interval].\n")
    refused = result.get("refused_classifiers") or {}
    acc = accuracy_line(result["classifier_accuracy"], result.get("classifiers", "separate"))
    if refused:
        acc += (f"\n\nRefused (held-out accuracy below {MIN_ACCURACY}; they score nothing): "
                + ", ".join(f"{k} {v:.3f}" for k, v in refused.items()))
    return "\n\n".join([head, main_table([result]), acc,
                        "## Beyond the paper\n\n" + extra_table([result]),
                        "## Cross-modal coherence matrix (mean accuracy over subsets of size k)\n\n"
                        + matrix_table(result),
                        "## Every number\n\n" + listing(result)]) + "\n"


def compare_markdown(results: list[dict[str, Any]]) -> str:
    """One side-by-side table of several results of the same dataset (and its extras)."""
    datasets = {r["dataset"] for r in results}
    if len(datasets) != 1:
        raise ValueError(f"cannot compare results of different datasets: {sorted(datasets)}")
    conds = {json.dumps({k: r["config"][k] for k in ("n", "seed", "data_seed")}) for r in results}
    note = "" if len(conds) == 1 else "\n\n**Warning: these results use different conditions (n/seed).**"
    if len({r.get("classifiers", "separate") for r in results}) > 1:
        note += "\n\n**Warning: these results were scored by different classifiers (`--classifiers`).**"
    first = results[0]
    return "\n\n".join([main_table(results), accuracy_line(first["classifier_accuracy"], first.get("classifiers", "separate")),
                        extra_table(results)]) + note + "\n"


def _plot(result: dict[str, Any], path: Path) -> None:
    layout = layout_of(result)
    ms = [result["metrics"].get(k) for _, k in layout]
    fig = Figure(figsize=(1.1 * len(layout) + 2, 4))
    ax = fig.subplots()
    x = np.arange(len(layout))
    vals = np.array([m["value"] if m else np.nan for m in ms])
    err = np.array([[m["value"] - m["low"], m["high"] - m["value"]] if m else [0, 0] for m in ms]).T
    ax.bar(x, vals, yerr=err, capsize=3, color="tab:blue")
    chance = [m.get("chance", np.nan) if m else np.nan for m in ms]
    ax.scatter(x, chance, marker="_", s=400, color="tab:red", label="chance", zorder=3)
    ax.set_xticks(x, [h for h, _ in layout], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{result['model']} on {result['dataset']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _sheets(tasks: dict[str, coherence.TaskResult], test: MultimodalDataset, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, t in tasks.items():
        if not t.generated:
            continue
        mods, batches = {}, {}
        for k, v in t.given.items():
            mods[f"given {k}"] = test.modalities[k]  # the key titles the sheet's column
            batches[f"given {k}"] = v[:SHEET_ROWS]
        for k, v in t.generated.items():
            mods[k], batches[k] = test.modalities[k], v[:SHEET_ROWS]
        writers.sample_sheet(batches, mods, out / f"{name}.png")
        for k, v in t.generated.items():
            if test.modalities[k].kind == "audio":
                writers.write_batch(test.modalities[k], v[:4], out / "audio", f"{name}_{k}")


def write_report(results: dict[str, Any], tasks: dict[str, coherence.TaskResult],
                 test: MultimodalDataset, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "results.md").write_text(markdown_report(results))
    _plot(results, out_dir / "metrics.png")
    _sheets(tasks, test, out_dir / "samples")

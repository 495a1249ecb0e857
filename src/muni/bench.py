"""`muni bench`: train every method of a suite on a matched budget, evaluate all of them on
identical test conditions, and write the paper-layout tables, the ablation and the cost figures.

A suite is a dataset plus named rows; a row is a method with ``--set`` overrides. Every run
lives in ``<out>/runs/<suite>/<row>-s<seed>/`` and every evaluation in
``<out>/eval/<suite>/<row>-s<seed>/``: a finished run (``summary.json`` with the same config
hash) or evaluation is reused, an interrupted one resumes from its last checkpoint, so an
interrupted benchmark continues where it stopped. Training runs in a subprocess per row, which
isolates the rows and gives each its own peak-memory figure.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from muni.config import config_hash
from muni.errors import ConfigError


class Row(NamedTuple):
    """One table row: a method with ``--set`` overrides, scored with sampler options.

    Rows that differ only in `sampling` share one trained run (a sampler option is not a
    training switch); each is evaluated on its own.
    """

    method: str
    overrides: tuple[str, ...] = ()
    sampling: tuple[tuple[str, Any], ...] = ()            # (option, value) for every generate call


@dataclass(frozen=True)
class Suite:
    dataset: str
    rows: dict[str, Row]                                   # row name -> row
    summary: str = ""
    nfe_sweep: tuple[str, ...] = field(default=())         # rows whose prior sampler is swept over NFE


_BASELINES = {"MVAE": Row("mvae"), "MMVAE": Row("mmvae"), "MoPoE": Row("mopoe"),
              "HELVAE": Row("helvae"), "JointFlow": Row("jointflow")}

SUITES: dict[str, Suite] = {
    "polymnist-quadrant": Suite("polymnist-quadrant", {**_BASELINES, "MUNI": Row("muni")},
                                "PolyMNIST-Quadrant-Labels: the paper's controlled table", ("MUNI",)),
    "digits-ita": Suite("digits-ita", {"JointFlow": Row("jointflow"), "MoPoE": Row("mopoe"),
                                       "MUNI": Row("muni")},
                        "Digits-ITA: image-text-audio, many-to-one and unconditional", ("MUNI",)),
    "ablation": Suite("polymnist-quadrant", {
        "MUNI (default)": Row("muni"),
        "aggregation=poe": Row("muni", ("model.aggregation=poe",)),
        "self_recon=attached": Row("muni", ("model.self_recon=attached",)),
        "self_recon=target_detached": Row("muni", ("model.self_recon=target_detached",)),  # the default
        # until the 3-seed ablation of 2026-11-23 (docs/results/quick/REPORT.md) chose full_detach
        "prior_route=all_subsets": Row("muni", ("model.prior_route=all_subsets",)),
        "prior_route=full_set": Row("muni", ("model.prior_route=full_set",)),
        "decoder=flow": Row("muni", ("model.codec.image_decoder=flow", "model.codec.audio_decoder=flow")),
        "detach_kinds=+categorical": Row("muni", ("model.detach_kinds=image,audio,text,categorical",)),
        "rate_target=flow_prior": Row("muni", ("model.rate_target=flow_prior",)),
        # a sampler option: scored on the default's runs, not retrained
        "conditional_sampler=posterior": Row("muni", (), (("conditional_sampler", "posterior"),)),
    }, "one row per MUNI switch value, everything else fixed"),
}

NFE_SWEEP = (2, 4, 8, 16, 32, 100)
BUDGET_STEP_CAP = 10 ** 7  # train.steps under a wall-clock budget (never reached)


def _slug(row: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=." else "_" for c in row)


def _run_hash(method: str, dataset: str, preset: str, overrides: tuple[str, ...], minutes: float, seed: int) -> str:
    return config_hash({"method": method, "dataset": dataset, "preset": preset, "overrides": list(overrides),
                        "minutes": minutes, "seed": seed})


def _same_config(run: Path, method: str, dataset: str, preset: str, overrides: tuple[str, ...],
                 minutes: float, seed: int) -> bool:
    """Whether the run's last checkpoint holds the method, data and configs (model and training,
    budget and seed included) that these settings resolve to now.

    The stored configs are read as the current code reads them (fields added since take their
    defaults), so a run stays valid until a default it used changes, and two rows whose
    overrides resolve to the same configs share one run.
    """
    from muni.commands.train import resolve
    from muni.config import from_dict, to_dict
    from muni.registry import method_spec
    from muni.training import TrainConfig

    try:
        ckpt = run / (run / "latest").read_text().strip() / "checkpoint.json"
        info = json.loads(ckpt.read_text())
        meta = info["meta"]
        if (meta["method"], meta["dataset"], meta["preset"], meta.get("data_seed", 0)) != (method, dataset, preset, 0):
            return False
        stored_model = from_dict(method_spec(method).config, meta["model_config"])
        stored_train = from_dict(TrainConfig, info["config"])
    except (OSError, KeyError, TypeError, ValueError, ConfigError):
        return False
    mcfg, tcfg = resolve(method, dataset, preset, seed, list(_budget_overrides(method, overrides, minutes)))
    stored, wanted = to_dict(stored_train), to_dict(tcfg)
    if stored["steps"] != wanted["steps"]:  # the step cap is moot for a run the clock stopped below both caps
        try:
            done = json.loads((run / "summary.json").read_text())
        except (OSError, ValueError):
            return False
        moot = (str(done.get("stopped_reason", "")).startswith("time budget")
                and done.get("steps_done", math.inf) < min(stored["steps"], wanted["steps"]))
        if not moot:
            return False
        stored["steps"] = wanted["steps"]
    return to_dict(stored_model) == to_dict(mcfg) and stored == wanted


# Model keys counted in training steps that presets tie to ``train.steps`` (JointFlow's stage 1 is
# half the preset's steps); a wall-clock budget lifts them with the step cap.
STEP_KEYS: dict[str, tuple[str, ...]] = {"jointflow": ("model.ae_steps",)}


def _budget_overrides(method: str, overrides: tuple[str, ...], minutes: float) -> tuple[str, ...]:
    """A wall-clock budget replaces the preset's step count as the stopping rule: the step cap is
    lifted, so that fast methods are not stopped early while slow ones use the whole budget.

    Step-counted model keys (`STEP_KEYS`) are lifted with it: JointFlow's stage 1 then ends at
    ``ae_fraction`` of the budget instead of after the preset's 1500 steps, which a 20-minute
    budget reaches in its first minutes.
    """
    if not minutes:
        return tuple(overrides)
    lifted = [f"{k}={BUDGET_STEP_CAP}" for k in ("train.steps", *STEP_KEYS.get(method, ()))]
    return (*lifted, *overrides, f"train.minutes={minutes}")


def train_row(out: Path, suite: str, row: str, method: str, dataset: str, preset: str,
              overrides: tuple[str, ...], minutes: float, seed: int, log) -> Path:
    """Train one row in a subprocess (or reuse/resume it); return its run directory.

    A finished run is reused when its checkpoint holds the configs these settings resolve to now
    (`_same_config`), in this row's directory or any other of the same `out`; a run in this
    row's directory whose configs no longer match (a default changed since) is refused by name
    rather than silently reported or overwritten.
    """
    run = out / "runs" / suite / f"{_slug(row)}-s{seed}"
    h = _run_hash(method, dataset, preset, overrides, minutes, seed)
    same = lambda r: _same_config(r, method, dataset, preset, overrides, minutes, seed)  # noqa: E731
    if (run / "summary.json").exists() and same(run):
        log(f"  [{row} s{seed}] finished run reused")
        return run
    for other in sorted((out / "runs").glob(f"*/*-s{seed}/summary.json")):  # same configs, another row
        if other.parent != run and same(other.parent):
            log(f"  [{row} s{seed}] finished run reused from {other.parent.relative_to(out)}")
            return other.parent
    resume = (run / "latest").exists()
    if resume and not same(run):
        state = "finished" if (run / "summary.json").exists() else "partial"
        raise ConfigError(f"{run} holds a {state} run of other model or training configs than these settings "
                          f"give now (a default changed since?); remove it or use another --out")
    run.mkdir(parents=True, exist_ok=True)
    (run / "bench.json").write_text(json.dumps({"bench_hash": h, "row": row, "method": method,
                                                "overrides": list(overrides), "minutes": minutes}))
    cmd = [sys.executable, "-m", "muni", "train", "--method", method, "--dataset", dataset, "--preset", preset,
           "--seed", str(seed), "--out", str(run), "--no-progress"]
    if resume:
        cmd.append("--resume")
    cmd += ["--set", *_budget_overrides(method, overrides, minutes)] if minutes or overrides else []
    log(f"  [{row} s{seed}] {'resuming' if resume else 'training'}: {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (run / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"training {row} (seed {seed}) failed; see {run / 'train.log'}:\n" + "\n".join(tail))
    summary = run / "summary.json"
    s = json.loads(summary.read_text())
    s["bench_hash"] = h
    summary.write_text(json.dumps(s, indent=2))
    return run


def evaluate_row(out: Path, suite: str, row: str, run: Path, dataset: str, preset: str, n: int,
                 eval_seed: int, cache: dict, log, seed: int = 0,
                 sampling: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any]:
    from muni.registry import load_model
    from muni.evaluation.report import run_evaluation

    folder = out / "eval" / suite / f"{_slug(row)}-s{seed}"
    res_file = folder / "results.json"
    stamp = json.loads((run / "summary.json").read_text()).get("bench_hash")
    options = dict(sampling)
    if res_file.exists():
        res = json.loads(res_file.read_text())
        if (res.get("bench_hash") == stamp and res["config"]["n"] == n and res["config"]["seed"] == eval_seed
                and res.get("sampling_options", {}) == options):
            log(f"  [{row} s{seed}] evaluation reused")
            return res
    model = load_model(run)
    log(f"  [{row} s{seed}] evaluating {run.name} (n={n}{''.join(f', {k}={v}' for k, v in options.items())})")
    res = run_evaluation(model, dataset, preset, n=n, seed=eval_seed, out_dir=folder, model_name=row,
                         classifiers=cache.get("clf"), test=cache.get("test"), sampling=options or None)
    res["bench_hash"] = stamp
    res["sampling_options"] = options
    res["training"] = json.loads((run / "summary.json").read_text())
    res["parameters"] = sum(p.numel() for p in model.parameters())
    res["sampling"] = sampling_speed(model, n=64)
    folder.mkdir(parents=True, exist_ok=True)
    res_file.write_text(json.dumps(res, indent=2))
    return res


@torch.no_grad()
def sampling_speed(model, n: int = 64, nfes: tuple[int, ...] = (8, 32)) -> dict[str, float]:
    """Unconditional samples per second (for MUNI at several prior NFE)."""
    names = list(model.modalities)
    out = {}
    settings = [{"prior_nfe": k} for k in nfes] if getattr(model, "method", "") == "muni" else [{}]
    for kw in settings:
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        model.generate({}, names, n=n, generator=g, **kw)
        key = f"nfe={kw['prior_nfe']}" if kw else "default"
        out[key] = round(n / (time.perf_counter() - t), 1)
    return out


def nfe_sweep(model, dataset, clf, n: int, seed: int) -> dict[str, dict[str, float]]:
    """Unconditional coherence of MUNI's prior sampler against the prior's NFE."""
    from muni.evaluation import coherence
    from muni.evaluation.report import WithSampling

    out = {}
    for nfe in NFE_SWEEP:
        wrapped = WithSampling(model, prior_nfe=nfe)
        m = coherence.unconditional(wrapped, dataset, clf, n, seed).metrics["uncond_coherence"]
        out[str(nfe)] = {k: m[k] for k in ("value", "low", "high")}
    return out


GUIDANCE_SWEEP = (1.0, 2.0, 4.0, 6.0)


def guidance_sweep(model, dataset, clf, n: int, seed: int) -> dict[str, dict[str, float]]:
    """Label-conditioned coherence of MUNI's prior sampler against the guidance weight."""
    from muni.evaluation import coherence
    from muni.evaluation.report import WithSampling

    out = {}
    for w in GUIDANCE_SWEEP:
        wrapped = WithSampling(model, guidance=w)
        row = {}
        for f in ("digit", "quadrant"):
            m = coherence.labels_to_modalities(wrapped, dataset, clf, n, seed, (f,)).metrics
            row[f"single_{f}"] = m[f"single_{f}"]["value"]
            row[f"one_to_many_{f}"] = m[f"one_to_many_{f}"]["value"]
        out[f"{w:g}"] = row
    return out


# ----------------------------------------------------------------------------- tables
def aggregate(results: dict[str, list[dict[str, Any]]], keys: list[tuple[str, str]]) -> str:
    """Mean ± std over seeds per row and metric key; best mean per column in bold."""
    means = {row: {k: np.mean([r["metrics"][k]["value"] for r in rs if k in r["metrics"]]) if
                   any(k in r["metrics"] for r in rs) else None for _, k in keys}
             for row, rs in results.items()}
    best = {k: max((m[k] for m in means.values() if m[k] is not None), default=None) for _, k in keys}
    lines = ["| method | " + " | ".join(h for h, _ in keys) + " |", "| --- |" + " --- |" * len(keys)]
    for row, rs in results.items():
        cells = []
        for _, k in keys:
            vals = [r["metrics"][k]["value"] for r in rs if k in r["metrics"]]
            if not vals:
                cells.append("–")
                continue
            s = f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")
            cells.append(f"**{s}**" if best[k] is not None and np.isclose(np.mean(vals), best[k]) else s)
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_or_na(values: list) -> str:
    """Mean of the figures, or "n/a" when a run lacks one (runs made before it was recorded)."""
    return "n/a" if any(v is None for v in values) else f"{np.mean(values):.0f}"


def cost_table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| method | parameters | steps reached | train samples/s | train wall time (s) "
             "| peak RSS in training (MiB) | peak RSS of the process (MiB) | sampling samples/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row, rs in results.items():
        tr = [r["training"] for r in rs]
        samp = rs[0]["sampling"]
        lines.append(f"| {row} | {rs[0]['parameters'] / 1e6:.2f}M | {np.mean([t['steps_done'] for t in tr]):.0f} "
                     f"| {np.mean([t['samples_per_s'] for t in tr]):.0f} "
                     f"| {np.mean([t['train_wall_time_s'] for t in tr]):.0f} "
                     f"| {_mean_or_na([t.get('train_peak_rss_mib') for t in tr])} "
                     f"| {_mean_or_na([t.get('peak_rss_mib') for t in tr])} "
                     f"| {', '.join(f'{k}: {v}' for k, v in samp.items())} |")
    return "\n".join(lines)


def run_bench(suite_names: list[str], preset: str, seeds: int, out: Path, minutes: float | dict[str, float], n: int,
              eval_seed: int = 0, log=print, ablation_seeds: int | None = None) -> dict[str, Any]:
    from muni.data import load_dataset
    from muni.evaluation.classifiers import load_or_train_classifiers
    from muni.evaluation.report import LAYOUTS, accuracy_line, machine_info, versions

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ablation_seeds = seeds if ablation_seeds is None else ablation_seeds
    budgets = dict(minutes) if isinstance(minutes, dict) else {"*": float(minutes)}
    budget = lambda suite: budgets.get(suite, budgets["*"])  # noqa: E731
    flag = " ".join([f"{budgets['*']:g}"] + [f"{k}={v:g}" for k, v in budgets.items() if k != "*"])
    where = ", ".join(f"{k} {budget(k):g} min" for k in suite_names)
    report = {"preset": preset, "seeds": seeds, "ablation_seeds": ablation_seeds,
              "minutes_per_run": {k: budget(k) for k in suite_names},
              "n": n, "eval_seed": eval_seed, "machine": machine_info(), "versions": versions(), "suites": {}}
    md = [f"# muni bench ({preset})\n",
          f"Command: `muni bench --suite {' '.join(suite_names)} --preset {preset} --seeds {seeds} "
          f"{f'--ablation-seeds {ablation_seeds} ' if ablation_seeds != seeds else ''}"
          f"--minutes {flag} --n {n} --out {out}`  ",
          f"Machine: {report['machine']['cpu_count']} CPUs ({report['machine']['platform']}), "
          f"GPU {report['machine']['gpu'] or 'none'}; every method of a suite trained for the same wall-clock "
          f"budget on this machine ({where}); {n} evaluation conditions per task, evaluation seed {eval_seed}. "
          "Cells: mean ± std over training seeds; best per column in bold.\n"]
    for name in suite_names:
        suite = SUITES[name]
        n_seeds = ablation_seeds if name == "ablation" else seeds
        log(f"suite {name} ({suite.dataset}): {len(suite.rows)} rows x {n_seeds} seeds, {budget(name):g} min per run")
        cache = {"test": load_dataset(suite.dataset, "test", preset),
                 "clf": load_or_train_classifiers(suite.dataset, preset, 0)}
        results: dict[str, list[dict[str, Any]]] = {}
        for seed in range(n_seeds):
            for row, (method, overrides, sampling) in suite.rows.items():
                run = train_row(out, name, row, method, suite.dataset, preset, overrides, budget(name), seed, log)
                results.setdefault(row, []).append(
                    evaluate_row(out, name, row, run, suite.dataset, preset, n, eval_seed, cache, log,
                                 seed=seed, sampling=sampling))
        keys = [(h, k) for h, k in LAYOUTS[suite.dataset]]
        section = [f"## {name}: {suite.summary}\n", f"Budget: {budget(name):g} min of training per run; "
                   f"{n_seeds} training seed{'s' if n_seeds > 1 else ''}.\n", aggregate(results, keys), "",
                   accuracy_line(cache["clf"].accuracy), "", "### Cost\n", cost_table(results)]
        sweeps, gsweeps = {}, {}
        for row in suite.nfe_sweep:
            if row in results:
                from muni.registry import load_model
                model = load_model(out / "runs" / name / f"{_slug(row)}-s0")
                sweeps[row] = nfe_sweep(model, cache["test"], cache["clf"], n, eval_seed)
                if suite.dataset == "polymnist-quadrant":
                    gsweeps[row] = guidance_sweep(model, cache["test"], cache["clf"], n, eval_seed)
        if sweeps:
            section += ["", "### Unconditional coherence vs prior NFE (seed 0)\n",
                        "| method | " + " | ".join(str(k) for k in NFE_SWEEP) + " |",
                        "| --- |" + " --- |" * len(NFE_SWEEP)]
            for row, sw in sweeps.items():
                section.append(f"| {row} | " + " | ".join(f"{sw[str(k)]['value']:.3f}" for k in NFE_SWEEP) + " |")
            _plot_sweep(sweeps, out / f"{name}-coherence-vs-nfe.png")
        for row, gs in gsweeps.items():
            cols = ["single_digit", "one_to_many_digit", "single_quadrant", "one_to_many_quadrant"]
            section += ["", f"### {row}: label-conditioned coherence vs guidance weight (prior sampler, seed 0)\n",
                        "| guidance | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
            section += [f"| {w} | " + " | ".join(f"{v[c]:.3f}" for c in cols) + " |" for w, v in gs.items()]
        md += section + [""]
        report["suites"][name] = {"dataset": suite.dataset, "results": results, "nfe_sweep": sweeps,
                                  "guidance_sweep": gsweeps}
    report["wall_time_s"] = round(time.time() - t0, 1)
    md.append(f"Total wall time of this invocation: {report['wall_time_s'] / 60:.1f} min.")
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "REPORT.md").write_text("\n".join(md) + "\n")
    return report


def _plot_sweep(sweeps: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for row, sw in sweeps.items():
        xs = [int(k) for k in sw]
        ax.errorbar(xs, [v["value"] for v in sw.values()],
                    yerr=[[v["value"] - v["low"] for v in sw.values()], [v["high"] - v["value"] for v in sw.values()]],
                    marker="o", label=row, capsize=3)
    ax.set_xscale("log")
    ax.set_xlabel("prior NFE")
    ax.set_ylabel("unconditional coherence")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def expand(names: list[str]) -> list[str]:
    out = []
    for n in names:
        if n != "all" and n not in SUITES:
            raise ConfigError(f"unknown suite {n!r}; choose from {', '.join(SUITES)}, all")
        out += list(SUITES) if n == "all" else [n]
    return list(dict.fromkeys(out))

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
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muni.config import config_hash
from muni.errors import ConfigError


@dataclass(frozen=True)
class Suite:
    dataset: str
    rows: dict[str, tuple[str, tuple[str, ...]]]          # row name -> (method, --set overrides)
    summary: str = ""
    nfe_sweep: tuple[str, ...] = field(default=())         # rows whose prior sampler is swept over NFE


_BASELINES = {"MVAE": ("mvae", ()), "MMVAE": ("mmvae", ()), "MoPoE": ("mopoe", ()),
              "HELVAE": ("helvae", ()), "JointFlow": ("jointflow", ())}

SUITES: dict[str, Suite] = {
    "polymnist-quadrant": Suite("polymnist-quadrant", {**_BASELINES, "MUNI": ("muni", ())},
                                "PolyMNIST-Quadrant-Labels: the paper's controlled table", ("MUNI",)),
    "digits-ita": Suite("digits-ita", {"JointFlow": ("jointflow", ()), "MoPoE": ("mopoe", ()),
                                       "MUNI": ("muni", ())},
                        "Digits-ITA: image-text-audio, many-to-one and unconditional", ("MUNI",)),
    "ablation": Suite("polymnist-quadrant", {
        "MUNI (default)": ("muni", ()),
        "aggregation=poe": ("muni", ("model.aggregation=poe",)),
        "self_recon=attached": ("muni", ("model.self_recon=attached",)),
        "self_recon=full_detach": ("muni", ("model.self_recon=full_detach",)),
        "prior_route=all_subsets": ("muni", ("model.prior_route=all_subsets",)),
        "prior_route=full_set": ("muni", ("model.prior_route=full_set",)),
        "decoder=flow": ("muni", ("model.codec.image_decoder=flow", "model.codec.audio_decoder=flow")),
        "detach_kinds=+categorical": ("muni", ("model.detach_kinds=image,audio,text,categorical",)),
        "rate_target=flow_prior": ("muni", ("model.rate_target=flow_prior",)),
        "conditional_sampler=posterior": ("muni", ("model.conditional_sampler=posterior",)),
    }, "one row per MUNI switch value, everything else fixed"),
}

NFE_SWEEP = (2, 4, 8, 16, 32, 100)


def _slug(row: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=." else "_" for c in row)


def _run_hash(method: str, dataset: str, preset: str, overrides: tuple[str, ...], minutes: float, seed: int) -> str:
    return config_hash({"method": method, "dataset": dataset, "preset": preset, "overrides": list(overrides),
                        "minutes": minutes, "seed": seed})


def train_row(out: Path, suite: str, row: str, method: str, dataset: str, preset: str,
              overrides: tuple[str, ...], minutes: float, seed: int, log) -> Path:
    """Train one row in a subprocess (or reuse/resume it); return its run directory."""
    run = out / "runs" / suite / f"{_slug(row)}-s{seed}"
    h = _run_hash(method, dataset, preset, overrides, minutes, seed)
    summary = run / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("bench_hash") == h:
        log(f"  [{row} s{seed}] finished run reused")
        return run
    for other in sorted((out / "runs").glob(f"*/*-s{seed}/summary.json")):  # same run in another suite
        if json.loads(other.read_text()).get("bench_hash") == h:
            log(f"  [{row} s{seed}] finished run reused from {other.parent.relative_to(out)}")
            return other.parent
    resume = (run / "latest").exists()
    if resume and json.loads((run / "bench.json").read_text()).get("bench_hash") != h:
        raise ConfigError(f"{run} holds a run of another configuration; remove it or use another --out")
    run.mkdir(parents=True, exist_ok=True)
    (run / "bench.json").write_text(json.dumps({"bench_hash": h, "row": row, "method": method,
                                                "overrides": list(overrides), "minutes": minutes}))
    cmd = [sys.executable, "-m", "muni", "train", "--method", method, "--dataset", dataset, "--preset", preset,
           "--seed", str(seed), "--out", str(run), "--no-progress"]
    if minutes:
        cmd += ["--minutes", str(minutes)]
    if resume:
        cmd.append("--resume")
    if overrides:
        cmd += ["--set", *overrides]
    log(f"  [{row} s{seed}] {'resuming' if resume else 'training'}: {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (run / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"training {row} (seed {seed}) failed; see {run / 'train.log'}:\n" + "\n".join(tail))
    s = json.loads(summary.read_text())
    s["bench_hash"] = h
    summary.write_text(json.dumps(s, indent=2))
    return run


def evaluate_row(out: Path, suite: str, row: str, run: Path, dataset: str, preset: str, n: int,
                 eval_seed: int, cache: dict, log) -> dict[str, Any]:
    from muni.registry import load_model
    from muni.evaluation.report import run_evaluation

    folder = out / "eval" / suite / run.name
    res_file = folder / "results.json"
    stamp = json.loads((run / "summary.json").read_text()).get("bench_hash")
    if res_file.exists():
        res = json.loads(res_file.read_text())
        if res.get("bench_hash") == stamp and res["config"]["n"] == n and res["config"]["seed"] == eval_seed:
            log(f"  [{row}] evaluation reused")
            return res
    model = load_model(run)
    log(f"  [{row}] evaluating {run.name} (n={n})")
    res = run_evaluation(model, dataset, preset, n=n, seed=eval_seed, out_dir=folder, model_name=row,
                         classifiers=cache.get("clf"), test=cache.get("test"))
    res["bench_hash"] = stamp
    res["training"] = json.loads((run / "summary.json").read_text())
    res["parameters"] = sum(p.numel() for p in model.parameters())
    res["sampling"] = sampling_speed(model, n=64)
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


def cost_table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| method | parameters | steps reached | train samples/s | train wall time (s) | peak RSS (MiB) "
             "| sampling samples/s |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row, rs in results.items():
        tr = [r["training"] for r in rs]
        samp = rs[0]["sampling"]
        lines.append(f"| {row} | {rs[0]['parameters'] / 1e6:.2f}M | {np.mean([t['steps_done'] for t in tr]):.0f} "
                     f"| {np.mean([t['samples_per_s'] for t in tr]):.0f} "
                     f"| {np.mean([t['train_wall_time_s'] for t in tr]):.0f} "
                     f"| {np.mean([t.get('peak_rss_mib', float('nan')) for t in tr]):.0f} "
                     f"| {', '.join(f'{k}: {v}' for k, v in samp.items())} |")
    return "\n".join(lines)


def run_bench(suite_names: list[str], preset: str, seeds: int, out: Path, minutes: float, n: int,
              eval_seed: int = 0, log=print, ablation_seeds: int | None = None) -> dict[str, Any]:
    from muni.data import load_dataset
    from muni.evaluation.classifiers import load_or_train_classifiers
    from muni.evaluation.report import LAYOUTS, accuracy_line, machine_info, versions

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ablation_seeds = seeds if ablation_seeds is None else ablation_seeds
    report = {"preset": preset, "seeds": seeds, "ablation_seeds": ablation_seeds, "minutes_per_run": minutes,
              "n": n, "eval_seed": eval_seed, "machine": machine_info(), "versions": versions(), "suites": {}}
    md = [f"# muni bench ({preset})\n",
          f"Command: `muni bench --suite {' '.join(suite_names)} --preset {preset} --seeds {seeds} "
          f"{f'--ablation-seeds {ablation_seeds} ' if ablation_seeds != seeds else ''}"
          f"--minutes {minutes} --n {n} --out {out}`  ",
          f"Machine: {report['machine']['cpu_count']} CPUs ({report['machine']['platform']}), "
          f"GPU {report['machine']['gpu'] or 'none'}; every method trained for the same wall-clock budget "
          f"({minutes} min) on this machine; {n} evaluation conditions per task, evaluation seed {eval_seed}. "
          "Cells: mean ± std over training seeds; best per column in bold.\n"]
    for name in suite_names:
        suite = SUITES[name]
        n_seeds = ablation_seeds if name == "ablation" else seeds
        log(f"suite {name} ({suite.dataset}): {len(suite.rows)} rows x {n_seeds} seeds")
        cache = {"test": load_dataset(suite.dataset, "test", preset),
                 "clf": load_or_train_classifiers(suite.dataset, preset, 0)}
        results: dict[str, list[dict[str, Any]]] = {}
        for seed in range(n_seeds):
            for row, (method, overrides) in suite.rows.items():
                run = train_row(out, name, row, method, suite.dataset, preset, overrides, minutes, seed, log)
                results.setdefault(row, []).append(
                    evaluate_row(out, name, row, run, suite.dataset, preset, n, eval_seed, cache, log))
        keys = [(h, k) for h, k in LAYOUTS[suite.dataset]]
        section = [f"## {name}: {suite.summary}\n", aggregate(results, keys), "",
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

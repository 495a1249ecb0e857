"""`muni bench`: train every row of a suite (`muni.bench.suites`) on a matched budget, evaluate
them all on identical test conditions, and write the paper-layout tables, sweeps and costs.

Every run lives in ``<out>/runs/<suite>/<row>-s<seed>/`` and every evaluation in
``<out>/eval/<suite>/<row>-s<seed>/``. A run is identified by its `RunSpec` hash alone: a
finished run of the same spec (in this row's directory or any other of the same `out`) is
reused, an interrupted one resumes, and a run of another spec in this row's directory (a default
changed since) is refused by name. An evaluation is reused while its run hash, ``n``, seed and
sampler options match. Training runs in a subprocess per row (isolation, a peak-memory figure of
its own) that reads the row's spec file, ``spec.json``.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from muni.bench.suites import GUIDANCE_SWEEP, NFE_SWEEP, SUITES, Row, Suite, Sweep, expand
from muni.errors import ConfigError
from muni.run import SUMMARY_FILE, RunSpec, finished_summary, holds_spec

__all__ = ["SUITES", "Row", "Suite", "Sweep", "NFE_SWEEP", "GUIDANCE_SWEEP", "expand", "row_spec",
           "train_row", "evaluate_row", "run_bench"]


def _slug(row: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=." else "_" for c in row)


def row_spec(row: Row, dataset: str, preset: str, minutes: float, seed: int, device: str = "auto") -> RunSpec:
    """The run a row trains: its method and overrides on the preset, under the budget alone, on
    `device` (``train.device``; auto is the default and leaves the spec's hash as it was)."""
    extra = [f"train.device={device}"] if device != "auto" else []
    return RunSpec.resolve(row.method, dataset, preset, seed, [*row.overrides, *extra]).budgeted(minutes)


def train_row(out: Path, suite: str, name: str, spec: RunSpec, log=print) -> Path:
    """Train one row in a subprocess (or reuse / resume it); return its run directory."""
    run = out / "runs" / suite / f"{_slug(name)}-s{spec.train.seed}"
    if finished_summary(run, spec):
        log(f"  [{name} s{spec.train.seed}] finished run reused")
        return run
    for other in sorted((out / "runs").glob(f"*/*-s{spec.train.seed}/{SUMMARY_FILE}")):
        if other.parent != run and finished_summary(other.parent, spec):
            log(f"  [{name} s{spec.train.seed}] finished run reused from {other.parent.relative_to(out)}")
            return other.parent
    resume = (run / "latest").exists()
    if resume and not holds_spec(run, spec):
        state = "finished" if (run / SUMMARY_FILE).exists() else "partial"
        raise ConfigError(f"{run} holds a {state} run of another run spec than these settings give now "
                          f"(a default changed since?); remove it or use another --out")
    run.mkdir(parents=True, exist_ok=True)
    spec.save(run / "spec.json")
    cmd = [sys.executable, "-m", "muni", "train", "--spec", str(run / "spec.json"), "--out", str(run),
           "--no-progress", *(["--resume"] if resume else [])]
    log(f"  [{name} s{spec.train.seed}] {'resuming' if resume else 'training'}: {' '.join(cmd[2:])}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    (run / "train.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"training {name} (seed {spec.train.seed}) failed; see {run / 'train.log'}:\n"
                           + "\n".join(tail))
    return run


def evaluate_row(out: Path, suite: Suite, suite_name: str, name: str, run: Path, preset: str, n: int,
                 eval_seed: int, cache: dict, seed: int = 0, log=print) -> dict[str, Any]:
    """Evaluate the run of row `name` with its sampler options (or reuse the evaluation)."""
    from muni.evaluation.report import run_evaluation
    from muni.evaluation.sweeps import sampling_speed
    from muni.methods.base import sampling_options
    from muni.registry import load_model

    folder = out / "eval" / suite_name / f"{_slug(name)}-s{seed}"
    res_file = folder / "results.json"
    summary = json.loads((run / SUMMARY_FILE).read_text())
    row = suite.rows[name]
    if res_file.exists():
        res = json.loads(res_file.read_text())
        if (res.get("run_hash") == summary["run_hash"] and res["config"]["n"] == n
                and res["config"]["seed"] == eval_seed and res.get("sampling_options", {}) == dict(row.sampling)
                and res.get("classifiers", "separate") == getattr(cache.get("clf"), "sharing", "separate")):
            log(f"  [{name} s{seed}] evaluation reused")
            return res
    model = load_model(run)
    options = sampling_options(model, dict(row.sampling))
    log(f"  [{name} s{seed}] evaluating {run.name} (n={n}{''.join(f', {k}={v}' for k, v in options.items())})")
    t0 = time.time()
    res = run_evaluation(model, suite.dataset, preset, n=n, seed=eval_seed, out_dir=folder, model_name=name,
                         classifiers=cache.get("clf"), test=cache.get("test"), sampling=options or None)
    res.update(eval_wall_time_s=round(time.time() - t0, 1), run_hash=summary["run_hash"], sampling_options=dict(row.sampling), training=summary,
               parameters=sum(p.numel() for p in model.parameters()),
               sampling=sampling_speed(model, n=64, options=suite.speed_options.get(name, ())))
    folder.mkdir(parents=True, exist_ok=True)
    res_file.write_text(json.dumps(res, indent=2))
    return res


def _sweep_section(name: str, suite: Suite, out: Path, cache: dict, n: int, eval_seed: int) -> tuple[list[str], dict]:
    """Markdown and numbers of every sweep of the suite (seed-0 runs)."""
    from muni.evaluation.report import plot_sweep
    from muni.evaluation.sweeps import sweep
    from muni.registry import load_model

    md, found = [], {}
    for row, sweeps in suite.sweeps.items():
        if row not in suite.rows:
            continue
        model = load_model(out / "runs" / name / f"{_slug(row)}-s0")
        for sw in sweeps:
            found.setdefault(sw.option, {})[row] = sweep(model, cache["test"], cache["clf"], n, eval_seed,
                                                         sw.option, sw.values, sw.task, sw.factors)
    for sw in {s.option: s for ss in suite.sweeps.values() for s in ss}.values():
        results = found.get(sw.option, {})
        if not results:
            continue
        if sw.task == "unconditional":
            md += ["", f"### Unconditional coherence vs {sw.option} (seed 0)\n",
                   "| method | " + " | ".join(f"{v:g}" for v in sw.values) + " |",
                   "| --- |" + " --- |" * len(sw.values)]
            md += [f"| {row} | " + " | ".join(f"{r[f'{v:g}']['value']:.3f}" for v in sw.values) + " |"
                   for row, r in results.items()]
            plot_sweep(results, sw.option, out / f"{name}-coherence-vs-{sw.option.replace('_', '-')}.png")
            continue
        cols = [f"{m}_{f}" for f in sw.factors for m in ("single", "one_to_many")]
        for row, r in results.items():
            md += ["", f"### {row}: label-conditioned coherence vs {sw.option} (seed 0)\n",
                   f"| {sw.option} | " + " | ".join(cols) + " |", "| --- |" + " --- |" * len(cols)]
            md += [f"| {v} | " + " | ".join(f"{vals[c]:.3f}" for c in cols) + " |" for v, vals in r.items()]
    return md, found


def run_bench(suite_names: list[str], preset: str, seeds: int, out: Path, minutes: float | dict[str, float], n: int,
              eval_seed: int = 0, log=print, ablation_seeds: int | None = None,
              rows: list[str] | None = None, device: str = "auto", classifiers: str = "separate") -> dict[str, Any]:
    """Train, evaluate and tabulate the suites; write ``results.json`` and ``REPORT.md`` in `out`.

    `rows` restricts every suite to the named rows (each name must be a row of some suite).
    `device` is where the rows train (``train.device``); evaluation runs on the CPU.
    `classifiers` names the evaluation classifiers (`muni.evaluation.classifiers.SHARING`).
    """
    from muni.data import load_dataset
    from muni.evaluation.classifiers import SHARING, load_or_train_classifiers
    from muni.evaluation.report import LAYOUTS, accuracy_line, cost_table, machine_info, results_table, versions

    if rows is not None:
        known = {r for n in suite_names for r in SUITES[n].rows}
        unknown = [r for r in rows if r not in known]
        if unknown:
            raise ConfigError(f"--rows: {', '.join(map(repr, unknown))} is not a row of "
                              f"{', '.join(suite_names)}; rows: {', '.join(sorted(known))}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    ablation_seeds = seeds if ablation_seeds is None else ablation_seeds
    budgets = dict(minutes) if isinstance(minutes, dict) else {"*": float(minutes)}
    budget = lambda suite: budgets.get(suite, budgets["*"])  # noqa: E731
    flag = " ".join([f"{budgets['*']:g}"] + [f"{k}={v:g}" for k, v in budgets.items() if k != "*"])
    where = ", ".join(f"{k} {budget(k):g} min" for k in suite_names)
    report = {"preset": preset, "seeds": seeds, "ablation_seeds": ablation_seeds, "rows": rows, "classifiers": classifiers,
              "minutes_per_run": {k: budget(k) for k in suite_names},
              "n": n, "eval_seed": eval_seed, "machine": machine_info(), "versions": versions(), "suites": {}}
    md = [f"# muni bench ({preset})\n",
          f"Command: `muni bench --suite {' '.join(suite_names)} --preset {preset} --seeds {seeds} "
          f"{f'--ablation-seeds {ablation_seeds} ' if ablation_seeds != seeds else ''}"
          f"--minutes {flag} --n {n} --out {out}"
          f"{' --rows ' + ' '.join(map(shlex.quote, rows)) if rows else ''}"
          f"{' --device ' + device if device != 'auto' else ''}"
          f"{' --classifiers ' + classifiers if classifiers != 'separate' else ''}`  ",
          f"Machine: {report['machine']['cpu_count']} CPUs ({report['machine']['platform']}), "
          f"GPU {report['machine']['gpu'] or 'none'}; every method of a suite trained for the same wall-clock "
          f"budget on this machine ({where}); {n} evaluation conditions per task, evaluation seed {eval_seed}. "
          "Cells: mean ± std over training seeds; best per column in bold.\n"]
    for name in suite_names:
        suite = SUITES[name]
        if rows is not None:
            suite = dataclasses.replace(suite, rows={k: v for k, v in suite.rows.items() if k in rows})
            if not suite.rows:
                log(f"suite {name}: none of --rows is a row of it; skipped")
                continue
        n_seeds = ablation_seeds if name == "ablation" else seeds
        log(f"suite {name} ({suite.dataset}): {len(suite.rows)} rows x {n_seeds} seeds, {budget(name):g} min per run")
        cache = {"test": load_dataset(suite.dataset, "test", preset),
                 "clf": load_or_train_classifiers(suite.dataset, preset, 0, SHARING[classifiers])}
        results: dict[str, list[dict[str, Any]]] = {}
        for seed in range(n_seeds):
            for row_name, row in suite.rows.items():
                spec = row_spec(row, suite.dataset, preset, budget(name), seed, device)
                run = train_row(out, name, row_name, spec, log)
                results.setdefault(row_name, []).append(
                    evaluate_row(out, suite, name, row_name, run, preset, n, eval_seed, cache, seed, log))
        section = [f"## {name}: {suite.summary}\n", f"Budget: {budget(name):g} min of training per run; "
                   f"{n_seeds} training seed{'s' if n_seeds > 1 else ''}.\n",
                   results_table(results, LAYOUTS[suite.dataset], intervals=False, bold_best=True, chance=False),
                   "", accuracy_line(cache["clf"].accuracy, getattr(cache["clf"], "sharing", "separate")), "", "### Cost\n", cost_table(results)]
        sweep_md, sweeps = _sweep_section(name, suite, out, cache, n, eval_seed)
        md += section + sweep_md + [""]
        report["suites"][name] = {"dataset": suite.dataset, "results": results, "sweeps": sweeps}
    report["wall_time_s"] = round(time.time() - t0, 1)
    md.append(f"Total wall time of this invocation: {report['wall_time_s'] / 60:.1f} min.")
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "REPORT.md").write_text("\n".join(md) + "\n")
    return report

"""`muni bench` bookkeeping: suites, tables (mean ± std, best in bold), run hashes."""

import pytest
import torch

from muni.bench import SUITES, Row, _run_hash, aggregate, expand
from muni.errors import ConfigError
from muni.registry import METHODS


def _res(value):
    return {"metrics": {"a": {"value": value}, "b": {"value": 1 - value}}}


def test_aggregate_means_stds_and_bold_best():
    table = aggregate({"x": [_res(0.2), _res(0.4)], "y": [_res(0.9)]}, [("A", "a"), ("B", "b")])
    rows = table.splitlines()
    assert rows[2] == "| x | 0.300 ± 0.100 | **0.700 ± 0.100** |"
    assert rows[3] == "| y | **0.900** | 0.100 |"


def test_suites_name_registered_methods_and_expand():
    for name, suite in SUITES.items():
        assert all(row.method in METHODS for row in suite.rows.values()), name
    assert expand(["all"]) == ["polymnist-quadrant", "digits-ita", "ablation"]
    with pytest.raises(ConfigError, match="unknown suite"):
        expand(["nope"])


def test_ablation_rows_differ_from_default_by_one_switch():
    rows = SUITES["ablation"].rows
    assert rows["MUNI (default)"] == Row("muni")
    for name, row in rows.items():
        if name != "MUNI (default)":  # one training switch (one or two keys), or one sampler option
            assert (1 <= len(row.overrides) <= 2 and not row.sampling) or (not row.overrides and len(row.sampling) == 1)
    assert len(set(rows.values())) == len(rows), "two ablation rows are identical"


def test_a_sampling_row_reuses_the_run_and_is_scored_with_its_options(tmp_path, monkeypatch):
    import json

    import muni.bench as bench
    import muni.evaluation.report as report
    import muni.registry as registry

    run = tmp_path / "runs" / "ablation" / "MUNI__default_-s0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"bench_hash": "h"}))
    calls = []

    def fake_eval(model, *a, sampling=None, out_dir=None, **k):
        calls.append(sampling)
        return {"config": {"n": 10, "seed": 0}}

    monkeypatch.setattr(registry, "load_model", lambda path: torch.nn.Linear(1, 1))
    monkeypatch.setattr(report, "run_evaluation", fake_eval)
    monkeypatch.setattr(bench, "sampling_speed", lambda model, n: {})
    args = (tmp_path, "ablation")
    rest = (run, "polymnist-quadrant", "quick", 10, 0, {}, lambda s: None)
    bench.evaluate_row(*args, "MUNI (default)", *rest)
    post = bench.evaluate_row(*args, "conditional_sampler=posterior", *rest,
                              sampling=(("conditional_sampler", "posterior"),))
    assert calls == [None, {"conditional_sampler": "posterior"}]
    assert post["sampling_options"] == {"conditional_sampler": "posterior"}
    assert (tmp_path / "eval" / "ablation" / "conditional_sampler=posterior-s0" / "results.json").exists()
    bench.evaluate_row(*args, "conditional_sampler=posterior", *rest, sampling=(("conditional_sampler", "posterior"),))
    assert len(calls) == 2, "the finished evaluation with the same options was not reused"
    bench.evaluate_row(*args, "conditional_sampler=posterior", *rest, sampling=(("guidance", 2.0),))
    assert len(calls) == 3, "an evaluation with other sampler options was reused"


def test_run_hash_changes_with_any_setting():
    base = _run_hash("muni", "d", "quick", (), 5.0, 0)
    assert base == _run_hash("muni", "d", "quick", (), 5.0, 0)
    assert len({base, _run_hash("muni", "d", "quick", ("model.beta=1",), 5.0, 0),
                _run_hash("muni", "d", "quick", (), 6.0, 0), _run_hash("muni", "d", "quick", (), 5.0, 1),
                _run_hash("mvae", "d", "quick", (), 5.0, 0)}) == 5


def _finished_run(run, method="muni", dataset="polymnist-quadrant", overrides=(), minutes=2.0, seed=0,
                  summary=None, steps=None, **changed):
    """A run directory as `muni train` leaves it: summary with the bench hash, the last checkpoint's
    configs (`changed` model fields altered, as if a default had changed since; `steps` the
    step cap it ran under, e.g. the preset's before the bench lifted it)."""
    import dataclasses
    import json

    from muni.bench import _budget_overrides
    from muni.commands.train import resolve
    from muni.config import apply_overrides, to_dict

    mcfg, tcfg = resolve(method, dataset, "quick", seed, list(_budget_overrides(method, tuple(overrides), minutes)))
    mcfg = dataclasses.replace(mcfg, **changed)
    if steps is not None:
        tcfg = dataclasses.replace(tcfg, steps=steps)
    (run / "ckpt-9").mkdir(parents=True)
    (run / "latest").write_text("ckpt-9")
    (run / "ckpt-9" / "checkpoint.json").write_text(json.dumps({
        "meta": {"method": method, "dataset": dataset, "preset": "quick", "data_seed": 0, "model_config": to_dict(mcfg)}, "config": to_dict(apply_overrides(tcfg, [f"minutes={minutes}"]))}))
    h = _run_hash(method, dataset, "quick", tuple(overrides), minutes, seed)
    (run / "summary.json").write_text(json.dumps({"bench_hash": h, **(summary or {})}))


def test_finished_run_of_another_suite_is_reused_not_retrained(tmp_path, monkeypatch):
    import muni.bench as bench

    done = tmp_path / "runs" / "polymnist-quadrant" / "MUNI-s0"
    _finished_run(done)
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("retrained a finished run"))
    got = bench.train_row(tmp_path, "ablation", "MUNI (default)", "muni", "polymnist-quadrant", "quick", (),
                          2.0, 0, log=lambda s: None)
    assert got == done
    with pytest.raises(pytest.fail.Exception):  # a different seed is not the same run
        bench.train_row(tmp_path, "ablation", "MUNI (default)", "muni", "polymnist-quadrant", "quick", (),
                        2.0, 1, log=lambda s: None)


def test_the_step_cap_is_lifted_under_a_budget_and_moot_for_runs_the_clock_stopped(tmp_path, monkeypatch):
    import muni.bench as bench

    cmds = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **k: cmds.append(cmd) or pytest.fail("trained"))
    clock = tmp_path / "runs" / "s" / "MUNI-s0"  # the preset's cap (3000), stopped by the clock at 1100
    _finished_run(clock, steps=3000, summary={"stopped_reason": "time budget (2 min)", "steps_done": 1100})
    assert bench.train_row(tmp_path, "s", "MUNI", "muni", "polymnist-quadrant", "quick", (), 2.0, 0,
                           log=lambda s: None) == clock
    capped = tmp_path / "runs" / "s" / "MoPoE-s0"  # stopped by the cap: it had budget left
    _finished_run(capped, method="mopoe", steps=3000, summary={"stopped_reason": "completed", "steps_done": 3000})
    with pytest.raises(ConfigError, match="other model or training configs"):
        bench.train_row(tmp_path, "s", "MoPoE", "mopoe", "polymnist-quadrant", "quick", (), 2.0, 0,
                        log=lambda s: None)
    with pytest.raises(pytest.fail.Exception):
        bench.train_row(tmp_path, "s", "MVAE", "mvae", "polymnist-quadrant", "quick", ("model.beta=2",), 5.0, 1,
                        log=lambda s: None)
    cmd = " ".join(cmds[-1])
    assert f"train.steps={bench.BUDGET_STEP_CAP}" in cmd and "train.minutes=5.0" in cmd and "model.beta=2" in cmd
    assert "ae_steps" not in cmd


def test_a_budget_lifts_jointflows_stage_one_step_count_with_the_step_cap(tmp_path, monkeypatch):
    """Under a budget JointFlow's stage 1 ends at `ae_fraction` of it, not at the preset's ae_steps
    (half the preset's 3000 steps); a run trained with the preset's ae_steps is not reused."""
    import muni.bench as bench
    from muni.commands.train import resolve

    mcfg, _ = resolve("jointflow", "polymnist-quadrant", "quick", 0, list(bench._budget_overrides("jointflow", (), 20.0)))
    assert mcfg.ae_steps == bench.BUDGET_STEP_CAP
    assert resolve("jointflow", "polymnist-quadrant", "quick", 0, [])[0].ae_steps == 1500  # no budget: the preset's
    cmds = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **k: cmds.append(cmd) or pytest.fail("trained"))
    old = tmp_path / "runs" / "s" / "JointFlow-s0"
    _finished_run(old, method="jointflow", minutes=20.0, ae_steps=1500,
                  summary={"stopped_reason": "time budget (20 min)", "steps_done": 9000})
    with pytest.raises(ConfigError, match="other model or training configs"):
        bench.train_row(tmp_path, "s", "JointFlow", "jointflow", "polymnist-quadrant", "quick", (), 20.0, 0,
                        log=lambda s: None)
    with pytest.raises(pytest.fail.Exception):  # a fresh row trains with the lifted stage-1 count
        bench.train_row(tmp_path, "t", "JointFlow", "jointflow", "polymnist-quadrant", "quick", (), 20.0, 0,
                        log=lambda s: None)
    assert f"model.ae_steps={bench.BUDGET_STEP_CAP}" in " ".join(cmds[-1])


def test_a_finished_run_whose_defaults_changed_is_refused_not_reported(tmp_path, monkeypatch):
    import muni.bench as bench

    stale = tmp_path / "runs" / "polymnist-quadrant" / "MUNI-s0"
    _finished_run(stale, guidance=1.5)  # trained when the default guidance was another
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("retrained over a finished run"))
    with pytest.raises(ConfigError, match="a default changed since"):
        bench.train_row(tmp_path, "polymnist-quadrant", "MUNI", "muni", "polymnist-quadrant", "quick", (),
                        2.0, 0, log=lambda s: None)
    with pytest.raises(pytest.fail.Exception):  # not reused from another suite either: trained anew
        bench.train_row(tmp_path, "ablation", "MUNI (default)", "muni", "polymnist-quadrant", "quick", (),
                        2.0, 0, log=lambda s: None)


def test_rows_whose_settings_resolve_to_the_same_configs_share_one_run(tmp_path, monkeypatch):
    """The reuse key is the resolved configs, not the override text: a row that sets a default's
    value explicitly is the default's run; another budget or method is not."""
    import muni.bench as bench

    done = tmp_path / "runs" / "polymnist-quadrant" / "MUNI-s0"
    _finished_run(done)
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("retrained a finished run"))
    got = bench.train_row(tmp_path, "ablation", "self_recon=full_detach", "muni", "polymnist-quadrant",
                          "quick", ("model.self_recon=full_detach",), 2.0, 0, log=lambda s: None)
    assert got == done
    for method, minutes in (("muni", 3.0), ("mopoe", 2.0)):
        with pytest.raises(pytest.fail.Exception):
            bench.train_row(tmp_path, "x", "row", method, "polymnist-quadrant", "quick", (), minutes, 0,
                            log=lambda s: None)


def test_sweeps_pass_the_swept_sampler_option_to_generate():
    from _eval_fixtures import FakeClassifiers, tiny_polymnist
    from muni.bench import GUIDANCE_SWEEP, NFE_SWEEP, guidance_sweep, nfe_sweep
    from muni.evaluation.reference import Oracle

    ds = tiny_polymnist()

    class Recorder(Oracle):
        seen: list = []

        def generate(self, given, targets, n=None, generator=None, *, guidance=2.0, prior_nfe=32):
            self.seen.append((guidance, prior_nfe))
            return super().generate(given, targets, n=n, generator=generator)

    model = Recorder(ds)
    sweep = nfe_sweep(model, ds, FakeClassifiers(ds), 20, 0)
    assert list(sweep) == [str(k) for k in NFE_SWEEP] and {nfe for _, nfe in model.seen} == set(NFE_SWEEP)
    assert all(v["value"] == 1.0 for v in sweep.values())  # the oracle is coherent at every NFE
    model.seen.clear()
    gs = guidance_sweep(model, ds, FakeClassifiers(ds), 20, 0)
    assert list(gs) == [f"{w:g}" for w in GUIDANCE_SWEEP] and {w for w, _ in model.seen} == set(GUIDANCE_SWEEP)
    assert set(gs["4"]) == {"single_digit", "one_to_many_digit", "single_quadrant", "one_to_many_quadrant"}


def test_minutes_take_a_default_and_per_suite_budgets():
    from muni.commands.bench import parse_minutes

    assert parse_minutes(["2"]) == {"*": 2.0}
    assert parse_minutes(["2", "digits-ita=6"]) == {"*": 2.0, "digits-ita": 6.0}
    assert parse_minutes(["digits-ita=6"]) == {"digits-ita": 6.0, "*": 5.0}
    for bad, msg in ((["nope=3"], "unknown suite"), (["two"], "not a number"), (["-1"], ">= 0")):
        with pytest.raises(ConfigError, match=msg):
            parse_minutes(bad)

"""`muni bench` bookkeeping: suites as data, the run identity (`RunSpec` hash), reuse, tables."""

import dataclasses
import json

import pytest
import torch

import muni.bench as bench
from muni.bench import SUITES, Row, expand, row_spec
from muni.errors import ConfigError
from muni.evaluation.report import results_table
from muni.registry import METHODS
from muni.run import BUDGET_STEP_CAP, RunSpec


def _res(value):
    return {"metrics": {"a": {"value": value}, "b": {"value": 1 - value}}}


def test_results_table_means_stds_and_bold_best():
    table = results_table({"x": [_res(0.2), _res(0.4)], "y": [_res(0.9)]}, [("A", "a"), ("B", "b")],
                          intervals=False, bold_best=True, chance=False)
    rows = table.splitlines()
    assert rows[2] == "| x | 0.300 ± 0.100 | **0.700 ± 0.100** |"
    assert rows[3] == "| y | **0.900** | 0.100 |"


def test_suites_name_registered_methods_and_expand():
    for name, suite in SUITES.items():
        assert all(row.method in METHODS for row in suite.rows.values()), name
        assert set(suite.sweeps) <= set(suite.rows) and set(suite.speed_options) <= set(suite.rows), name
    assert expand(["all"]) == ["polymnist-quadrant", "digits-ita", "ablation", "ablation-ita", "lr-ita"]
    with pytest.raises(ConfigError, match="unknown suite"):
        expand(["nope"])


def test_ablation_rows_differ_from_default_by_one_switch():
    rows = SUITES["ablation"].rows
    assert rows["MUNI (default)"] == Row("muni")
    for name, row in rows.items():
        if name != "MUNI (default)":  # one training switch (one or two keys), or one sampler option
            assert (1 <= len(row.overrides) <= 2 and not row.sampling) or (not row.overrides and len(row.sampling) == 1)
    assert len(set(rows.values())) == len(rows), "two ablation rows are identical"
    base = row_spec(rows["MUNI (default)"], "polymnist-quadrant", "quick", 5, 0)
    fast = row_spec(rows["lr=2e-3"], "polymnist-quadrant", "quick", 5, 0)
    assert (base.train.lr, fast.train.lr) == (1e-3, 2e-3)
    assert base.model == fast.model and dataclasses.replace(fast.train, lr=1e-3) == base.train


def test_the_digits_ita_ablation_overrides_the_presets_refiner_settings():
    """A row's override comes after the dataset's presets (whose start and fraction are the
    codec's, whose learning rate is 1e-3), and changes that one key alone."""
    rows = SUITES["ablation-ita"].rows
    specs = {name: row_spec(row, "digits-ita", "quick", 5, 0) for name, row in rows.items()}
    assert {name: (s.model.codec.private_start, s.model.codec.flow_fraction, s.train.lr)
            for name, s in specs.items()} == {
        "MUNI (preset)": (1000, 0.25, 1e-3), "private_start=0": (0, 0.25, 1e-3),
        "flow_fraction=0.125": (1000, 0.125, 1e-3), "flow_fraction=0.0625": (1000, 0.0625, 1e-3),
        "lr=2e-3": (1000, 0.25, 2e-3)}
    assert all(s.model.codec.audio_decoder == "residual_private" for s in specs.values())


def test_the_learning_rate_suite_pairs_each_method_with_its_doubled_rate():
    """Each method's two rows are its Digits-ITA preset and the same with the learning rate alone
    doubled; MUNI's pair is the ablation's, so one output folder trains those runs once."""
    rows = SUITES["lr-ita"].rows
    assert SUITES["lr-ita"].dataset == "digits-ita"
    for name in ("JointFlow", "MoPoE", "MUNI"):
        base = row_spec(rows[name], "digits-ita", "quick", 5, 0)
        fast = row_spec(rows[f"{name} lr=2e-3"], "digits-ita", "quick", 5, 0)
        assert (base.train.lr, fast.train.lr) == (1e-3, 2e-3)
        assert base.model == fast.model and dataclasses.replace(fast.train, lr=1e-3) == base.train
    ablation = SUITES["ablation-ita"].rows
    assert row_spec(rows["MUNI lr=2e-3"], "digits-ita", "quick", 5, 0).hash() == \
        row_spec(ablation["lr=2e-3"], "digits-ita", "quick", 5, 0).hash()


def test_run_hash_changes_with_any_setting():
    base = row_spec(Row("muni"), "polymnist-quadrant", "quick", 5.0, 0)
    assert base.hash() == row_spec(Row("muni"), "polymnist-quadrant", "quick", 5.0, 0).hash()
    others = [row_spec(Row("muni", ("model.beta=1",)), "polymnist-quadrant", "quick", 5.0, 0),
              row_spec(Row("muni"), "polymnist-quadrant", "quick", 6.0, 0),
              row_spec(Row("muni"), "polymnist-quadrant", "quick", 5.0, 1),
              row_spec(Row("muni"), "digits-ita", "quick", 5.0, 0),
              row_spec(Row("mvae"), "polymnist-quadrant", "quick", 5.0, 0)]
    assert len({base.hash(), *(o.hash() for o in others)}) == 6
    # a row that sets a default's value explicitly is the same run
    same = row_spec(Row("muni", ("model.self_recon=full_detach",)), "polymnist-quadrant", "quick", 5.0, 0)
    assert same.hash() == base.hash()


def test_a_budget_lifts_the_step_cap_and_keeps_the_stage_counts():
    spec = row_spec(Row("jointflow"), "polymnist-quadrant", "quick", 20.0, 0)
    assert spec.train.steps == BUDGET_STEP_CAP and spec.train.minutes == 20.0
    assert spec.model.ae_steps == 1500  # under a budget the stage ends at ae_fraction (Method.stages)
    plain = RunSpec.resolve("jointflow", "polymnist-quadrant", "quick")
    assert plain.train.steps == 3000 and plain.train.minutes == 0.0
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).hash() == spec.hash()


def _finished_run(run, spec: RunSpec, **changed):
    """A run directory as `muni train --spec` leaves it (`changed` model fields altered, as if a
    default had changed since it was trained)."""
    if changed:
        spec = dataclasses.replace(spec, model=dataclasses.replace(spec.model, **changed))
    run.mkdir(parents=True)
    spec.save(run / "run.json")
    (run / "latest").write_text("ckpt-9")
    (run / "summary.json").write_text(json.dumps({"run_hash": spec.hash(), "steps_done": 9}))


def _no_training(monkeypatch):
    cmds = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **k: cmds.append(cmd) or pytest.fail("trained"))
    return cmds


def test_finished_run_of_another_suite_is_reused_not_retrained(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    spec = row_spec(Row("muni"), "polymnist-quadrant", "quick", 2.0, 0)
    done = tmp_path / "runs" / "polymnist-quadrant" / "MUNI-s0"
    _finished_run(done, spec)
    assert bench.train_row(tmp_path, "ablation", "MUNI (default)", spec, log=lambda s: None) == done
    explicit = row_spec(Row("muni", ("model.self_recon=full_detach",)), "polymnist-quadrant", "quick", 2.0, 0)
    assert bench.train_row(tmp_path, "ablation", "self_recon=full_detach", explicit, log=lambda s: None) == done
    for other in (row_spec(Row("muni"), "polymnist-quadrant", "quick", 2.0, 1),
                  row_spec(Row("muni"), "polymnist-quadrant", "quick", 3.0, 0),
                  row_spec(Row("mopoe"), "polymnist-quadrant", "quick", 2.0, 0)):
        with pytest.raises(pytest.fail.Exception):  # another seed, budget or method: trained anew
            bench.train_row(tmp_path, "x", "row", other, log=lambda s: None)


def test_a_run_whose_defaults_changed_is_refused_not_reported(tmp_path, monkeypatch):
    _no_training(monkeypatch)
    spec = row_spec(Row("muni"), "polymnist-quadrant", "quick", 2.0, 0)
    stale = tmp_path / "runs" / "polymnist-quadrant" / "MUNI-s0"
    _finished_run(stale, spec, guidance=1.5)  # trained when the default guidance was another
    with pytest.raises(ConfigError, match="a default changed since"):
        bench.train_row(tmp_path, "polymnist-quadrant", "MUNI", spec, log=lambda s: None)
    with pytest.raises(pytest.fail.Exception):  # not reused from another suite either: trained anew
        bench.train_row(tmp_path, "ablation", "MUNI (default)", spec, log=lambda s: None)


def test_a_row_trains_from_a_spec_file(tmp_path, monkeypatch):
    cmds = _no_training(monkeypatch)
    spec = row_spec(Row("mvae", ("model.beta=2",)), "polymnist-quadrant", "quick", 5.0, 1)
    with pytest.raises(pytest.fail.Exception):
        bench.train_row(tmp_path, "s", "MVAE", spec, log=lambda s: None)
    cmd = cmds[-1]
    assert cmd[cmd.index("--spec") + 1] == str(tmp_path / "runs" / "s" / "MVAE-s1" / "spec.json")
    assert "--set" not in cmd and "--minutes" not in cmd
    assert RunSpec.load(tmp_path / "runs" / "s" / "MVAE-s1" / "spec.json").hash() == spec.hash()


def test_a_sampling_row_reuses_the_run_and_is_scored_with_its_options(tmp_path, monkeypatch):
    import muni.evaluation.report as report
    import muni.evaluation.sweeps as sweeps
    import muni.registry as registry
    from muni.methods.muni import Muni

    run = tmp_path / "runs" / "ablation" / "MUNI__default_-s0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"run_hash": "h"}))
    calls = []

    def fake_eval(model, *a, sampling=None, out_dir=None, **k):
        calls.append(sampling)
        return {"config": {"n": 10, "seed": 0}}

    class Stub(torch.nn.Linear):
        Sampling = Muni.Sampling

    monkeypatch.setattr(registry, "load_model", lambda path: Stub(1, 1))
    monkeypatch.setattr(report, "run_evaluation", fake_eval)
    monkeypatch.setattr(sweeps, "sampling_speed", lambda model, n, options: {})
    suite = SUITES["ablation"]

    def evaluate(row, **kw):
        s = dataclasses.replace(suite, rows={**suite.rows, **kw}) if kw else suite
        return bench.evaluate_row(tmp_path, s, "ablation", row, run, "quick", 10, 0, {}, log=lambda s: None)

    evaluate("MUNI (default)")
    post = evaluate("conditional_sampler=posterior")
    assert calls == [None, {"conditional_sampler": "posterior"}]
    assert post["sampling_options"] == {"conditional_sampler": "posterior"}
    assert (tmp_path / "eval" / "ablation" / "conditional_sampler=posterior-s0" / "results.json").exists()
    evaluate("conditional_sampler=posterior")
    assert len(calls) == 2, "the finished evaluation with the same options was not reused"
    evaluate("conditional_sampler=posterior", **{"conditional_sampler=posterior": Row("muni", (), (("guidance", 2.0),))})
    assert len(calls) == 3, "an evaluation with other sampler options was reused"


def test_sweeps_pass_the_swept_sampler_option_to_generate():
    from dataclasses import dataclass

    from _eval_fixtures import FakeClassifiers, tiny_polymnist
    from muni.bench import GUIDANCE_SWEEP, NFE_SWEEP
    from muni.evaluation.reference import Oracle
    from muni.evaluation.sweeps import sweep

    ds = tiny_polymnist()

    @dataclass
    class Options:
        guidance: float | None = None
        prior_nfe: int | None = None

    class Recorder(Oracle):
        Sampling = Options
        seen: list = []

        def generate(self, given, targets, n=None, generator=None, *, guidance=2.0, prior_nfe=32):
            self.seen.append((guidance, prior_nfe))
            return super().generate(given, targets, n=n, generator=generator)

    model = Recorder(ds)
    sw = sweep(model, ds, FakeClassifiers(ds), 20, 0, NFE_SWEEP.option, NFE_SWEEP.values)
    assert list(sw) == [f"{k:g}" for k in NFE_SWEEP.values] and {nfe for _, nfe in model.seen} == set(NFE_SWEEP.values)
    assert all(v["value"] == 1.0 for v in sw.values())  # the oracle is coherent at every NFE
    model.seen.clear()
    gs = sweep(model, ds, FakeClassifiers(ds), 20, 0, GUIDANCE_SWEEP.option, GUIDANCE_SWEEP.values,
               GUIDANCE_SWEEP.task, GUIDANCE_SWEEP.factors)
    assert list(gs) == [f"{w:g}" for w in GUIDANCE_SWEEP.values]
    assert {w for w, _ in model.seen} == set(GUIDANCE_SWEEP.values)
    assert set(gs["4"]) == {"single_digit", "one_to_many_digit", "single_quadrant", "one_to_many_quadrant"}


def test_minutes_take_a_default_and_per_suite_budgets():
    from muni.commands.bench import parse_minutes

    assert parse_minutes(["2"]) == {"*": 2.0}
    assert parse_minutes(["2", "digits-ita=6"]) == {"*": 2.0, "digits-ita": 6.0}
    assert parse_minutes(["digits-ita=6"]) == {"digits-ita": 6.0, "*": 5.0}
    for bad, msg in ((["nope=3"], "unknown suite"), (["two"], "not a number"), (["-1"], ">= 0")):
        with pytest.raises(ConfigError, match=msg):
            parse_minutes(bad)


def test_rows_restrict_every_suite_and_unknown_rows_are_refused(tmp_path, monkeypatch):
    import muni.data as data
    import muni.evaluation.classifiers as classifiers

    with pytest.raises(ConfigError, match="'MUNl'.*rows:"):
        bench.run_bench(["polymnist-quadrant"], "quick", 1, tmp_path / "x", 1.0, 10, rows=["MUNl"])
    assert not (tmp_path / "x").exists(), "a refused command wrote something"
    trained = []
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: None)
    monkeypatch.setattr(classifiers, "load_or_train_classifiers", lambda *a, **k: type("C", (), {"accuracy": {}})())
    monkeypatch.setattr(bench, "train_row", lambda out, suite, name, spec, log: trained.append((suite, name)))
    training = {"steps_done": 1, "samples_per_s": 1.0, "train_wall_time_s": 1.0}
    monkeypatch.setattr(bench, "evaluate_row", lambda *a, **k: {"metrics": {}, "training": training, "parameters": 0,
                                                                 "sampling": {}, "eval_wall_time_s": 1.0})
    monkeypatch.setattr(bench, "_sweep_section", lambda *a, **k: ([], {}))
    report = bench.run_bench(["polymnist-quadrant", "digits-ita"], "quick", 2, tmp_path / "y", 1.0, 10,
                             rows=["MUNI"], log=lambda s: None)
    assert trained == [("polymnist-quadrant", "MUNI")] * 2 + [("digits-ita", "MUNI")] * 2
    assert "--rows MUNI`" in (tmp_path / "y" / "REPORT.md").read_text() and report["rows"] == ["MUNI"]

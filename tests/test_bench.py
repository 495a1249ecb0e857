"""`muni bench` bookkeeping: suites, tables (mean ± std, best in bold), run hashes."""

import pytest

from muni.bench import SUITES, _run_hash, aggregate, expand
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
        assert all(method in METHODS for method, _ in suite.rows.values()), name
    assert expand(["all"]) == ["polymnist-quadrant", "digits-ita", "ablation"]
    with pytest.raises(ConfigError, match="unknown suite"):
        expand(["nope"])


def test_ablation_rows_differ_from_default_by_one_switch():
    rows = SUITES["ablation"].rows
    assert rows["MUNI (default)"] == ("muni", ())
    assert all(1 <= len(over) <= 2 for name, (_, over) in rows.items() if name != "MUNI (default)")
    assert len(set(rows.values())) == len(rows), "two ablation rows are identical"


def test_run_hash_changes_with_any_setting():
    base = _run_hash("muni", "d", "quick", (), 5.0, 0)
    assert base == _run_hash("muni", "d", "quick", (), 5.0, 0)
    assert len({base, _run_hash("muni", "d", "quick", ("model.beta=1",), 5.0, 0),
                _run_hash("muni", "d", "quick", (), 6.0, 0), _run_hash("muni", "d", "quick", (), 5.0, 1),
                _run_hash("mvae", "d", "quick", (), 5.0, 0)}) == 5


def test_finished_run_of_another_suite_is_reused_not_retrained(tmp_path, monkeypatch):
    import json

    import muni.bench as bench

    h = _run_hash("muni", "polymnist-quadrant", "quick", (), 2.0, 0)
    done = tmp_path / "runs" / "polymnist-quadrant" / "MUNI-s0"
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"bench_hash": h}))
    monkeypatch.setattr(bench.subprocess, "run", lambda *a, **k: pytest.fail("retrained a finished run"))
    got = bench.train_row(tmp_path, "ablation", "MUNI (default)", "muni", "polymnist-quadrant", "quick", (),
                          2.0, 0, log=lambda s: None)
    assert got == done
    with pytest.raises(pytest.fail.Exception):  # a different seed is not the same run
        bench.train_row(tmp_path, "ablation", "MUNI (default)", "muni", "polymnist-quadrant", "quick", (),
                        2.0, 1, log=lambda s: None)


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

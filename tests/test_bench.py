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

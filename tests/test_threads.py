"""The thread governor: fewer torch threads while other processes keep CPUs busy, back when
they stop; the training loop applies it only with train.num_threads=0 and restores the count."""

from __future__ import annotations

import sys

import pytest
import torch

from _toy import ToyModel, toy_dataset
from muni.training import TrainConfig, train
from muni.training import loop as loop_module
from muni.training.threads import ThreadGovernor, allowed_cpus, busy_seconds, threads_for


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


class Machine:
    """A fake 2-CPU machine: `others` CPUs busy with other processes, this process busy on
    `own` CPUs, one second of wall time per `tick`."""

    def __init__(self, others: float = 0.0, own: float = 1.0) -> None:
        self.others, self.own_rate, self.t, self.busy_s, self.own_s = others, own, 0.0, 0.0, 0.0

    def tick(self, seconds: float = 1.0) -> None:
        self.t += seconds
        self.own_s += self.own_rate * seconds
        self.busy_s += (self.own_rate + self.others) * seconds

    def governor(self, most: int = 2, every_s: float = 2.0, adapt: bool = True) -> ThreadGovernor:
        return ThreadGovernor(most=most, every_s=every_s, adapt=adapt, busy=lambda: self.busy_s,
                              own=lambda: self.own_s, clock=lambda: self.t, n_cpus=2)


def test_threads_for_rounds_the_free_cpus_within_one_and_the_ceiling():
    assert [threads_for(f, 2) for f in (2.0, 1.6, 1.4, 1.0, 0.5, 0.0, -3.0)] == [2, 2, 1, 1, 1, 1, 1]
    assert threads_for(7.8, 4) == 4 and threads_for(2.6, 4) == 3


def test_governor_gives_way_to_a_busy_process_and_takes_the_cpus_back(keep_threads):
    m = Machine()
    torch.set_num_threads(2)
    g = m.governor()
    m.tick()
    assert g.poll() is None  # within the first window: no measurement yet
    m.tick()
    assert g.poll() is None and torch.get_num_threads() == 2  # idle machine: stays at 2
    m.others = 1.2  # another job starts
    m.tick(2)
    assert g.poll() == 1 and torch.get_num_threads() == 1
    assert g.others == pytest.approx(1.2)
    m.tick(2)
    assert g.poll() is None and torch.get_num_threads() == 1  # still busy: no change
    m.others = 0.1  # it ends
    m.tick(2)
    assert g.poll() == 2 and torch.get_num_threads() == 2


def test_governor_never_exceeds_its_ceiling_and_is_inert_without_readings(keep_threads):
    torch.set_num_threads(1)
    m = Machine()
    g = m.governor(most=1)
    m.tick(5)
    assert not g.adapt and g.poll() is None and torch.get_num_threads() == 1
    assert g.others_mean == pytest.approx(0.0)  # it still measures
    blind = ThreadGovernor(most=2, busy=lambda: None)
    assert not blind.active and blind.poll() is None and blind.others_mean is None


def test_a_meter_measures_the_others_without_touching_the_threads(keep_threads):
    torch.set_num_threads(2)
    m = Machine(others=1.5)
    g = m.governor(adapt=False)
    assert g.others_mean is None
    m.tick(2)
    assert g.poll() is None and torch.get_num_threads() == 2
    m.others = 0.5
    m.tick(6)
    assert g.poll() is None and torch.get_num_threads() == 2
    assert g.others_mean == pytest.approx((1.5 * 2 + 0.5 * 6) / 8)


def test_cost_table_names_the_rows_whose_runs_shared_the_machine():
    from muni.evaluation.report import cost_table

    def res(other):
        return {"parameters": 1e6, "sampling": {"prior_nfe=8": 100.0}, "eval_wall_time_s": 3.0,
                "training": {"steps_done": 10, "samples_per_s": 5.0, "train_wall_time_s": 2.0,
                             "train_peak_rss_mib": 1.0, "peak_rss_mib": 2.0, "other_cpus": other}}

    table = cost_table({"A": [res(0.02), res(0.9)], "B": [res(0.0)]})
    assert "| 0.46 |" in table and "| 0.00 |" in table
    assert "A (1 of 2 runs; up to 0.90 CPUs)" in table and "B (" not in table
    assert "Not alone" not in cost_table({"B": [res(0.1)]})
    assert "n/a" in cost_table({"old": [res(None)]})  # runs made before it was recorded


def test_busy_seconds_counts_only_the_allowed_cpus(tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  600 0 300 900 9 0 0 0 0 0\n"
                    "cpu0 100 0 50 400 5 1 2 3 0 0\n"
                    "cpu1 500 0 250 500 4 0 0 0 0 0\n"
                    "intr 1 2 3\n")
    from os import sysconf

    hz = sysconf("SC_CLK_TCK")
    assert busy_seconds([0], str(stat)) == pytest.approx(156 / hz)  # idle and iowait left out
    assert busy_seconds([0, 1], str(stat)) == pytest.approx((156 + 750) / hz)
    assert busy_seconds([0], str(tmp_path / "absent")) is None
    stat.write_text("cpu0 garbage\n")
    assert busy_seconds([0], str(stat)) is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/stat is Linux's")
def test_busy_seconds_reads_this_machine():
    assert busy_seconds(allowed_cpus()) > 0


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=6, batch_size=16, lr=1e-2, log_every=3, ckpt_every=0, num_threads=0), **kw})


def test_train_follows_the_governor_records_its_changes_and_restores_the_count(tmp_path, monkeypatch,
                                                                             keep_threads):
    """The suite pins 1 thread; a governor with ceiling 2 on an idle fake machine raises it to 2
    at the first measurement, the run records that, and `train` returns with 1 thread again."""
    m = Machine(others=0.0)
    monkeypatch.setattr(loop_module, "ThreadGovernor",
                        lambda adapt=True: m.governor(most=2, every_s=0.5, adapt=adapt))
    seen = []

    class Watch(ToyModel):
        def begin_step(self, step: int) -> None:
            m.tick()
            seen.append(torch.get_num_threads())

    torch.manual_seed(0)
    torch.set_num_threads(1)
    res = train(Watch(), toy_dataset(), _cfg(), tmp_path / "adaptive", progress=False)
    assert res.thread_changes == [(1, 2)] and res.other_cpus == pytest.approx(0.0)
    assert seen == [1, 2, 2, 2, 2, 2]
    assert torch.get_num_threads() == 1

    torch.manual_seed(0)
    seen.clear()
    fixed = train(Watch(), toy_dataset(), _cfg(num_threads=1), tmp_path / "fixed", progress=False)
    assert fixed.thread_changes == [] and seen == [1] * 6  # a fixed count is never changed
    assert fixed.other_cpus == pytest.approx(0.0)  # but the others' load is measured

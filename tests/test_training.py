"""The training loop: loss goes down, logs, budgets, exact resume, kill-and-resume, divergence."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from _toy import ToyModel, toy_dataset
from muni.errors import CheckpointError, ConfigError, MuniError
from muni.training import (TrainConfig, TrainingDivergedError, load_checkpoint,
                           shared_generator, train)
from muni.training.checkpoint import checkpoint_steps
from muni.training.logging import read_log
from muni.training.loop import DataOrder

TESTS = Path(__file__).parent


def cfg(**kw) -> TrainConfig:
    base = dict(steps=30, batch_size=24, lr=1e-2, weight_decay=0.01, warmup_steps=5, grad_clip=0.5,
                ema_decay=0.9, seed=3, log_every=4, ckpt_every=5, num_threads=1, keep_last=2)
    return TrainConfig(**{**base, **kw})


def model(seed: int = 0, **kw) -> ToyModel:
    torch.manual_seed(seed)
    return ToyModel(**kw)


def test_toy_run_decreases_loss_and_writes_log(tmp_path):
    res = train(model(), toy_dataset(), cfg(steps=150, batch_size=16, log_every=10, ckpt_every=50),
                tmp_path, progress=False)
    rows = read_log(tmp_path / "log.csv")
    assert res.stopped_reason == "completed" and res.steps_done == 150
    assert [r["step"] for r in rows] == list(range(10, 151, 10))
    assert {"step", "time_s", "samples_per_s", "lr", "loss", "mse", "ce", "grad_norm"} <= set(rows[0])
    assert rows[-1]["loss"] < rows[0]["loss"] / 3
    assert res.final_losses["loss"] == pytest.approx(rows[-1]["loss"])
    assert res.samples_per_s > 0 and all(r["samples_per_s"] > 0 for r in rows)
    assert load_checkpoint(tmp_path).step == 150


def test_time_budget_stops_early_and_checkpoints(tmp_path):
    res = train(model(), toy_dataset(), cfg(steps=100_000, minutes=0.2 / 60, ckpt_every=0),
                tmp_path, progress=False)
    assert res.stopped_reason.startswith("time budget")
    assert 1 <= res.steps_done < 100_000
    assert load_checkpoint(tmp_path).step == res.steps_done
    assert read_log(tmp_path / "log.csv")[-1]["step"] == res.steps_done


def _same_state(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca.step == cb.step
    assert sorted(ca.tensors) == sorted(cb.tensors)
    for k in ca.tensors:
        assert torch.equal(ca.tensors[k], cb.tensors[k]), k


def test_exact_resume_is_bitwise(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    m_full = model()
    train(m_full, toy_dataset(), cfg(), full, meta={"method": "toy"}, progress=False)
    train(model(), toy_dataset(), cfg(steps=13), part, meta={"method": "toy"}, progress=False)
    m_res = model(seed=99)  # different init: everything must come from the checkpoint
    res = train(m_res, toy_dataset(), cfg(), part, resume=True, meta={"method": "toy"},
                progress=False)
    assert res.steps_done == 30
    for (n, p), q in zip(m_full.named_parameters(), m_res.parameters()):
        assert torch.equal(p, q), n
    _same_state(full, part)  # EMA, optimizer, RNG and data-order state too
    log_full, log_part = read_log(full / "log.csv"), read_log(part / "log.csv")
    drop = ("time_s", "samples_per_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in log_full] == \
           [{k: v for k, v in r.items() if k not in drop} for r in log_part]


def test_resume_refusals(tmp_path):
    train(model(), toy_dataset(), cfg(steps=5), tmp_path, meta={"method": "toy"}, progress=False)
    with pytest.raises(MuniError, match="already holds checkpoints"):
        train(model(), toy_dataset(), cfg(), tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="batch_size"):
        train(model(), toy_dataset(), cfg(batch_size=16), tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="method 'toy', expected 'other'"):
        train(model(), toy_dataset(), cfg(), tmp_path, resume=True, meta={"method": "other"},
              progress=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        train(model(), toy_dataset(), cfg(), tmp_path / "empty", resume=True, progress=False)


def test_bad_config_and_out_dir(tmp_path):
    with pytest.raises(ConfigError, match="train.lr"):
        TrainConfig(lr=0).check()
    with pytest.raises(ConfigError, match="exceeds the 8 samples"):
        train(model(), toy_dataset(8), cfg(batch_size=16), tmp_path / "a", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MuniError, match="not writable"):
        train(model(), toy_dataset(), cfg(), blocker / "run", progress=False)


_KILL_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import torch
from _toy import ToyModel, toy_dataset
from muni.training import TrainConfig, train
torch.manual_seed(0)
cfg = TrainConfig(**{cfg!r})
train(ToyModel(), toy_dataset(), cfg, {out!r}, on_sample=lambda m, s, o: time.sleep(0.05),
      progress=False)
"""


def test_kill_and_resume_matches_uninterrupted(tmp_path):
    c = dict(steps=40, batch_size=24, lr=1e-2, ema_decay=0.9, seed=1, log_every=3, ckpt_every=1,
             sample_every=1, num_threads=1, keep_last=2)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT.format(tests=str(TESTS), cfg=c,
                                                                      out=str(out))])
    try:
        deadline = time.time() + 600  # generous: a starved machine may take a minute to import torch
        while True:
            latest = out / "latest"
            if latest.exists() and int(latest.read_text().strip().split("-")[1]) >= 6:
                break
            assert proc.poll() is None, "training subprocess exited early"
            assert time.time() < deadline, "no checkpoint at step >= 6 within 600 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(out).step
    assert 6 <= killed_at < 40
    m_res = model(seed=5)
    train(m_res, toy_dataset(), TrainConfig(**c), out, resume=True, progress=False)
    m_ref = model(seed=0)
    train(m_ref, toy_dataset(), TrainConfig(**c), tmp_path / "ref", progress=False)
    for p, q in zip(m_ref.parameters(), m_res.parameters()):
        assert torch.equal(p, q)
    assert not list(out.glob(".tmp-*"))
    assert [r["loss"] for r in read_log(out / "log.csv")] == \
           [r["loss"] for r in read_log(tmp_path / "ref" / "log.csv")]


@pytest.mark.parametrize("ckpt_every, good", [(5, 5), (1, 7), (100, None)])
def test_divergence_rewinds_to_a_good_checkpoint_and_resume_applies_new_settings(
        tmp_path, ckpt_every, good):
    # lr=3 drives a weight past max_weight after step 8: the state at step 8 fails on any lr.
    bad = cfg(steps=20, lr=3.0, warmup_steps=0, grad_clip=0.0, ckpt_every=ckpt_every, keep_last=1)
    rewound = rf"rewound to ckpt-{good}\b" if good else "No checkpoint precedes it"
    with pytest.raises(TrainingDivergedError, match=rf"diverged at step 9: .*{rewound}"):
        train(model(max_weight=15), toy_dataset(), bad, tmp_path, progress=False)
    assert checkpoint_steps(tmp_path) == ([good] if good else [])
    if good is None:
        return
    assert load_checkpoint(tmp_path).step == good  # `latest` too
    calm = dataclasses.replace(bad, lr=1e-3, betas=(0.5, 0.9), weight_decay=0.1, grad_clip=0.5)
    res = train(model(max_weight=15), toy_dataset(), calm, tmp_path, resume=True, progress=False)
    assert res.steps_done == 20
    ck = load_checkpoint(tmp_path)
    assert ck.info["changes"] == [{"step": good, "changed": {
        "lr": [3.0, 1e-3], "betas": [[0.9, 0.999], [0.5, 0.9]], "weight_decay": [0.01, 0.1],
        "grad_clip": [0.0, 0.5]}}]
    groups = ck.info["optimizer"]["param_groups"]
    assert [g["betas"] for g in groups] == [[0.5, 0.9]] * 2
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_a_changed_setting_is_recorded_once_and_carried_on(tmp_path):
    train(model(), toy_dataset(), cfg(steps=10), tmp_path, progress=False)
    train(model(), toy_dataset(), cfg(steps=15, ema_decay=0.5), tmp_path, resume=True,
          progress=False)
    train(model(), toy_dataset(), cfg(steps=20, ema_decay=0.5), tmp_path, resume=True,
          progress=False)
    assert load_checkpoint(tmp_path).info["changes"] == [
        {"step": 10, "changed": {"ema_decay": [0.9, 0.5]}}]


def test_on_sample_gets_ema_weights_and_leaves_training_rng_alone(tmp_path):
    seen = []

    def on_sample(m, step, out_dir):
        seen.append((step, m.training, {k: v.clone() for k, v in m.named_parameters()}))
        torch.randn(1000)  # sampling consumes RNG; training must not notice

    m1, m2 = model(), model()
    train(m1, toy_dataset(), cfg(sample_every=10), tmp_path / "a", on_sample=on_sample,
          progress=False)
    train(m2, toy_dataset(), cfg(), tmp_path / "b", progress=False)
    assert [s for s, _, _ in seen] == [10, 20, 30] and not any(t for _, t, _ in seen)
    for p, q in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p, q)
    ema = load_checkpoint(tmp_path / "a").group("ema")
    for k, v in seen[-1][2].items():
        assert torch.equal(v, ema[f"shadow.{k}"])
    assert not torch.equal(seen[-1][2]["dec.weight"], m1.dec.weight)  # EMA != raw weights
    assert m1.training


def test_data_order_shards_are_disjoint_slices_of_one_permutation():
    n, b = 50, 12
    single = DataOrder(n, b, seed=7, rank=0, world_size=1)
    ranks = [DataOrder(n, b, seed=7, rank=r, world_size=3) for r in range(3)]
    seen_epoch: list[int] = []
    for step in range(9):
        glob = single.next()
        parts = [o.next() for o in ranks]
        assert torch.equal(torch.cat(parts), glob)
        seen_epoch += glob.tolist()
        if (step + 1) % (n // b) == 0:  # one epoch: no repeats, drop_last remainder
            assert len(set(seen_epoch)) == len(seen_epoch) == (n // b) * b
            seen_epoch = []
    state = ranks[1].state()
    again = DataOrder(n, b, seed=0, rank=1, world_size=3)
    again.restore(*state)
    assert all(torch.equal(again.next(), ranks[1].next()) for _ in range(6))


def test_shared_generator():
    a = torch.rand(4, generator=shared_generator(1, 10))
    assert torch.equal(a, torch.rand(4, generator=shared_generator(1, 10)))
    assert not torch.equal(a, torch.rand(4, generator=shared_generator(1, 11)))
    assert not torch.equal(a, torch.rand(4, generator=shared_generator(2, 10)))


def test_shared_generator_inside_train_follows_step(tmp_path):
    draws = []

    class Drawing(ToyModel):
        def loss(self, batch):
            draws.append(torch.rand(1, generator=shared_generator()).item())
            return super().loss(batch)

    train(Drawing(), toy_dataset(), cfg(steps=4, ema_decay=0.0), tmp_path, progress=False)
    assert draws == [torch.rand(1, generator=shared_generator(3, s)).item() for s in range(4)]
    assert not math.isclose(draws[0], draws[1])


def test_begin_step_gets_the_steps_done_also_after_a_resume(tmp_path):
    seen = []

    class Counting(ToyModel):
        def begin_step(self, step):
            seen.append(step)

    train(Counting(), toy_dataset(), cfg(steps=4, ema_decay=0.0), tmp_path, progress=False)
    train(Counting(), toy_dataset(), cfg(steps=7, ema_decay=0.0), tmp_path, resume=True, progress=False)
    assert seen == list(range(7))


def test_training_peak_rss_restarts_after_the_data_load() -> None:
    """The bench's memory column: a transient peak before the reset (the dataset build) must not
    show in the training peak, else every row of a suite reports the same figure."""
    import numpy as np

    from muni.training.resources import process_peak_rss_mib, reset_peak_rss, train_peak_rss_mib

    big = np.ones(40_000_000)  # 305 MiB, touched
    del big
    before = process_peak_rss_mib()
    if not reset_peak_rss():
        pytest.skip("this system does not allow /proc/self/clear_refs")
    after = train_peak_rss_mib()
    assert after < before - 200, (before, after)
    kept = np.ones(20_000_000)  # 153 MiB held: the peak sees it
    assert train_peak_rss_mib() > after + 100
    del kept

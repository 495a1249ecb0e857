"""`RunSpec`, a run's one identity: resolution, hash, files, and `run_training` writing it."""

from __future__ import annotations

import json
import os
import re

import pytest

from muni.cli import main
from muni.errors import CheckpointError, ConfigError
from muni.run import RunSpec, finished_summary, run_training

TINY_MODEL = ("model.codec.width=8", "model.codec.embed_dim=16", "model.codec.mlp_width=16",
              "model.latent_dim=4", "model.prior_hidden=16", "model.prior_depth=1", "model.agg_hidden=16",
              "model.prior_nfe=2")


def test_resolve_applies_preset_then_overrides_then_budget():
    spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 3, ["model.beta=1", "train.steps=7"], minutes=2)
    assert (spec.model.beta, spec.train.steps, spec.train.seed, spec.train.minutes) == (1.0, 7, 3, 2.0)
    assert spec.train.batch_size == 128  # the quick preset's
    assert RunSpec.resolve("mopoe", "digits-ita").model.codec.image_likelihood == "bernoulli"
    for bad, msg in ((["beta=1"], "must start with 'model.', 'train.' or 'data.'"), (["model.betaa=1"], "betaa"),
                     (["train.steps=0"], "train.steps must be >= 1"),
                     (["data.incomplete=1.5"], r"data.incomplete must be in \[0, 1\]")):
        with pytest.raises(ConfigError, match=msg):
            RunSpec.resolve("muni", overrides=bad)
    with pytest.raises(ConfigError, match="--minutes"):
        RunSpec.resolve("muni", minutes=-1)


def test_the_data_config_is_part_of_a_spec_only_when_set():
    plain = RunSpec.resolve("muni")
    assert "data_config" not in plain.to_dict()  # runs from before data.* keep their hash
    partial = RunSpec.resolve("muni", overrides=["data.incomplete=0.5"])
    assert partial.data.incomplete == 0.5 and partial.hash() != plain.hash()
    assert RunSpec.from_dict(partial.to_dict()) == partial
    with pytest.raises(ConfigError, match=re.escape("data.incomplete (0.5 -> 0.0)")):
        plain.check_resumable(partial)
    with pytest.raises(ConfigError, match="jointflow cannot train on incomplete tuples"):
        RunSpec.resolve("jointflow", overrides=["data.incomplete=0.5"])


def test_spec_files_round_trip_and_refuse_foreign_ones(tmp_path):
    spec = RunSpec.resolve("jointflow", "digits-ita", "quick", 1, ["model.nfe=4"])
    path = spec.save(tmp_path / "run.json")
    again = RunSpec.load(tmp_path)  # a run directory reads its run.json
    assert again == spec and again.hash() == spec.hash()
    assert again.hash() != RunSpec.resolve("jointflow", "digits-ita", "quick", 1).hash()
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        RunSpec.load(path)
    path.write_text(json.dumps({"method": "nope", "dataset": "d", "preset": "quick", "model_config": {},
                                "train_config": {}}))
    with pytest.raises(CheckpointError, match="unknown method 'nope'"):
        RunSpec.load(path)
    path.write_text(json.dumps({**spec.to_dict(), "model_config": {"betaa": 1}}))
    with pytest.raises(CheckpointError, match="betaa"):
        RunSpec.load(path)


def test_cli_trains_a_spec_file_and_refuses_mixing_it_with_settings(tmp_path, capsys):
    spec = RunSpec.resolve("mvae", "polymnist-quadrant", "quick", 2, ["model.beta=3"])
    spec.save(tmp_path / "spec.json")
    assert main(["train", "--spec", str(tmp_path / "spec.json"), "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["hash"] == spec.hash() and printed["method"] == "mvae" and printed["model"]["beta"] == 3.0
    assert main(["train", "--spec", str(tmp_path / "spec.json"), "--set", "model.beta=1", "--dry-run"]) == 2
    assert "--spec gives the whole run" in capsys.readouterr().err
    assert main(["train", "--spec", str(tmp_path / "missing.json"), "--dry-run"]) == 2


def test_run_training_writes_its_spec_summary_and_a_loadable_model(tmp_path, tiny_polymnist, monkeypatch):
    import muni.run

    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: tiny_polymnist[split])
    spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0,
                           [*TINY_MODEL, "train.steps=2", "train.batch_size=8", "train.sample_every=0",
                            "train.num_threads=1"])
    summary = run_training(spec, tmp_path / "run", progress=False, log=lambda s: None)
    assert summary["run_hash"] == spec.hash() and summary["steps_done"] == 2
    assert summary["torch_threads"] == 1  # train.num_threads, recorded
    assert summary["thread_changes"] == [] and summary["other_cpus"] >= 0  # a fixed count; the load measured
    assert RunSpec.load(tmp_path / "run") == spec
    assert finished_summary(tmp_path / "run", spec) == summary
    other = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 1, [*TINY_MODEL, "train.steps=2"])
    assert finished_summary(tmp_path / "run", other) is None
    from muni.registry import load_model

    model = load_model(tmp_path / "run")
    assert model.cfg == spec.model and (tmp_path / "run" / "samples" / "final" / "unconditional.png").exists()


def test_resume_refuses_a_setting_that_cannot_change_and_keeps_run_json(tmp_path, tiny_polymnist, monkeypatch):
    import muni.run

    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: tiny_polymnist[split])
    base = [*TINY_MODEL, "train.steps=2", "train.batch_size=8", "train.sample_every=0", "train.num_threads=1"]
    spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0, base)
    run_training(spec, tmp_path / "run", progress=False, log=lambda s: None)
    for change, needle in (("model.latent_dim=8", "model.latent_dim (4 -> 8)"),
                           ("model.codec.width=16", "model.codec.width (8 -> 16)"),
                           ("train.batch_size=4", "train.batch_size (8 -> 4)")):
        changed = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0, [*base, change])
        with pytest.raises(ConfigError, match=re.escape(f"--resume cannot change {needle}")):
            run_training(changed, tmp_path / "run", resume=True, progress=False, log=lambda s: None)
        assert RunSpec.load(tmp_path / "run") == spec
    later = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0,
                            [*base, "train.steps=3", "train.weight_decay=0.5"])
    assert run_training(later, tmp_path / "run", resume=True, progress=False, log=lambda s: None)["steps_done"] == 3
    from muni.training import load_checkpoint

    ck = load_checkpoint(tmp_path / "run")
    assert ck.info["changes"] == [{"step": 2, "changed": {"weight_decay": [0.0, 0.5]}}]
    assert ck.info["optimizer"]["param_groups"][0]["weight_decay"] == 0.5


def test_a_second_process_on_a_locked_run_is_refused_and_a_stale_lock_is_taken(tmp_path, capsys, monkeypatch):
    import subprocess
    import sys

    import muni.run

    monkeypatch.setattr(muni.run, "load_dataset", lambda *a, **k: pytest.fail("loaded data despite the lock"))
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from muni.run import run_lock\n"
        f"with run_lock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--out", str(out), "--set", "train.steps=1"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by another muni process (pid {holder.pid})" in err and len(err.splitlines()) == 1
        assert not (out / "run.json").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, the lock does not
        holder.wait()
    assert (out / ".lock").read_text().strip() == str(holder.pid)
    with muni.run.run_lock(out):
        assert (out / ".lock").read_text().strip() == str(os.getpid())


def test_a_method_preset_sets_one_method_on_one_dataset_and_user_overrides_win():
    from muni.registry import METHOD_PRESETS, model_config

    assert METHOD_PRESETS["digits-ita"]["muni"][0] == "beta=0.1"
    assert model_config("muni", "digits-ita", "quick").beta == 0.1
    ita, pq = model_config("muni", "digits-ita", "quick").codec, model_config("muni", "polymnist-quadrant", "quick").codec
    assert (ita.image_decoder, ita.audio_decoder) == ("gaussian", "residual_private")
    assert (ita.private_prior, ita.private_grad, ita.private_start) == ("conditional", "unit", 1000)
    assert (pq.image_decoder, pq.audio_decoder) == ("residual_private", "residual_private")
    assert (pq.private_prior, pq.private_grad, pq.private_start) == ("standard", "unit", 1000)
    assert model_config("muni", "digits-ita", "quick").temperature == 0.3
    assert model_config("muni", "polymnist-quadrant", "quick").temperature == 1.0
    assert model_config("muni", "digits-ita", "paper").beta == 0.1
    assert model_config("muni", "polymnist-quadrant", "quick").beta == 0.5
    assert model_config("mopoe", "digits-ita", "quick").beta == 2.5, "a baseline took MUNI's preset"
    assert model_config("muni", "digits-ita", "quick", ["beta=0.3"]).beta == 0.3


def test_resume_with_only_out_continues_the_run_its_run_json_describes(tmp_path, tiny_polymnist, monkeypatch):
    import muni.run

    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: tiny_polymnist[split])
    out = str(tmp_path / "run")
    base = [*TINY_MODEL, "model.beta=1.0", "train.steps=2", "train.batch_size=8", "train.sample_every=0",
            "train.num_threads=1", "data.incomplete=0.5"]
    assert main(["train", "--out", out, "--no-progress", "--set", *base]) == 0
    assert main(["train", "--out", out, "--resume", "--no-progress", "--set", "train.steps=3"]) == 0
    spec = RunSpec.load(out)
    assert (spec.model.beta, spec.train.steps, spec.data.incomplete) == (1.0, 3, 0.5)
    assert main(["train", "--out", out, "--resume", "--no-progress", "--set", "model.beta=0.5"]) == 2
    assert main(["train", "--out", out, "--resume", "--seed", "1", "--no-progress"]) == 2  # defaults again
    assert RunSpec.load(out) == spec


def test_tensorboard_gets_the_logged_rows_and_the_sample_sheets(tmp_path, tiny_polymnist, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import muni.run

    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: tiny_polymnist[split])
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--no-progress", "--tensorboard", "--set", *TINY_MODEL,
                 "train.steps=2", "train.batch_size=8", "train.log_every=1", "train.sample_every=2",
                 "train.num_threads=1"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"loss", "rate", "prior", "grad_norm"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2]
    assert "samples/unconditional" in tags["images"] and "samples/given-digit" in tags["images"]


def test_tensorboard_without_the_package_is_one_clear_error(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # importing it fails
    assert main(["train", "--out", str(tmp_path / "run"), "--tensorboard", "--set", "train.steps=1"]) == 2
    assert "pip install 'muni[tensorboard]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_an_incomplete_dataset_is_refused_for_jointflow_before_anything_is_written(tmp_path, tiny_polymnist,
                                                                                   monkeypatch):
    import muni.run
    from muni.data.base import make_incomplete

    data = {"train": make_incomplete(tiny_polymnist["train"], 0.5, 0), "test": tiny_polymnist["test"]}
    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: data[split])
    spec = RunSpec.resolve("jointflow", "polymnist-quadrant", "quick", 0, ["train.steps=2"])
    with pytest.raises(ConfigError, match="cannot train on incomplete tuples"):
        run_training(spec, tmp_path / "run", progress=False, log=lambda s: None)
    assert not (tmp_path / "run" / "run.json").exists()


def test_train_num_threads_is_applied_and_recorded(tmp_path, tiny_polymnist, monkeypatch):
    """The suite pins 1 thread (conftest), so the run asks for 2 and must get them."""
    import torch

    import muni.run

    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: tiny_polymnist[split])
    before = torch.get_num_threads()
    try:
        spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0,
                               [*TINY_MODEL, "train.steps=1", "train.batch_size=8", "train.sample_every=0",
                                "train.num_threads=2"])
        summary = run_training(spec, tmp_path / "run", progress=False, log=lambda s: None)
        assert summary["torch_threads"] == 2
    finally:
        torch.set_num_threads(before)


def test_the_refiner_start_is_announced_and_a_run_too_short_for_it_is_told():
    """`muni train` logs which decoders' refiners wait (codec.private_start), and says so when
    the run's step cap ends before the start; a model without a waiting refiner gets no line."""
    from muni.methods.muni import Muni, MuniConfig
    from muni.modalities import Modality
    from muni.modalities.config import CodecConfig
    from muni.run import refiner_start_note

    mods = {"img": Modality("img", "image", (1, 8, 8)), "label": Modality("label", "categorical", (), 2)}

    def tiny(**codec) -> Muni:
        cfg = CodecConfig(embed_dim=16, width=8, mlp_width=16, flow_width=8, flow_nfe=2, **codec)
        return Muni(mods, MuniConfig(latent_dim=4, codec=cfg, agg_hidden=16, prior_hidden=16, prior_depth=1))

    waiting = tiny(image_decoder="residual_private", private_start=50)
    assert refiner_start_note(waiting, 3000) == ("private refiners of img learn from step 50 on "
                                                 "(codec.private_start); until then they decode as mean decoders")
    assert refiner_start_note(waiting, 50).endswith("this run stops at step 50 at the latest, so they never learn")
    assert refiner_start_note(tiny(image_decoder="residual_private", private_start=0), 10) is None
    assert refiner_start_note(tiny(image_decoder="gaussian"), 10) is None

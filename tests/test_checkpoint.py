"""Checkpoint files: round trips, integrity refusals, pickle refusal, atomic writes."""

from __future__ import annotations

import hashlib
import json
import pickle
import random

import numpy as np
import pytest
import torch

from _toy import ToyModel
from muni.errors import CheckpointError
from muni.training import checkpoint as ckpt
from muni.training import load_checkpoint, load_state_into


def _tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {f"model/{k}": v for k, v in ToyModel().state_dict().items()}


@pytest.fixture
def run(tmp_path):
    ckpt.save_checkpoint(tmp_path, 7, _tensors(), {"meta": {"method": "toy"}, "config": {"lr": 1}})
    return tmp_path


def test_round_trip_and_latest(run):
    ckpt.save_checkpoint(run, 9, _tensors(1), {"meta": {"method": "toy"}})
    assert (run / "latest").read_text().strip() == "ckpt-9"
    ck = load_checkpoint(run)
    assert ck.step == 9 and ck.meta == {"method": "toy"} and ck.path.name == "ckpt-9"
    assert all(torch.equal(ck.tensors[k], v) for k, v in _tensors(1).items())
    assert load_checkpoint(run / "ckpt-7", expect_method="toy").step == 7


def test_keep_last_prunes_but_keeps_latest(tmp_path):
    for step in range(1, 6):
        ckpt.save_checkpoint(tmp_path, step, _tensors(), {}, keep_last=2)
    assert ckpt.checkpoint_steps(tmp_path) == [4, 5]
    ckpt.save_checkpoint(tmp_path, 6, _tensors(), {}, keep_last=1)
    assert ckpt.checkpoint_steps(tmp_path) == [5, 6]  # 5: the recovery point should 7 diverge
    ckpt.save_checkpoint(tmp_path, 7, _tensors(), {}, keep_last=1)
    assert ckpt.checkpoint_steps(tmp_path) == [6, 7]


def test_rewind_drops_the_failing_state_and_points_latest_before_it(tmp_path):
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, step, _tensors(), {}, keep_last=1)
    assert ckpt.rewind(tmp_path, 6) == 4
    assert ckpt.checkpoint_steps(tmp_path) == [4] and load_checkpoint(tmp_path).step == 4
    assert ckpt.rewind(tmp_path, 4) is None
    assert ckpt.checkpoint_steps(tmp_path) == [] and not (tmp_path / "latest").exists()


def _state_file(run):
    return run / "ckpt-7" / ckpt.STATE_FILE


def test_truncated_file_is_refused(run):
    f = _state_file(run)
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"state\.safetensors.*truncated"):
        load_checkpoint(run)


def test_bit_flip_is_refused(run):
    f = _state_file(run)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x10
    f.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"state\.safetensors.*sha256.*corrupted"):
        load_checkpoint(run)


def test_missing_file_is_refused(run):
    _state_file(run).unlink()
    with pytest.raises(CheckpointError, match=r"state\.safetensors: missing"):
        load_checkpoint(run)
    (run / "ckpt-7" / ckpt.INFO_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: missing"):
        load_checkpoint(run)
    (run / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        load_checkpoint(run / "empty")


def test_corrupt_json_is_refused(run):
    (run / "ckpt-7" / ckpt.INFO_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: not valid JSON"):
        load_checkpoint(run)


@pytest.mark.parametrize("maker", ["pickle", "torch.save"])
def test_pickle_under_safetensors_name_is_refused(run, maker):
    f = _state_file(run)
    if maker == "pickle":
        f.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    else:
        torch.save({"w": torch.zeros(3)}, f)
    with pytest.raises(CheckpointError, match=r"state\.safetensors: refusing to unpickle"):
        load_checkpoint(run)


def test_pickle_files_are_refused(tmp_path, run):
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, pt)
    with pytest.raises(CheckpointError, match=r"model\.pt: refusing to unpickle"):
        load_checkpoint(pt)
    disguised = tmp_path / "elsewhere" / "state.safetensors"
    disguised.parent.mkdir()
    disguised.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(CheckpointError, match=r"state\.safetensors: refusing to unpickle"):
        load_checkpoint(disguised)
    with pytest.raises(CheckpointError, match="loads a directory"):
        load_checkpoint(_state_file(run))
    torch.save({"w": torch.zeros(3)}, run / "ckpt-7" / "extra.ckpt")
    with pytest.raises(CheckpointError, match=r"extra\.ckpt: refusing to unpickle"):
        load_checkpoint(run)


def test_wrong_format_version_and_method_are_refused(run):
    info_file = run / "ckpt-7" / ckpt.INFO_FILE
    with pytest.raises(CheckpointError, match="checkpoint of method 'toy', expected 'muni'"):
        load_checkpoint(run, expect_method="muni")
    info = json.loads(info_file.read_text())
    info["format_version"] = 99
    info_file.write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(run)


def test_crash_during_write_leaves_previous_checkpoint(run, monkeypatch):
    real = ckpt._write_file

    def crash(path, data):
        real(path, data[: len(data) // 2])  # half a file on disk, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_file", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(run, 8, _tensors(1), {"meta": {"method": "toy"}})
    monkeypatch.setattr(ckpt, "_write_file", real)
    assert ckpt.checkpoint_steps(run) == [7]
    assert not list(run.glob(".tmp-*")) and not (run / "ckpt-8").exists()
    ck = load_checkpoint(run)
    assert ck.step == 7 and all(torch.equal(ck.tensors[k], v) for k, v in _tensors().items())


def test_edited_json_is_refused(run):
    info_file = run / "ckpt-7" / ckpt.INFO_FILE
    info_file.write_text(info_file.read_text().replace('"lr": 1', '"lr": 2'))
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: its content does not match its recorded checksum"):
        load_checkpoint(run)


def rewrite_info(info_file, edit) -> None:
    """Apply `edit(info)` to a checkpoint.json and re-sign it, as a forger would."""
    info = json.loads(info_file.read_text())
    edit(info)
    info.pop(ckpt.INFO_SHA)
    info[ckpt.INFO_SHA] = hashlib.sha256(ckpt._info_text(info).encode()).hexdigest()
    info_file.write_text(json.dumps(info))


@pytest.mark.parametrize("field, value", [("step", "7"), ("step", -1), ("meta", []), ("config", None),
                                          ("files", {"state.safetensors": {"sha256": 1}})])
def test_malformed_fields_are_one_clear_error(run, field, value):
    rewrite_info(run / "ckpt-7" / ckpt.INFO_FILE, lambda info: info.__setitem__(field, value))
    with pytest.raises(CheckpointError, match=rf"checkpoint\.json: field '{field}' must"):
        load_checkpoint(run)


@pytest.mark.parametrize("pointer", ["/etc", "../outside/ckpt-7", "ckpt-7/../../outside/ckpt-7"])
def test_latest_never_leads_outside_the_run(tmp_path, pointer):
    run, outside = tmp_path / "run", tmp_path / "outside"
    ckpt.save_checkpoint(run, 1, _tensors(), {})
    ckpt.save_checkpoint(outside, 7, _tensors(), {})
    (run / "latest").write_text(pointer + "\n")
    with pytest.raises(CheckpointError, match="not the name of a ckpt-<step> directory of this run"):
        load_checkpoint(run)


def test_latest_pointer_missing_falls_back_to_newest(run):
    ckpt.save_checkpoint(run, 12, _tensors(), {})
    (run / "latest").unlink()
    assert load_checkpoint(run).step == 12


def test_load_state_into_names_problems():
    torch.manual_seed(0)
    m = ToyModel()
    state = dict(m.state_dict())
    state.pop("dec.bias")
    state["extra.weight"] = torch.zeros(1)
    state["head.weight"] = torch.zeros(5, 16)
    with pytest.raises(CheckpointError) as e:
        load_state_into(m, state)
    msg = str(e.value)
    assert "missing keys ['dec.bias']" in msg and "unexpected keys ['extra.weight']" in msg
    assert "head.weight: (5, 16) in the file, (3, 16) in the model" in msg
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_state_into(m, state, strict=False)


def test_tied_weights_are_saved(tmp_path):
    w = torch.randn(3, 3)
    ckpt.save_checkpoint(tmp_path, 1, {"a": w, "b": w, "c": w[0]}, {})
    ck = load_checkpoint(tmp_path)
    assert torch.equal(ck.tensors["a"], w) and torch.equal(ck.tensors["b"], w)
    assert torch.equal(ck.tensors["c"], w[0])


def test_rng_round_trip():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)
    state = ckpt.capture_rng()
    assert all(v.dtype == torch.uint8 for v in state.values())
    want = (torch.rand(5), np.random.randn(5), [random.gauss(0, 1) for _ in range(3)])
    ckpt.restore_rng(state)
    got = (torch.rand(5), np.random.randn(5), [random.gauss(0, 1) for _ in range(3)])
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and want[2] == got[2]


def test_optimizer_round_trip():
    torch.manual_seed(0)
    m = ToyModel(noise=0.0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.8, 0.95))
    batch = {"image": torch.rand(4, 1, 2, 2), "label": torch.tensor([0, 1, 2, 0])}
    for _ in range(2):
        opt.zero_grad()
        m.loss(batch)["loss"].backward()
        opt.step()
    tensors, meta = ckpt.flatten_optimizer(opt.state_dict())
    meta = json.loads(json.dumps(meta))
    opt2 = torch.optim.AdamW(m.parameters(), lr=1.0)
    opt2.load_state_dict(ckpt.unflatten_optimizer(tensors, meta))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k, v in a["state"][i].items():
            assert torch.equal(v, b["state"][i][k])

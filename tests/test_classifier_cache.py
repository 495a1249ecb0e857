"""The evaluation-classifier cache is verified like the dataset cache: checksummed, rebuilt on a
mismatch, one clear line when it cannot be written (tiny classifiers, seconds on 2 cores)."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from muni.data import load_dataset
from muni.errors import MuniError
from muni.evaluation.classifiers import (ClassifierConfig, cache_problem, classifier_dir,
                                         load_or_train_classifiers)

TINY = {"n_train": 200, "n_test": 100}
CFG = ClassifierConfig(epochs=1, width=4, feature_dim=8, max_train=32, seed=1)


def _load():
    return load_or_train_classifiers("polymnist-quadrant", "quick", 0, cfg=CFG, **TINY)


@pytest.fixture
def entry(tiny_polymnist):
    _load()
    path = classifier_dir(load_dataset("polymnist-quadrant", "train", "quick", 0, **TINY), CFG)
    assert cache_problem(path) is None
    return path


def _flip(path):
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (_flip, "view0.safetensors fails its checksum"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "view0.safetensors fails its checksum"),
    (lambda p: p.unlink(), "view0.safetensors is missing"),
])
def test_a_damaged_cache_entry_is_retrained(entry, damage, reason, caplog):
    weights = entry / "view0.safetensors"
    recorded = json.loads((entry / "classifiers.json").read_text())["files"]["view0"]
    damage(weights)
    assert reason in cache_problem(entry)
    with caplog.at_level(logging.WARNING, logger="muni.evaluation"):
        clf = _load()
    assert any(reason in r.getMessage() and "retraining" in r.getMessage() for r in caplog.records)
    assert cache_problem(entry) is None and "view0" in clf.nets
    assert json.loads((entry / "classifiers.json").read_text())["files"]["view0"] == recorded  # same seed
    x = torch.rand(2, 3, 32, 32)
    assert clf.predict("view0", x).keys() == {"digit", "quadrant"}


def test_an_unusable_cache_directory_is_one_line(tiny_polymnist, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    import muni.evaluation.classifiers as classifiers

    monkeypatch.setattr(classifiers, "cache_dir", lambda: blocker)
    with pytest.raises(MuniError, match="MUNI_CACHE_DIR"):
        _load()

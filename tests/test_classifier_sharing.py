"""Shared evaluation classifiers (`--classifiers shared`, not the default): alike modalities (same
kind, shape, parameters and content factors) train one net on a mixture of them; the choice enters
the cache key only where it groups something, and is recorded in the results and the reports
(tiny builds, seconds on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from muni.cli import main
from muni.config import config_hash
from muni.data import load_dataset
from muni.data.base import MultimodalDataset
from muni.evaluation.classifiers import (FORMAT_VERSION, SHARING, ClassifierConfig, _mixture, classifier_dir,
                                         content_factors, load_or_train_classifiers, share_groups)
from muni.modalities.base import Modality

TINY = {"n_train": 200, "n_test": 100}
CFG = ClassifierConfig(epochs=1, width=4, feature_dim=8, max_train=64, seed=3)


def test_groups_join_alike_modalities_only(tiny_polymnist, tiny_ita):
    pq = tiny_polymnist["train"]
    assert share_groups(pq.modalities, content_factors(pq), share=True) == [("view0", "view1", "view2")]
    assert share_groups(pq.modalities, content_factors(pq), share=False) == [("view0",), ("view1",), ("view2",)]
    ita = tiny_ita["train"]
    assert share_groups(ita.modalities, content_factors(ita), share=True) == [("image",), ("text",), ("audio",)]
    mods = {"a": Modality("a", "image", (1, 8, 8)), "b": Modality("b", "image", (1, 8, 8)),
            "c": Modality("c", "image", (3, 8, 8)), "d": Modality("d", "image", (1, 8, 8))}
    content = {"a": ("kind",), "b": ("kind",), "c": ("kind",), "d": ("kind", "size")}
    assert share_groups(mods, content, share=True) == [("a", "b"), ("c",), ("d",)]  # shape or factors differ


def test_cache_key_changes_only_where_sharing_groups_something(tiny_polymnist, tiny_ita):
    def before(ds, cfg):  # the key before `share` existed
        recipe = {k: ds.info.get(k) for k in ("recipe_hash", "recipe_version", "config", "seed")}
        fields = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "width": cfg.width,
                  "feature_dim": cfg.feature_dim, "max_train": cfg.max_train, "seed": cfg.seed}
        return config_hash(fields, recipe, FORMAT_VERSION)

    pq, ita = tiny_polymnist["train"], tiny_ita["train"]
    assert not ClassifierConfig().share and SHARING["separate"] == ClassifierConfig()  # the default
    assert classifier_dir(pq, SHARING["separate"]).name.endswith(before(pq, SHARING["separate"]))
    assert classifier_dir(pq, SHARING["shared"]) != classifier_dir(pq, SHARING["separate"])
    assert classifier_dir(ita, SHARING["shared"]) == classifier_dir(ita, SHARING["separate"])
    assert classifier_dir(ita, SHARING["shared"]).name.endswith(before(ita, SHARING["shared"]))


def test_mixture_shows_each_sample_through_one_present_modality():
    n = 400
    a = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous()
    b = a + 100
    present = {"a": torch.arange(n) % 3 != 0, "b": torch.arange(n) % 3 != 1}
    mods = {k: Modality(k, "image", (1, 2, 2)) for k in "ab"}
    ds = MultimodalDataset("mine", "train", mods, {"a": a, "b": b}, {"kind": torch.zeros(n, dtype=torch.long)},
                           {"recipe_hash": "toy"}, present)
    idx = torch.arange(n)
    x = _mixture(ds, ("a", "b"), idx, torch.Generator().manual_seed(0))
    value = (x[:, 0, 0, 0] * 255).round().long()
    from_a = value == idx % 256
    from_b = value == (idx + 100) % 256
    assert bool((from_a | from_b).all())
    assert not bool((from_a & ~present["a"]).any()) and not bool((from_b & ~present["b"]).any())
    both = present["a"] & present["b"]
    assert 0.3 < float(from_a[both].float().mean()) < 0.7  # uniform among the present ones
    again = _mixture(ds, ("a", "b"), idx, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)  # the generator fixes the draw


@pytest.mark.parametrize("sharing", ["shared", "separate"])
def test_shared_classifiers_save_reload_and_record_the_choice(tiny_polymnist, sharing, tmp_path):
    cfg = ClassifierConfig(**{**CFG.__dict__, "share": sharing == "shared"})
    clf = load_or_train_classifiers("polymnist-quadrant", "quick", 0, cfg=cfg, **TINY)
    assert clf.sharing == sharing and set(clf.nets) == {"view0", "view1", "view2"}
    same = clf.nets["view0"] is clf.nets["view1"] is clf.nets["view2"]
    assert same == (sharing == "shared")
    again = load_or_train_classifiers("polymnist-quadrant", "quick", 0, cfg=cfg, **TINY)  # from the cache
    assert again.sharing == sharing
    x = tiny_polymnist["test"].batch(slice(0, 8), ["view1"])["view1"]
    assert torch.equal(again.features("view1", x), clf.features("view1", x))
    if sharing == "shared":
        assert torch.equal(again.features("view0", x), again.features("view2", x))


def test_an_entry_from_before_the_choice_reads_as_separate(tiny_polymnist):
    cfg = ClassifierConfig(**{**CFG.__dict__, "share": False, "seed": 4})
    load_or_train_classifiers("polymnist-quadrant", "quick", 0, cfg=cfg, **TINY)
    path = classifier_dir(load_dataset("polymnist-quadrant", "train", "quick", 0, **TINY), cfg)
    meta = json.loads((path / "classifiers.json").read_text())
    del meta["info"]["sharing"]
    (path / "classifiers.json").write_text(json.dumps(meta))
    assert load_or_train_classifiers("polymnist-quadrant", "quick", 0, cfg=cfg, **TINY).sharing == "separate"


def test_an_unknown_classifiers_choice_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["eval", "classifiers", "polymnist-quadrant", "--classifiers", "pooled"])
    assert e.value.code == 2 and "invalid choice: 'pooled'" in capsys.readouterr().err


def test_reports_name_shared_classifiers_and_compare_warns_on_a_mix():
    from muni.evaluation.report import accuracy_line, compare_markdown

    acc = {"view0": {"digit": 0.98, "quadrant": 1.0}}
    assert "--classifiers" not in accuracy_line(acc) and "--classifiers" not in accuracy_line(acc, "separate")
    assert "(`--classifiers shared`)" in accuracy_line(acc, "shared")
    base = json.loads((Path(__file__).parents[1] / "docs/results/refiner-start/pq20/results.json").read_text())
    res = base["suites"]["polymnist-quadrant"]["results"]["MUNI"][0]
    assert "different classifiers" not in compare_markdown([res, res])  # no key: separate
    assert "different classifiers" in compare_markdown([res, {**res, "classifiers": "shared"}])

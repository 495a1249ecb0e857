"""Evaluation on a user's own dataset: classifiers for every declared label on every image /
text / audio modality, trained on the samples that have them; a classifier below the accuracy
threshold scores no coherence; the tasks and the report run on the complete test tuples.

The dataset here is a `MultimodalDataset` whose name is not a benchmark's, which is what an
imported one is to the evaluation.
"""

from __future__ import annotations

import json

import pytest
import torch

from muni.data.base import MultimodalDataset, complete_tuples
from muni.errors import MuniError
from muni.evaluation.classifiers import MIN_ACCURACY, ClassifierConfig, train_classifiers
from muni.evaluation.report import layout_of, run_evaluation
from muni.methods.muni import Muni, MuniConfig
from muni.modalities import CodecConfig
from muni.modalities.base import Modality

MODS = {"photo": Modality("photo", "image", (1, 8, 8)),
        "kind": Modality("kind", "categorical", (), num_classes=4, params={"class_names": list("abcd")})}
CFG = ClassifierConfig(epochs=8, width=8, feature_dim=16, batch_size=32)


def split(n: int, seed: int, name: str = "mine") -> MultimodalDataset:
    """The photo shows its class as a bright 4x4 quadrant; the label ``coin`` is not shown."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 4, (n,), generator=g)
    img = (torch.rand(n, 1, 8, 8, generator=g) * 60).to(torch.uint8)
    for i, k in enumerate(kind.tolist()):
        r, c = divmod(k, 2)
        img[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = 250
    coin = torch.randint(0, 2, (n,), generator=g)
    photo = torch.arange(n) % 5 != 1
    present = {"photo": photo, "kind": (torch.arange(n) % 7 != 0) | ~photo}
    img[~present["photo"]] = 0
    kind_store = torch.where(present["kind"], kind, 0)
    factors = {"kind": torch.where(present["kind"], kind, -1), "coin": coin}
    return MultimodalDataset(name, "test" if seed else "train", MODS, {"photo": img, "kind": kind_store},
                             factors, {"recipe_hash": f"toy{seed}"}, present)


@pytest.fixture(scope="module")
def data():
    train, test = split(600, 0), split(200, 1)
    return train, test, train_classifiers(train, test, CFG)


def test_every_label_gets_a_head_on_every_modality_and_weak_heads_are_refused(data):
    train, test, clf = data
    assert clf.content == {"photo": ("kind", "coin"), "kind": ("kind",)}
    assert clf.accuracy["photo"]["kind"] > 0.95           # shown: learned from the present samples
    assert clf.accuracy["photo"]["coin"] < 0.75           # not shown: near chance
    usable, refused = clf.usable()
    assert set(refused) == {"photo:coin"} and refused["photo:coin"] < MIN_ACCURACY
    assert usable.content["photo"] == ("kind",)


def test_evaluation_runs_on_the_complete_tuples_and_reports_what_it_refused(data, tmp_path):
    train, test, clf = data
    assert len(complete_tuples(test)) < len(test)
    torch.manual_seed(0)
    codec = CodecConfig(embed_dim=8, width=4, mlp_width=8, image_decoder="gaussian", audio_decoder="gaussian")
    model = Muni(MODS, MuniConfig(latent_dim=4, codec=codec, agg_hidden=8, prior_hidden=8, prior_depth=1,
                                  prior_nfe=2)).eval()
    res = run_evaluation(model, "mine", n=20, seed=0, out_dir=tmp_path, model_name="tiny",
                         classifiers=clf, test=test, matrix_n=10)
    assert res["refused_classifiers"].keys() == {"photo:coin"}
    assert res["test_tuples"] == len(complete_tuples(test))
    m = res["metrics"]
    assert {"single_kind", "uncond_coherence", "kind->photo:kind", "photo->kind:kind",
            "frechet:photo"} <= set(m)
    assert not any("coin" in k for k in m)                # the refused head scores nothing
    cols = [k for _, k in layout_of(res)]
    assert cols[0] == "single_kind" and cols[-1] == "uncond_coherence"
    text = (tmp_path / "results.md").read_text()
    assert "| model | kind→others |" in text and "photo:coin 0.4" in text
    assert json.loads((tmp_path / "results.json").read_text())["dataset"] == "mine"


def test_no_usable_classifier_is_one_clear_error(data):
    train, test, _ = data
    blind = {k: (v if k != "photo" else torch.zeros_like(v)) for k, v in train.storage.items()}
    clf = train_classifiers(MultimodalDataset("mine", "train", MODS, blind, train.factors, {}, train.present),
                            test, ClassifierConfig(epochs=1, width=4, feature_dim=8))
    with pytest.raises(MuniError, match="no classifier reaches"):
        run_evaluation(object(), "mine", n=4, classifiers=clf, test=test)

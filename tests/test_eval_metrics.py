"""Metric functions on hand-built tiny cases with exact answers (fake classifiers, no training)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from _eval_fixtures import BrokenModel, FakeClassifiers, HalfRightModel, tiny_ita, tiny_polymnist
from muni.errors import InputError
from muni.evaluation import coherence, frechet
from muni.evaluation.reference import REFERENCE_MODELS, Independent, Oracle
from muni.evaluation.report import compare_markdown, markdown_report, run_evaluation

N = 40  # the tiny datasets hold every (digit, quadrant) pair once: 40 conditions = all of them


@pytest.fixture(scope="module")
def pq():
    ds = tiny_polymnist()
    return ds, FakeClassifiers(ds)


@pytest.fixture(scope="module")
def ita():
    ds = tiny_ita(repeats=3)
    return ds, FakeClassifiers(ds)


def test_wilson_known_values():
    m = coherence.wilson(5, 10)
    assert m["value"] == 0.5
    assert m["low"] == pytest.approx(0.2366, abs=1e-4) and m["high"] == pytest.approx(0.7634, abs=1e-4)
    assert coherence.wilson(0, 50)["low"] == 0.0 and coherence.wilson(50, 50)["high"] == 1.0


def test_rate_picks_wilson_for_binary_and_bootstrap_otherwise():
    assert coherence.rate(torch.tensor([1.0, 0.0, 1.0, 1.0]), 0)["interval"] == "wilson95"
    m = coherence.rate(torch.tensor([1 / 3, 2 / 3, 1.0, 0.0] * 10), 0)
    assert m["interval"] == "bootstrap95" and m["value"] == pytest.approx(0.5)
    assert m["low"] < 0.5 < m["high"]


def test_conditions_depend_on_seed_only(pq):
    ds, _ = pq
    a, b = coherence.condition_indices(ds, 25, 7), coherence.condition_indices(ds, 25, 7)
    assert torch.equal(a, b) and len(set(a.tolist())) == 25
    assert not torch.equal(a, coherence.condition_indices(ds, 25, 8))
    assert sorted(coherence.condition_indices(ds, N, 0).tolist()) == list(range(N))


def test_half_right_model_scores_exactly_half(pq):
    ds, clf = pq
    r = coherence.labels_to_modalities(HalfRightModel(ds), ds, clf, N, 0, ("digit",))
    assert r.metrics["single_digit"]["value"] == 0.5
    # the views come from one tuple, so they agree on quadrant: strict = digit right = 0.5
    assert r.metrics["one_to_many_digit"]["value"] == 0.5
    assert r.metrics["one_to_many_digit_agreement"]["value"] == 1.0


def test_oracle_is_perfect_with_exact_classifiers(pq):
    ds, clf = pq
    model = Oracle(ds)
    for given in (("digit",), ("quadrant",), ("digit", "quadrant")):
        for k, m in coherence.labels_to_modalities(model, ds, clf, N, 0, given).metrics.items():
            assert m["value"] == 1.0, k
    u = coherence.unconditional(model, ds, clf, N, 0).metrics
    assert u["uncond_coherence"]["value"] == 1.0
    mat = coherence.coherence_matrix(model, ds, clf, N, 0).metrics
    assert mat and all(m["value"] == 1.0 for m in mat.values())
    assert "matrix:k=1:view0" in mat and "matrix:k=4:digit" in mat


def test_exact_chance_levels_balanced(pq):
    ds, _ = pq
    v = {"view0": ("digit", "quadrant"), "view1": ("digit", "quadrant"), "view2": ("digit", "quadrant")}
    assert coherence.chance_all_match(ds, {"view0": ("digit",)}, [{"digit": 3}]) == pytest.approx(0.1)
    assert coherence.chance_all_match(ds, {"view0": ("digit", "quadrant")}, [{"digit": 3, "quadrant": 1}]) \
        == pytest.approx(1 / 40)
    # unconditional: all three views on one (d, q), labels drawn from other tuples
    uncond = coherence.chance_all_match(ds, {**v, "digit": ("digit",), "quadrant": ("quadrant",)}, [{}])
    assert uncond == pytest.approx(40 * (1 / 40) ** 3 * 0.1 * 0.25)
    # one-to-many, digit given: every view shows d, views + quadrant label agree
    o2m = coherence.chance_all_match(ds, {**v, "quadrant": ("quadrant",)}, [{"digit": 0}])
    assert o2m == pytest.approx(4 * (1 / 40) ** 3 * 0.25)


def test_independent_matches_its_chance_level(pq):
    ds = tiny_polymnist(repeats=10)
    clf = FakeClassifiers(ds)
    r = coherence.labels_to_modalities(Independent(ds), ds, clf, 400, 0, ("digit",)).metrics["single_digit"]
    assert r["chance"] == pytest.approx(0.1)
    assert r["low"] <= r["chance"] <= r["high"]
    u = coherence.unconditional(Independent(ds), ds, clf, 400, 0).metrics
    assert u["uncond_digit"]["low"] <= u["uncond_digit"]["chance"] <= u["uncond_digit"]["high"]


@pytest.mark.parametrize("name", ["shuffled", "noise", "blank"])
def test_sanity_rows_at_chance_on_joint_metrics(name):
    ds = tiny_polymnist(repeats=10)
    clf = FakeClassifiers(ds)
    model = REFERENCE_MODELS[name](ds)
    for given in (("digit",), ("digit", "quadrant")):
        for k, m in coherence.labels_to_modalities(model, ds, clf, 400, 0, given).metrics.items():
            if "agreement" not in k:
                assert m["low"] <= m["chance"] + 0.02, (k, m)
    u = coherence.unconditional(model, ds, clf, 400, 0).metrics["uncond_coherence"]
    # constant views agree with each other trivially; the uniform labels then hit their one
    # class with probability 1/10 * 1/4: that, not more, is all a degenerate model can get
    assert u["low"] <= 1 / 40


def test_many_to_one_and_kappa(ita):
    ds, clf = ita
    for t in ds.modalities:
        for k, m in coherence.many_to_one(Oracle(ds), ds, clf, N, 0, t).metrics.items():
            assert m["value"] == 1.0, k
    keys = coherence.many_to_one(Oracle(ds), ds, clf, N, 0, "audio").metrics
    assert set(keys) == {"image+text->audio:digit"}  # audio carries the digit only
    u = coherence.unconditional(Oracle(ds), ds, clf, N, 0).metrics
    assert u["uncond_pair:image-text:quadrant:kappa"]["value"] == pytest.approx(1.0)
    assert "uncond_pair:image-audio:quadrant" not in u
    b = coherence.unconditional(REFERENCE_MODELS["blank"](ds), ds, clf, N, 0).metrics
    assert b["uncond_pair:image-text:digit:kappa"]["value"] == 0.0  # constant outputs: no information


def test_cohen_kappa():
    a = torch.tensor([0, 1, 2, 3] * 5)
    assert coherence.cohen_kappa(a, a) == pytest.approx(1.0)
    assert coherence.cohen_kappa(torch.zeros(20, dtype=torch.long), torch.zeros(20, dtype=torch.long)) == 0.0
    assert coherence.cohen_kappa(a, a.roll(1)) < 0


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 3))
    assert frechet.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 0.0])
    assert frechet.frechet_distance(x, x + shift) == pytest.approx(5.0, rel=1e-6)
    # means m, 2m and covariances S, 4S: |m|^2 + Tr(S + 4S - 2 * 2S) = |m|^2 + Tr(S)
    expected = (x.mean(0) ** 2).sum() + np.trace(np.cov(x.T))
    assert frechet.frechet_distance(x, 2 * x) == pytest.approx(expected, rel=1e-9)


def test_diversity_and_cross_view_ratios(pq):
    ds = tiny_polymnist(repeats=5)
    clf = FakeClassifiers(ds)
    div = frechet.diversity(REFERENCE_MODELS["blank"](ds), ds, clf, 20, 0, ("digit", "quadrant")).metrics
    assert all(m["value"] == 0.0 for m in div.values())
    div = frechet.diversity(Oracle(ds), ds, clf, 20, 0, ("digit", "quadrant")).metrics
    assert all(0.7 < m["value"] < 1.3 for m in div.values())
    q = frechet.sample_quality(Oracle(ds), ds, clf, 200, 0).metrics
    assert 0.8 < q["cross_view_diversity"]["value"] < 1.2
    assert {"frechet:view0", "frechet:view1", "frechet:view2"} <= set(q)
    assert all(q[k]["low"] <= q[k]["value"] <= q[k]["high"] for k in q)


@pytest.mark.parametrize("mode", ["shape", "missing"])
def test_bad_model_output_names_the_modality(pq, mode):
    ds, clf = pq
    with pytest.raises(InputError, match="view1"):
        coherence.labels_to_modalities(BrokenModel(ds, mode, "view1"), ds, clf, 10, 0, ("digit",))


def test_oracle_refuses_unknown_samples(ita):
    ds, _ = ita
    x = ds.batch([0, 1], ["image"])["image"] * 0.5 + 0.25
    with pytest.raises(InputError, match="image"):
        Oracle(ds).generate({"image": x}, ["text"])


def test_same_seed_same_report(tmp_path, ita):
    ds, clf = ita
    runs = [run_evaluation(REFERENCE_MODELS["independent"](ds), "digits-ita", n=N, seed=3, classifiers=clf,
                           test=ds, out_dir=tmp_path / str(i), model_name="independent") for i in range(2)]
    assert runs[0]["metrics"] == runs[1]["metrics"]
    other = run_evaluation(REFERENCE_MODELS["independent"](ds), "digits-ita", n=N, seed=4, classifiers=clf,
                           test=ds, model_name="independent")
    assert other["metrics"] != runs[0]["metrics"]
    md = (tmp_path / "0" / "results.md").read_text()
    assert "(I+A)→T digit" in md and "chance" in md
    assert (tmp_path / "0" / "metrics.png").exists() and (tmp_path / "0" / "samples" / "to_text.png").exists()
    table = compare_markdown(runs)
    assert table.split("\n\n")[0].count("| independent |") == 2
    assert math.isfinite(runs[0]["metrics"]["frechet:image"]["value"])
    assert markdown_report(runs[0]).startswith("# independent on digits-ita")


def test_sampling_options_reach_generate_and_unknown_ones_are_refused(pq):
    from dataclasses import dataclass

    from muni.evaluation.report import WithSampling
    from muni.methods.base import sampling_options
    from muni.methods.muni import Muni

    ds, clf = pq

    @dataclass
    class Options:
        guidance: float | None = None

    class Recorder(Oracle):
        Sampling = Options
        seen: list = []

        def generate(self, given, targets, n=None, generator=None, *, guidance=1.0):
            self.seen.append(guidance)
            return super().generate(given, targets, n=n, generator=generator)

    model = Recorder(ds)
    res = run_evaluation(model, "polymnist-quadrant", n=40, classifiers=clf, test=ds, matrix_n=4,
                         sampling={"guidance": 3.0})
    assert set(model.seen) == {3.0} and res["config"]["sampling"] == {"guidance": 3.0}
    with pytest.raises(InputError, match="'prior_nfe'.*takes: guidance"):
        WithSampling(model, prior_nfe=4)
    with pytest.raises(InputError, match="takes: precision"):
        WithSampling(Oracle(ds), guidance=2)
    # one parser for the command line (KEY=VALUE, typed by the method's Sampling) and Python
    assert sampling_options(Muni, ["guidance=6", "prior_nfe=16", "conditional_sampler=posterior"]) == {
        "guidance": 6.0, "prior_nfe": 16, "conditional_sampler": "posterior"}
    assert sampling_options(Muni, {"temperature": 0}) == {"temperature": 0.0}
    assert sampling_options(Oracle, ["precision=bf16"]) == {"precision": "bf16"}  # every model takes it
    with pytest.raises(InputError, match="precision must be one of fp32, bf16, got 'fp16'"):
        sampling_options(Muni, ["precision=fp16"])
    for bad, msg in ((["guidance"], "KEY=VALUE"), (["prior_nfe=1.5"], "prior_nfe"), (["prior_nfe=0"], ">= 1"),
                     ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
                     (["conditional_sampler=magic"], "conditional_sampler"), (["nfe=4"], "'nfe'.*takes: ")):
        with pytest.raises(InputError, match=msg):
            sampling_options(Muni, bad)


def test_coherent_diversity_validation_rows():
    """Oracle about 1; a copy of one sample per class 0 (coherent, no variation); noise 0 (varied,
    but nothing coherent), while the plain diversity ratio rewards noise."""
    ds = tiny_polymnist(repeats=5)
    clf = FakeClassifiers(ds)

    def scores(row):
        m = frechet.diversity(REFERENCE_MODELS[row](ds), ds, clf, 20, 0, ("digit", "quadrant")).metrics
        views = [f"view{k}" for k in range(3)]
        return ([m[f"diversity:{v}"]["value"] for v in views],
                [m[f"coherent_diversity:{v}"]["value"] for v in views])

    div, coh = scores("oracle")
    assert all(0.7 < c < 1.3 for c in coh), coh
    div, coh = scores("prototype")
    assert div == [0.0, 0.0, 0.0] and coh == [0.0, 0.0, 0.0]
    div, coh = scores("noise")
    assert all(d > 1.2 for d in div), div
    assert all(c < 0.05 for c in coh), coh


def test_prototype_is_coherent_and_fixed_per_class(pq):
    ds, clf = pq
    ds = tiny_polymnist(repeats=5)
    proto = REFERENCE_MODELS["prototype"](ds)
    given = ds.batch(torch.tensor([0, 40, 80]), ["digit", "quadrant"])  # one content, three tuples
    out = proto.generate(given, ["view0"], generator=torch.Generator().manual_seed(0))["view0"]
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert torch.equal(FakeClassifiers(ds).predict("view0", out)["digit"], given["digit"])
    uncond = proto.generate({}, ["view0", "digit"], n=200, generator=torch.Generator().manual_seed(0))
    assert len({tuple(x.flatten().tolist()) for x in uncond["view0"]}) <= 40

"""MUNI: gradient routing of every route on real autograd, the switches, generation, resume."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from muni.config import apply_overrides
from muni.errors import ConfigError, InputError
from muni.methods.muni import Muni, MuniConfig, TeachingBalance
from muni.modalities.base import Modality
from muni.modalities import CodecConfig

MODS = {
    "a": Modality("a", "image", (1, 16, 16)),
    "b": Modality("b", "image", (3, 16, 16)),
    "c": Modality("c", "categorical", (), 5),
}
NAMES = list(MODS)


def tiny_config(image_decoder: str = "flow", **kw) -> MuniConfig:
    codec = CodecConfig(embed_dim=16, width=8, mlp_width=16, flow_width=8, flow_nfe=2, image_decoder=image_decoder)
    return MuniConfig(latent_dim=4, codec=codec, agg_hidden=16, prior_hidden=16, prior_depth=1,
                      prior_nfe=2, **kw)


def tiny_batch(b: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.rand(b, 1, 16, 16, generator=g), "b": torch.rand(b, 3, 16, 16, generator=g),
            "c": torch.randint(0, 5, (b,), generator=g)}


def model(**kw) -> Muni:
    """A tiny MUNI whose zero-initialised layers (output layers, adaLN) are perturbed, so that
    every path that may carry gradient does carry it at initialisation."""
    torch.manual_seed(0)
    m = Muni(MODS, tiny_config(**kw))
    with torch.no_grad():
        for p in m.parameters():
            if not p.any():
                p.normal_(0.0, 0.05)
    return m


def encoder_grads(m: Muni, term: torch.Tensor) -> dict[str, float]:
    """Gradient norm each encoder receives from one term of the objective."""
    m.zero_grad(set_to_none=True)
    term.backward()
    return {n: sum(float(p.grad.abs().sum()) for p in m.encoders[n].parameters() if p.grad is not None)
            for n in NAMES}


def fixed_mask(rows: list[tuple[bool, ...]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


# S = {a, c} for every sample: a and c observed, b missing.
MASK_AC = fixed_mask([(True, False, True)] * 6)


@pytest.mark.parametrize("target", ["a", "c"])
def test_target_detached_self_recon_gives_own_encoder_zero_gradient(target):
    m = model(self_recon="target_detached", detach_kinds=("image", "categorical"))
    terms = m.routed_terms(tiny_batch(), MASK_AC)
    g = encoder_grads(m, terms[f"self/{target}"])
    other = "c" if target == "a" else "a"
    assert g[target] == 0.0, "encoder of the reconstructed modality must get no gradient"
    assert g[other] > 0.0, "the other observed encoder must still be trained through route 2"
    assert g["b"] == 0.0, "an unobserved encoder takes no part"


def test_labels_stay_attached_by_default_images_detached():
    """Default `detach_kinds` leaves categorical self-reconstruction attached (no private detail)."""
    m = model(self_recon="target_detached")
    g = encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["self/c"])
    assert g["c"] > 0.0 and g["a"] > 0.0
    g = encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["self/a"])
    assert g["a"] == 0.0 and g["c"] > 0.0


def test_attached_self_recon_trains_own_encoder():
    m = model(self_recon="attached")
    g = encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["self/a"])
    assert g["a"] > 0.0 and g["c"] > 0.0


def test_full_detach_self_recon_trains_no_encoder_but_the_decoder():
    m = model(self_recon="full_detach")
    terms = m.routed_terms(tiny_batch(), MASK_AC)
    g = encoder_grads(m, terms["self/a"])
    assert g == {"a": 0.0, "b": 0.0, "c": 0.0}
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.decoders["a"].parameters())


@pytest.mark.parametrize("self_recon", ["full_detach", "target_detached"])
def test_detach_warmup_phases_the_stop_gradient_in(self_recon):
    """During the first detach_warmup steps the observed encoder gets a share 1 - step / W of
    the attached self-reconstruction gradient (values unchanged); after them, and outside the
    training loop, none."""
    def self_grads(m, step=None):
        if step is not None:
            m.begin_step(step)
        torch.manual_seed(2)
        terms = m.routed_terms(tiny_batch(), MASK_AC)
        return terms["self/a"].detach(), encoder_grads(m, terms["self/a"])["a"]

    value, attached = self_grads(model(self_recon="attached"))
    m = model(self_recon=self_recon, detach_warmup=4)
    assert attached > 0 and self_grads(m)[1] == 0.0             # never told a step: detached
    for step, share in ((0, 1.0), (1, 0.75), (3, 0.25), (4, 0.0), (9, 0.0)):
        v, g = self_grads(m, step)
        assert torch.isclose(v, value, rtol=1e-5), step
        assert g == pytest.approx(share * attached, rel=1e-4), step


@pytest.mark.parametrize("decoder", ["private", "residual_private"])
@pytest.mark.parametrize("self_recon", ["full_detach", "target_detached"])
def test_private_decoder_self_recon_gives_own_shared_encoder_zero_gradient(self_recon, decoder):
    """Route 2 with the private-latent decoders: the private detail reaches its own encoder
    q(w | x), never the shared encoder of that modality."""
    m = model(self_recon=self_recon, image_decoder=decoder)
    terms = m.routed_terms(tiny_batch(), MASK_AC)
    g = encoder_grads(m, terms["self/a"])
    assert g["a"] == 0.0 and g["b"] == 0.0
    assert (g["c"] > 0.0) == (self_recon == "target_detached")
    private = m.decoders["a"].encoder
    assert all(p.grad is not None and p.grad.any() for p in private.parameters() if p.dim() > 1)


def test_expressive_decoder_learns_private_detail_and_draws_it():
    """A tiny MUNI overfits eight tuples: the label fixes which half of the image is lit, a
    private style (which row carries a bar) is free. With the residual-flow and the
    residual-private decoders, label-to-image samples are read right by a nearest-half
    classifier *and* differ from one another; the mean decoder's are read right and are copies.

    The refiner's gradient is left raw here: scaled by the calibrated variance (the default), it
    shrinks as the fit on these eight tuples improves, and Adam, which remembers the larger early
    gradients, moves the refiner too little to learn the bar in 600 steps (this test fails with
    ``private_grad="unit"``). The loop calls no `begin_step`, so `private_start` does not apply."""
    label = torch.arange(2).repeat(4)                                      # (8,)
    x = torch.zeros(8, 1, 8, 8)
    for i, (c, row) in enumerate(zip(label.tolist(), [0, 0, 2, 2, 4, 4, 6, 6])):
        x[i, 0, :, 4 * c:4 * c + 4] = 0.5                                  # content: the lit half
        x[i, 0, row:row + 2, 4 * c:4 * c + 4] = 1.0                        # style: a bar's row
    mods = {"img": Modality("img", "image", (1, 8, 8)), "label": Modality("label", "categorical", (), 2)}
    batch = {"img": x, "label": label}
    spreads = {}
    for kind in ("residual_flow", "residual_private", "gaussian"):
        torch.manual_seed(0)
        codec = CodecConfig(embed_dim=32, width=8, mlp_width=32, flow_width=8, flow_nfe=8, flow_fraction=1.0,
                            image_decoder=kind, likelihood_scale=0.1, private_grad="raw")
        m = Muni(mods, MuniConfig(latent_dim=4, codec=codec, agg_hidden=32, prior_hidden=16, prior_depth=1,
                                  beta=1.0, kind_weights={"image": 1.0, "categorical": 10.0}))
        opt = torch.optim.Adam(m.parameters(), lr=3e-3)
        for _ in range(600):
            loss = m.loss(batch)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        given = {"label": label.repeat_interleave(16)}                     # 16 draws per tuple
        out = m.generate(given, ["img"], generator=torch.Generator().manual_seed(0),
                         conditional_sampler="posterior")["img"]
        lit = out[:, 0].mean(1)                                            # (N, 8) column means
        read = (lit[:, 4:].mean(1) > lit[:, :4].mean(1)).long()
        assert (read == given["label"]).float().mean() >= 0.95, kind
        rows = out[:, 0].mean(2).view(8, 16, 8)                            # row profiles per tuple
        spreads[kind] = float(rows.std(1).mean())
    for kind in ("residual_flow", "residual_private"):
        assert spreads[kind] > 0.05, spreads
        assert spreads["gaussian"] < 0.1 * spreads[kind], spreads


@pytest.mark.parametrize("kw", [{}, {"image_decoder": "private"}, {"image_decoder": "residual_flow"},
                                {"image_decoder": "residual_private"},
                                {"rate_target": "flow_prior"}, {"aggregation": "poe"},
                                {"self_recon": "attached", "prior_route": "full_set"}], ids=str)
def test_every_parameter_is_in_every_steps_graph(kw):
    """MUNI declares ``may_skip_parameters = False``, so DDP runs without
    ``find_unused_parameters``: each loss must reach every parameter, whatever the subsets."""
    assert Muni.may_skip_parameters is False
    m = model(**kw)
    for seed in range(3):
        torch.manual_seed(seed)
        m.zero_grad(set_to_none=True)
        m.loss(tiny_batch(seed=seed))["loss"].backward()
        missing = [n for n, p in m.named_parameters() if p.grad is None]
        assert not missing, missing


def test_refiner_start_is_passed_on_and_declared_to_ddp():
    """``codec.private_start``: MUNI passes the step on to its decoders; before the start the
    refiners are out of the step's graph, so the model declares ``may_skip_parameters`` (DDP
    then looks for unused parameters); from the start on every parameter is in it."""
    torch.manual_seed(0)
    cfg = tiny_config(image_decoder="residual_private")
    cfg.codec.private_start = 3
    m = Muni(MODS, cfg)
    from_start = tiny_config(image_decoder="residual_private")
    from_start.codec.private_start = 0
    assert m.may_skip_parameters and not Muni(MODS, from_start).may_skip_parameters
    for step, refining in ((0, False), (2, False), (3, True)):
        m.begin_step(step)
        m.zero_grad(set_to_none=True)
        m.loss(tiny_batch(seed=step))["loss"].backward()
        for name in ("a", "b"):
            assert m.decoders[name].steps_done == step
            assert (m.decoders[name].refiner.stem.weight.grad is not None) == refining, (name, step)
            assert m.decoders[name].mean_decoder.parameters().__next__().grad is not None


def test_free_nats_make_the_rate_below_the_floor_free():
    """Free bits: per-dimension batch KL under free_nats / d gives the encoders no gradient; the
    logged rate stays the true KL; with the floor at 0 the rate is the loss term itself."""
    plain = model()
    terms = plain.routed_terms(tiny_batch(), MASK_AC)
    assert "rate_floored" not in terms and sum(encoder_grads(plain, terms["rate"]).values()) > 0
    for free, free_grad in ((1e6, True), (1e-9, False)):
        m = model(free_nats=free)
        terms = m.routed_terms(tiny_batch(), MASK_AC)
        assert torch.allclose(terms["rate"], plain.routed_terms(tiny_batch(), MASK_AC)["rate"], atol=0)
        g = encoder_grads(m, terms["rate_floored"])
        assert (sum(g.values()) == 0) == free_grad, (free, g)
    assert torch.isclose(terms["rate_floored"], terms["rate"], rtol=1e-4)  # a floor of ~0 binds nowhere
    out = model(free_nats=1e6).loss(tiny_batch())
    assert "rate_floored" not in out and out["rate"] > 0


def test_beta_warmup_ramps_the_rate_weight_in_training_only():
    """KL annealing: the rate's weight is beta * (step + 1) / beta_warmup during the first
    beta_warmup training steps, then beta; outside the training loop it is beta."""
    m = model(beta=0.5, beta_warmup=4)
    assert m.rate_weight() == 0.5                              # never told a step: the full weight
    weights = []
    for step in (0, 1, 3, 10):
        m.begin_step(step)
        weights.append(m.rate_weight())
    assert weights == [0.125, 0.25, 0.5, 0.5]
    losses = []
    for step in (0, 10):
        m.begin_step(step)
        torch.manual_seed(1)
        out = m.loss(tiny_batch())
        losses.append((out["loss"], out["rate"]))
    (early, rate), (late, rate_late) = losses
    assert torch.equal(rate, rate_late)                        # same draws: only the weight moved
    assert torch.isclose(late - early, (0.5 - 0.125) * rate, rtol=0.05, atol=1e-3)
    assert model(beta=0.5).rate_weight() == 0.5
    with pytest.raises(ConfigError, match="beta_warmup"):
        MuniConfig(beta_warmup=-1)


def test_teaching_balance_gives_every_target_the_mean_gradient_norm():
    bal = TeachingBalance(2, momentum=0.5)
    for _ in range(2):   # the first backward seeds the running norms; the second is balanced
        a, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
        (10 * bal(a, 0)).sum().add(bal(b, 1).sum()).backward()
    n0, n1 = 10 * math.sqrt(12), math.sqrt(12)                  # the raw norms
    assert torch.allclose(bal.norms, torch.tensor([n0, n1]))
    assert float(a.grad.norm()) == pytest.approx((n0 + n1) / 2, rel=1e-5)
    assert float(b.grad.norm()) == pytest.approx((n0 + n1) / 2, rel=1e-5)
    with torch.no_grad():
        assert bal(a, 0) is a                                    # no graph, no hook
    half = TeachingBalance(2, strength=0.5, momentum=0.0)
    for _ in range(2):
        a, b = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
        (10 * half(a, 0)).sum().add(half(b, 1).sum()).backward()
    mean = (n0 + n1) / 2                                         # norms moved halfway (geometrically)
    assert float(a.grad.norm()) == pytest.approx(n0 * (mean / n0) ** 0.5, rel=1e-5)
    assert float(b.grad.norm()) == pytest.approx(n1 * (mean / n1) ** 0.5, rel=1e-5)
    with pytest.raises(ConfigError, match="target_balance"):
        MuniConfig(target_balance=1.5)


def test_target_balance_changes_gradients_not_values():
    torch.manual_seed(3)
    plain = model()
    balanced = model(target_balance=1.0)
    assert "balance.norms" in balanced.state_dict() and "balance.norms" not in plain.state_dict()
    values = []
    for m in (plain, balanced):
        torch.manual_seed(4)
        out = m.loss(tiny_batch())
        values.append(out["loss"].detach())
        m.zero_grad(set_to_none=True)
        out["loss"].backward()
    assert torch.equal(values[0], values[1])
    assert bool((balanced.balance.norms > 0).all())              # every target taught
    assert not all(torch.equal(p.grad, q.grad) for p, q in zip(plain.encoders.parameters(),
                                                                balanced.encoders.parameters()))


def test_cross_prediction_trains_observed_encoders_only():
    m = model()
    g = encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["cross/b"])
    assert g["a"] > 0 and g["c"] > 0 and g["b"] == 0


def test_terms_split_by_observed_mask():
    m = model()
    terms = m.routed_terms(tiny_batch(), MASK_AC)
    assert float(terms["cross/a"].detach()) == 0.0 and float(terms["self/b"].detach()) == 0.0
    assert float(terms["self/a"].detach()) > 0 and float(terms["cross/b"].detach()) > 0


def _prior_param_grad(m: Muni, term: torch.Tensor) -> float:
    m.zero_grad(set_to_none=True)
    term.backward()
    return sum(float(p.grad.abs().sum()) for p in m.prior.parameters() if p.grad is not None)


@pytest.mark.parametrize("rate_target", ["standard_normal", "flow_prior"])
def test_prior_parameters_learn_from_the_prior_route_only(rate_target):
    m = model(rate_target=rate_target)
    batch = tiny_batch()
    for name in [f"cross/{n}" for n in NAMES] + [f"self/{n}" for n in NAMES] + ["rate"]:
        terms = m.routed_terms(batch, MASK_AC)
        assert _prior_param_grad(m, terms[name]) == 0.0, name
    assert _prior_param_grad(m, m.routed_terms(batch, MASK_AC)["prior"]) > 0.0


def test_flow_prior_rate_reaches_encoders_standard_normal_too():
    for rate_target in ("flow_prior", "standard_normal"):
        m = model(rate_target=rate_target)
        g = encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["rate"])
        assert g["a"] > 0 and g["c"] > 0 and g["b"] == 0, rate_target


def test_flow_prior_rate_depends_on_the_prior():
    """The flow_prior rate is -H[q] + CE with CE from the prior's velocity: changing the prior's
    weights changes it; the standard_normal rate does not depend on the prior."""
    batch = tiny_batch()
    for rate_target, should_change in (("flow_prior", True), ("standard_normal", False)):
        m = model(rate_target=rate_target)
        torch.manual_seed(1)
        r1 = m.routed_terms(batch, MASK_AC)["rate"]
        with torch.no_grad():
            for p in m.prior.net.parameters():
                p.add_(0.5)
        torch.manual_seed(1)
        r2 = m.routed_terms(batch, MASK_AC)["rate"]
        assert (not torch.allclose(r1, r2)) == should_change, rate_target


@pytest.mark.parametrize("route,expected", [("leave_one_out", {2}), ("full_set", {3}), ("all_subsets", {1, 2, 3})])
def test_prior_route_feeds_the_prior_the_claimed_subsets(route, expected, monkeypatch):
    m = model(prior_route=route)
    seen = []
    original = m.posterior

    def spy(h, mask, detach=None):
        seen.append(mask.clone())
        return original(h, mask, detach)

    monkeypatch.setattr(m, "posterior", spy)
    torch.manual_seed(0)
    h = m.encode(tiny_batch(b=64))
    m._prior_loss(h)
    broad, cond = seen[0], seen[1]                    # latents, then the condition's subset
    sizes = set(broad.sum(1).tolist())
    assert sizes <= expected and (route == "all_subsets" or sizes == expected)
    assert bool((cond & ~broad).any()) is False, "the condition must be a subset of the broad set"
    assert bool(cond.any(1).all())


def test_prior_detach_keeps_prior_loss_off_encoders():
    m = model(prior_detach=True)
    assert encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["prior"]) == {"a": 0.0, "b": 0.0, "c": 0.0}
    m = model(prior_detach=False)
    assert sum(encoder_grads(m, m.routed_terms(tiny_batch(), MASK_AC)["prior"]).values()) > 0


@pytest.mark.parametrize("sampler", ["uniform", "weighted"])
def test_subset_sampler_never_empty_and_covers_all_subsets(sampler):
    m = model(subset_sampler=sampler)
    masks = m.sample_subsets(4000, torch.Generator().manual_seed(0))
    assert masks.any(1).all()
    codes = set((masks.long() * (2 ** torch.arange(3))).sum(1).tolist())
    assert codes == set(range(1, 8))
    if sampler == "weighted":  # singletons and leave-one-out sets over-represented
        sizes = masks.sum(1)
        assert float((sizes == 1).float().mean()) > 0.4 and float((sizes == 2).float().mean()) > 0.4


@pytest.mark.parametrize("aggregation", ["set", "poe"])
def test_loss_runs_and_backpropagates(aggregation):
    m = model(aggregation=aggregation)
    out = m.loss(tiny_batch())
    assert out["loss"].requires_grad and torch.isfinite(out["loss"])
    assert all(not v.requires_grad for k, v in out.items() if k != "loss")
    out["loss"].backward()


def _subsets():
    for k in range(1, len(NAMES) + 1):
        yield from itertools.combinations(NAMES, k)


@pytest.mark.parametrize("sampler", ["prior", "posterior"])
def test_generate_every_subset_and_target(sampler):
    m = model(conditional_sampler=sampler).eval()
    batch = tiny_batch(b=3)
    for given_names in _subsets():
        targets = [n for n in NAMES if n not in given_names] or ["a"]
        out = m.generate({n: batch[n] for n in given_names}, targets, generator=torch.Generator().manual_seed(0))
        assert sorted(out) == sorted(targets)
        for t in targets:
            MODS[t].check_batch(out[t])
            assert out[t].shape[0] == 3
    out = m.generate({}, NAMES, n=5, generator=torch.Generator().manual_seed(0))
    assert {k: v.shape[0] for k, v in out.items()} == {"a": 5, "b": 5, "c": 5}
    assert float(out["a"].min()) >= 0 and float(out["a"].max()) <= 1


def test_generate_is_seed_deterministic():
    m = model().eval()
    given = {"c": torch.tensor([1, 2])}
    o1 = m.generate(given, ["a", "b"], generator=torch.Generator().manual_seed(3))
    o2 = m.generate(given, ["a", "b"], generator=torch.Generator().manual_seed(3))
    o3 = m.generate(given, ["a", "b"], generator=torch.Generator().manual_seed(4))
    assert torch.equal(o1["a"], o2["a"]) and torch.equal(o1["b"], o2["b"])
    assert not torch.equal(o1["a"], o3["a"])


@pytest.mark.parametrize("given,targets,n,match", [
    ({"zz": torch.zeros(2)}, ["a"], None, "unknown modality 'zz'"),
    ({"c": torch.tensor([1, 2])}, ["q"], None, "unknown modality 'q'"),
    ({"a": torch.zeros(2, 1, 8, 8)}, ["c"], None, "modality 'a' has per-sample shape"),
    ({"c": torch.tensor([7])}, ["a"], None, "modality 'c' has ids outside"),
    ({}, ["a"], None, "needs n >= 1"),
    ({"c": torch.tensor([1, 2]), "a": torch.zeros(3, 1, 16, 16)}, ["b"], None, "different batch sizes"),
])
def test_generate_rejects_bad_input_naming_it(given, targets, n, match):
    with pytest.raises(InputError, match=match):
        model().generate(given, targets, n=n)


def test_config_switch_values_are_validated():
    with pytest.raises(Exception, match="aggregation"):
        apply_overrides(MuniConfig(), ["aggregation=mixture"])


def test_override_sets_one_entry_of_a_dict_field_and_refuses_deeper_keys():
    cfg = apply_overrides(MuniConfig(), ["kind_weights.audio=0.25", "codec.likelihood_scale=0.5"])
    assert cfg.kind_weights == {**MuniConfig().kind_weights, "audio": 0.25}
    assert cfg.codec.likelihood_scale == 0.5
    assert MuniConfig().kind_weights["audio"] == 1.0          # the default is not mutated
    with pytest.raises(Exception, match="not a section"):
        apply_overrides(MuniConfig(), ["beta.x=1"])
    with pytest.raises(Exception, match="not a section"):
        apply_overrides(MuniConfig(), ["kind_weights.audio.x=1"])


@pytest.mark.parametrize("item, message", [
    ("kind_weights.imgae=2", "unknown kind 'imgae'"),          # a misspelt kind is not ignored
    ("kind_weights.audio=abc", "kind_weights.audio: expected a number"),
    ("kind_weights.audio=-1", "finite number >= 0"),
    ("kind_weights.audio=NaN", "expected a finite number"),
    ('kind_weights={"image": true}', "kind_weights.image: expected a number"),
])
def test_kind_weights_are_checked_when_the_config_is_built(item, message):
    from muni.methods.mopoe import MoPoEConfig

    for cfg in (MuniConfig(), MoPoEConfig()):
        with pytest.raises(ConfigError, match=re.escape(message)):
            apply_overrides(cfg, [item])
    assert apply_overrides(MuniConfig(), ["kind_weights.audio=2"]).kind_weights["audio"] == 2.0


def _losses(run_dir) -> list[dict[str, str]]:
    """log.csv rows without the wall-clock columns."""
    import csv

    with open(run_dir / "log.csv") as f:
        return [{k: v for k, v in row.items() if k not in ("time_s", "samples_per_s")} for row in csv.DictReader(f)]


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    from muni.data.base import MultimodalDataset
    from muni.registry import load_model
    from muni.training import TrainConfig, train

    g = torch.Generator().manual_seed(0)
    n = 24
    ds = MultimodalDataset("tiny", "train", MODS, {
        "a": (torch.rand(n, 1, 16, 16, generator=g) * 255).to(torch.uint8),
        "b": (torch.rand(n, 3, 16, 16, generator=g) * 255).to(torch.uint8),
        "c": torch.randint(0, 5, (n,), generator=g)})
    meta = {"method": "muni", "model_config": __import__("muni.config", fromlist=["to_dict"]).to_dict(tiny_config()),
            "modalities": [m.to_json() for m in MODS.values()]}
    cfg = TrainConfig(steps=4, batch_size=8, ckpt_every=2, log_every=1, num_threads=1, ema_decay=0.9)

    full = model()
    train(full, ds, cfg, tmp_path / "full", meta=meta, progress=False)
    part = model()
    train(part, ds, apply_overrides(cfg, ["steps=2"]), tmp_path / "part", meta=meta, progress=False)
    resumed = model()
    train(resumed, ds, cfg, tmp_path / "part", resume=True, meta=meta, progress=False)
    for (k, v), (_, w) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k
    assert _losses(tmp_path / "full") == _losses(tmp_path / "part")

    loaded = load_model(tmp_path / "full", ema=False)
    for (k, v), (_, w) in zip(full.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(v, w), k
    o1 = loaded.generate({"c": torch.tensor([1])}, ["a"], generator=torch.Generator().manual_seed(0))
    o2 = full.eval().generate({"c": torch.tensor([1])}, ["a"], generator=torch.Generator().manual_seed(0))
    assert torch.equal(o1["a"], o2["a"])

"""Tests of the multimodal VAE baselines (MVAE, MMVAE, MoPoE, HELVAE).

Each objective is recomputed by a slow reference (explicit loops over modalities, experts and
subsets, closed-form Gaussians from `torch.distributions`) with the same noise; posteriors are
checked against closed forms; `generate` is checked on every given-subset / target combination.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from muni.errors import ConfigError, InputError
from muni.methods.base import check_generate_output
from muni.methods.helvae import HELVAE, HELVAEConfig
from muni.methods.mmvae import MMVAE, MMVAEConfig
from muni.methods.mopoe import MoPoE, MoPoEConfig, mopoe_kl
from muni.methods.mvae import MVAE, MVAEConfig
from muni.methods.vae import likelihood_weights
from muni.modalities.base import PAD_ID, Modality
from muni.modalities import BOS_ID, EOS_ID, CodecConfig

MODS = {
    "img": Modality("img", "image", (3, 16, 16)),
    "digit": Modality("digit", "categorical", (), num_classes=10),
    "cap": Modality("cap", "text", (6,), num_classes=9),
    "mel": Modality("mel", "audio", (1, 8, 8)),
}
CODEC = CodecConfig(embed_dim=16, width=8, mlp_width=16, text_width=16,
                    image_decoder="gaussian", audio_decoder="gaussian")
LATENT = 6
B = 4
METHODS = {"mvae": (MVAE, MVAEConfig), "mmvae": (MMVAE, MMVAEConfig),
           "mopoe": (MoPoE, MoPoEConfig), "helvae": (HELVAE, HELVAEConfig)}


def build(method: str, **kw):
    torch.manual_seed(0)
    cls, cfg = METHODS[method]
    return cls(MODS, cfg(latent_dim=LATENT, codec=CODEC, **kw))


def make_batch(n: int = B, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    cap = torch.full((n, 6), PAD_ID, dtype=torch.long)
    cap[:, 0] = BOS_ID
    for i in range(n):
        k = 1 + i % 4
        cap[i, 1:k + 1] = torch.randint(3, 9, (k,), generator=g)
        cap[i, k + 1] = EOS_ID
    return {"img": torch.rand(n, 3, 16, 16, generator=g), "digit": torch.randint(0, 10, (n,), generator=g),
            "cap": cap, "mel": torch.rand(n, 1, 8, 8, generator=g) * 2 - 1}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ref_experts(model, batch) -> list[Normal]:
    """Unimodal experts recomputed from the encoder and head of each modality."""
    out = []
    for n in model.names:
        mu, raw = model.heads[n](model.encoders[n](batch[n])).chunk(2, dim=-1)
        out.append(Normal(mu, (0.5 * 8.0 * torch.tanh(raw / 8.0)).exp()))
    return out


def ref_poe(experts: list[Normal], prior: bool) -> Normal:
    """Closed-form product of Gaussian experts: precision-weighted mean, summed precisions."""
    prec = sum(1.0 / e.variance for e in experts) + (1.0 if prior else 0.0)
    mean = sum(e.mean / e.variance for e in experts) / prec
    return Normal(mean, prec.rsqrt())


def ref_rec(model, batch, names, z) -> torch.Tensor:
    """``sum_{m in names} w_m * NLL_m(x_m | z)``, (B,), one modality at a time."""
    return sum(model.weights[n] * model.decoders[n].loss(batch[n], z) for n in names)


def std_normal_kl(q: Normal) -> torch.Tensor:
    return kl_divergence(q, Normal(torch.zeros_like(q.mean), torch.ones_like(q.mean))).sum(-1)


# ----------------------------------------------------------------------------- shared pieces

def test_likelihood_weights_follow_the_numel_rule_and_kind_table():
    w = likelihood_weights(MODS, "numel", {})
    # sizes: img 3*16*16 = 768, digit one-hot 10, caption 6 * 9 one-hot, mel 64
    assert w == pytest.approx({"img": 1.0, "digit": 76.8, "cap": 768 / 54, "mel": 12.0})
    kinds = {"image": 1.0, "categorical": 50.0, "text": 3.0}
    assert likelihood_weights(MODS, "kind", kinds) == {"img": 1.0, "digit": 50.0, "cap": 3.0, "mel": 1.0}
    with pytest.raises(ConfigError, match="rescale"):
        likelihood_weights(MODS, "bogus", {})


def test_experts_soft_clamp_logvar_and_mask_absent():
    model = build("mvae")
    with torch.no_grad():
        model.heads["img"].bias[LATENT:] = 1e4  # huge raw log-variance
    mu, logvar, mask = model.experts({"img": make_batch()["img"]})
    assert mu.shape == logvar.shape == (4, B, LATENT) and mask.shape == (4, B)
    assert mask[0].all() and not mask[1:].any()
    assert logvar[0].max() <= 8.0 and logvar[0].min() > 7.9  # squashed into [-8, 8]


def test_bad_presence_masks_and_configs_are_validated():
    model = build("mopoe")
    batch = make_batch()
    with pytest.raises(InputError, match="capt"):
        model.loss(batch, present={"capt": torch.ones(B, dtype=torch.bool)})
    with pytest.raises(InputError, match="shape"):
        model.loss(batch, present={"cap": torch.ones(B + 1, dtype=torch.bool)})
    with pytest.raises(InputError, match="no modality"):
        model.loss({"cap": batch["cap"]}, present={"cap": torch.arange(B) > 0})
    with pytest.raises(ConfigError, match="objective"):
        build("mmvae", objective="iwae")


# ----------------------------------------------------------------------------- posteriors

def test_mopoe_kl_is_the_uniform_mixture_of_subset_kls():
    """Hand-made experts; sample 1 lacks expert 1, so its mixture has 3 = 2^2 - 1 subsets, not 7."""
    g = gen(3)
    mu = torch.randn(3, 2, 2, generator=g)
    logvar = torch.randn(3, 2, 2, generator=g)
    mask = torch.tensor([[True, True], [True, False], [True, True]])
    got = mopoe_kl(mu, logvar, mask)
    for b, want_count in ((0, 7), (1, 3)):
        present = [k for k in range(3) if mask[k, b]]
        subs = [s for r in range(1, len(present) + 1) for s in itertools.combinations(present, r)]
        assert len(subs) == want_count
        kls = [std_normal_kl(ref_poe([Normal(mu[k, b], (0.5 * logvar[k, b]).exp()) for k in s], prior=False))
               for s in subs]
        assert got[b].item() == pytest.approx(sum(kls).item() / want_count, rel=1e-5)


def test_mvae_posterior_sample_is_the_poe_with_prior_expert():
    model = build("mvae")
    batch = make_batch()
    given = {"img": batch["img"], "cap": batch["cap"]}
    mu, logvar, mask = model.experts(given)
    z = model.posterior_sample(mu, logvar, mask, gen(5))
    q = ref_poe([Normal(mu[i], (0.5 * logvar[i]).exp()) for i in (0, 2)], prior=True)
    eps = torch.randn((B, LATENT), generator=gen(5))
    torch.testing.assert_close(z, q.mean + q.stddev * eps)


def test_mmvae_posterior_sample_draws_from_the_given_experts_uniformly():
    """Mixture of experts 0 (mean -5) and 2 (mean +5); expert 1 (mean 50) is absent."""
    model = build("mmvae")
    n = 4000
    mu = torch.tensor([-5.0, 50.0, 5.0])[:, None, None].expand(3, n, 1).contiguous()
    logvar = torch.full_like(mu, -4.0)
    mask = torch.tensor([True, False, True])[:, None].expand(3, n)
    z = model.posterior_sample(mu, logvar, mask, gen(0)).squeeze(1)
    assert ((z - 5).abs() < 1).float().mean().item() == pytest.approx(0.5, abs=0.04)
    assert ((z - 5).abs() < 1).logical_or((z + 5).abs() < 1).all()


def test_helvae_pool_is_the_bhattacharyya_weighted_pair_mixture():
    """Moments of Hölder alpha=1/2 pooling, from pairwise geometric means and Bhattacharyya coefficients."""
    g = gen(7)
    m, b, d = 3, 2, 2
    mu, logvar = torch.randn(m, b, d, generator=g), torch.randn(m, b, d, generator=g)
    mask = torch.ones(m, b, dtype=torch.bool)
    model = build("helvae")
    got_mu, got_logvar = model.pool(mu, logvar, mask)
    var = logvar.exp()
    for s in range(b):
        means, vars_, logw = [], [], []
        for i, j in itertools.product(range(m), repeat=2):
            vi, vj, mi, mj = var[i, s], var[j, s], mu[i, s], mu[j, s]
            p = 0.5 * (1 / vi + 1 / vj)  # precision of sqrt(q_i q_j), renormalised
            means.append(0.5 * (mi / vi + mj / vj) / p)
            vars_.append(1 / p)
            # log Bhattacharyya coefficient of N(mi, vi), N(mj, vj), summed over dims
            logw.append((0.5 * torch.log(2 * vi.sqrt() * vj.sqrt() / (vi + vj))
                         - (mi - mj) ** 2 / (4 * (vi + vj))).sum())
        pi = torch.softmax(torch.stack(logw), 0)[:, None]
        mean = (pi * torch.stack(means)).sum(0)
        second = (pi * (torch.stack(vars_) + (torch.stack(means) - mean) ** 2)).sum(0)
        torch.testing.assert_close(got_mu[s], mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got_logvar[s], second.log(), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- objectives

def test_mvae_training_subsets_joint_unimodal_and_random():
    model = build("mvae", num_random_subsets=2)
    subs = model.training_subsets(gen(0))
    assert subs[0] == (0, 1, 2, 3) and subs[1:5] == [(0,), (1,), (2,), (3,)]
    assert len(subs) == 7 and all(1 < len(s) < 4 for s in subs[5:])
    two = MVAE(dict(list(MODS.items())[:2]), MVAEConfig(latent_dim=LATENT, codec=CODEC))
    assert two.training_subsets(gen(0)) == [(0, 1), (0,), (1,)]  # no middle subsets when M = 2


def test_mvae_loss_matches_explicit_sum_of_subset_elbos():
    model = build("mvae", beta=0.7, num_random_subsets=2)
    batch = make_batch()
    out = model.loss(batch, generator=gen(11))
    g = gen(11)
    subs = model.training_subsets(g)
    eps = torch.randn((len(subs), B, LATENT), generator=g)
    experts = ref_experts(model, batch)
    want = 0.0
    for t, s in enumerate(subs):
        q = ref_poe([experts[i] for i in s], prior=True)
        z = q.mean + q.stddev * eps[t]
        want = want + (ref_rec(model, batch, [model.names[i] for i in s], z) + 0.7 * std_normal_kl(q)).mean()
        if t == 0:
            torch.testing.assert_close(out["kl/joint"], std_normal_kl(q).mean())
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-3)


def mmvae_reference(model, batch, k: int, beta: float, seed: int) -> torch.Tensor:
    """Log-weights lw (M, K, B) of the stratified MoE bound, by loops over experts and samples."""
    experts = ref_experts(model, batch)
    m = len(experts)
    eps = torch.randn((m, k, B, LATENT), generator=gen(seed))
    lw = torch.zeros(m, k, B)
    for e, q in enumerate(experts):
        for i in range(k):
            z = q.mean + q.stddev * eps[e, i]
            log_q_mix = torch.logsumexp(torch.stack([qj.log_prob(z).sum(-1) for qj in experts]), 0) - math.log(m)
            log_p = Normal(0.0, 1.0).log_prob(z).sum(-1)
            lw[e, i] = -ref_rec(model, batch, model.names, z) + beta * (log_p - log_q_mix)
    return lw


def test_mmvae_stratified_elbo_matches_loop_over_experts():
    model = build("mmvae", k=2, beta=1.3)
    batch = make_batch()
    out = model.loss(batch, generator=gen(4))
    lw = mmvae_reference(model, batch, k=2, beta=1.3, seed=4)
    torch.testing.assert_close(out["loss"], -lw.mean(), rtol=1e-5, atol=1e-3)


def test_mmvae_dreg_matches_reference_and_equals_elbo_at_k1():
    model = build("mmvae", objective="dreg", k=3)
    batch = make_batch()
    out = model.loss(batch, generator=gen(9))
    lw = mmvae_reference(model, batch, k=3, beta=1.0, seed=9)
    w = torch.softmax(lw, dim=1)
    torch.testing.assert_close(out["loss"], -(w * lw).sum(1).mean(), rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out["iwae"], (torch.logsumexp(lw, 1) - math.log(3)).mean(), rtol=1e-5, atol=1e-3)
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.heads.parameters())
    # K = 1: the DReG surrogate and the ELBO agree in value
    dreg1 = build("mmvae", objective="dreg", k=1).loss(batch, generator=gen(2))["loss"]
    elbo1 = build("mmvae", objective="elbo", k=1).loss(batch, generator=gen(2))["loss"]
    torch.testing.assert_close(dreg1, elbo1)


def test_mopoe_loss_matches_explicit_subset_mixture():
    model = build("mopoe", beta=2.5)
    batch = make_batch()
    out = model.loss(batch, generator=gen(6))
    experts = ref_experts(model, batch)
    subs = [s for r in range(1, 5) for s in itertools.combinations(range(4), r)]
    assert len(subs) == 15
    g = gen(6)
    # uniform subset per sample, drawn as `aggregation.mopoe_sample` does (a transposed (S, B) table)
    pick = torch.multinomial(torch.ones(15, B).T, 1, generator=g).squeeze(1)
    eps = torch.randn((B, LATENT), generator=g)
    posts = [ref_poe([experts[i] for i in s], prior=False) for s in subs]
    z = torch.stack([posts[pick[b]].mean[b] + posts[pick[b]].stddev[b] * eps[b] for b in range(B)])
    kl = sum(std_normal_kl(q) for q in posts) / 15
    want = (ref_rec(model, batch, model.names, z) + 2.5 * kl).mean()
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out["kl"], kl.mean(), rtol=1e-5, atol=1e-5)


def test_helvae_loss_is_the_full_set_elbo():
    model = build("helvae", beta=2.0)
    batch = make_batch()
    out = model.loss(batch, generator=gen(8))
    mu, logvar, mask = model.experts(batch)
    assert mask.all()
    mu_h, logvar_h = model.pool(mu, logvar, mask)
    q = Normal(mu_h, (0.5 * logvar_h).exp())
    z = q.mean + q.stddev * torch.randn((B, LATENT), generator=gen(8))
    want = (ref_rec(model, batch, model.names, z) + 2.0 * std_normal_kl(q)).mean()
    torch.testing.assert_close(out["loss"], want, rtol=1e-5, atol=1e-3)


# ----------------------------------------------------------------------------- generation

@pytest.mark.parametrize("method", list(METHODS))
def test_generate_every_subset_and_unconditional(method):
    model = build(method).eval()
    batch = make_batch()
    names = list(MODS)
    for r in range(1, len(names) + 1):
        for given_names in itertools.combinations(names, r):
            targets = [n for n in names if n not in given_names] or names
            given = {n: batch[n] for n in given_names}
            out = model.generate(given, targets, generator=gen(1))
            assert set(out) == set(targets)
            check_generate_output(MODS, out, targets, B)
            assert out["img"].dtype == torch.float32 if "img" in out else True
            again = model.generate(given, targets, generator=gen(1))
            for t in targets:
                assert torch.equal(out[t], again[t]), (given_names, t)
    out = model.generate({}, names, n=3, generator=gen(2))
    check_generate_output(MODS, out, names, 3)
    assert out["digit"].dtype == torch.int64 and out["cap"].dtype == torch.int64
    assert (out["cap"][:, 0] == BOS_ID).all()
    assert out["img"].min() >= 0 and out["img"].max() <= 1
    again = model.generate({}, names, n=3, generator=gen(2))
    assert all(torch.equal(out[t], again[t]) for t in names)
    with pytest.raises(InputError):
        model.generate({}, names)  # n missing
    with pytest.raises(InputError):
        model.generate({"digit": batch["digit"]}, ["nope"])


# ----------------------------------------------------------------------------- optimisation

@pytest.mark.parametrize("method,kw", [("mvae", {}), ("mmvae", {}), ("mmvae", {"objective": "dreg", "k": 2}),
                                       ("mopoe", {}), ("helvae", {})])
def test_a_few_steps_reduce_the_loss(method, kw):
    model = build(method, **kw)
    batch = make_batch(8, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        out = model.loss(batch, generator=gen(0))  # same noise every step
        assert all(torch.isfinite(v).all() for v in out.values())
        assert all(not v.requires_grad for k, v in out.items() if k != "loss")
        if first is None:
            first = out["loss"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert model.loss(batch, generator=gen(0))["loss"].item() < 0.9 * first

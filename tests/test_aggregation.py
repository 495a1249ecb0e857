"""Subset posteriors: closed forms, mixture densities, Hölder moments, learned aggregators."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import trapezoid

from muni.methods.aggregation import (AGGREGATORS, PoEAggregator, SetAggregator, holder_pool, kl_normal,
                                      log_normal, moe_log_density, moe_sample, mopoe_sample,
                                      mopoe_subset_posteriors, product_of_experts, sample_normal, subset_masks,
                                      subsets)



@pytest.fixture(autouse=True)
def _float64():
    """The closed-form comparisons run in double precision."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _experts(k=3, b=5, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(k, b, d, generator=g) * 2
    logvar = torch.randn(k, b, d, generator=g) * 0.7
    return mu, logvar


def _random_mask(k, b, seed=1, nonempty=True):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(k, b, generator=g) < 0.5
    if nonempty:
        mask[0, ~mask.any(0)] = True
    return mask


# ----------------------------------------------------------------------------- Gaussian helpers

def test_gaussian_helpers_match_torch_distributions():
    mu, logvar = _experts(1, 6, 3)
    mu, logvar = mu[0], logvar[0]
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(-1))
    x = torch.randn(6, 3)
    torch.testing.assert_close(log_normal(x, mu, logvar), q.log_prob(x).sum(-1))
    z = sample_normal(mu.expand(20000, 6, 3), logvar.expand(20000, 6, 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mu, atol=0.1, rtol=0)
    torch.testing.assert_close(z.var(0).log(), logvar, atol=0.05, rtol=0)


# ----------------------------------------------------------------------------- PoE

def _poe_reference(mu, logvar, mask, prior):
    """Loop over samples: precision-weighted product of the listed experts."""
    k, b, d = mu.shape
    out_mu, out_lv = torch.empty(b, d), torch.empty(b, d)
    for j in range(b):
        precs = [torch.ones(d)] if prior else []
        means = [torch.zeros(d)] if prior else []
        for i in range(k):
            if mask[i, j]:
                precs.append(1 / logvar[i, j].exp())
                means.append(mu[i, j])
        total = sum(precs)
        out_mu[j] = sum(p * m for p, m in zip(precs, means)) / total
        out_lv[j] = -total.log()
    return out_mu, out_lv


@pytest.mark.parametrize("prior", [True, False])
def test_poe_matches_closed_form(prior):
    mu, logvar = _experts()
    mask = _random_mask(3, 5)
    got = product_of_experts(mu, logvar, mask, prior_expert=prior)
    want = _poe_reference(mu, logvar, mask, prior)
    torch.testing.assert_close(got, want)


def test_poe_hand_made_1d():
    # N(1, 1) x N(3, 1/3): precision 4, mean (1 + 9) / 4; with the prior: precision 5, mean 10 / 5.
    mu = torch.tensor([1.0, 3.0]).reshape(2, 1, 1)
    logvar = torch.tensor([0.0, math.log(1 / 3)]).reshape(2, 1, 1)
    mask = torch.ones(2, 1, dtype=torch.bool)
    m, lv = product_of_experts(mu, logvar, mask, prior_expert=False)
    assert m.item() == pytest.approx(2.5) and lv.exp().item() == pytest.approx(0.25)
    m, lv = product_of_experts(mu, logvar, mask, prior_expert=True)
    assert m.item() == pytest.approx(2.0) and lv.exp().item() == pytest.approx(0.2)
    # only the first expert present; absent experts may even hold NaNs
    mu[1] = float("nan")
    m, lv = product_of_experts(mu, logvar, torch.tensor([[True], [False]]), prior_expert=False)
    assert m.item() == pytest.approx(1.0) and lv.item() == pytest.approx(0.0)


def test_poe_empty_sample():
    mu, logvar = _experts(2, 3, 2)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    m, lv = product_of_experts(mu, logvar, mask, prior_expert=True)
    assert torch.all(m[1] == 0) and torch.all(lv[1] == 0)  # only the prior expert
    with pytest.raises(ValueError, match="no present expert"):
        product_of_experts(mu, logvar, mask, prior_expert=False)


# ----------------------------------------------------------------------------- MoE

def test_moe_log_density_matches_slow_reference():
    mu, logvar = _experts(3, 4, 2)
    mask = _random_mask(3, 4, seed=3)
    z = torch.randn(7, 4, 2)
    got = moe_log_density(z, mu, logvar, mask)
    assert got.shape == (7, 4)
    for s in range(7):
        for b in range(4):
            present = [k for k in range(3) if mask[k, b]]
            dens = sum(torch.distributions.Normal(mu[k, b], (0.5 * logvar[k, b]).exp()).log_prob(z[s, b]).sum().exp()
                       for k in present) / len(present)
            assert got[s, b].item() == pytest.approx(dens.log().item(), rel=1e-9)


def test_moe_sample_is_stratified():
    mu, logvar = _experts(3, 2, 2)
    mask = torch.tensor([[True, True], [False, True], [True, False]])
    n = 20000
    z = moe_sample(mu[:, None].expand(3, n, 2, 2).reshape(3, 2 * n, 2),
                   logvar[:, None].expand(3, n, 2, 2).reshape(3, 2 * n, 2),
                   mask[:, None].expand(3, n, 2).reshape(3, 2 * n), torch.Generator().manual_seed(0))
    z = z.reshape(3, n, 2, 2)
    assert torch.all(z[1, :, 0] == 0) and torch.all(z[2, :, 1] == 0)  # absent experts
    torch.testing.assert_close(z[0, :, 0].mean(0), mu[0, 0], atol=0.1, rtol=0)
    torch.testing.assert_close(z[1, :, 1].mean(0), mu[1, 1], atol=0.1, rtol=0)


# ----------------------------------------------------------------------------- MoPoE

@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_subsets_enumerate_all_nonempty(m):
    names = [f"m{i}" for i in range(m)]
    subs = subsets(names)
    assert len(subs) == 2 ** m - 1 == len(set(subs))
    assert subs[:m] == [(n,) for n in names] and subs[-1] == tuple(names)
    table = subset_masks(m)
    assert [tuple(names[i] for i in range(m) if row[i]) for row in table.tolist()] == subs


def test_mopoe_subset_posteriors_are_poes():
    mu, logvar = _experts(3, 4, 2)
    mask = _random_mask(3, 4, seed=5)
    mu_s, lv_s, valid = mopoe_subset_posteriors(mu, logvar, mask)
    table = subset_masks(3)
    for s in range(7):
        sub = table[s][:, None].expand(3, 4)
        torch.testing.assert_close((mu_s[s], lv_s[s]), product_of_experts(mu, logvar, sub, prior_expert=False))
        for b in range(4):
            assert bool(valid[s, b]) == bool(torch.all(~table[s] | mask[:, b]))


def test_mopoe_sample_draws_uniform_valid_subsets():
    b = 6000
    mu, logvar = _experts(3, b, 2)
    mask = torch.zeros(3, b, dtype=torch.bool)
    mask[:2, : b // 2] = True  # first half: experts {0, 1} -> 3 subsets
    mask[:, b // 2:] = True  # second half: all three -> 7 subsets
    z, mu_a, lv_a, chosen = mopoe_sample(mu, logvar, mask, generator=torch.Generator().manual_seed(0))
    assert z.shape == (b, 2) and torch.all(chosen <= mask) and torch.all(chosen.any(0))
    torch.testing.assert_close((mu_a, lv_a), product_of_experts(mu, logvar, chosen, prior_expert=False))
    for half, n_sub in [(slice(0, b // 2), 3), (slice(b // 2, b), 7)]:
        codes = (chosen[:, half].T.long() * torch.tensor([1, 2, 4])).sum(1)
        counts = torch.bincount(codes, minlength=8)[1:].double()
        freq = counts[counts > 0] / counts.sum()
        assert len(freq) == n_sub
        assert torch.all((freq - 1 / n_sub).abs() < 0.03)


# ----------------------------------------------------------------------------- Hölder

def _holder_numeric(mus, variances, alpha):
    """Mean and variance of the normalised power mean of 1-D Gaussians on a fine grid."""
    x = np.linspace(-30, 30, 600_001)
    dens = np.stack([np.exp(-(x - m) ** 2 / (2 * v)) / np.sqrt(2 * np.pi * v) for m, v in zip(mus, variances)])
    pooled = np.mean(dens ** alpha, axis=0) ** (1 / alpha)
    pooled /= trapezoid(pooled, x)
    mean = trapezoid(x * pooled, x)
    return mean, trapezoid((x - mean) ** 2 * pooled, x)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 1 / 3])
@pytest.mark.parametrize("case", [([-2.0, 1.0, 3.0], [1.0, 0.25, 2.0]), ([0.0, 4.0], [1.0, 1.0]),
                                  ([-1.0, -0.5, 2.0, 5.0], [0.5, 3.0, 0.1, 1.5])])
def test_holder_pool_moments_match_numerical_integration(alpha, case):
    mus, variances = case
    k = len(mus)
    mu = torch.tensor(mus).reshape(k, 1, 1)
    logvar = torch.tensor(variances).log().reshape(k, 1, 1)
    m, lv = holder_pool(mu, logvar, torch.ones(k, 1, dtype=torch.bool), alpha=alpha)
    want_m, want_v = _holder_numeric(mus, variances, alpha)
    assert m.item() == pytest.approx(want_m, abs=1e-6)
    assert lv.exp().item() == pytest.approx(want_v, rel=1e-6)


def test_holder_pool_mask_prior_and_limits():
    mu, logvar = _experts(3, 4, 3)
    mask = torch.tensor([[True, True, False, True], [True, False, False, True], [False, False, True, True]])
    got = holder_pool(mu, logvar, mask)
    for b in range(4):
        present = mask[:, b]
        want = holder_pool(mu[present, b:b + 1], logvar[present, b:b + 1],
                           torch.ones(int(present.sum()), 1, dtype=torch.bool))
        torch.testing.assert_close((got[0][b:b + 1], got[1][b:b + 1]), want)
    # a single expert is returned unchanged; alpha = 1 is the moment-matched mixture
    torch.testing.assert_close(got[0][2], mu[2, 2])
    torch.testing.assert_close(got[1][2], logvar[2, 2])
    m1, lv1 = holder_pool(mu, logvar, torch.ones(3, 4, dtype=torch.bool), alpha=1.0)
    torch.testing.assert_close(m1, mu.mean(0))
    torch.testing.assert_close(lv1.exp(), (logvar.exp() + mu.pow(2)).mean(0) - mu.mean(0).pow(2))
    # the prior expert is an extra always-present N(0, I) expert
    zeros = torch.zeros(1, 4, 3)
    torch.testing.assert_close(holder_pool(mu, logvar, mask, prior_expert=True),
                               holder_pool(torch.cat([zeros, mu]), torch.cat([zeros, logvar]),
                                           torch.cat([torch.ones(1, 4, dtype=torch.bool), mask])))
    with pytest.raises(ValueError, match="alpha"):
        holder_pool(mu, logvar, mask, alpha=0.4)
    with pytest.raises(ValueError, match="no present expert"):
        holder_pool(mu, logvar, torch.zeros(3, 4, dtype=torch.bool))


# ----------------------------------------------------------------------------- learned aggregators

NAMES = ["image", "label", "text", "audio"]


def _h(b=5, e=8, seed=0, names=NAMES):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, e, generator=g) for m in names}


@pytest.mark.parametrize("kind", ["set", "poe"])
def test_aggregator_is_permutation_invariant(kind):
    torch.manual_seed(0)
    a = AGGREGATORS[kind](NAMES, 8, 3, 16)
    perm = [2, 0, 3, 1]
    b = AGGREGATORS[kind]([NAMES[i] for i in perm], 8, 3, 16)
    b.load_state_dict(a.state_dict())
    h = _h()
    mask = _random_mask(4, 5, seed=2).T  # (B, M)
    rev = dict(reversed(list(h.items())))
    out_a = a(h, mask)
    torch.testing.assert_close(out_a, b(rev, mask[:, perm]))
    torch.testing.assert_close(a.pool(h, mask), b.pool(rev, mask[:, perm]))
    assert a.pool(h, mask).shape == (5, a.pool_dim)


@pytest.mark.parametrize("kind", ["set", "poe"])
def test_aggregator_accepts_every_nonempty_subset_and_rejects_empty(kind):
    torch.manual_seed(0)
    agg = AGGREGATORS[kind](NAMES, 8, 3, 16)
    h = _h()
    outs = set()
    for bits in itertools.product([False, True], repeat=4):
        mask = torch.tensor(bits).expand(5, 4)
        if not any(bits):
            with pytest.raises(ValueError, match="no present modality"):
                agg(h, mask)
            continue
        mu, logvar = agg(h, mask)
        assert mu.shape == logvar.shape == (5, 3) and torch.isfinite(mu).all() and torch.isfinite(logvar).all()
        # mask=None with only the present modalities in h means the same subset
        sub = {m: h[m] for m, on in zip(NAMES, bits) if on}
        torch.testing.assert_close((mu, logvar), agg(sub))
        outs.add(tuple(mu[0].tolist()))
        # values of absent modalities do not matter
        noisy = {m: (x if on else x + 100.0) for (m, x), on in zip(h.items(), bits)}
        torch.testing.assert_close((mu, logvar), agg(noisy, mask))
    assert len(outs) == 15  # every subset gives a different posterior
    with pytest.raises(ValueError, match="unknown"):
        agg({"video": h["image"]})
    with pytest.raises(ValueError, match="present but h has no"):
        agg({"image": h["image"]}, torch.ones(5, 4, dtype=torch.bool))


def test_set_aggregator_pool_is_mean_of_typed_embeddings():
    agg = SetAggregator(NAMES, 8, 3, 16)
    h = _h()
    mask = _random_mask(4, 5, seed=4).T
    want = torch.stack([sum(h[m][b] + agg.type_embedding[m] for i, m in enumerate(NAMES) if mask[b, i])
                        / mask[b].sum() for b in range(5)])
    torch.testing.assert_close(agg.pool(h, mask), want)
    torch.testing.assert_close(agg(h, mask), agg.head(want))


@pytest.mark.parametrize("kind", ["set", "poe"])
def test_detach_stops_gradient_to_exactly_the_detached_entries(kind):
    torch.manual_seed(0)
    agg = AGGREGATORS[kind](NAMES, 8, 3, 16)
    h = {m: x.requires_grad_() for m, x in _h().items()}
    mask = torch.ones(5, 4, dtype=torch.bool)
    mask[3, 0] = False
    detach = torch.zeros(5, 4, dtype=torch.bool)
    detach[0, 1] = detach[2, 1] = detach[4, 3] = True
    mu, logvar = agg(h, mask, detach)
    (mu.pow(2).sum() + logvar.sum()).backward()
    for i, m in enumerate(NAMES):
        per_sample = h[m].grad.abs().sum(1)  # (B,)
        for b in range(5):
            if detach[b, i] or not mask[b, i]:
                assert per_sample[b] == 0, (m, b)
            else:
                assert per_sample[b] > 0, (m, b)
    # the forward value is unchanged by detaching
    torch.testing.assert_close(agg(h, mask, detach), agg(h, mask))
    # and the parameters still get gradients through detached inputs
    agg.zero_grad()
    only = {"label": h["label"]}
    agg(only, detach=torch.ones(5, 4, dtype=torch.bool))[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agg.parameters())


def test_poe_aggregator_is_product_of_its_experts():
    agg = PoEAggregator(NAMES, 8, 3, 16)
    h = _h()
    mask = _random_mask(4, 5, seed=6).T
    out = torch.stack([agg.experts[m](h[m]) for m in NAMES])
    torch.testing.assert_close(agg(h, mask), product_of_experts(*out.chunk(2, -1), mask.T, prior_expert=True))

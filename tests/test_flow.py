"""Flow blocks: ODE samplers on closed forms, the velocity network, and the latent prior
trained on a known 2-D Gaussian mixture (unconditional and conditional with guidance)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from muni.flow.prior import FlowPrior
from muni.flow.samplers import euler, heun, integrate
from muni.flow.velocity import VelocityMLP, timestep_embedding


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matmuls: intra-op threading only adds overhead (and stalls on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# ----------------------------------------------------------------------------- samplers


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_constant_field_gives_exact_displacement(solver):
    x = torch.randn(5, 3, dtype=torch.float64)
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    out = integrate(lambda z, t: c.expand_as(z), x, nfe=7, solver=solver)
    torch.testing.assert_close(out, x + c)


def test_time_linear_field_heun_is_exact_euler_is_not():
    # dx/dt = t: x(1) = x(0) + 1/2; Euler with N steps gives sum_i t_i h = (N - 1) / (2N).
    x = torch.zeros(4, 2, dtype=torch.float64)
    field = lambda z, t: t[:, None].expand_as(z)  # noqa: E731
    torch.testing.assert_close(heun(field, x, nfe=2), x + 0.5)
    torch.testing.assert_close(euler(field, x, nfe=8), x + 7 / 16)


@pytest.mark.parametrize("nfe", [4, 8, 16])
def test_linear_decay_field_matches_closed_forms(nfe):
    # dx/dt = -x: exact x0 e^{-1}; Euler (1 - h)^N with N = nfe; Heun (1 - h + h^2/2)^N with N = nfe // 2.
    x = torch.randn(6, 2, dtype=torch.float64)
    field = lambda z, t: -z  # noqa: E731
    exact = x * math.exp(-1.0)
    out_e, out_h = euler(field, x, nfe), heun(field, x, nfe)
    torch.testing.assert_close(out_e, x * (1 - 1 / nfe) ** nfe)
    h = 2 / nfe
    torch.testing.assert_close(out_h, x * (1 - h + h * h / 2) ** (nfe // 2))
    assert (out_h - exact).abs().max() < 0.5 * (out_e - exact).abs().max()


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="unknown ODE solver"):
        integrate(lambda z, t: z, torch.zeros(1, 1), 4, solver="rk45")


# ----------------------------------------------------------------------------- velocity network

def test_timestep_embedding():
    t = torch.tensor([0.0, 0.25, 1.0])
    emb = timestep_embedding(t, 6)
    assert emb.shape == (3, 6)
    torch.testing.assert_close(emb[0], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]))
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(3) / 3)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(250.0 * freqs), torch.sin(250.0 * freqs)]))
    assert timestep_embedding(t, 7).shape == (3, 7)
    assert timestep_embedding(torch.tensor([0.5, 0.5001]), 256).diff(dim=0).abs().max() > 1e-3


def test_velocity_mlp_shapes_zero_init_and_condition_checks():
    net = VelocityMLP(5, hidden=32, depth=2, cond_dim=3)
    z, t, c = torch.randn(4, 5), torch.rand(4), torch.randn(4, 3)
    out = net(z, t, c)
    assert out.shape == (4, 5) and torch.all(out == 0)  # zero-initialised output layer
    with pytest.raises(ValueError, match="cond"):
        net(z, t)
    with pytest.raises(ValueError, match="cond"):
        VelocityMLP(5, hidden=32, depth=2)(z, t, c)
    # after a few steps (adaLN-Zero: the output layer moves first, then the modulations)
    # the output depends on z, t and cond
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        net(z, t, c).sub(torch.arange(5.0)).pow(2).mean().backward()
        opt.step()
    out = net(z, t, c)
    assert not torch.allclose(out, net(z + 1, t, c))
    assert not torch.allclose(out, net(z, 1 - t, c))
    assert not torch.allclose(out, net(z, t, -c))


# ----------------------------------------------------------------------------- flow prior: API

def test_prior_loss_and_cond_keep():
    prior = FlowPrior(3, cond_dim=2, hidden=32, depth=1)
    with torch.no_grad():
        prior.null_cond.fill_(0.7)
        prior.net.proj_out.weight.normal_()
        prior.net.modulation_out[-1].weight.normal_()
    z, c = torch.randn(8, 3), torch.randn(8, 2)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    loss = prior.loss(z, c, generator=gen())
    assert loss.shape == (8,) and torch.all(loss > 0)
    drop = torch.zeros(8, dtype=torch.bool)
    keep = torch.ones(8, dtype=torch.bool)
    torch.testing.assert_close(prior.loss(z, c, cond_keep=drop, generator=gen()), prior.loss(z, generator=gen()))
    torch.testing.assert_close(prior.loss(z, c, cond_keep=keep, generator=gen()),
                               prior.loss(z, c, cond_keep=keep | True, generator=gen()))
    assert not torch.allclose(prior.loss(z, c, cond_keep=keep, generator=gen()), prior.loss(z, generator=gen()))
    mixed = torch.arange(8) % 2 == 0
    got = prior.loss(z, c, cond_keep=mixed, generator=gen())
    want = torch.where(mixed, prior.loss(z, c, cond_keep=keep, generator=gen()), prior.loss(z, generator=gen()))
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="cond_keep"):
        prior.loss(z, c, cond_keep=torch.ones(8))
    with pytest.raises(ValueError, match="unconditional"):
        FlowPrior(3, hidden=32, depth=1).loss(z, c)


def test_prior_sample_guidance_uses_one_batched_eval_per_step():
    prior = FlowPrior(3, cond_dim=2, hidden=32, depth=1)
    sizes = []
    prior.net.register_forward_hook(lambda m, args, out: sizes.append(args[0].shape[0]))
    c = torch.randn(5, 2)
    x = prior.sample(5, c, guidance=1.0, nfe=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 3) and sizes == [5] * 4
    sizes.clear()
    prior.sample(5, c, guidance=3.0, nfe=4, solver="heun")
    assert sizes == [10] * 4
    # the zero-initialised network has v = 0, so samples are the (tempered) initial noise
    y = prior.sample(5, c, nfe=4, generator=torch.Generator().manual_seed(0), temperature=0.5)
    torch.testing.assert_close(y, 0.5 * torch.randn(5, 3, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(x, 2 * y)
    with pytest.raises(ValueError, match="cond must have shape"):
        prior.sample(4, c)


# ----------------------------------------------------------------------------- flow prior: learning a GMM

K, RADIUS, STD = 8, 2.0, 0.15
MEANS = torch.tensor([[RADIUS * math.cos(2 * math.pi * k / K), RADIUS * math.sin(2 * math.pi * k / K)]
                      for k in range(K)])


def _gmm(n, gen):
    idx = torch.randint(K, (n,), generator=gen)
    return MEANS[idx] + STD * torch.randn(n, 2, generator=gen), idx


def _mmd(x, y):
    """Biased squared MMD with a sum of RBF kernels (bandwidths 0.1, 0.3, 1)."""
    def k(a, b):
        d2 = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-d2 / (2 * s * s)) for s in (0.1, 0.3, 1.0))
    return (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()).item()


def _train(cond_dim, steps, seed):
    """Fit a small FlowPrior to the GMM (one-hot mode labels as condition when cond_dim > 0)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    prior = FlowPrior(2, cond_dim=cond_dim, hidden=64, depth=2)
    opt = torch.optim.Adam(prior.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / steps)
    for _ in range(steps):
        x, idx = _gmm(256, gen)
        loss = prior.loss(x, F.one_hot(idx, K).float() if cond_dim else None, generator=gen).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return prior.eval()


@pytest.fixture(scope="module")
def gmm_prior():
    return _train(cond_dim=0, steps=1500, seed=0)


@pytest.fixture(scope="module")
def cond_gmm_prior():
    return _train(cond_dim=K, steps=1000, seed=1)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_prior_reproduces_gaussian_mixture(gmm_prior, solver):
    gen = torch.Generator().manual_seed(123)
    n = 2000
    ref, _ = _gmm(n, gen)
    samples = gmm_prior.sample(n, nfe=32, solver=solver, generator=gen)
    mmd_model = _mmd(samples, ref)
    mmd_normal = _mmd(torch.randn(n, 2, generator=gen), ref)
    assert mmd_model < 0.02 and mmd_model < 0.15 * mmd_normal, (mmd_model, mmd_normal)
    dist = torch.cdist(samples, MEANS)  # (n, K)
    mass = torch.bincount(dist.argmin(1), minlength=K).float() / n
    assert torch.all((mass - 1 / K).abs() < 0.04), mass
    assert (dist.min(1).values < 3 * STD).float().mean() > 0.8


@pytest.mark.parametrize("guidance", [1.0, 2.0])
def test_conditional_prior_with_guidance_selects_the_mode(cond_gmm_prior, guidance):
    gen = torch.Generator().manual_seed(7)
    n = 200
    for k in range(K):
        cond = F.one_hot(torch.full((n,), k), K).float()
        samples = cond_gmm_prior.sample(n, cond, guidance=guidance, nfe=16, generator=gen)
        dist = torch.cdist(samples, MEANS)  # (n, K)
        assert (dist.argmin(1) == k).float().mean() > 0.95, (k, guidance)
        assert (dist[:, k] < 3 * STD).float().mean() > 0.85, (k, guidance)
    # the null condition still covers every mode
    uncond = torch.cdist(cond_gmm_prior.sample(2000, nfe=16, generator=gen), MEANS).argmin(1)
    assert torch.all(torch.bincount(uncond, minlength=K) > 2000 / K / 2)

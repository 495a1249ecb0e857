"""Tests of the modality codecs (muni.modalities): shapes, gradients, sampling, closed forms, overfitting."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from muni.errors import ConfigError
from muni.flow.paths import flow_matching_loss
from muni.modalities.base import PAD_ID, Modality
from muni.modalities import (BOS_ID, EOS_ID, CodecConfig, FlowDecoder, LabelDecoder, MeanDecoder,
                             PrivateDecoder, ResidualFlowDecoder, ResidualPrivateDecoder, TextDecoder, build_decoder, build_encoder)
from muni.modalities.image import posterior_draw
from muni.modalities.interface import SAMPLE_CLAMP, to_signed

TINY = CodecConfig(embed_dim=16, width=8, mlp_width=16, flow_width=8, text_width=16, flow_nfe=4)
LATENT = 12
B = 4

SPATIAL = [
    Modality("rgb32", "image", (3, 32, 32)),
    Modality("mnist", "image", (1, 28, 28)),
    Modality("rgb64", "image", (3, 64, 64)),
    Modality("mel", "audio", (1, 32, 64)),
]
LABEL = Modality("digit", "categorical", (), num_classes=10)
TEXT = Modality("caption", "text", (10,), num_classes=13)


def text_batch(lengths: list[int], length: int = 10, vocab: int = 13, seed: int = 0) -> torch.Tensor:
    """Sequences ``[BOS, w_1..w_k, EOS, PAD..]`` with ``k = lengths[i]`` words drawn from 3..vocab-1."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), length), PAD_ID, dtype=torch.long)
    x[:, 0] = BOS_ID
    for i, k in enumerate(lengths):
        x[i, 1:k + 1] = torch.randint(3, vocab, (k,), generator=g)
        x[i, k + 1] = EOS_ID
    return x


def make_batch(m: Modality, n: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    if m.kind == "image":
        return torch.rand(n, *m.shape, generator=g)
    if m.kind == "audio":
        return torch.rand(n, *m.shape, generator=g) * 2 - 1
    if m.kind == "categorical":
        return torch.randint(0, m.num_classes, (n,), generator=g)
    return text_batch([1, 3, 8, 5][:n] + [2] * max(0, n - 4), m.shape[0], m.num_classes)


def check_text_layout(x: torch.Tensor) -> None:
    """Every row is ``[BOS, words (no BOS/PAD/EOS), EOS, PAD..]``."""
    assert (x[:, 0] == BOS_ID).all()
    for row in x.tolist():
        end = row.index(EOS_ID)
        assert all(t not in (PAD_ID, BOS_ID, EOS_ID) for t in row[1:end])
        assert all(t == PAD_ID for t in row[end + 1:])


def randomise_flow_output(dec: nn.Module) -> None:
    """The flow output conv is zero-initialised; give it weights so gradients and samples move."""
    if isinstance(dec, (FlowDecoder, ResidualFlowDecoder)):
        nn.init.normal_(dec.net.out.weight, std=0.05)
    if isinstance(dec, ResidualPrivateDecoder):
        nn.init.normal_(dec.refiner.out.weight, std=0.05)
        if dec.prior is not None:
            nn.init.normal_(dec.prior[-1].weight, std=0.05)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    spin-waiting makes them many times slower; run this module single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


CASES = ([(m, kind) for m in SPATIAL for kind in ("flow", "gaussian", "private", "residual_flow",
                                                     "residual_private")]
         + [(LABEL, None), (TEXT, None)])


@pytest.mark.parametrize("modality,decoder", CASES, ids=lambda v: getattr(v, "name", v))
def test_shapes_dtypes_and_gradients(modality: Modality, decoder: str | None) -> None:
    cfg = dataclasses.replace(TINY, image_decoder=decoder or "flow", audio_decoder=decoder or "flow")
    enc, dec = build_encoder(modality, cfg), build_decoder(modality, cfg, LATENT)
    randomise_flow_output(dec)
    head = nn.Linear(cfg.embed_dim, LATENT)
    x = make_batch(modality)

    h = enc(x)
    assert h.shape == (B, cfg.embed_dim) and h.dtype == torch.float32
    loss = dec.loss(x, head(h))
    assert loss.shape == (B,) and torch.isfinite(loss).all()
    loss.sum().backward()
    for name, p in [*enc.named_parameters(), *dec.named_parameters()]:
        assert p.grad is not None, name
    assert all(p.grad.abs().sum() > 0 for p in enc.parameters() if p.dim() > 1)
    assert sum(p.grad.abs().sum() for p in dec.parameters()) > 0

    s = dec.sample(torch.randn(B, LATENT), generator=torch.Generator().manual_seed(0), nfe=2)
    assert s.shape == x.shape and s.dtype == x.dtype
    modality.check_batch(s, what="sample")
    if modality.kind == "image":
        assert 0.0 <= s.min() and s.max() <= 1.0
    elif modality.kind == "audio":
        assert -1.5 <= s.min() and s.max() <= 1.5
    elif modality.kind == "text":
        check_text_layout(s)


@pytest.mark.parametrize("modality,decoder", [(SPATIAL[1], "flow"), (LABEL, None), (TEXT, None)],
                         ids=lambda v: getattr(v, "name", v))
def test_sampling_is_reproducible(modality: Modality, decoder: str | None) -> None:
    torch.manual_seed(0)
    dec = build_decoder(modality, TINY, LATENT)
    randomise_flow_output(dec)
    z = torch.randn(64, LATENT)
    draw = lambda seed: dec.sample(z, generator=torch.Generator().manual_seed(seed), nfe=3)  # noqa: E731
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


@pytest.mark.parametrize("kind", ["private", "residual_flow", "residual_private"])
@pytest.mark.parametrize("modality", [SPATIAL[0], SPATIAL[3]], ids=lambda m: m.name)
def test_expressive_decoders_draw_differently_for_one_z_but_not_at_temperature_zero(kind, modality) -> None:
    torch.manual_seed(0)
    dec = build_decoder(modality, dataclasses.replace(TINY, image_decoder=kind, audio_decoder=kind), LATENT)
    randomise_flow_output(dec)
    z = torch.randn(1, LATENT).expand(8, -1)  # one latent, eight draws
    s = dec.sample(z, generator=torch.Generator().manual_seed(0), nfe=3)
    assert (s[1:] - s[:1]).abs().flatten(1).amax(1).min() > 1e-3, "draws for one z must differ"
    t0 = dec.sample(z, generator=torch.Generator().manual_seed(0), nfe=3, temperature=0.0)
    assert torch.allclose(t0, t0[:1].expand_as(t0), atol=1e-6)
    assert torch.equal(t0, dec.sample(z, generator=torch.Generator().manual_seed(5), nfe=3, temperature=0.0))


def test_private_decoder_cross_reconstruction_draws_w_from_the_prior() -> None:
    """``own=False``: w ~ N(0, I), so the private encoder gets no gradient and no KL is paid;
    ``own=True``: w ~ q(w | x) and the KL is paid."""
    torch.manual_seed(0)
    modality = SPATIAL[0]
    dec = build_decoder(modality, dataclasses.replace(TINY, image_decoder="private"), LATENT)
    assert isinstance(dec, PrivateDecoder)
    x, z = make_batch(modality), torch.randn(B, LATENT)
    dec.loss(x, z, own=torch.zeros(B, dtype=torch.bool)).sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in dec.encoder.parameters())
    assert any(p.grad is not None and p.grad.any() for p in dec.decoder.parameters())
    dec.zero_grad(set_to_none=True)
    dec.loss(x, z, own=torch.ones(B, dtype=torch.bool)).sum().backward()
    assert all(p.grad is not None and p.grad.any() for p in dec.encoder.parameters() if p.dim() > 1)
    # the KL is paid where own: with private_beta = 0 the own loss drops by exactly it
    torch.manual_seed(1)
    paid = dec.loss(x, z, own=torch.ones(B, dtype=torch.bool))
    dec.beta = 0.0
    torch.manual_seed(1)
    free = dec.loss(x, z, own=torch.ones(B, dtype=torch.bool))
    mu, logvar = dec.encoder(x).chunk(2, 1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    assert torch.allclose(paid - free, kl, atol=1e-4)


def test_residual_flow_loss_trains_the_flow_on_a_fraction_of_the_batch() -> None:
    """Rows past ``ceil(flow_fraction * B)`` carry the mean's NLL only; the chosen rows carry it
    plus their flow term scaled by ``B / k``; the flow term sends z no gradient."""
    torch.manual_seed(0)
    modality = SPATIAL[0]
    dec = build_decoder(modality, dataclasses.replace(TINY, image_decoder="residual_flow", flow_fraction=0.5), LATENT)
    assert isinstance(dec, ResidualFlowDecoder)
    randomise_flow_output(dec)
    x, z = make_batch(modality), torch.randn(B, LATENT, requires_grad=True)
    loss = dec.loss(x, z)
    nll = dec.mean_decoder.loss(x, z)
    assert torch.allclose(loss[B // 2:], nll[B // 2:]) and (loss[:B // 2] > nll[:B // 2]).all()
    g_all, = torch.autograd.grad(loss.sum(), z)
    g_nll, = torch.autograd.grad(nll.sum(), z)
    assert torch.allclose(g_all, g_nll, atol=1e-5)


@pytest.mark.parametrize("prior", ["standard", "conditional"])
@pytest.mark.parametrize("modality", [SPATIAL[0], SPATIAL[3]], ids=lambda m: m.name)
def test_residual_private_refiner_trains_apart_from_z_on_a_fraction_of_the_batch(modality, prior) -> None:
    """The refiner's ELBO enters the first ``ceil(fraction * B)`` rows, scaled by ``B / k``; z and
    the mean decoder get exactly the mean decoder's gradient; the refiner, its private encoder
    (and its conditional prior) get the rest."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, image_decoder="residual_private", audio_decoder="residual_private",
                              flow_fraction=0.5, private_prior=prior)
    dec = build_decoder(modality, cfg, LATENT)
    assert isinstance(dec, ResidualPrivateDecoder)
    randomise_flow_output(dec)
    x, z = make_batch(modality), torch.randn(B, LATENT, requires_grad=True)
    loss = dec.loss(x, z)
    nll = dec.mean_decoder.loss(x, z)
    assert torch.allclose(loss[B // 2:], nll[B // 2:]) and not torch.allclose(loss[:B // 2], nll[:B // 2])
    g_all, = torch.autograd.grad(loss.sum(), z, retain_graph=True)
    g_nll, = torch.autograd.grad(nll.sum(), z, retain_graph=True)
    assert torch.allclose(g_all, g_nll, atol=1e-4)
    (loss - nll).sum().backward()                          # the refiner's part alone
    assert all(p.grad is None or not p.grad.any() for p in dec.mean_decoder.parameters())
    prior_params = [] if dec.prior is None else list(dec.prior.parameters())
    assert all(p.grad is not None and p.grad.any()
               for p in [*dec.encoder.parameters(), *dec.refiner.parameters(), *prior_params] if p.dim() > 1)


def test_residual_private_start_trains_the_mean_alone_until_the_start_step() -> None:
    """``private_start``: before that step the loss is the mean decoder's and the refiner, its
    encoder and its prior get no gradient; from that step on (and outside training) they learn."""
    torch.manual_seed(0)
    modality = SPATIAL[3]
    cfg = dataclasses.replace(TINY, audio_decoder="residual_private", private_prior="conditional",
                              private_start=5)
    dec = build_decoder(modality, cfg, LATENT)
    randomise_flow_output(dec)
    x, z = make_batch(modality), torch.randn(B, LATENT)
    refiner = [*dec.encoder.parameters(), *dec.refiner.parameters(), *dec.prior.parameters()]
    for step, learns in ((None, True), (0, False), (4, False), (5, True), (9, True)):
        if step is not None:
            dec.begin_step(step)
        dec.zero_grad(set_to_none=True)
        loss = dec.loss(x, z)
        assert torch.allclose(loss, dec.mean_decoder.loss(x, z)) != learns, step
        loss.sum().backward()
        assert all(p.grad is not None for p in dec.mean_decoder.parameters())
        assert all((p.grad is not None) == learns for p in refiner), step


def test_residual_private_unit_grad_keeps_the_loss_and_scales_the_refiners_gradient_by_its_variance() -> None:
    """``private_grad="unit"``: the loss value is unchanged; the refiner's (and its encoder's)
    gradient is the raw one times the calibrated variance; z's gradient is the mean decoder's."""
    modality = SPATIAL[3]
    decs = {}
    for mode in ("raw", "unit"):
        torch.manual_seed(0)
        decs[mode] = build_decoder(modality, dataclasses.replace(TINY, audio_decoder="residual_private",
                                                                private_grad=mode), LATENT)
        randomise_flow_output(decs[mode])
    decs["unit"].load_state_dict(decs["raw"].state_dict())
    x, z = make_batch(modality), torch.randn(B, LATENT, requires_grad=True)
    losses, grads = {}, {}
    for mode, dec in decs.items():
        torch.manual_seed(1)
        losses[mode] = dec.loss(x, z)
        grads[mode] = torch.autograd.grad(losses[mode].sum(), [z, dec.refiner.out.weight, *dec.encoder.parameters()])
    assert torch.allclose(losses["unit"], losses["raw"])
    k = math.ceil(decs["raw"].fraction * B)
    torch.manual_seed(1)
    mean = decs["raw"].mean_decoder.mean_from_raw(decs["raw"].mean_decoder._raw(z[:k]))
    w, _ = posterior_draw(decs["raw"].encoder(torch.cat([x[:k], mean], 1)))
    var = decs["raw"]._variance(x[:k], decs["raw"]._refine(decs["raw"].mean_decoder._raw(z[:k]), z[:k], w))
    assert 1e-4 < float(var) < 1.0
    assert torch.allclose(grads["unit"][0], grads["raw"][0], atol=1e-5)
    for g_unit, g_raw in zip(grads["unit"][1:], grads["raw"][1:]):
        assert torch.allclose(g_unit, var * g_raw, rtol=1e-3, atol=1e-7)


def test_residual_private_conditional_prior_starts_at_the_standard_one_and_samples_from_p_w_given_z() -> None:
    """``private_prior="conditional"``: zero-initialised, p(w | z) is N(0, I) (same loss as the
    standard prior's); its KL is the Gaussian KL to p(w | z); sampling decodes
    ``w = m(z) + temperature * s(z) * eps``, and temperature 0 decodes at ``m(z)`` (= ``mean``)."""
    modality = SPATIAL[3]
    cfgs = {p: dataclasses.replace(TINY, audio_decoder="residual_private", private_prior=p)
            for p in ("standard", "conditional")}
    torch.manual_seed(0)
    std = build_decoder(modality, cfgs["standard"], LATENT)
    torch.manual_seed(0)
    cond = build_decoder(modality, cfgs["conditional"], LATENT)
    cond.load_state_dict(std.state_dict(), strict=False)  # the same mean, encoder and refiner
    randomise_flow_output(std)
    cond.refiner.out.weight.data.copy_(std.refiner.out.weight)
    x, z = make_batch(modality), torch.randn(B, LATENT)
    torch.manual_seed(1)
    l_std = std.loss(x, z)
    torch.manual_seed(1)
    assert torch.allclose(cond.loss(x, z), l_std, atol=1e-5)

    nn.init.normal_(cond.prior[-1].weight, std=0.5)
    m, logvar = cond.prior_moments(z)
    assert m.abs().amax() > 1e-2 and logvar.abs().amax() > 1e-2
    q_mu, q_logvar = torch.randn(B, cond.private_dim), torch.randn(B, cond.private_dim)
    expect = torch.distributions.kl_divergence(
        torch.distributions.Normal(q_mu, (0.5 * q_logvar).exp()), torch.distributions.Normal(m, (0.5 * logvar).exp())).sum(1)
    assert torch.allclose(posterior_draw(torch.cat([q_mu, q_logvar], 1), (m, logvar))[1], expect, atol=1e-4)

    eps = torch.randn((B, cond.private_dim), generator=torch.Generator().manual_seed(3))
    drawn = cond.sample(z, generator=torch.Generator().manual_seed(3), temperature=0.5)
    expect = cond._decode(z, m + 0.5 * (0.5 * logvar).exp() * eps).clamp(*SAMPLE_CLAMP["audio"])
    assert torch.allclose(drawn, expect, atol=1e-5)
    assert torch.allclose(cond.sample(z, temperature=0.0), cond.mean(z).clamp(*SAMPLE_CLAMP["audio"]), atol=1e-6)
    assert torch.allclose(cond.mean(z), cond._decode(z, m), atol=1e-6)


def test_residual_private_calibrated_likelihood_is_a_gaussian_at_the_batch_mse() -> None:
    """The calibrated NLL is the Gaussian NLL whose variance is the batch's mean squared error;
    "laplace" is the mean decoder's own fixed-scale NLL."""
    torch.manual_seed(0)
    modality = SPATIAL[1]
    dec = build_decoder(modality, dataclasses.replace(TINY, image_decoder="residual_private"), LATENT)
    x, raw = make_batch(modality), torch.randn(B, *modality.shape)
    mean = torch.sigmoid(raw)
    var = (x - mean).pow(2).mean()
    expected = -torch.distributions.Normal(mean, var.sqrt()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(dec._nll(x, raw), expected, rtol=1e-4)
    dec.likelihood = "laplace"
    assert torch.allclose(dec._nll(x, raw), dec.mean_decoder.loss_from_raw(x, raw))


def test_mean_decoder_is_deterministic() -> None:
    cfg = dataclasses.replace(TINY, image_decoder="gaussian")
    dec = build_decoder(SPATIAL[0], cfg, LATENT)
    z = torch.randn(B, LATENT)
    a = dec.sample(z, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, dec.sample(z, generator=torch.Generator().manual_seed(2)))
    assert torch.allclose(a, dec.mean(z).clamp(0, 1))


@pytest.mark.parametrize("likelihood", ["laplace", "gaussian"])
@pytest.mark.parametrize("modality", [SPATIAL[1], SPATIAL[3]], ids=lambda m: m.name)
def test_mean_decoder_nll_matches_torch_distributions(likelihood: str, modality: Modality) -> None:
    cfg = dataclasses.replace(TINY, image_decoder="gaussian", audio_decoder="gaussian",
                              likelihood=likelihood, likelihood_scale=0.3)
    dec = build_decoder(modality, cfg, LATENT)
    assert isinstance(dec, MeanDecoder)
    x, z = make_batch(modality), torch.randn(B, LATENT)
    mu = dec.mean(z)
    dist = (torch.distributions.Laplace(mu, 0.3) if likelihood == "laplace"
            else torch.distributions.Normal(mu, 0.3))
    expected = -dist.log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(dec.loss(x, z), expected, rtol=1e-5, atol=1e-3)


def test_bernoulli_image_likelihood_is_the_pixel_cross_entropy_and_refused_for_audio() -> None:
    image, audio = SPATIAL[1], SPATIAL[3]
    assert image.kind == "image" and audio.kind == "audio"
    cfg = dataclasses.replace(TINY, image_decoder="gaussian", audio_decoder="gaussian", image_likelihood="bernoulli")
    dec = build_decoder(image, cfg, LATENT)
    x, z = make_batch(image), torch.randn(B, LATENT)
    dist = torch.distributions.Bernoulli(probs=dec.mean(z), validate_args=False)  # x in [0, 1], not only {0, 1}
    torch.testing.assert_close(dec.loss(x, z), -dist.log_prob(x).flatten(1).sum(1), rtol=1e-5, atol=1e-3)
    assert dec.likelihood == "bernoulli"
    with pytest.raises(ConfigError, match="codec.likelihood='bernoulli'"):  # the shared one: audio too
        build_decoder(audio, dataclasses.replace(TINY, audio_decoder="gaussian", likelihood="bernoulli",
                                                 image_likelihood=None), LATENT)
    with pytest.raises(ConfigError, match="image_likelihood"):
        build_decoder(image, dataclasses.replace(cfg, image_likelihood="poisson"), LATENT)


def test_flow_loss_is_summed_over_dimensions() -> None:
    """With the zero-initialised output (v = 0) the loss is ``sum_d (x1 - x0)_d^2`` on [-1, 1] data."""
    m = SPATIAL[0]
    dec = build_decoder(m, TINY, LATENT)
    x, z = make_batch(m), torch.randn(B, LATENT)
    torch.manual_seed(3)
    loss = dec.loss(x, z)
    torch.manual_seed(3)
    x0 = torch.randn(x.shape)
    expected = (to_signed(x, "image") - x0).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(loss, expected)
    torch.manual_seed(3)
    mean_form = flow_matching_loss(dec.net, to_signed(x, "image"), reduce=False, z=z)
    torch.testing.assert_close(loss, mean_form * x[0].numel())


def two_targets(shape: tuple[int, int, int]) -> torch.Tensor:
    """Two clearly different images: a bright top-left block vs. a bright bottom-right block."""
    c, h, w = shape
    x = torch.full((2, c, h, w), 0.1)
    x[0, :, : h // 2, : w // 2] = 0.9
    x[1, :, h // 2:, w // 2:] = 0.9
    x[1, 0, 2:4, :] = 0.6
    return x


@pytest.mark.parametrize("decoder", ["flow", "gaussian"])
def test_decoder_overfits_two_targets(decoder: str) -> None:
    """Each of two fixed latents must decode to its own target, not the other one."""
    torch.manual_seed(0)
    m = Modality("img", "image", (1, 16, 16))
    cfg = dataclasses.replace(TINY, image_decoder=decoder, flow_width=16, width=16, flow_nfe=16)
    dec = build_decoder(m, cfg, LATENT)
    targets = two_targets(m.shape)  # (2, 1, 16, 16)
    codes = torch.randn(2, LATENT)
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    idx = torch.arange(64) % 2
    for _ in range(300 if decoder == "flow" else 150):
        loss = dec.loss(targets[idx], codes[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = dec.sample(codes[idx[:8]], generator=torch.Generator().manual_seed(0))  # (8, 1, 16, 16)
    own = (s - targets[idx[:8]]).pow(2).flatten(1).mean(1)
    other = (s - targets[1 - idx[:8]]).pow(2).flatten(1).mean(1)
    assert own.max() < 0.01, own
    assert (own * 10 < other).all(), (own, other)


def test_flow_decoder_samples_both_modes_of_a_bimodal_target() -> None:
    """Given one z with two equally likely targets, flow samples land on either target (both
    appear), not on their average as a mean decoder's would."""
    torch.manual_seed(0)
    m = Modality("img", "image", (1, 16, 16))
    dec = build_decoder(m, dataclasses.replace(TINY, flow_width=16, flow_nfe=16), LATENT)
    targets = two_targets(m.shape)  # (2, 1, 16, 16)
    z = torch.randn(1, LATENT).expand(64, -1)
    idx = torch.arange(64) % 2
    opt = torch.optim.Adam(dec.parameters(), lr=3e-3)
    for _ in range(300):
        loss = dec.loss(targets[idx], z).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s = dec.sample(z, generator=torch.Generator().manual_seed(0))  # (64, 1, 16, 16)
    dist = torch.stack([(s - t).pow(2).flatten(1).mean(1) for t in targets], dim=1)  # (64, 2)
    assert dist.min(1).values.max() < 0.02
    assert torch.bincount(dist.argmin(1), minlength=2).min() >= 16
    assert (s - targets.mean(0)).pow(2).flatten(1).mean(1).min() > 0.02


def test_text_decoder_overfits_and_greedy_sample_reproduces_layout() -> None:
    torch.manual_seed(0)
    dec = build_decoder(TEXT, TINY, LATENT)
    assert isinstance(dec, TextDecoder)
    x = text_batch([1, 4, 8, 2, 6], TEXT.shape[0], TEXT.num_classes, seed=5)
    z = torch.randn(len(x), LATENT)
    opt = torch.optim.Adam(dec.parameters(), lr=1e-2)
    for _ in range(250):
        loss = dec.loss(x, z).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(dec.sample(z, temperature=0.0), x)


def test_text_loss_and_encoder_ignore_padding() -> None:
    """The same content padded to L = 10 or L = 14 gives the same embedding and loss (EOS counted)."""
    torch.manual_seed(0)
    long = Modality("caption", "text", (14,), num_classes=13)
    enc_a, dec_a = build_encoder(TEXT, TINY), build_decoder(TEXT, TINY, LATENT)
    enc_b, dec_b = build_encoder(long, TINY), build_decoder(long, TINY, LATENT)
    enc_b.load_state_dict(enc_a.state_dict())
    dec_b.load_state_dict(dec_a.state_dict())
    xa = text_batch([1, 3, 8], 10)
    xb = torch.cat([xa, torch.zeros(3, 4, dtype=torch.long)], dim=1)
    z = torch.randn(3, LATENT)
    torch.testing.assert_close(enc_a(xa), enc_b(xb))
    torch.testing.assert_close(dec_a.loss(xa, z), dec_b.loss(xb, z))
    # a sequence that is only [BOS, EOS] costs exactly -log p(EOS | BOS, z)
    one = text_batch([0], 10)
    logits, _ = dec_a._step(one[:, :1], dec_a.z_input(z[:1]), torch.tanh(dec_a.z_init(z[:1]))[None])
    torch.testing.assert_close(dec_a.loss(one, z[:1]), -logits[:, 0].log_softmax(-1)[:, EOS_ID])


def test_text_sample_without_eos_is_truncated_with_eos() -> None:
    dec = build_decoder(TEXT, TINY, LATENT)
    with torch.no_grad():
        dec.head.bias[EOS_ID] = -1e4  # EOS never sampled before the last position
    s = dec.sample(torch.randn(8, LATENT), generator=torch.Generator().manual_seed(0))
    check_text_layout(s)
    assert (s[:, -1] == EOS_ID).all()


def test_categorical_temperature_zero_is_argmax_and_frequencies_follow_softmax() -> None:
    torch.manual_seed(0)
    dec = build_decoder(LABEL, TINY, LATENT)
    assert isinstance(dec, LabelDecoder)
    with torch.no_grad():
        dec.net[-1].bias.copy_(torch.linspace(-2, 2, 10))
    z = torch.randn(3, LATENT)
    assert torch.equal(dec.sample(z, temperature=0.0), dec.logits(z).argmax(-1))
    n = 20000
    zz = z[:1].expand(n, -1)
    for temperature in (1.0, 0.5):
        s = dec.sample(zz, temperature=temperature, generator=torch.Generator().manual_seed(1))
        freq = torch.bincount(s, minlength=10).float() / n
        expected = torch.softmax(dec.logits(z[:1])[0] / temperature, -1).detach()
        assert (freq - expected).abs().max() < 0.015, (freq, expected)
    assert torch.allclose(dec.loss(torch.tensor([3]), z[:1]), -dec.logits(z[:1]).log_softmax(-1)[:, 3])


def test_build_rejects_bad_shapes_and_names() -> None:
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_encoder(Modality("odd", "image", (3, 30, 30)), TINY)
    with pytest.raises(ConfigError, match="image_decoder"):
        build_decoder(SPATIAL[0], dataclasses.replace(TINY, image_decoder="diffusion"), LATENT)

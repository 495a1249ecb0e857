"""Conv codecs for spatial modalities: images (C, H, W) in [0, 1] and audio log-mel
spectrograms (1, n_mels, frames) in roughly [-1, 1], treated as one-channel images.

- `ConvEncoder`: three stride-2 convs (H -> H/2 -> H/4 -> H/8, rounded up), 4x4 adaptive
  pooling, a linear map.
- `MeanDecoder`: linear map to an H/4 grid, a conv, two stride-2 transposed convs; a
  fixed-scale Laplace or Gaussian likelihood around this deterministic mean, or for images a
  Bernoulli one (the "gaussian" decoder of the ablation; MVAE/MMVAE/MoPoE style).
- `FlowDecoder`: an expressive stochastic decoder, conditional flow matching
  (Lipman et al. 2023) with a small U-Net velocity ``v(x_t, t, z)`` on the linear path.
- `PrivateDecoder`: an expressive stochastic decoder, the mean decoder over ``(z, w)`` with a
  private latent ``w`` per modality and its own encoder and N(0, I) prior (MMVAE+).
- `ResidualFlowDecoder`: an expressive stochastic decoder, the mean decoder plus a flow of
  its residual conditioned on the mean.

Every network works on data mapped to [-1, 1] (`to_signed`); H and W must be divisible by 4
(28 -> 14 -> 7 works).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from muni.flow.paths import flow_matching_loss
from muni.flow.samplers import integrate
from muni.modalities.base import Modality
from muni.modalities.interface import SAMPLE_CLAMP, Decoder, Encoder, from_signed, to_signed
from muni.modalities.config import CodecConfig


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups (always a divisor of `channels`)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of flow times ``t`` in [0, 1] (DiT's, with t scaled by 1000).

    Parameters
    ----------
    t : Tensor
        (B,) times.
    dim : int
        Embedding size (even).

    Returns
    -------
    Tensor
        (B, dim) features ``[cos(1000 t f_k), sin(1000 t f_k)]``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1).to(t.dtype)


class ConvEncoder(Encoder):
    """Conv encoder: ``(B, C, H, W) -> (B, embed_dim)``; channels ``w, 2w, 4w`` (w = cfg.width).
    `stack` maps as many batches of the modality, stacked on the channels (``(B, stack C, H, W)``)."""

    def __init__(self, modality: Modality, cfg: CodecConfig, stack: int = 1) -> None:
        super().__init__(modality, cfg.embed_dim)
        c_in, w = stack * modality.shape[0], cfg.width
        self.net = nn.Sequential(
            nn.Conv2d(c_in, w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4),
        )
        self.proj = nn.Linear(4 * w * 16, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = to_signed(x, self.modality.kind)  # (B, C, H, W) in [-1, 1]
        h = self.net(h)  # (B, 4w, 4, 4)
        return self.proj(h.flatten(1))  # (B, embed_dim)


def fixed_scale_nll(x: torch.Tensor, mu: torch.Tensor, likelihood: str, scale: float) -> torch.Tensor:
    """Negative log-likelihood of `x` around the mean `mu`, summed over dimensions, (B,):
    a Laplace or Gaussian of fixed `scale`, or a Bernoulli (mean in [0, 1])."""
    s = scale
    if likelihood == "bernoulli":
        mu = mu.clamp(1e-6, 1 - 1e-6)
        per = -(x * mu.log() + (1 - x) * (-mu).log1p())
    elif likelihood == "laplace":
        per = (x - mu).abs() / s + math.log(2.0 * s)
    else:
        per = 0.5 * ((x - mu) / s).pow(2) + math.log(s) + 0.5 * math.log(2.0 * math.pi)
    return per.flatten(1).sum(1)


class MeanDecoder(Decoder):
    """Deterministic mean ``mu(z)`` with a fixed-scale Laplace or Gaussian likelihood.

    ``loss`` is the full NLL summed over dimensions, per dimension
    ``|x - mu| / b + log(2 b)`` (Laplace) or ``(x - mu)^2 / (2 s^2) + log s + log(2 pi) / 2``
    (Gaussian), with ``b = s = cfg.likelihood_scale`` in data units. The image mean passes
    through a sigmoid (so lies in [0, 1]); the audio mean is unbounded. Images may take their
    own likelihood (``cfg.image_likelihood``); "bernoulli" is the cross-entropy
    ``-x log mu - (1 - x) log(1 - mu)`` on [0, 1] pixels, computed from the logits.
    """

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        c_out, height, width = modality.shape
        w = cfg.width
        image = modality.kind == "image"
        self.likelihood = cfg.image_likelihood if image and cfg.image_likelihood else cfg.likelihood
        self.scale = cfg.likelihood_scale
        self.grid = (2 * w, height // 4, width // 4)
        self.fc = nn.Linear(latent_dim, 2 * w * (height // 4) * (width // 4))
        self.net = nn.Sequential(
            nn.SiLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w, c_out, 4, stride=2, padding=1),
        )

    def _raw(self, z: torch.Tensor) -> torch.Tensor:
        """The network output before the image sigmoid, (B, C, H, W)."""
        h = self.fc(z).view(z.shape[0], *self.grid)  # (B, 2w, H/4, W/4)
        return self.net(h)  # (B, C, H, W)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean ``mu(z)`` in model format, (B, C, H, W)."""
        return self.mean_from_raw(self._raw(z))

    def mean_from_raw(self, h: torch.Tensor) -> torch.Tensor:
        """The mean from the network output `_raw` (the image sigmoid, or unchanged)."""
        return torch.sigmoid(h) if self.modality.kind == "image" else h

    def nll(self, x: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of `x` under the fixed-scale likelihood around `mu`, (B,)."""
        return fixed_scale_nll(x, mu, self.likelihood, self.scale)

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        return self.loss_from_raw(x, self._raw(z))

    def loss_from_raw(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """`loss` from the network output `_raw`, (B,)."""
        if self.likelihood == "bernoulli":  # from the logits: exact and stable where mu saturates
            return F.binary_cross_entropy_with_logits(h, x, reduction="none").flatten(1).sum(1)
        return self.nll(x, self.mean_from_raw(h))

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        """The mean, clamped to the modality's sample range (deterministic)."""
        lo, hi = SAMPLE_CLAMP[self.modality.kind]
        return self.mean(z).clamp(lo, hi)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with FiLM ``(1 + scale, shift)`` from the embedding after
    the second norm (the adaptive norm of DDPM / ADM)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * c_out)
        self.norm2 = group_norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, c_out, h, w)
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, c_out, 1, 1) each
        h = self.norm2(h) * (1.0 + scale) + shift
        h = self.conv2(F.silu(h))  # (B, c_out, h, w)
        return self.skip(x) + h


class VelocityUNet(nn.Module):
    """A two-level conditional U-Net ``v(x_t, t, z)`` at H/2 and H/4.

    Pixels enter and leave through a 2x2 space-to-depth (``pixel_unshuffle`` / ``pixel_shuffle``,
    DiT's patch size 2), so no conv runs at full resolution; residual blocks run at H/2
    (``c`` channels) and H/4 (``2c``), with additive skips. The latent enters twice: added to
    the time embedding (FiLM in every block) and, through a linear map, as a feature map at
    H/4 so that spatial layout is available from the first step. ``cond_channels`` extra
    full-resolution maps (`ResidualFlowDecoder`'s mean) enter beside ``x_t`` at the stem. The
    output conv is zero-initialised, so training starts from ``v = 0``.
    """

    def __init__(self, shape: tuple[int, int, int], latent_dim: int, c: int, time_dim: int = 64,
                 cond_channels: int = 0) -> None:
        super().__init__()
        c_io, height, width = shape
        emb = 4 * c
        self.time_dim = time_dim
        self.grid = (2 * c, height // 4, width // 4)
        self.t_embed = nn.Sequential(nn.Linear(time_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.z_embed = nn.Sequential(nn.Linear(latent_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.z_map = nn.Linear(latent_dim, 2 * c * (height // 4) * (width // 4))
        self.stem = nn.Conv2d(4 * (c_io + cond_channels), c, 3, padding=1)
        self.enc = ResBlock(c, c, emb)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
        self.mid = ResBlock(2 * c, 2 * c, emb)
        self.up = nn.Conv2d(2 * c, c, 1)
        self.dec = ResBlock(c, c, emb)
        self.out_norm = group_norm(c)
        self.out = nn.Conv2d(c, 4 * c_io, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = F.silu(self.t_embed(timestep_embedding(t, self.time_dim)) + self.z_embed(z))  # (B, 4c)
        if cond is not None:
            x = torch.cat([x, cond], 1)  # (B, C + cond_channels, H, W)
        h1 = self.stem(F.pixel_unshuffle(x, 2))  # (B, c, H/2, W/2)
        h1 = self.enc(h1, emb)  # (B, c, H/2, W/2)
        h2 = self.down(h1) + self.z_map(z).view(z.shape[0], *self.grid)  # (B, 2c, H/4, W/4)
        h2 = self.mid(h2, emb)  # (B, 2c, H/4, W/4)
        u = F.interpolate(self.up(h2), scale_factor=2.0, mode="nearest") + h1  # (B, c, H/2, W/2)
        u = self.dec(u, emb)  # (B, c, H/2, W/2)
        v = self.out(F.silu(self.out_norm(u)))  # (B, 4C, H/2, W/2)
        return F.pixel_shuffle(v, 2)  # (B, C, H, W)


class FlowDecoder(Decoder):
    """Conditional flow-matching decoder ``p(x | z)`` on the linear path (t = 0 noise, t = 1 data).

    ``loss`` is the conditional flow-matching loss (Lipman et al. 2023, Eq. 14) of the velocity
    net on data mapped to [-1, 1], **summed** over the D dimensions (``D * mean``), so that its
    scale matches a summed NLL. It is a surrogate, not a bound, of the NLL, but summed this way
    its weight against other modalities' NLL sums is of the right order. ``sample`` integrates the
    ODE from ``temperature * N(0, I)`` with ``nfe`` velocity evaluations and clamps to the
    modality's range ([0, 1] images, [-1.5, 1.5] audio).
    """

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        self.net = VelocityUNet(modality.shape, latent_dim, cfg.flow_width)
        self.nfe = cfg.flow_nfe
        self.solver = cfg.flow_solver

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        x1 = to_signed(x, self.modality.kind)  # (B, C, H, W) in [-1, 1]
        per = flow_matching_loss(self.net, x1, reduce=False, z=z)  # (B,) mean over dims
        return per * x1[0].numel()  # (B,) sum over dims

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        x0 = temperature * torch.randn((z.shape[0], *self.modality.shape), generator=generator,
                                       device=z.device, dtype=z.dtype)  # (B, C, H, W)
        x1 = integrate(lambda x, t: self.net(x, t, z), x0, nfe or self.nfe, self.solver)
        lo, hi = SAMPLE_CLAMP[self.modality.kind]
        return from_signed(x1, self.modality.kind).clamp(lo, hi)


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor,
                logvar_p: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) of diagonal Gaussians, summed over
    the last dimension: (B, d) each -> (B,)."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp()
                  - 1.0).sum(-1)


def posterior_draw(stats: torch.Tensor, prior: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """A reparameterised draw from the diagonal Gaussian whose mean and log-variance are the two
    halves of `stats` (log-variance clamped to [-10, 10]), and its KL to the prior: N(0, I), or the
    diagonal Gaussian ``prior = (mean, log-variance)``: (B, d), (B,)."""
    mu, logvar = stats.chunk(2, dim=1)
    logvar = logvar.clamp(-10.0, 10.0)
    w = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    if prior is not None:
        return w, gaussian_kl(mu, logvar, *prior)
    return w, 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


class PrivateDecoder(Decoder):
    """A mean decoder over ``(z, w)`` with a per-modality private latent ``w`` (MMVAE+, Palumbo
    et al. 2023, inside MUNI's objective): private detail (the writer, stroke width, the
    background crop, the speaker) is carried by ``w`` and drawn from its prior at sampling.

    ``w`` has its own small conv encoder ``q(w | x)`` (half the shared encoder's width) and the
    prior N(0, I). ``loss(x, z, own)`` is, where `own` (a self-reconstruction): the negative ELBO
    ``NLL(x | z, w) + private_beta * KL(q(w | x) || N(0, I))`` with ``w ~ q(w | x)``; elsewhere
    (a cross-reconstruction, x not seen by the encoders of z): ``NLL(x | z, w)`` with
    ``w ~ N(0, I)``, as MMVAE+ does, so the content must come from ``z``. The private encoder
    is not the shared encoder: under route 2 (``z`` detached for self-reconstruction) this term
    sends the shared encoder of the modality no gradient. ``sample`` decodes the mean at
    ``w ~ temperature * N(0, I)`` (temperature 0: ``w = 0``, deterministic).
    """

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        self.private_dim = cfg.private_dim
        self.beta = cfg.private_beta
        self.encoder = ConvEncoder(modality, dataclasses.replace(cfg, embed_dim=2 * cfg.private_dim,
                                                                 width=max(4, cfg.width // 2)))
        self.decoder = MeanDecoder(modality, cfg, latent_dim + cfg.private_dim)

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        own = torch.ones(b, dtype=torch.bool, device=x.device) if own is None else own
        w_post, kl = posterior_draw(self.encoder(x))  # (B, dw), (B,)
        w = torch.where(own[:, None], w_post, torch.randn_like(w_post))  # (B, dw)
        return self.decoder.loss(x, torch.cat([z, w], 1)) + self.beta * kl * own

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """The mean at the prior's mode ``w = 0``, (B, C, H, W)."""
        return self.decoder.mean(torch.cat([z, z.new_zeros(z.shape[0], self.private_dim)], 1))

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        w = temperature * torch.randn((z.shape[0], self.private_dim), generator=generator,
                                      device=z.device, dtype=z.dtype)  # (B, dw)
        return self.decoder.sample(torch.cat([z, w], 1))


class ResidualFlowDecoder(Decoder):
    """A mean decoder plus a flow-matching decoder of its residual.

    The mean ``mu(z)`` is trained by its fixed-scale NLL exactly as `MeanDecoder` (this part alone
    shapes ``z``). A conditional flow (`VelocityUNet`, conditioned on ``z`` and on the mean as
    extra input channels, both detached) learns the residual ``r = x - mu`` in signed units; its
    loss, summed over dimensions as in `FlowDecoder`, trains the velocity net only, so it is
    estimated on a fraction ``cfg.flow_fraction`` of the batch (scaled up to stay unbiased:
    the per-sample loss of the chosen rows carries ``B / k`` times their flow term). The mean
    gives the layout from the first step, so the flow only has to learn what varies around it.
    ``sample`` is ``mu + r`` with ``r`` integrated from ``temperature * N(0, I)`` (``nfe`` steps);
    at temperature 0 it is one deterministic residual.
    """

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        c = modality.shape[0]
        self.mean_decoder = MeanDecoder(modality, cfg, latent_dim)
        self.net = VelocityUNet(modality.shape, latent_dim, cfg.flow_width, cond_channels=c)
        self.flow_fraction = cfg.flow_fraction
        self.nfe = cfg.flow_nfe
        self.solver = cfg.flow_solver

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        kind = self.modality.kind
        raw = self.mean_decoder._raw(z)  # (B, C, H, W), one pass for the NLL and the flow's condition
        nll = self.mean_decoder.loss_from_raw(x, raw)  # (B,)
        # The flow term trains the velocity net only, so an unbiased estimate from the first
        # k rows (a random subset: batches are drawn at random) costs a fraction of the batch.
        k = max(1, math.ceil(self.flow_fraction * x.shape[0]))
        mu = to_signed(self.mean_decoder.mean_from_raw(raw[:k].detach()), kind)  # (k, C, H, W)
        r = to_signed(x[:k], kind) - mu
        flow = flow_matching_loss(self.net, r, reduce=False, z=z[:k].detach(), cond=mu)  # (k,)
        flow = F.pad(flow * (r[0].numel() * x.shape[0] / k), (0, x.shape[0] - k))  # (B,)
        return nll + flow

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        kind = self.modality.kind
        mu = to_signed(self.mean_decoder.mean(z), kind)  # (B, C, H, W)
        r0 = temperature * torch.randn(mu.shape, generator=generator, device=z.device, dtype=z.dtype)
        r = integrate(lambda x, t: self.net(x, t, z, cond=mu), r0, nfe or self.nfe, self.solver)
        lo, hi = SAMPLE_CLAMP[kind]
        return from_signed(mu + r, kind).clamp(lo, hi)


class ResidualPrivateDecoder(Decoder):
    """A mean decoder plus a private-latent refiner: a conditional VAE over the detached mean.

    The mean ``mu(z)`` is trained by its fixed-scale NLL exactly as `MeanDecoder`; this part alone
    shapes ``z``, so the content (what every modality shares) is drawn as by the mean decoder. A
    refiner ``r(mu, z, w)`` (the `VelocityUNet` backbone at a fixed time, zero-initialised so it
    starts at ``mu``) adds private detail in logit space from a private latent ``w`` (dim
    ``private_dim``) with prior N(0, I) and posterior ``q(w | x, mu)`` (a small conv encoder of
    the target and the mean). Its loss is the negative ELBO of a conditional VAE,
    ``NLL(x | mu + r) + private_beta * KL(q(w | x, mu) || N(0, I))``, with ``mu`` and ``z``
    detached: only the refiner and its private encoder learn from it, so route 2 and the shared
    latent are exactly as under the mean decoder.

    The refiner's likelihood (``cfg.private_likelihood``) is by default a *calibrated* Gaussian,
    its variance the batch's mean squared error (σ-VAE, Rybkin et al. 2021). The mean decoder's
    fixed-scale Laplace (``"laplace"``) has a kink at zero residual: where the mean already
    matches most rows (a thin stroke that most draws lack), any use of ``w`` costs at first
    order before it pays, so ``w`` is left unused there (measured on a toy: no spread in 2000
    steps; calibrated: the spread in 400).

    Why the content stays in ``z``: ``w`` pays its KL for every nat it carries, and what the
    mean already shows (the digit and where it sits) is worth nothing to it, so ``w`` takes the
    variation ``mu`` lacks (a conditional VAE's rate-distortion argument). The refiner learns on
    every row, self- and cross-reconstructions alike, so it models ``p(x | z)`` for every latent
    the decoder is given: a cross-reconstruction's latent knows only what the other modalities
    share, which is what a generated latent knows. (Where that subset lacks some content, such as
    a quadrant given only the digit, ``w`` learns to draw it too: that is ``p(x | z)``.) It is
    estimated on a fraction ``cfg.flow_fraction`` of the rows, scaled up to stay unbiased.
    ``sample`` draws ``w ~ temperature * N(0, I)``; temperature 0 decodes at ``w = 0``,
    deterministically.

    ``cfg.private_prior = "conditional"`` replaces N(0, I) by a learned Gaussian ``p(w | z)``
    (an MLP of the detached ``z``, zero-initialised so that it starts at N(0, I); the KL is then
    to it, as in a hierarchical VAE's top-down prior). With N(0, I), whatever ``w`` learns that
    depends on the content is drawn at random when sampling: on Digits-ITA the refiner's ``w``
    took over the spoken digit, and audio drawn from N(0, I) was read as the condition's digit
    0.46 of the time against 0.80 at ``w = 0`` (docs/results/decoders.md). Under the conditional
    prior what ``z`` predicts costs ``w`` nothing and is drawn consistently with ``z``. Sampling
    draws ``w = m(z) + temperature * s(z) * eps``; temperature 0 decodes at the prior's mean.

    ``cfg.private_start``: the refiner (its private encoder and prior) learns only from that
    training step on (the method passes the step on through `begin_step`; outside training it
    always does). Before it the loss is the mean decoder's alone, at the mean decoder's cost, and
    as the refiner starts at zero the decoder is the mean decoder. Its ELBO is only worth
    estimating once the mean draws the content; on Digits-ITA MUNI's latent leaves its plateau
    after 1400-1700 steps, and a refiner trained from step 0 costs those steps 30% of the
    throughput.
    """

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        self.private_dim = cfg.private_dim
        self.beta = cfg.private_beta
        self.fraction = cfg.flow_fraction
        self.likelihood = cfg.private_likelihood
        self.unit_grad = cfg.private_grad == "unit"
        self.start = cfg.private_start
        self.steps_done: int | None = None  # set through `begin_step` in training
        self.mean_decoder = MeanDecoder(modality, cfg, latent_dim)
        self.encoder = ConvEncoder(modality, dataclasses.replace(cfg, embed_dim=2 * cfg.private_dim,
                                                                 width=max(4, cfg.width // 2)), stack=2)
        self.refiner = VelocityUNet(modality.shape, latent_dim + cfg.private_dim, cfg.flow_width)
        self.prior = None  # N(0, I); or p(w | z) = N(m(z), s(z)^2) from an MLP, starting at N(0, I)
        if cfg.private_prior == "conditional":
            self.prior = nn.Sequential(nn.Linear(latent_dim, cfg.mlp_width), nn.SiLU(),
                                       nn.Linear(cfg.mlp_width, 2 * cfg.private_dim))
            nn.init.zeros_(self.prior[-1].weight)
            nn.init.zeros_(self.prior[-1].bias)

    def begin_step(self, step: int) -> None:
        self.steps_done = step

    def refining(self) -> bool:
        """Whether the refiner learns in this step (always outside training)."""
        return self.steps_done is None or self.steps_done >= self.start

    def prior_moments(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``p(w | z)``, (B, dw) each (zeros for N(0, I))."""
        if self.prior is None:
            zero = z.new_zeros(z.shape[0], self.private_dim)
            return zero, zero
        mu, logvar = self.prior(z).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)

    def _refine(self, raw: torch.Tensor, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Refined network output (before the image sigmoid) from the mean's `raw`, (B, C, H, W)."""
        mu = to_signed(self.mean_decoder.mean_from_raw(raw), self.modality.kind)
        t = raw.new_zeros(raw.shape[0])
        return raw + self.refiner(mu, t, torch.cat([z, w], 1))

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]
        raw = self.mean_decoder._raw(z)  # (B, C, H, W)
        nll = self.mean_decoder.loss_from_raw(x, raw)  # (B,) shapes z, as the mean decoder
        if not self.refining():
            return nll
        k = max(1, math.ceil(self.fraction * b))  # batches are drawn at random: the first k rows
        # are a random subset
        xs, raw_s = x[:k], raw[:k].detach()
        mean_s = self.mean_decoder.mean_from_raw(raw_s)
        zs = z[:k].detach()
        prior = None if self.prior is None else self.prior_moments(zs)
        w, kl = posterior_draw(self.encoder(torch.cat([xs, mean_s], 1)), prior)  # (k, dw), (k,)
        refined = self._refine(raw_s, zs, w)
        var = self._variance(xs, refined) if self.likelihood == "calibrated" else None
        elbo = self._nll(xs, refined, var) + self.beta * kl
        if self.unit_grad and var is not None:  # the value stays the ELBO; its gradient is var times it
            elbo = var * elbo + (1.0 - var) * elbo.detach()
        return nll + F.pad(elbo * (b / k), (0, b - k))

    def _variance(self, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        """The calibrated likelihood's variance: the batch's mean squared error, detached, ()."""
        return (x - self.mean_decoder.mean_from_raw(raw)).pow(2).mean().detach().clamp_min(1e-4)

    def _nll(self, x: torch.Tensor, raw: torch.Tensor, var: torch.Tensor | None = None) -> torch.Tensor:
        """The refiner's negative log-likelihood of `x` given its output `raw`, (B,); `var`: the
        calibrated variance if already computed."""
        if self.likelihood == "laplace":  # the mean decoder's fixed-scale likelihood
            return self.mean_decoder.loss_from_raw(x, raw)
        # calibrated: a Gaussian whose variance is the batch's mean squared error (the optimum,
        # detached; Rybkin et al. 2021), so the scale follows the fit instead of being tuned
        se = (x - self.mean_decoder.mean_from_raw(raw)).pow(2).flatten(1)  # (B, D)
        var = self._variance(x, raw) if var is None else var
        return 0.5 * (se / var + var.log() + math.log(2.0 * math.pi)).sum(1)

    def _decode(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The refined output for ``(z, w)`` in model format, (B, C, H, W)."""
        return self.mean_decoder.mean_from_raw(self._refine(self.mean_decoder._raw(z), z, w))

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        """The refined output at the prior's mode (``w = 0`` under N(0, I)), (B, C, H, W)."""
        return self._decode(z, self.prior_moments(z)[0])

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        mu, logvar = self.prior_moments(z)  # (B, dw) each
        eps = torch.randn((z.shape[0], self.private_dim), generator=generator, device=z.device, dtype=z.dtype)
        w = mu + temperature * (0.5 * logvar).exp() * eps  # (B, dw)
        lo, hi = SAMPLE_CLAMP[self.modality.kind]
        return self._decode(z, w).clamp(lo, hi)

"""MMGen: one multi-modal flow transformer over shared spatial patch latents (the seed baseline).

MMGen [1] is one diffusion process over several aligned modalities. Our reconstruction, at a CPU
budget, keeps each of its parts:

Stage 1, autoencoders (then frozen, as MMGen's pretrained VAE is):
- **Images**: one KL autoencoder with a *spatial* latent (``latent_channels x H/4 x W/4``,
  4 x 8 x 8 for 32 x 32 images) is shared by every image modality of one shape and trained on
  all of them (`SpatialAutoencoder`; LDM's KL-f4 [2] in small). Its likelihood is the codec's
  image likelihood (``codec.image_likelihood``, else ``codec.likelihood``), so Digits-ITA's
  strokes take the Bernoulli, as for every other method.
- **Labels** need no autoencoder: a label's latent is its one-hot vector, so the input
  projection of its token is a class embedding, and a generated label is the argmax.
- **Text and audio** enter as extra tokens: each has JointFlow's vector autoencoder (the codec's
  encoder, a linear head to ``latent_dim`` means and log-variances, the codec's decoder), one
  token each.

Stage 2, the flow (`DecoupledTransformer`): the latents, normalised per modality (the LDM scale
factor [2]), become tokens.
- **Grouped patch tokens**: each image latent is cut into ``patch x patch`` patches; the
  patches at one location of every image modality of a group are concatenated and fused by an
  MLP into one token, plus a learned position embedding.
- **Per-modality timesteps** (modality decoupling): modality m sits at its own time ``t_m``.
  A token's adaLN-Zero conditioning [3] is an MLP of the concatenated sinusoidal embeddings of
  its members' times (one member for a text, audio or label token), plus the task embedding.
- **Task embeddings**: the sum over modalities of a learned embedding of each one's role
  (generated, given, absent), as in JointFlow.
- **Own output heads**: every modality has its own zero-initialised linear head; an image
  modality's head reads each location token and writes that modality's patch.
- **Velocity or clean-latent heads**: the heads predict the velocity (``prediction="v"``, the
  default, as SiT) or the clean latent (``"x"``, JiT [5]: the velocity is then ``(x - z_t) /
  (1 - t)``, 1 - t clipped at 0.05, and the loss stays the velocity MSE). A grouped token
  carries 3 x 64 = 192 latent numbers through a 128-wide network, and we thought a velocity
  head, which must also reproduce the noise, might fail there; at 20 minutes on PolyMNIST-QL
  both draw no digit (Single-L→I digit 0.097 with "v", 0.107 with "x"; `docs/results/mmgen.md`).

Training draws ``t_m ~ U[0, 1)`` per sample and modality and holds a modality clean (``t_m =
1``, GIVEN) with probability `p_given` or at noise (``t_m = 0``, ABSENT) with probability
`p_absent` (`TwoStageFlow.sample_times`); the loss is flow matching on the linear path of every
modality that is not given, averaged over modalities. Any-to-any generation runs the targets
from noise on one schedule while the given modalities are held at ``t = 1`` and the rest at
``t = 0`` (`decoupled_euler`); unconditional sampling runs every target on one schedule.

The stage split follows JointFlow's: stage 1 lasts ``ae_steps`` steps, or ``ae_fraction`` of a
wall-clock budget.

References
----------
[1] MMGen: "Unified Multi-modal Image Generation and Understanding in One Go", 2025.
[2] Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.
[3] Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT), ICCV 2023.
[4] Bao et al., "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale"
    (UniDiffuser), ICML 2023.
[5] Li & He, "Back to Basics: Let Denoising Generative Models Denoise" (JiT), 2025.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from muni.errors import ConfigError
from muni.flow.velocity import timestep_embedding
from muni.methods.aggregation import kl_normal
from muni.methods.jointflow import (ABSENT, GENERATE, GIVEN, AdaLNBlock, JointFlowConfig, JointFlowSampling,
                                   TwoStageFlow)
from muni.modalities import build_decoder, build_encoder
from muni.modalities.base import Modality
from muni.modalities.image import fixed_scale_nll
from muni.modalities.interface import to_signed
from muni.training import distributed


Prediction = Literal["x", "v"]
T_EPS = 0.05  # x-prediction: 1 - t is clipped here when turned into a velocity (JiT's t_eps)


@dataclass
class MMGenConfig(JointFlowConfig):
    """JointFlow's fields (``latent_dim`` and ``codec`` now serve text and audio; ``temperature``
    their decoders) and MMGen's own."""

    depth: int = 4                           # transformer blocks
    latent_channels: int = 4                 # channels of the spatial image latent
    ae_width: int = 16                       # base channels of the spatial autoencoder
    ae_downsample: int = 2                   # latent grid = image / ae_downsample (2 or 4); 4 loses
    # the digit at our budgets (benchmarks/mmgen_autoencoder.py: 0.18-0.27 digit accuracy on
    # reconstructions after 150 s, against 0.79-0.80 at 2)
    patch: int = 4                           # patch side on the latent grid (must divide it): 16 tokens
    # for PolyMNIST-QL's 16 x 16 grids
    prediction: Prediction = "v"             # what the heads predict: the velocity ("v"), or the clean
    # latent ("x", JiT [5]) turned into a velocity; see `to_velocity`

    PREFIX: ClassVar[str] = "mmgen"

    def check(self) -> None:
        """Raise `ConfigError` naming the first out-of-range field."""
        super().check()
        rules = [*[(n, getattr(self, n) >= 1, ">= 1") for n in ("latent_channels", "ae_width", "patch")],
                 ("prediction", self.prediction in ("x", "v"), "'x' or 'v'")]
        for name, ok, want in rules:
            if not ok:
                raise ConfigError(f"mmgen {name} must be {want}, got {getattr(self, name)!r}")


# ---------------------------------------------------------------------------- stage 1
class SpatialAutoencoder(nn.Module):
    """KL autoencoder ``(B, C, H, W) <-> (B, channels, H/f, W/f)`` for images in [0, 1], f = `downsample`.

    Encoder: a conv, one or two stride-2 convs, a conv to means and log-variances. Decoder: a
    conv, as many stride-2 transposed convs, a conv to logits; the mean image is their sigmoid.
    """

    def __init__(self, shape: tuple[int, int, int], channels: int, width: int,
                 likelihood: str, scale: float, downsample: int = 4) -> None:
        super().__init__()
        c, h, w = shape
        if downsample not in (2, 4):
            raise ConfigError(f"mmgen ae_downsample must be 2 or 4, got {downsample}")
        if h % downsample or w % downsample:
            raise ConfigError(f"mmgen: image height and width must be divisible by ae_downsample={downsample}, "
                              f"got {h}x{w}")
        self.shape, self.likelihood, self.scale = tuple(shape), likelihood, scale
        self.latent_shape = (channels, h // downsample, w // downsample)
        k, levels = width, downsample.bit_length() - 1                      # stride-2 stages: 1 or 2
        enc: list[nn.Module] = [nn.Conv2d(c, k, 3, padding=1), nn.SiLU()]
        dec: list[nn.Module] = [nn.Conv2d(channels, 2 * k, 3, padding=1), nn.SiLU()]
        for i in range(levels):
            enc += [nn.Conv2d(k if i == 0 else 2 * k, 2 * k, 4, stride=2, padding=1), nn.SiLU()]
            dec += [nn.ConvTranspose2d(2 * k, 2 * k if i < levels - 1 else k, 4, stride=2, padding=1), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.Conv2d(2 * k, 2 * channels, 3, padding=1))
        self.decoder = nn.Sequential(*dec, nn.Conv2d(k, c, 3, padding=1))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and log-variances, (B, channels, H/4, W/4) each."""
        mu, logvar = self.encoder(to_signed(x, "image")).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)                                                 # (B, C, H, W)

    def mean(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(z))

    def nll(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of `x` given latents `z`, summed over pixels, (B,)."""
        h = self.logits(z)
        if self.likelihood == "bernoulli":
            return F.binary_cross_entropy_with_logits(h, x, reduction="none").flatten(1).sum(1)
        return fixed_scale_nll(x, torch.sigmoid(h), self.likelihood, self.scale)


# ---------------------------------------------------------------------------- tokens
@dataclass(frozen=True)
class TokenGroup:
    """Modalities that share tokens: image modalities of one latent shape (one token per
    location, their patches fused), or one text, audio or label modality (one token)."""

    members: tuple[str, ...]
    latent_shape: tuple[int, ...]            # each member's latent: (C, Gh, Gw) or (d,)
    patch: int = 1                           # patch side (grid groups)

    @property
    def spatial(self) -> bool:
        return len(self.latent_shape) == 3

    @property
    def length(self) -> int:
        """Tokens in the group."""
        if not self.spatial:
            return 1
        _, gh, gw = self.latent_shape
        return (gh // self.patch) * (gw // self.patch)

    @property
    def dim(self) -> int:
        """Features one member puts into one token."""
        return self.latent_shape[0] * self.patch ** 2 if self.spatial else self.latent_shape[0]


def patchify(z: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W) -> (B, (H/p)(W/p), C p p)``, row-major over locations."""
    b, c, h, w = z.shape
    z = z.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)      # (B, H/p, W/p, C, p, p)
    return z.reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, shape: tuple[int, int, int], p: int) -> torch.Tensor:
    """Inverse of `patchify`: ``(B, L, C p p) -> (B, C, H, W)`` for ``shape = (C, H, W)``."""
    c, h, w = shape
    b = tokens.shape[0]
    z = tokens.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, H/p, p, W/p, p)
    return z.reshape(b, c, h, w)


def group_tokens(group: TokenGroup, latents: dict[str, torch.Tensor]) -> torch.Tensor:
    """The group's members' latents as ``(B, length, len(members) * dim)`` token features."""
    parts = [patchify(latents[n], group.patch) if group.spatial else latents[n][:, None]
             for n in group.members]
    return torch.cat(parts, dim=-1)


def ungroup_tokens(group: TokenGroup, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of `group_tokens`: member name -> latent."""
    out = {}
    for n, part in zip(group.members, features.split(group.dim, dim=-1)):
        out[n] = unpatchify(part, group.latent_shape, group.patch) if group.spatial else part[:, 0]
    return out


class DecoupledTransformer(nn.Module):
    """``v_theta(z_t, t, role)`` over grouped tokens, one time per modality (MMGen's network).

    Parameters
    ----------
    groups : list of TokenGroup
        The token groups; their members, in order, are the modalities.
    width, depth, heads : int
        Transformer width, blocks and attention heads.
    mlp_ratio : float
        MLP hidden size / width.
    freq_dim : int
        Width of the sinusoidal time embedding.
    """

    def __init__(self, groups: list[TokenGroup], width: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, freq_dim: int = 256):
        super().__init__()
        self.groups = list(groups)
        self.names = [n for g in self.groups for n in g.members]
        self.freq_dim = freq_dim
        m = len(self.names)
        self.fuse = nn.ModuleList(nn.Sequential(nn.Linear(len(g.members) * g.dim, width), nn.SiLU(),
                                                nn.Linear(width, width)) for g in self.groups)
        self.pos_embed = nn.ParameterList(nn.Parameter(0.02 * torch.randn(g.length, width)) for g in self.groups)
        self.time_embed = nn.ModuleList(nn.Sequential(nn.Linear(len(g.members) * freq_dim, width), nn.SiLU(),
                                                      nn.Linear(width, width)) for g in self.groups)
        self.role_embed = nn.Parameter(0.02 * torch.randn(m, 3, width))
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        nn.init.zeros_(self.modulation_out[-1].weight)
        nn.init.zeros_(self.modulation_out[-1].bias)
        self.heads = nn.ModuleDict()
        for g in self.groups:
            for n in g.members:
                self.heads[n] = nn.Linear(width, g.dim)
                nn.init.zeros_(self.heads[n].weight)
                nn.init.zeros_(self.heads[n].bias)

    def forward(self, z_t: dict[str, torch.Tensor], t: torch.Tensor, role: torch.Tensor) -> dict[str, torch.Tensor]:
        """Velocities (name -> latent shape) from latents `z_t`, times t (B, M) and roles (B, M)
        long, both in `names` order."""
        b = t.shape[0]
        m = len(self.names)
        temb = timestep_embedding(t.reshape(-1), self.freq_dim).to(t.dtype).view(b, m, -1)  # (B, M, F)
        task = self.role_embed[torch.arange(m, device=role.device), role].sum(1)          # (B, W)
        x, c, at = [], [], 0
        for g, fuse, pos, time_embed in zip(self.groups, self.fuse, self.pos_embed, self.time_embed):
            k = len(g.members)
            x.append(fuse(group_tokens(g, z_t)) + pos)                                      # (B, L_g, W)
            cg = time_embed(temb[:, at:at + k].reshape(b, -1)) + task                        # (B, W)
            c.append(cg[:, None].expand(-1, g.length, -1))
            at += k
        x, c = torch.cat(x, 1), torch.cat(c, 1)                                              # (B, L, W) each
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.modulation_out(c).chunk(2, dim=-1)
        x = self.norm_out(x) * (1 + scale) + shift                                           # (B, L, W)
        out, start = {}, 0
        for g in self.groups:
            h = x[:, start:start + g.length]
            start += g.length
            out.update(ungroup_tokens(g, torch.cat([self.heads[n](h) for n in g.members], dim=-1)))
        return out


# ---------------------------------------------------------------------------- flow
DictVelocityFn = Callable[[dict[str, torch.Tensor], torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def _per_sample(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(-1, *([1] * (like.dim() - 1)))


@torch.no_grad()
def decoupled_euler(velocity_fn: DictVelocityFn, z: dict[str, torch.Tensor], role: torch.Tensor,
                    names: list[str], nfe: int) -> dict[str, torch.Tensor]:
    """Integrate the GENERATE modalities from t = 0 to 1 with Euler; hold the others.

    `z` maps each of `names` to its start (clean latents for GIVEN modalities, noise for the
    rest); `role` is (B, M) in `names` order. GENERATE modalities share the time running 0 -> 1;
    GIVEN ones stay at t = 1 and ABSENT ones at t = 0, both returned exactly as given.
    """
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    ref = z[names[0]]
    moving = role == GENERATE                                                     # (B, M)
    held_t = (role == GIVEN).to(ref.dtype)
    ts = torch.linspace(0.0, 1.0, nfe + 1, device=ref.device, dtype=ref.dtype)
    z = dict(z)
    for i in range(nfe):
        t = torch.where(moving, ts[i], held_t)                                    # (B, M)
        v = velocity_fn(z, t, role)
        for j, n in enumerate(names):
            z[n] = torch.where(_per_sample(moving[:, j], z[n]), z[n] + (ts[i + 1] - ts[i]) * v[n], z[n])
    return z


def to_velocity(out: dict[str, torch.Tensor], z_t: dict[str, torch.Tensor], t: torch.Tensor,
                names: list[str], prediction: Prediction) -> dict[str, torch.Tensor]:
    """The network's outputs as velocities: unchanged for ``"v"``; for ``"x"`` (a clean-latent
    prediction) ``(x - z_t) / max(1 - t, T_EPS)`` per modality, with t (B, M) in `names` order."""
    if prediction == "v":
        return out
    return {n: (out[n] - z_t[n]) / _per_sample((1.0 - t[:, j]).clamp_min(T_EPS), z_t[n])
            for j, n in enumerate(names)}


def decoupled_flow_loss(velocity: DictVelocityFn, z1: dict[str, torch.Tensor], t: torch.Tensor,
                        role: torch.Tensor, names: list[str], prediction: Prediction = "v",
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow matching with one time per modality on the linear path (t = 0 noise, t = 1 data).

    `velocity` is the network; its outputs are velocities, or clean latents for
    ``prediction="x"`` (`to_velocity`). Returns the loss (mean over the (sample, modality) pairs
    not held clean of the per-modality mean squared velocity error) and that error, (B, M), with
    held-clean entries zeroed.
    """
    x0 = {n: torch.randn_like(z1[n]) for n in names}
    zt = {n: _per_sample(t[:, j], z1[n]) * z1[n] + (1.0 - _per_sample(t[:, j], z1[n])) * x0[n]
          for j, n in enumerate(names)}
    v = to_velocity(velocity(zt, t, role), zt, t, names, prediction)
    per = torch.stack([(v[n] - (z1[n] - x0[n])).pow(2).flatten(1).mean(1) for n in names], 1)  # (B, M)
    trained = (role != GIVEN).to(per.dtype)
    return (per * trained).sum() / trained.sum(), per * trained


# ---------------------------------------------------------------------------- the model
class MMGen(TwoStageFlow):
    """Shared spatial autoencoders + label one-hots + text/audio vector autoencoders (stage 1) and
    one multi-modal flow transformer with per-modality times and task embeddings (stage 2).

    Args:
        modalities: the dataset's modality declarations, in a fixed order.
        cfg: the method's config.
    """

    method = "mmgen"
    Sampling = JointFlowSampling             # nfe, temperature
    handles_missing = False  # the joint flow needs every modality's latent (as JointFlow)
    AUTOENCODERS = ("image_ae", "encoders", "to_latent", "decoders")

    def __init__(self, modalities: dict[str, Modality], cfg: MMGenConfig):
        super().__init__()
        cfg.check()
        self.modalities = dict(modalities)
        self.names = list(modalities)
        self.cfg = cfg
        c = cfg.codec
        self.image_ae = nn.ModuleDict()           # one per image shape, key "CxHxW"
        self.ae_key: dict[str, str] = {}
        vector = [n for n, m in modalities.items() if m.kind in ("text", "audio")]
        self.encoders = nn.ModuleDict({n: build_encoder(modalities[n], c) for n in vector})
        self.to_latent = nn.ModuleDict({n: nn.Linear(c.embed_dim, 2 * cfg.latent_dim) for n in vector})
        self.decoders = nn.ModuleDict({n: build_decoder(modalities[n], c, cfg.latent_dim) for n in vector})
        grids: dict[str, list[str]] = {}
        for n, m in modalities.items():
            if m.kind == "image":
                key = "x".join(map(str, m.shape))
                if key not in self.image_ae:
                    self.image_ae[key] = SpatialAutoencoder(m.shape, cfg.latent_channels, cfg.ae_width,
                                                            c.image_likelihood or c.likelihood, c.likelihood_scale,
                                                            cfg.ae_downsample)
                self.ae_key[n] = key
                grids.setdefault(key, []).append(n)
        groups = []
        for key, members in grids.items():
            shape = self.image_ae[key].latent_shape
            if shape[1] % cfg.patch or shape[2] % cfg.patch:
                raise ConfigError(f"mmgen patch={cfg.patch} must divide the {shape[1]}x{shape[2]} latent grid "
                                  f"of the {key} images (set model.patch, e.g. 1)")
            groups.append(TokenGroup(tuple(members), shape, cfg.patch))
        for n, m in modalities.items():
            if m.kind != "image":
                groups.append(TokenGroup((n,), (m.num_classes if m.kind == "categorical" else cfg.latent_dim,)))
        self.groups = groups
        self.velocity = DecoupledTransformer(groups, cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.order = self.velocity.names                        # modality order of t and role
        self._init_stages()
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("latent_shift", torch.zeros(len(self.order)))   # per-modality mean
        self.register_buffer("latent_scale", torch.ones(len(self.order)))    # per-modality std

    # ------------------------------------------------------------------ autoencoders
    def posterior(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-1 posterior moments of modality `name` (labels: the one-hot, log-variance -inf)."""
        m = self.modalities[name]
        if m.kind == "image":
            return self.image_ae[self.ae_key[name]].posterior(x)
        if m.kind == "categorical":
            onehot = F.one_hot(x.long(), m.num_classes).float()
            return onehot, torch.full_like(onehot, -math.inf)
        mu, logvar = self.to_latent[name](self.encoders[name](x)).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, name: str, z: torch.Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """A sample of modality `name` from a normalised latent: the autoencoder's mean image,
        the argmax class, or a draw of the text / audio decoder."""
        i = self.order.index(name)
        raw = z * self.latent_scale[i] + self.latent_shift[i]
        m = self.modalities[name]
        if m.kind == "image":
            return self.image_ae[self.ae_key[name]].mean(raw).clamp(0.0, 1.0)
        if m.kind == "categorical":
            return raw.argmax(-1)
        return self.decoders[name].sample(raw, generator=generator, temperature=temperature)

    @torch.no_grad()
    def _measure_latents(self, batch: dict[str, torch.Tensor]) -> None:
        """Per-modality mean and standard deviation of the posterior means on this batch, pooled
        over DDP ranks (LDM's scale factor)."""
        for i, n in enumerate(self.order):
            mu = self.posterior(n, batch[n])[0].double().flatten()
            s = distributed.all_reduce_sum(torch.stack([mu.new_tensor(mu.numel()), mu.sum(), mu.pow(2).sum()]))
            mean = s[1] / s[0]
            self.latent_shift[i] = mean.float()
            self.latent_scale[i] = (s[2] / s[0] - mean ** 2).clamp_min(0).sqrt().clamp_min(1e-4).float()
        self.stats_ready.fill_(True)

    def _autoencoder_terms(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage-1 reconstruction NLL and KL of one modality, batch means."""
        mu, logvar = self.posterior(name, x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        if self.modalities[name].kind == "image":
            recon = self.image_ae[self.ae_key[name]].nll(x, z)
        else:
            recon = self.decoders[name].loss(x, z)
        return recon.mean(), kl_normal(mu.flatten(1), logvar.flatten(1)).mean()

    # ------------------------------------------------------------------ objective
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage 1: autoencoder losses; stage 2: decoupled flow matching on frozen latents.

        Returns ``{"loss", "stage", "recon/<m>", "kl/<m>", "flow/<m>"}`` in both stages (the
        terms of the other stage, and a label's recon and kl, are 0).
        """
        cfg = self.cfg
        ref = batch[self.names[0]]
        zero = torch.zeros((), device=ref.device)
        terms: dict[str, torch.Tensor] = {"stage": torch.tensor(float(self.stage), device=ref.device)}
        terms.update({f"{k}/{n}": zero for k in ("recon", "kl", "flow") for n in self.names})
        if self.stage == 1:
            total = zero
            for n in self.names:
                if self.modalities[n].kind == "categorical":
                    continue
                recon, kl = self._autoencoder_terms(n, batch[n])
                total = total + recon + cfg.beta_ae * kl
                terms[f"recon/{n}"], terms[f"kl/{n}"] = recon.detach(), kl.detach()
        else:
            with torch.no_grad():                                                     # frozen AEs
                if not bool(self.stats_ready):
                    self._measure_latents(batch)
                z1 = self.encode_latents({n: batch[n] for n in self.order})
            t, role = self.sample_times(ref.shape[0], device=ref.device)
            total, per = decoupled_flow_loss(self.velocity, z1, t, role, self.order, cfg.prediction)
            trained = (role != GIVEN).to(per.dtype)
            for i, n in enumerate(self.order):
                terms[f"flow/{n}"] = (per[:, i].sum() / trained[:, i].sum().clamp_min(1.0)).detach()
        terms["loss"] = total
        return terms

    # ------------------------------------------------------------------ generation
    def latent_shape(self, name: str) -> tuple[int, ...]:
        return next(g.latent_shape for g in self.groups if name in g.members)

    @torch.no_grad()
    def sample_latents(self, given: dict[str, torch.Tensor], targets: list[str], b: int,
                       generator: torch.Generator | None = None, nfe: int | None = None) -> dict[str, torch.Tensor]:
        """Normalised latents: given modalities encoded and held at t = 1, targets integrated
        jointly from noise, the rest held at noise (t = 0, marginalised out)."""
        device = self.latent_scale.device
        role = torch.full((b, len(self.order)), ABSENT, dtype=torch.long, device=device)
        z = {n: torch.randn(b, *self.latent_shape(n), generator=generator, device=device) for n in self.order}
        lat = self.encode_latents({k: v.to(device) for k, v in given.items()})
        for i, n in enumerate(self.order):
            if n in lat:
                z[n], role[:, i] = lat[n], GIVEN
            elif n in targets:
                role[:, i] = GENERATE
        return decoupled_euler(self.velocity_fn, z, role, self.order, nfe or self.cfg.nfe)

    def velocity_fn(self, z_t: dict[str, torch.Tensor], t: torch.Tensor, role: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network as a velocity field (`to_velocity` of its outputs)."""
        return to_velocity(self.velocity(z_t, t, role), z_t, t, self.order, self.cfg.prediction)

    def latent_of(self, z: dict[str, torch.Tensor], name: str) -> torch.Tensor:
        """Modality `name`'s latent in the sampler's output (a dict by name)."""
        return z[name]

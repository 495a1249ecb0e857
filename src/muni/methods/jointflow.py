"""JointFlow: the decoupled two-stage baseline of MMGen / UniDiffuser.

Stage 1 trains one KL-regularised autoencoder per modality (latent diffusion style [3]):
``q(z_m | x_m) = N(mu_m, diag sigma_m^2)`` from the shared codec encoder and a linear head,
decoder ``p_m(x_m | z_m)`` from `muni.modalities.build_decoder`, objective
``-log p_m(x_m | z_m) + beta_ae KL(q || N(0, I))`` per modality.

Stage 2 freezes the autoencoders and trains one transformer velocity field over the per-modality
latents ``z = (z_1, ..., z_M)`` (one token per modality) with one time ``t_m ~ U[0, 1]`` per
sample and per modality, drawn independently (UniDiffuser [1], Eq. 6; MMGen's modality
decoupling [2]). On the linear path of `muni.flow.paths` (t = 0 noise, t = 1 data),

    z_m,t = t_m z_m + (1 - t_m) eps_m,     L = E || v_theta(z_t, t)_m - (z_m - eps_m) ||^2

over the tokens that are not held clean. One network then covers every task: a token held at
``t_m = 1`` is a condition, a token held at ``t_m = 0`` is marginalised out, tokens integrated
together from 0 to 1 are generated jointly. Training forces ``t_m = 1`` (role GIVEN) with
probability `p_given` and ``t_m = 0`` (role ABSENT) with probability `p_absent` to emphasise the
conditional and marginal tasks; a learnable task embedding (sum over modalities of a role
embedding) tells the network which task it is solving.

The stages are declared (`JointFlow.stages`) and the training loop moves the model from one to
the next: stage 1 lasts `JointFlowConfig.ae_steps` steps (presets: half the training steps), or,
under a wall-clock budget (``muni train --minutes``, `muni bench`), `ae_fraction` of the budget,
so that a budget-limited run gives both stages their share. The flag ``switched`` is saved with
the weights, so a resumed run continues in the right stage. In stage 2 the
autoencoders run under ``torch.no_grad`` (posterior means), so they receive no gradient and
AdamW leaves them untouched (parameters whose grad is None are skipped). At the first stage-2
call the latents' per-modality mean and scale are measured on that batch (averaged over DDP
ranks) and stored in buffers; the flow works on ``(mu_m - shift_m) / scale_m``.

References
----------
[1] Bao et al., "One Transformer Fits All Distributions in Multi-Modal Diffusion at Scale"
    (UniDiffuser), ICML 2023.
[2] MMGen: "Unified Multi-modal Image Generation and Understanding in One Go", 2025
    (modality-decoupled multimodal diffusion).
[3] Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022
    (KL-regularised autoencoder, latent scale factor).
[4] Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT), ICCV 2023 (adaLN-Zero).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from muni.errors import ConfigError
from muni.flow.velocity import timestep_embedding
from muni.methods.aggregation import kl_normal
from muni.methods.base import Method, Stage, check_generate_args
from muni.modalities.base import Modality
from muni.modalities import CodecConfig, build_decoder, build_encoder
from muni.training import distributed

# Role of a token in a task; a held token keeps its time (GIVEN: 1, clean; ABSENT: 0, noise).
GENERATE, GIVEN, ABSENT = 0, 1, 2


def _gaussian_codec() -> CodecConfig:
    return CodecConfig(image_decoder="gaussian", audio_decoder="gaussian")


@dataclass
class JointFlowConfig:
    latent_dim: int = 16                     # latent size of EACH modality's autoencoder
    codec: CodecConfig = field(default_factory=_gaussian_codec)  # encoder/decoder backbones
    ae_steps: int = 1500                     # training steps of stage 1 (presets: half the run's steps)
    ae_fraction: float = 0.5                 # under a time budget, stage 1 ends at this fraction instead
    beta_ae: float = 1e-3                    # KL weight of the stage-1 autoencoders
    width: int = 128                         # transformer width
    depth: int = 3                           # transformer blocks
    heads: int = 4                           # attention heads
    mlp_ratio: float = 4.0                   # MLP hidden size / width
    p_given: float = 0.15                    # training: prob. a modality is held clean (t_m = 1)
    p_absent: float = 0.15                   # training: prob. a modality is held at noise (t_m = 0)
    nfe: int = 32                            # Euler steps of the joint sampler
    temperature: float = 1.0                 # decoder sampling temperature

    PREFIX: ClassVar[str] = "jointflow"      # the method named in error messages

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise `ConfigError` naming the first out-of-range field."""
        rules = [("latent_dim", self.latent_dim >= 1, ">= 1"), ("ae_steps", self.ae_steps >= 0, ">= 0"),
                 ("ae_fraction", 0 <= self.ae_fraction <= 1, "in [0, 1]"),
                 ("beta_ae", self.beta_ae >= 0, ">= 0"), ("depth", self.depth >= 1, ">= 1"),
                 ("width", self.width >= 1 and self.heads >= 1 and self.width % self.heads == 0,
                  "a positive multiple of heads"),
                 ("p_given", 0 <= self.p_given < 1, "in [0, 1)"),
                 ("p_absent", 0 <= self.p_absent and self.p_given + self.p_absent < 1,
                  "in [0, 1 - p_given)"),
                 ("nfe", self.nfe >= 1, ">= 1"), ("mlp_ratio", self.mlp_ratio > 0, "> 0"),
                 ("temperature", self.temperature >= 0, ">= 0")]
        for name, ok, want in rules:
            if not ok:
                raise ConfigError(f"{self.PREFIX} {name} must be {want}, got {getattr(self, name)!r}")


@dataclass
class JointFlowSampling:
    """JointFlow's sampler options (`generate` keywords); None: the config's."""

    nfe: int | None = None                   # Euler steps of the joint sampler
    temperature: float | None = None         # decoder temperature


# ---------------------------------------------------------------------------- velocity network
class AdaLNBlock(nn.Module):
    """Transformer block with per-token adaLN-Zero conditioning (Sec. 3.2 [4])."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        inner = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, inner), nn.GELU(approximate="tanh"), nn.Linear(inner, width))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, m, w = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.modulation(c).chunk(6, dim=-1)      # 6 x (B, M, W)
        h = self.norm1(x) * (1 + sc1) + sh1                                   # (B, M, W)
        q, k, v = self.qkv(h).view(b, m, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, M, W/h)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, m, w)  # (B, M, W)
        x = x + g1 * self.proj(a)
        return x + g2 * self.mlp(self.norm2(x) * (1 + sc2) + sh2)            # (B, M, W)


class JointVelocity(nn.Module):
    """``v_theta(z_t, t, role)``: one token per modality, each with its own time.

    Token m: ``W_in,m z_m + e_m`` (own input projection, learnable modality embedding);
    its conditioning ``c_m = MLP(emb(t_m)) + task`` where ``task = sum_m' r[m', role_m']`` is the
    learnable task embedding; adaLN-Zero blocks; own zero-initialised output projection, so
    ``v = 0`` at initialisation.

    Parameters
    ----------
    num_tokens, latent_dim : int
        Modalities M and per-modality latent size d.
    width, depth, heads : int
        Transformer width, blocks and attention heads.
    mlp_ratio : float
        MLP hidden size / width.
    freq_dim : int
        Width of the sinusoidal time embedding.
    """

    def __init__(self, num_tokens: int, latent_dim: int, width: int = 128, depth: int = 3, heads: int = 4,
                 mlp_ratio: float = 4.0, freq_dim: int = 256):
        super().__init__()
        m, d = num_tokens, latent_dim
        self.freq_dim = freq_dim
        self.w_in = nn.Parameter(torch.randn(m, d, width) / math.sqrt(d))
        self.b_in = nn.Parameter(torch.zeros(m, width))
        self.token_embed = nn.Parameter(0.02 * torch.randn(m, width))
        self.role_embed = nn.Parameter(0.02 * torch.randn(m, 3, width))
        self.time_embed = nn.Sequential(nn.Linear(freq_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(AdaLNBlock(width, heads, mlp_ratio) for _ in range(depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.w_out = nn.Parameter(torch.zeros(m, width, d))
        self.b_out = nn.Parameter(torch.zeros(m, d))
        nn.init.zeros_(self.modulation_out[-1].weight)
        nn.init.zeros_(self.modulation_out[-1].bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, role: torch.Tensor) -> torch.Tensor:
        """Velocities (B, M, d) from tokens z_t (B, M, d), times t (B, M), roles (B, M) long."""
        b, m, _ = z_t.shape
        x = torch.einsum("bmd,mdw->bmw", z_t, self.w_in) + self.b_in + self.token_embed  # (B, M, W)
        temb = timestep_embedding(t.reshape(-1), self.freq_dim).to(z_t.dtype)           # (B*M, F)
        task = self.role_embed[torch.arange(m, device=role.device), role].sum(1)         # (B, W)
        c = self.time_embed(temb).view(b, m, -1) + task[:, None]                          # (B, M, W)
        for block in self.blocks:
            x = block(x, c)                                                                # (B, M, W)
        shift, scale = self.modulation_out(c).chunk(2, dim=-1)                            # 2 x (B, M, W)
        x = self.norm_out(x) * (1 + scale) + shift
        return torch.einsum("bmw,mwd->bmd", x, self.w_out) + self.b_out                   # (B, M, d)


# ---------------------------------------------------------------------------- sampler
JointVelocityFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def joint_euler(velocity_fn: JointVelocityFn, z: torch.Tensor, role: torch.Tensor, nfe: int) -> torch.Tensor:
    """Integrate the GENERATE tokens from t = 0 to 1 with Euler; hold the others.

    Parameters
    ----------
    velocity_fn : callable
        ``(z_t (B, M, d), t (B, M), role (B, M)) -> v (B, M, d)``.
    z : Tensor, shape (B, M, d)
        Start: clean latents for GIVEN tokens, noise for GENERATE and ABSENT tokens.
    role : Tensor, shape (B, M), long
        GENERATE tokens share the time ``t`` running 0 -> 1; GIVEN tokens stay at ``t = 1`` and
        ABSENT tokens at ``t = 0``, both returned exactly as given.
    nfe : int
        Euler steps (velocity evaluations).

    Returns
    -------
    Tensor, shape (B, M, d)
    """
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    moving = role == GENERATE                                    # (B, M)
    held_t = (role == GIVEN).to(z.dtype)                         # (B, M) 1 given, 0 absent
    ts = torch.linspace(0.0, 1.0, nfe + 1, device=z.device, dtype=z.dtype)
    for i in range(nfe):
        t = torch.where(moving, ts[i], held_t)                   # (B, M)
        v = velocity_fn(z, t, role)                              # (B, M, d)
        z = torch.where(moving[..., None], z + (ts[i + 1] - ts[i]) * v, z)
    return z


# ---------------------------------------------------------------------------- training times
def sample_times(b: int, m: int, p_given: float, p_absent: float, device=None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoupled training times and roles of `b` samples over `m` modalities, (B, M) each.

    ``t_m ~ U[0, 1)`` independently per sample and modality; then each modality is GIVEN
    (``t_m = 1``) with prob. `p_given`, ABSENT (``t_m = 0``) with prob. `p_absent`, else
    GENERATE. A sample with every modality GIVEN has one, chosen uniformly, set to GENERATE.
    """
    t = torch.rand(b, m, device=device, generator=generator)
    u = torch.rand(b, m, device=device, generator=generator)
    role = torch.full((b, m), GENERATE, dtype=torch.long, device=device)
    role[u < p_given] = GIVEN
    role[(u >= p_given) & (u < p_given + p_absent)] = ABSENT
    pick = torch.randint(0, m, (b,), device=device, generator=generator)
    all_given = (role == GIVEN).all(1)
    role[all_given, pick[all_given]] = GENERATE
    t = torch.where(role == GIVEN, 1.0, torch.where(role == ABSENT, 0.0, t))
    return t, role


# ---------------------------------------------------------------------------- the model
class TwoStageFlow(Method):
    """What JointFlow and MMGen share: two training stages (autoencoders, then a flow over their
    frozen latents) kept in the ``switched`` buffer, and the decoupled training times.

    A subclass sets `AUTOENCODERS`, the top-level module names frozen in stage 2, and has a
    config with ``ae_steps``, ``ae_fraction``, ``p_given`` and ``p_absent``, ``names`` (the
    modalities) and ``order`` (the modalities in the order of the flow's times and buffers).
    """

    AUTOENCODERS: ClassVar[tuple[str, ...]] = ()

    def _init_stages(self) -> None:
        self.register_buffer("switched", torch.zeros((), dtype=torch.bool))     # stage 1 is over

    def stages(self) -> tuple[Stage, ...]:
        return (Stage("autoencoders", self.cfg.ae_steps, self.cfg.ae_fraction), Stage("flow"))

    def current_stage(self) -> int:
        return int(bool(self.switched))

    def enter_stage(self, index: int) -> None:
        if index not in (0, 1):
            raise ValueError(f"{type(self).__name__} has two training stages, not {index + 1}")
        self.switched.fill_(index == 1)

    @property
    def stage(self) -> int:
        """1 while training the autoencoders, 2 while training the flow."""
        return self.current_stage() + 1

    def frozen_parameter_names(self) -> list[str]:
        """Parameters frozen now (the autoencoders in stage 2): the EMA copies them exactly."""
        if self.stage == 1:
            return []
        return [n for n, _ in self.named_parameters() if n.split(".")[0] in self.AUTOENCODERS]

    def autoencoder_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in stage 1 (frozen in stage 2)."""
        return [p for n in self.AUTOENCODERS for p in getattr(self, n).parameters()]

    def encode_latents(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Normalised posterior means ``(mu_m - shift_m) / scale_m`` of the modalities in `batch`
        (``posterior`` and the buffers ``latent_shift``, ``latent_scale`` in `order` are the
        subclass's)."""
        out = {}
        for n, x in batch.items():
            i = self.order.index(n)
            out[n] = (self.posterior(n, x)[0] - self.latent_shift[i]) / self.latent_scale[i]
        return out

    @torch.no_grad()
    def generate(self, given: dict[str, torch.Tensor], targets: list[str], n: int | None = None,
                 generator: torch.Generator | None = None, *, nfe: int | None = None,
                 temperature: float | None = None) -> dict[str, torch.Tensor]:
        """Any-to-any generation (see `muni.methods.base`): the targets share one ODE given the
        clean given latents (the subclass's ``sample_latents``); each is decoded by its own
        decoder (``decode`` of ``latent_of``)."""
        b = check_generate_args(self.modalities, given, targets, n)
        z = self.sample_latents(given, list(targets), b, generator=generator, nfe=nfe)
        temp = self.cfg.temperature if temperature is None else temperature
        return {t: self.decode(t, self.latent_of(z, t), generator=generator, temperature=temp) for t in targets}

    def sample_times(self, b: int, device=None, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training times and roles, (B, M) each (`sample_times`)."""
        return sample_times(b, len(self.names), self.cfg.p_given, self.cfg.p_absent, device, generator)


class JointFlow(TwoStageFlow):
    """Per-modality autoencoders (stage 1) + one multi-time latent flow transformer (stage 2).

    Args:
        modalities: the dataset's modality declarations, in a fixed order.
        cfg: the method's config.
    """

    method = "jointflow"
    Sampling = JointFlowSampling
    # The joint flow models the concatenated latents of whole tuples; a tuple that lacks a
    # modality has no latent there to noise or to condition on, so training refuses such data.
    handles_missing = False
    AUTOENCODERS = ("encoders", "to_latent", "decoders")

    def __init__(self, modalities: dict[str, Modality], cfg: JointFlowConfig):
        super().__init__()
        cfg.check()
        self.modalities = dict(modalities)
        self.names = list(modalities)
        self.order = self.names
        self.cfg = cfg
        c, d, m = cfg.codec, cfg.latent_dim, len(self.names)
        self.encoders = nn.ModuleDict({n: build_encoder(mod, c) for n, mod in modalities.items()})
        self.to_latent = nn.ModuleDict({n: nn.Linear(c.embed_dim, 2 * d) for n in self.names})
        self.decoders = nn.ModuleDict({n: build_decoder(mod, c, d) for n, mod in modalities.items()})
        self.velocity = JointVelocity(m, d, cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self._init_stages()
        self.register_buffer("stats_ready", torch.zeros((), dtype=torch.bool))  # shift/scale measured
        self.register_buffer("latent_shift", torch.zeros(m, d))                 # per-modality mean
        self.register_buffer("latent_scale", torch.ones(m))                     # per-modality std

    # ------------------------------------------------------------------ autoencoders
    def posterior(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q(z_m | x_m)`` moments: mu, logvar (B, d)."""
        mu, logvar = self.to_latent[name](self.encoders[name](x)).chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, name: str, z: torch.Tensor, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """Sample ``x_m ~ p_m(x_m | z_m)`` from a normalised latent (B, d)."""
        i = self.names.index(name)
        return self.decoders[name].sample(z * self.latent_scale[i] + self.latent_shift[i],
                                          generator=generator, temperature=temperature)

    @torch.no_grad()
    def _measure_latents(self, batch: dict[str, torch.Tensor]) -> None:
        """Set shift (per-dimension mean) and scale (std about it) of each modality's posterior
        means from this batch, pooled over DDP ranks (the LDM scale factor, Sec. 4.3.2 [3])."""
        d = self.cfg.latent_dim
        for i, n in enumerate(self.names):
            mu = self.posterior(n, batch[n])[0].double()                        # (B, d)
            s = torch.cat([mu.new_tensor([mu.shape[0]]), mu.sum(0), mu.pow(2).sum(0)])
            s = distributed.all_reduce_sum(s)
            count, mean = s[0], s[1:1 + d] / s[0]
            var = (s[1 + d:] / count - mean.pow(2)).clamp_min(0).mean()
            self.latent_shift[i] = mean.float()
            self.latent_scale[i] = var.sqrt().clamp_min(1e-4).float()
        self.stats_ready.fill_(True)

    # ------------------------------------------------------------------ objective
    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage 1: autoencoder losses; stage 2: multi-time flow matching on frozen latents.

        Returns ``{"loss", "stage", "recon/<m>", "kl/<m>", "flow/<m>"}`` in both stages (the
        terms of the other stage are 0) so the training log keeps fixed columns.
        """
        cfg = self.cfg
        stage = self.stage
        ref = batch[self.names[0]]
        b, zero = ref.shape[0], torch.zeros((), device=ref.device)
        terms: dict[str, torch.Tensor] = {"stage": torch.tensor(float(stage), device=ref.device)}
        terms.update({f"{k}/{n}": zero for k in ("recon", "kl", "flow") for n in self.names})
        if stage == 1:
            total = zero
            for n in self.names:
                mu, logvar = self.posterior(n, batch[n])                              # (B, d) each
                z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)                  # (B, d)
                recon = self.decoders[n].loss(batch[n], z).mean()
                kl = kl_normal(mu, logvar).mean()
                total = total + recon + cfg.beta_ae * kl
                terms[f"recon/{n}"], terms[f"kl/{n}"] = recon.detach(), kl.detach()
        else:
            with torch.no_grad():                                                     # frozen AEs
                if not bool(self.stats_ready):
                    self._measure_latents(batch)
                lat = self.encode_latents({n: batch[n] for n in self.names})
                z1 = torch.stack([lat[n] for n in self.names], 1)                     # (B, M, d)
            t, role = self.sample_times(b, device=z1.device)                          # (B, M) each
            x0 = torch.randn_like(z1)
            zt = t[..., None] * z1 + (1.0 - t[..., None]) * x0                        # (B, M, d)
            per = (self.velocity(zt, t, role) - (z1 - x0)).pow(2).mean(-1)            # (B, M)
            trained = (role != GIVEN).to(per.dtype)                                   # (B, M)
            total = (per * trained).sum() / trained.sum()
            for i, n in enumerate(self.names):
                terms[f"flow/{n}"] = ((per[:, i] * trained[:, i]).sum()
                                      / trained[:, i].sum().clamp_min(1.0)).detach()
        terms["loss"] = total
        return terms

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def sample_latents(self, given: dict[str, torch.Tensor], targets: list[str], b: int,
                       generator: torch.Generator | None = None, nfe: int | None = None) -> torch.Tensor:
        """Normalised latents (B, M, d): given modalities encoded and held at t = 1, targets
        integrated jointly from noise, the rest held at noise (t = 0, marginalised out)."""
        device = self.latent_scale.device
        role = torch.full((b, len(self.names)), ABSENT, dtype=torch.long, device=device)
        z = torch.randn(b, len(self.names), self.cfg.latent_dim, generator=generator, device=device)
        for i, n in enumerate(self.names):
            if n in targets:
                role[:, i] = GENERATE
        lat = self.encode_latents({k: v.to(device) for k, v in given.items()})
        for i, n in enumerate(self.names):
            if n in lat:
                z[:, i], role[:, i] = lat[n], GIVEN
        return joint_euler(self.velocity, z, role, nfe or self.cfg.nfe)

    def latent_of(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """Modality `name`'s latent (B, d) in the sampler's output (B, M, d)."""
        return z[:, self.names.index(name)]

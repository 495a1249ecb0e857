"""What the four posterior-based multimodal VAE baselines (MVAE, MMVAE, MoPoE, HELVAE) share.

`MultimodalVAE` holds, per modality ``m``, the codec encoder ``e_m`` (`muni.modalities.build_encoder`),
a linear Gaussian head ``h_m -> (mu_m, logvar_m)`` (the unimodal expert ``q_m(z | x_m)``) and
the decoder ``p_m(x_m | z)`` (`muni.modalities.build_decoder`), plus the per-modality likelihood
weights. It implements `generate` once: conditional generation samples ``z`` from the method's
posterior of the given subset (`posterior_sample`, the one hook each method defines) and
decodes every target from that one ``z``; unconditional generation decodes ``z ~ N(0, I)``.
Each method's objective lives in its own file and reads top to bottom in its ``loss``.

Likelihood weights (``rescale``):
- ``"numel"`` (default): the rule of the MMVAE and MoPoE code for modalities of different
  sizes, ``w_m = max_k n_k / n_m`` with ``n_m`` the size of one sample (pixels; one-hot
  size ``num_classes`` for a label, ``L * vocab`` for text), so every modality's NLL sum
  weighs like the largest one's (MoPoE ``set_rec_weights``; MMVAE ``llik_scaling``). With
  equal-size modalities (PolyMNIST) every weight is 1, as in both papers' PolyMNIST runs.
- ``"kind"``: ``w_m = kind_weights[kind]`` (as MUNI weighs its terms), for like-for-like runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from muni.config import check_ranges
from muni.errors import ConfigError
from muni.methods.base import Method, check_generate_args, check_kind_weights
from muni.modalities.base import Modality
from muni.modalities import CodecConfig, build_decoder, build_encoder

Rescale = Literal["numel", "kind"]
LOGVAR_BOUND = 8.0  # expert log-variances are squashed into (-8, 8)


def vae_codec() -> CodecConfig:
    """Codec defaults of the VAE baselines: mean decoders with the fixed-scale Laplace
    likelihood (scale 0.75) of the MMVAE / MoPoE PolyMNIST code."""
    return CodecConfig(image_decoder="gaussian", audio_decoder="gaussian", likelihood="laplace",
                       likelihood_scale=0.75)


def default_kind_weights() -> dict[str, float]:
    return {"image": 1.0, "audio": 1.0, "categorical": 100.0, "text": 20.0}


def sample_size(m: Modality) -> int:
    """Size ``n_m`` of one sample for the ``numel`` rescaling (one-hot size for discrete kinds)."""
    n = math.prod(m.shape) if m.shape else 1
    return n * int(m.num_classes) if m.is_discrete else n


def likelihood_weights(modalities: dict[str, Modality], rescale: str,
                       kind_weights: dict[str, float]) -> dict[str, float]:
    """Per-modality weights ``w_m`` of the reconstruction terms (see the module docstring)."""
    if rescale == "numel":
        sizes = {n: sample_size(m) for n, m in modalities.items()}
        top = max(sizes.values())
        return {n: top / s for n, s in sizes.items()}
    if rescale == "kind":
        return {n: float(kind_weights.get(m.kind, 1.0)) for n, m in modalities.items()}
    raise ConfigError(f"rescale={rescale!r} is not one of numel, kind")


@dataclass
class VAESampling:
    """Sampler options of the VAE baselines (`generate` keywords); None: the config's."""

    temperature: float | None = None         # decoder temperature
    decoder_nfe: int | None = None           # ODE steps of flow decoders


@dataclass
class VAEConfig:
    """Fields every VAE baseline's config shares; each method's config adds its own."""

    latent_dim: int = 32                     # size of the shared latent z
    codec: CodecConfig = field(default_factory=vae_codec)  # encoders/decoders (Laplace, scale 0.75)
    rescale: Rescale = "numel"               # likelihood weights: "numel" (papers' rule) or "kind"
    kind_weights: dict[str, float] = field(default_factory=default_kind_weights)  # used when rescale="kind"
    temperature: float = 1.0                 # decoder sampling temperature

    def __post_init__(self) -> None:
        check_kind_weights(self.kind_weights)
        own = {"beta": (lambda v: v >= 0, ">= 0"), "num_random_subsets": (lambda v: v >= 0, ">= 0"),
               "k": (lambda v: v >= 1, ">= 1"), "alpha": (lambda v: v > 0, "> 0")}  # some baselines' fields
        check_ranges("model.", self, [
            ("latent_dim", self.latent_dim >= 1, ">= 1"), ("temperature", self.temperature >= 0, ">= 0"),
            *[(n, ok(getattr(self, n)), want) for n, (ok, want) in own.items() if hasattr(self, n)]])


class MultimodalVAE(Method):
    """Encoders, Gaussian expert heads, decoders and `generate` of a posterior-based VAE.

    Subclasses set ``method``, write ``loss(batch, generator=None)`` and
    ``posterior_sample(mu, logvar, mask, generator)``. The config needs ``latent_dim``,
    ``codec``, ``rescale``, ``kind_weights`` and ``temperature``.
    """

    Sampling = VAESampling

    def __init__(self, modalities: dict[str, Modality], cfg) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("a multimodal VAE needs at least one modality")
        self.modalities = dict(modalities)
        self.names = list(modalities)
        self.cfg = cfg
        c, d = cfg.codec, cfg.latent_dim
        self.encoders = nn.ModuleDict({n: build_encoder(m, c) for n, m in modalities.items()})
        self.heads = nn.ModuleDict({n: nn.Linear(c.embed_dim, 2 * d) for n in self.names})
        self.decoders = nn.ModuleDict({n: build_decoder(m, c, d) for n, m in modalities.items()})
        self.weights = likelihood_weights(self.modalities, cfg.rescale, cfg.kind_weights)

    # ------------------------------------------------------------------ posterior
    def experts(self, batch: dict[str, torch.Tensor], present: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unimodal Gaussian experts ``q_m(z | x_m)`` in `names` order.

        `present` (B, M) bool marks incomplete tuples (`muni.methods.base.presence`); a modality
        absent from every sample is not encoded.

        Returns
        -------
        mu, logvar : Tensor, shape (M, B, d)
            Zeros for modalities absent from `batch`.
        mask : Tensor, shape (M, B), bool
            Which modalities are present.
        """
        ref = next(iter(batch.values()))
        b, d = ref.shape[0], self.cfg.latent_dim
        device = next(self.parameters()).device
        mus, logvars = [], []
        for i, n in enumerate(self.names):
            if n in batch and (present is None or bool(present[:, i].any())):
                mu, raw = self.heads[n](self.encoders[n](batch[n])).chunk(2, dim=-1)  # (B, d) each
                logvar = LOGVAR_BOUND * torch.tanh(raw / LOGVAR_BOUND)  # soft clamp to (-8, 8)
            else:
                mu = logvar = torch.zeros(b, d, device=device)
            mus.append(mu)
            logvars.append(logvar)
        if present is None:
            mask = torch.tensor([n in batch for n in self.names], device=device)[:, None].expand(-1, b)
        else:
            mask = present.T.to(device)
        return torch.stack(mus), torch.stack(logvars), mask  # (M, B, d), (M, B, d), (M, B)

    def single_sample_elbo(self, batch: dict[str, torch.Tensor], z: torch.Tensor, kl: torch.Tensor,
                           present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Terms of a one-sample ELBO: every modality reconstructed from `z` (B, d), `kl` (B,);
        with `present` (B, M), every modality each sample has.

        ``loss`` = mean over the batch of ``sum_m w_m NLL_m + beta KL``; logged: ``rec/<m>``
        (mean over the samples that have m), ``kl`` and ``elbo`` (unweighted by beta).
        """
        terms: dict[str, torch.Tensor] = {}
        rec = torch.zeros(z.shape[0], device=z.device)             # (B,)
        for i, name in enumerate(self.names):
            if present is not None:
                if not bool(present[:, i].any()):
                    continue
                per = self.masked_nll(name, batch[name], z, present[:, i])  # (B,)
                rec = rec + per
                terms[f"rec/{name}"] = (per.sum() / present[:, i].sum()).detach()
                continue
            per = self.nll(name, batch[name], z)                   # (B,)
            rec = rec + per
            terms[f"rec/{name}"] = per.mean().detach()
        terms["kl"] = kl.mean().detach()
        terms["elbo"] = -(rec + kl).mean().detach()
        terms["loss"] = (rec + self.cfg.beta * kl).mean()
        return terms

    def posterior_sample(self, mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """One ``z ~ q(z | x_S)`` per sample, (B, d), from the experts (M, B, d) and mask (M, B)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ likelihood
    def nll(self, name: str, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Weighted ``-w_m log p_m(x | z)`` for latents ``z`` (..., B, d) sharing the targets ``x`` (B, ...).

        Every leading slice of `z` is decoded against the same `x`; returns (..., B).
        """
        lead = z.shape[:-1]  # (..., B)
        reps = math.prod(lead[:-1])
        xr = x.repeat(reps, *([1] * (x.dim() - 1)))  # (reps * B, ...)
        out = self.decoders[name].loss(xr, z.reshape(-1, z.shape[-1]))  # (reps * B,)
        return self.weights[name] * out.view(lead)

    def masked_nll(self, name: str, x: torch.Tensor, z: torch.Tensor, have: torch.Tensor) -> torch.Tensor:
        """`nll` where the target is present (`have` (B,) bool), zero where it is filler: (..., B)."""
        per = self.nll(name, x, z)
        return torch.where(have, per, torch.zeros_like(per))

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, given: dict[str, torch.Tensor], targets: list[str], n: int | None = None,
                 generator: torch.Generator | None = None, *, temperature: float | None = None,
                 decoder_nfe: int | None = None) -> dict[str, torch.Tensor]:
        """Any-to-any generation (see `muni.methods.base`).

        Empty `given`: ``z ~ N(0, I)``. Otherwise ``z ~ q(z | x_given)`` (`posterior_sample`).
        Every target is decoded from the same ``z`` with ``decoder.sample``.
        """
        b = check_generate_args(self.modalities, given, targets, n)
        device = next(self.parameters()).device
        d = self.cfg.latent_dim
        if not given:
            z = torch.randn((b, d), generator=generator, device=device)  # (B, d)
        else:
            mu, logvar, mask = self.experts({k: v.to(device) for k, v in given.items()})
            z = self.posterior_sample(mu, logvar, mask, generator)  # (B, d)
        temp = self.cfg.temperature if temperature is None else temperature
        return {t: self.decoders[t].sample(z, generator=generator, temperature=temp, nfe=decoder_nfe)
                for t in targets}

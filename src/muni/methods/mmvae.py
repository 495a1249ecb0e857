"""MMVAE: the mixture-of-experts multimodal VAE of Shi et al. (NeurIPS 2019) [1].

Posterior: the uniform mixture of the unimodal experts, ``q(z | X) = (1/M) sum_m q_m(z | x_m)``,
Eq. (2) [1]. Training uses stratified sampling, Eq. (4) [1]: K samples ``z_k^i ~ q_k`` from
*every* expert k, each decoding *all* modalities, the strata weighted 1/M.

``objective="elbo"`` (the "MoE ELBO" of [1], Eq. (4) with the mixture density in the KL):

    L = (1/M) sum_k (1/K) sum_i [ sum_m w_m log p(x_m | z_k^i)
                                  - beta (log q(z_k^i | X) - log p(z_k^i)) ],

with ``log q(z | X)`` the mixture log-density (`aggregation.moe_log_density`).

``objective="dreg"`` (the doubly-reparameterised IWAE bound of [1], Eq. (5), as in its
``m_dreg``): log-weights ``lw_k^i = sum_m w_m log p(x_m | z_k^i) + beta (log p(z_k^i)
- log q(z_k^i | X))`` with the expert parameters detached inside ``log q``; the surrogate
``(1/M) sum_k sum_i w~_k^i lw_k^i`` with ``w~ = softmax_i(lw)`` (detached) and a hook that
scales the gradient reaching ``z`` by ``w~`` once more (DReG, Tucker et al. 2019). With K = 1
it equals the ``elbo`` objective in value. The IWAE bound itself is logged as ``iwae``.

Where we depart from [1]: the prior is N(0, I) and the experts Gaussian ([1] uses Laplace
posteriors and a Laplace prior with learned scale; it reports both work); ``beta`` (1 in [1])
is exposed. Cross-generation samples the mixture of the given experts (one expert per sample,
uniformly, then ``z ~ q_k``), which for one given modality is ``q_m(z | x_m)`` as in [1].

[1] Shi, Siddharth, Paige & Torr, "Variational Mixture-of-Experts Autoencoders for
    Multi-Modal Deep Generative Models", NeurIPS 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from muni.errors import ConfigError
from muni.methods.aggregation import log_normal, moe_log_density, moe_sample
from muni.methods.base import presence
from muni.methods.vae import MultimodalVAE, VAEConfig
from muni.modalities.base import Modality


@dataclass
class MMVAEConfig(VAEConfig):
    """Fields of every VAE baseline are in `VAEConfig`; these are the method's own."""

    objective: Literal["elbo", "dreg"] = "elbo"  # stratified MoE ELBO, or DReG-IWAE
    k: int = 1                               # samples per expert (importance samples for dreg)
    beta: float = 1.0                        # weight of log q - log p


class MMVAE(MultimodalVAE):
    """Mixture-of-experts multimodal VAE [1] with stratified sampling."""

    method = "mmvae"

    def __init__(self, modalities: dict[str, Modality], cfg: MMVAEConfig):
        if cfg.objective not in ("elbo", "dreg"):
            raise ConfigError(f"objective={cfg.objective!r} is not one of elbo, dreg")
        if cfg.k < 1:
            raise ConfigError(f"k must be >= 1, got {cfg.k}")
        super().__init__(modalities, cfg)

    def loss(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative stratified MoE ELBO (or DReG surrogate), averaged over the minibatch.

        Incomplete tuples (`present`): the mixture runs over each sample's present experts, each
        stratum reconstructs the modalities the sample has, and a sample's strata are averaged.

        Randomness: one ``eps ~ N(0, I)`` of shape (M, K, B, d).
        """
        cfg = self.cfg
        have = presence(self.names, batch, present)                # (B, M) or None: complete
        b = next(iter(batch.values())).shape[0]
        mu, logvar, mask = self.experts(batch, have)               # (M, B, d), (M, B, d), (M, B)
        m, d = mu.shape[0], mu.shape[2]
        eps = torch.randn((m, cfg.k, b, d), generator=generator, device=mu.device)
        z = mu[:, None] + (0.5 * logvar[:, None]).exp() * eps      # (M, K, B, d): z_k^i ~ q_k

        # Every stratum decodes every modality.
        terms: dict[str, torch.Tensor] = {}
        nll = torch.zeros(z.shape[:3], device=z.device)            # (M, K, B)
        for i, name in enumerate(self.names):
            if have is None:
                per = self.nll(name, batch[name], z)               # (M, K, B)
                terms[f"rec/{name}"] = per.mean().detach()
            elif bool(have[:, i].any()):
                per = self.masked_nll(name, batch[name], z, have[:, i])
                terms[f"rec/{name}"] = (per.sum() / (m * cfg.k * have[:, i].sum())).detach()
            else:
                continue
            nll = nll + per
        log_p = log_normal(z, torch.zeros_like(z), torch.zeros_like(z))  # (M, K, B)
        if cfg.objective == "elbo":
            log_q = moe_log_density(z, mu, logvar, mask)           # (M, K, B)
            lw = -nll + cfg.beta * (log_p - log_q)                 # (M, K, B)
            total = -self._strata_mean(lw, have, mask)
        else:
            log_q = moe_log_density(z, mu.detach(), logvar.detach(), mask)  # stop-grad on q's params
            lw = -nll + cfg.beta * (log_p - log_q)                 # (M, K, B)
            w = torch.softmax(lw.detach(), dim=1)                  # (M, K, B) normalised weights
            if z.requires_grad:
                z.register_hook(lambda g: w[..., None] * g)
            total = -self._strata_mean((w * lw).sum(1, keepdim=True), have, mask)
            terms["iwae"] = self._strata_mean(torch.logsumexp(lw.detach(), 1, keepdim=True)
                                              - math.log(cfg.k), have, mask)
        terms["kl"] = self._strata_mean(log_q - log_p, have, mask).detach()
        terms["elbo"] = self._strata_mean(lw, have, mask).detach()
        terms["loss"] = total
        return terms

    @staticmethod
    def _strata_mean(x: torch.Tensor, have: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        """Mean of per-stratum values `x` (M, K, B): over all of them for complete tuples, else
        over each sample's present strata (`mask` (M, B)), then over the batch."""
        if have is None:
            return x.mean()
        x = torch.where(mask[:, None], x, torch.zeros_like(x))
        return (x.sum((0, 1)) / (mask.sum(0) * x.shape[1])).mean()

    def posterior_sample(self, mu, logvar, mask, generator=None):
        z = moe_sample(mu, logvar, mask, generator)                # (M, B, d), one per expert
        pick = torch.multinomial(mask.T.to(mu.dtype), 1, generator=generator).squeeze(1)  # (B,)
        return z[pick, torch.arange(z.shape[1], device=z.device)]  # (B, d)

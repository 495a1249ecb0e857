"""HELVAE: the Hellinger multimodal VAE of Vo & Valera (AISTATS 2026) [1].

Posterior of a subset S: Hölder pooling of the unimodal experts with alpha = 1/2 (the pool
optimal under the symmetric alpha-divergence, i.e. the squared Hellinger distance),
approximated by the Gaussian that matches its first two moments, "Hellinger" in [1]
(`aggregation.holder_pool`, whose docstring derives the moments: a mixture, over ordered
pairs of experts, of their geometric means weighted by Bhattacharyya coefficients).

Objective: [1]'s point is a model that *avoids modality sub-sampling* (the cause of the
generative-quality gap of mixture-based multimodal VAEs, Daunhawer et al., ICLR 2022): one
ELBO of the full-set pooled posterior reconstructs every modality,

    L = E_{q_H(z | X)} [ sum_m w_m log p(x_m | z) ] - beta KL(q_H(z | X) || N(0, I)),

with no random subsets and no cross-reconstruction from partial posteriors. Unimodal and
partial posteriors are nonetheless trained, because the pool keeps every single expert as a
mixture component (the self-pairs, Bhattacharyya coefficient 1): a sharp expert that disagrees
with the others widens the pooled variance and pays in the KL.

Checked against the authors' code [2] (built on the MoPoE code): the pool is the same
(``divergence_measures/mm_div.py``: uniform expert weights, no prior expert, pairwise
precision-weighted means and Bhattacharyya coefficients over the whole latent; our centred
variance is their ``E[z^2] - mu^2``, computed stably), the loss is the same (only the subset of
all present modalities, one sample, ``sum_m w_m NLL_m + beta KL(q_H || N(0, I))``, summed over
dimensions and averaged over the batch), and so is generation (the pool of the given experts
or N(0, I), decoded to the likelihood mean). Differences: [2] runs the pool in float64 and
does not clamp log-variances (we soft-clamp to (-8, 8) as for every VAE here); its optional
modality-specific style latents (used for CelebA) are not implemented. [2] ships only CelebA
settings (beta swept over 1, 2.5, 5; latent 20); for PolyMNIST we use the MoPoE settings
(`muni.methods.mopoe`): Laplace likelihood of scale 0.75, the ``numel`` likelihood rescaling,
``beta=2.5`` (also the beta of MMVAE+ on PolyMNIST, which [1] compares against).
Conditional generation samples the Hellinger pool of the given experts.

[1] Vo & Valera, "Hellinger Multimodal Variational Autoencoders", AISTATS 2026 (arXiv 2601.06572).
[2] github.com/vothuckhanhhuyen/hellinger-variational-autoencoders (official code), commit 8a07a00.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from muni.methods.aggregation import holder_pool, kl_normal, sample_normal
from muni.methods.base import presence
from muni.methods.vae import MultimodalVAE, VAEConfig


@dataclass
class HELVAEConfig(VAEConfig):
    """Fields of every VAE baseline are in `VAEConfig`; these are the method's own."""

    alpha: float = 0.5                       # Hölder exponent, 1/n (0.5 = Hellinger)
    beta: float = 2.5                        # KL weight (MoPoE / MMVAE+ PolyMNIST setting)
    prior_expert: bool = False               # add N(0, I) as a pooled expert


class HELVAE(MultimodalVAE):
    """Hellinger (Hölder alpha = 1/2, moment-matched) multimodal VAE [1], no sub-sampling."""

    method = "helvae"

    def pool(self, mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Hellinger posterior of each sample's present experts: mu, logvar (B, d)."""
        return holder_pool(mu, logvar, mask, alpha=self.cfg.alpha, prior_expert=self.cfg.prior_expert)

    def loss(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative full-set ELBO, averaged over the minibatch; for incomplete tuples
        (`present`), the ELBO of each sample's present modalities, pooled and reconstructed.

        Randomness: one ``eps ~ N(0, I)`` of shape (B, d).
        """
        have = presence(self.names, batch, present)                # (B, M) or None: complete
        mu, logvar, mask = self.experts(batch, have)               # (M, B, d), (M, B)
        mu_h, logvar_h = self.pool(mu, logvar, mask)               # (B, d) each
        z = sample_normal(mu_h, logvar_h, generator)               # (B, d)
        kl = kl_normal(mu_h, logvar_h)                             # (B,)
        return self.single_sample_elbo(batch, z, kl, have)

    def posterior_sample(self, mu, logvar, mask, generator=None):
        return sample_normal(*self.pool(mu, logvar, mask), generator)

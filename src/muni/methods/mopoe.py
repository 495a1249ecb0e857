"""MoPoE-VAE: the mixture-of-products-of-experts VAE of Sutter, Daunhawer & Vogt (ICLR 2021) [1].

Posterior: the uniform mixture, over the ``2^M - 1`` non-empty subsets A of the modalities,
of the PoE of A's unimodal experts, Eq. (6) [1] (`aggregation.mopoe_subset_posteriors`).

Objective, the generalised multimodal ELBO of [1] as its code ("joint_elbo") computes it:

    L = E_{z ~ q(z | X)} [ sum_m w_m log p(x_m | z) ] - beta (1 / (2^M - 1)) sum_A KL(q_A || N(0, I)),

where ``z`` is one sample of the mixture per data point: a subset A drawn uniformly, then
``z ~ PoE(A)`` (`aggregation.mopoe_sample`; [1]'s code assigns mixture components to
contiguous slices of the batch instead, the same estimator in expectation), every modality
reconstructed from it. The KL of the mixture is replaced by the mixture of KLs, its upper
bound, as in [1] (``calc_group_divergence_moe`` with uniform weights): `mopoe_kl`.

Settings of the PolyMNIST runs of [1] (``job_polymnist`` in the authors' repository
thomassutter/MoPoE): ``beta=2.5``, Laplace likelihood (scale 0.75 in the model),
reconstruction weights 1, no style latents, class_dim 512 (our ``latent_dim`` stays 32, the
budget of the quick benchmark). The subset PoEs carry no prior expert (``prior_expert=False``);
[1]'s code adds the N(0, I) expert to the full set only, which we do not copy.
Conditional generation samples the PoE of exactly the given subset, as [1]'s evaluation does.

[1] Sutter, Daunhawer & Vogt, "Generalized Multimodal ELBO", ICLR 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from muni.methods.aggregation import (kl_normal, mopoe_sample, mopoe_subset_posteriors, product_of_experts,
                                       sample_normal)
from muni.methods.base import presence
from muni.methods.vae import MultimodalVAE, VAEConfig


@dataclass
class MoPoEConfig(VAEConfig):
    """Fields of every VAE baseline are in `VAEConfig`; these are the method's own."""

    beta: float = 2.5                        # KL weight ([1], PolyMNIST)
    prior_expert: bool = False               # add N(0, I) to every subset's PoE


def mopoe_kl(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor,
             prior_expert: bool = False) -> torch.Tensor:
    """``(1 / |P(S)|) sum_{A in P(S)} KL(PoE(A) || N(0, I))`` per sample, (B,).

    ``P(S)`` are the non-empty subsets of each sample's present experts; `mu`, `logvar`
    (K, B, d), `mask` (K, B) bool.
    """
    mu_a, logvar_a, valid = mopoe_subset_posteriors(mu, logvar, mask, prior_expert)  # (S, B, d), (S, B)
    kl = kl_normal(mu_a, logvar_a)                                 # (S, B)
    return (kl * valid).sum(0) / valid.sum(0)                      # (B,)


class MoPoE(MultimodalVAE):
    """Mixture-of-products-of-experts VAE [1]."""

    method = "mopoe"

    def loss(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative generalised multimodal ELBO, averaged over the minibatch. Incomplete tuples
        (`present`): the mixture runs over the subsets of each sample's present modalities and
        only those are reconstructed (the ELBO of the observed part, as in MoPoE's own
        formulation over any observed set X).

        Randomness: the subset of each sample, then its ``eps`` (both in `mopoe_sample`).
        """
        cfg = self.cfg
        have = presence(self.names, batch, present)                # (B, M) or None: complete
        mu, logvar, mask = self.experts(batch, have)               # (M, B, d), (M, B)
        z, _, _, _ = mopoe_sample(mu, logvar, mask, cfg.prior_expert, generator)  # (B, d)
        kl = mopoe_kl(mu, logvar, mask, cfg.prior_expert)          # (B,)
        return self.single_sample_elbo(batch, z, kl, have)

    def posterior_sample(self, mu, logvar, mask, generator=None):
        mu_s, logvar_s = product_of_experts(mu, logvar, mask, prior_expert=self.cfg.prior_expert)  # (B, d)
        return sample_normal(mu_s, logvar_s, generator)

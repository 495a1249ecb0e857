"""MVAE: the product-of-experts multimodal VAE of Wu & Goodman (NeurIPS 2018) [1].

Posterior of a subset S: the product of the unimodal Gaussian experts of S and the N(0, I)
prior expert, Eq. (4) [1] (`muni.methods.aggregation.product_of_experts`).

Objective: the sub-sampled training paradigm of Sec. 3 [1], per step

    ELBO(X) + sum_m ELBO(x_m) + sum_{j=1..K} ELBO(X_{S_j}),

    ELBO(X_S) = E_{q(z | X_S)} [ sum_{m in S} w_m log p(x_m | z) ] - beta KL(q(z | X_S) || N(0, I)),

where each ELBO reconstructs only the modalities of its own subset, and the K random subsets
``S_j`` (``num_random_subsets``, drawn uniformly, for the whole minibatch, among the subsets
that are neither the full set nor a singleton; none when M <= 2) are drawn anew each step.
``beta`` is the KL weight (1 in [1], which anneals it from 0 early in training; we use a
constant). ``w_m`` are the likelihood weights of `muni.methods.vae` (the λ_m of [1]).
Conditional generation samples the PoE of the given modalities (with the prior expert).

[1] Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised Learning",
    NeurIPS 2018.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from muni.methods.aggregation import kl_normal, product_of_experts, sample_normal, subsets
from muni.methods.base import presence
from muni.methods.vae import MultimodalVAE, VAEConfig


@dataclass
class MVAEConfig(VAEConfig):
    """Fields of every VAE baseline are in `VAEConfig`; these are the method's own."""

    beta: float = 1.0                        # KL weight of every ELBO term
    num_random_subsets: int = 1              # K random subsets ELBO(X_S) per step, beyond joint + unimodal


class MVAE(MultimodalVAE):
    """Product-of-experts multimodal VAE [1] with the sub-sampled ELBO."""

    method = "mvae"

    def training_subsets(self, generator: torch.Generator | None = None) -> list[tuple[int, ...]]:
        """The subsets (tuples of modality indices) whose ELBOs one step sums:
        the full set, every singleton, then K random ones."""
        m = len(self.names)
        full = tuple(range(m))
        singles = [(i,) for i in range(m)] if m > 1 else []
        middle = [s for s in subsets(range(m)) if 1 < len(s) < m]
        drawn = []
        if middle and self.cfg.num_random_subsets > 0:
            idx = torch.randint(len(middle), (self.cfg.num_random_subsets,), generator=generator)
            drawn = [middle[i] for i in idx.tolist()]
        return [full] + singles + drawn

    def loss(self, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None = None,
             generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Negative sub-sampled ELBO, averaged over the minibatch.

        Incomplete tuples (`present`): each term's subset is cut to the sample's present
        modalities, as MVAE trains on whatever is observed; a term left empty for a sample
        (a singleton it lacks) is the prior itself, with no reconstruction and zero KL.

        Randomness, in order: the K random subsets (`training_subsets`), then one
        ``eps ~ N(0, I)`` of shape (T, B, d) for the T ELBO terms.
        """
        cfg = self.cfg
        have = presence(self.names, batch, present)                # (B, M) or None: complete
        b = next(iter(batch.values())).shape[0]
        mu, logvar, mask = self.experts(batch, have)               # (M, B, d) each, (M, B)
        terms_s = self.training_subsets(generator)                 # T subsets
        eps = torch.randn((len(terms_s), b, cfg.latent_dim), generator=generator, device=mu.device)

        # Posterior of every ELBO term: PoE of its subset and the prior expert.
        z, kl = [], []
        for t, s in enumerate(terms_s):
            sub = torch.zeros(mu.shape[:2], dtype=torch.bool, device=mu.device)  # (M, B)
            sub[list(s)] = True
            if have is not None:
                sub = sub & mask
            mu_s, logvar_s = product_of_experts(mu, logvar, sub, prior_expert=True)  # (B, d)
            z.append(mu_s + (0.5 * logvar_s).exp() * eps[t])
            kl.append(kl_normal(mu_s, logvar_s))                   # (B,)
        z, kl = torch.stack(z), torch.stack(kl)                    # (T, B, d), (T, B)

        # Reconstruction: decoder m serves, in one pass, every term whose subset holds m.
        rec = torch.zeros(kl.shape, device=kl.device)              # (T, B), fp32 also under autocast
        terms: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.names):
            rows = [t for t, s in enumerate(terms_s) if i in s]
            if have is None:
                nll = self.nll(name, batch[name], z[rows])         # (len(rows), B)
                terms[f"rec/{name}"] = nll[0].mean().detach()      # the joint term's NLL
            elif bool(have[:, i].any()):
                nll = self.masked_nll(name, batch[name], z[rows], have[:, i])
                terms[f"rec/{name}"] = (nll[0].sum() / have[:, i].sum()).detach()
            else:
                continue
            rec = rec.index_add(0, torch.tensor(rows, device=rec.device), nll.float())
        neg_elbo = rec + cfg.beta * kl                             # (T, B)
        total = neg_elbo.sum(0).mean()
        terms["kl/joint"] = kl[0].mean().detach()
        terms["elbo/joint"] = -neg_elbo[0].mean().detach()
        terms["loss"] = total
        return terms

    def posterior_sample(self, mu, logvar, mask, generator=None):
        mu_s, logvar_s = product_of_experts(mu, logvar, mask, prior_expert=True)  # (B, d)
        return sample_normal(mu_s, logvar_s, generator)

"""Subset posteriors ``q(z | x_S)``: how unimodal evidence is fused into one latent.

All functions are vectorised over a per-sample mask of present experts. Experts are
diagonal Gaussians given as ``mu, logvar`` of shape (K, B, d) with a mask (K, B) bool.

- `product_of_experts`: MVAE [1] (closed-form precision-weighted product).
- `moe_sample`, `moe_log_density`: MMVAE [2] (mixture of unimodal posteriors,
  stratified sampling).
- `subsets`, `subset_masks`, `mopoe_subset_posteriors`, `mopoe_sample`: MoPoE [3]
  (mixture over the PoE of every non-empty subset).
- `holder_pool`: HELVAE [4] (moment-matched Hölder pooling).
- `SetAggregator`, `PoEAggregator`: MUNI's learned non-mixture subset posteriors
  (METHOD.md, route 1), registered in `AGGREGATORS`.

References
----------
[1] Wu & Goodman, "Multimodal Generative Models for Scalable Weakly-Supervised
    Learning", NeurIPS 2018.
[2] Shi et al., "Variational Mixture-of-Experts Autoencoders for Multi-Modal Deep
    Generative Models", NeurIPS 2019.
[3] Sutter et al., "Generalized Multimodal ELBO", ICLR 2021.
[4] Vo & Valera, "Hellinger Multimodal Variational Autoencoders", AISTATS 2026.
[5] Zaheer et al., "Deep Sets", NeurIPS 2017.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import torch
from torch import nn

LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- Gaussians

def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, diag exp(logvar)) || N(0, I))`` summed over the last dim: (..., d) -> (...)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1)


def sample_normal(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Reparameterised sample ``mu + exp(logvar / 2) * eps``, shaped like `mu`."""
    eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
    return mu + (0.5 * logvar).exp() * eps


def log_normal(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``log N(x; mu, diag exp(logvar))`` summed over the last dim (broadcasting): (..., d) -> (...)."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) * (-logvar).exp()).sum(-1)


def _check_experts(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor) -> None:
    if mu.dim() != 3 or logvar.shape != mu.shape:
        raise ValueError(f"mu and logvar must both be (K, B, d); got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    if mask.shape != mu.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(mu.shape[:2])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")


def _require_present(mask: torch.Tensor) -> None:
    """Every sample (column of the (K, B) mask) needs at least one present expert."""
    empty = ~mask.any(0)
    if empty.any():
        raise ValueError(f"samples {empty.nonzero().flatten().tolist()} have no present expert; "
                         "every sample needs at least one observed modality")


def _with_prior(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor):
    """Prepend the always-present N(0, I) expert: (K, B, d) -> (K + 1, B, d), mask (K + 1, B)."""
    zeros = torch.zeros_like(mu[:1])
    ones = torch.ones_like(mask[:1])
    return torch.cat([zeros, mu]), torch.cat([zeros, logvar]), torch.cat([ones, mask])


# ----------------------------------------------------------------------------- PoE (MVAE)

def product_of_experts(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor,
                       prior_expert: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Product of the present Gaussian experts, Sec. 2 / Eq. (4) [1].

    ``T = sum_k m_k / var_k (+ 1)``, ``mu_S = (sum_k m_k mu_k / var_k) / T``,
    ``var_S = 1 / T``, where the ``+ 1`` (mean 0) is the N(0, I) prior expert.

    Parameters
    ----------
    mu, logvar : Tensor, shape (K, B, d)
    mask : Tensor, shape (K, B), bool
        Which experts are present for each sample.
    prior_expert : bool
        Include the N(0, I) expert (then a sample with no present expert gets the prior).

    Returns
    -------
    mu, logvar : Tensor, shape (B, d)
    """
    _check_experts(mu, logvar, mask)
    if prior_expert:
        mu, logvar, mask = _with_prior(mu, logvar, mask)
    else:
        _require_present(mask)
    # log precisions of present experts; absent ones get -inf (zero precision)
    log_prec = torch.where(mask[..., None], -logvar, torch.full_like(logvar, -math.inf))  # (K, B, d)
    log_total = torch.logsumexp(log_prec, dim=0)  # (B, d)
    weights = (log_prec - log_total).exp()  # (K, B, d), precision shares summing to 1
    mu_s = (weights * torch.where(mask[..., None], mu, torch.zeros_like(mu))).sum(0)  # (B, d)
    return mu_s, -log_total


# ----------------------------------------------------------------------------- MoE (MMVAE)

def moe_sample(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Stratified sampling from the mixture ``(1 / |S|) sum_{m in S} q_m``, Eq. (4) [2].

    One reparameterised sample per expert; MMVAE decodes every modality from each
    present expert's sample and weights the strata by ``1 / |S|``.

    Parameters
    ----------
    mu, logvar : Tensor, shape (K, B, d)
    mask : Tensor, shape (K, B), bool

    Returns
    -------
    Tensor, shape (K, B, d)
        ``z_k ~ q_k``; rows of absent experts (``mask[k, b]`` False) are zeros.
    """
    _check_experts(mu, logvar, mask)
    _require_present(mask)
    z = sample_normal(mu, logvar, generator)  # (K, B, d)
    return torch.where(mask[..., None], z, torch.zeros_like(z))


def moe_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mixture log-density ``log q(z | X) = logsumexp_{m in S} log q_m(z) - log |S|`` [2].

    Parameters
    ----------
    z : Tensor, shape (..., B, d)
        Points (e.g. the (K, B, d) output of `moe_sample`).
    mu, logvar : Tensor, shape (K, B, d)
    mask : Tensor, shape (K, B), bool

    Returns
    -------
    Tensor, shape (..., B)
    """
    _check_experts(mu, logvar, mask)
    _require_present(mask)
    comp = log_normal(z.unsqueeze(-3), mu, logvar)  # (..., K, B)
    comp = comp.masked_fill(~mask, -math.inf)
    return torch.logsumexp(comp, dim=-2) - mask.sum(0).log()  # (..., B)


# ----------------------------------------------------------------------------- MoPoE

def subsets(names: Sequence[str]) -> list[tuple[str, ...]]:
    """All ``2^M - 1`` non-empty subsets of `names`, by size, then in the order of `names`."""
    return [c for r in range(1, len(names) + 1) for c in itertools.combinations(names, r)]


def subset_masks(k: int, device=None) -> torch.Tensor:
    """Membership table of `subsets` over ``range(k)``: (2^k - 1, k) bool, same order."""
    table = torch.zeros(2 ** k - 1, k, dtype=torch.bool, device=device)
    for i, s in enumerate(subsets(range(k))):
        table[i, list(s)] = True
    return table


def mopoe_subset_posteriors(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor,
                            prior_expert: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PoE posterior of every non-empty subset of experts, Eq. (6) [3].

    Parameters
    ----------
    mu, logvar : Tensor, shape (K, B, d)
    mask : Tensor, shape (K, B), bool
    prior_expert : bool
        Include the N(0, I) expert in every product.

    Returns
    -------
    mu_s, logvar_s : Tensor, shape (S, B, d), ``S = 2^K - 1`` in `subset_masks` order
    valid : Tensor, shape (S, B), bool
        Whether subset s lies within sample b's present experts (a mixture component).
    """
    _check_experts(mu, logvar, mask)
    table = subset_masks(mu.shape[0], device=mu.device)  # (S, K)
    valid = (table[:, :, None] <= mask[None]).all(1)  # (S, B)
    k, b, d = mu.shape
    s = table.shape[0]
    sub_mask = table[:, :, None].expand(s, k, b).permute(1, 0, 2).reshape(k, s * b)  # (K, S*B)
    mu_s, logvar_s = product_of_experts(mu.repeat(1, s, 1), logvar.repeat(1, s, 1), sub_mask,
                                        prior_expert=prior_expert)  # (S*B, d)
    return mu_s.reshape(s, b, d), logvar_s.reshape(s, b, d), valid


def mopoe_sample(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor, prior_expert: bool = False,
                 generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One sample from the MoPoE posterior ``(1 / |P(S)|) sum_{A in P(S)} PoE(A)``, Eq. (6) [3].

    Per sample, a subset A is drawn uniformly among the non-empty subsets of its present
    experts, then ``z ~ PoE(A)``.

    Returns
    -------
    z, mu_a, logvar_a : Tensor, shape (B, d)
        The sample and the Gaussian it was drawn from.
    chosen : Tensor, shape (K, B), bool
        The drawn subset A for each sample.
    """
    _check_experts(mu, logvar, mask)
    _require_present(mask)
    table = subset_masks(mu.shape[0], device=mu.device)  # (S, K)
    valid = (table[:, :, None] <= mask[None]).all(1)  # (S, B)
    idx = torch.multinomial(valid.T.to(mu.dtype), 1, generator=generator).squeeze(1)  # (B,)
    chosen = table[idx].T  # (K, B)
    mu_a, logvar_a = product_of_experts(mu, logvar, chosen, prior_expert=prior_expert)  # (B, d)
    return sample_normal(mu_a, logvar_a, generator), mu_a, logvar_a, chosen


# ----------------------------------------------------------------------------- Hölder (HELVAE)

def holder_pool(mu: torch.Tensor, logvar: torch.Tensor, mask: torch.Tensor, alpha: float = 0.5,
                prior_expert: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matched Gaussian approximation of Hölder pooling [4].

    Hölder (power-mean) pooling of the present experts ``q_1..q_K`` with uniform weights:

        q_alpha(z)  ∝  ( (1/K) sum_k q_k(z)^alpha )^(1/alpha),

    alpha = 1 is the mixture (MoE), alpha -> 0 the geometric pool (PoE); alpha = 1/2
    (the default) is the pool whose optimality criterion is the symmetric
    alpha-divergence, i.e. the squared Hellinger distance, used by HELVAE [4].

    What is computed (our derivation; for alpha = 1/2 it agrees with the pool of [4]'s official
    code, ``divergence_measures/mm_div.py`` of vothuckhanhhuyen/hellinger-variational-autoencoders). For
    ``alpha = 1/n`` with integer n >= 1 the pool is *exactly* a Gaussian mixture:
    expanding the n-th power over index tuples ``k = (k_1..k_n)``,

        q_alpha(z) ∝ sum_k  w_k  prod_j q_{k_j}(z)^(1/n),    w_k = prod_j (1/K),

    and each product of Gaussians to the power 1/n is an unnormalised Gaussian with
    precision ``P_k = mean_j 1/var_{k_j}``, mean ``mu_k = mean_j(mu_{k_j}/var_{k_j}) / P_k``
    and mass ``c_k = ∫ prod_j q_{k_j}^(1/n)`` (for n = 2 the Bhattacharyya coefficient):

        log c_k = sum_dims [ -1/(2n) sum_j log(2 pi var_{k_j}) + 1/2 log(2 pi / P_k)
                             - 1/2 (mean_j mu_{k_j}^2 / var_{k_j} - P_k mu_k^2) ].

    The returned diagonal Gaussian matches the first two moments (per dimension) of
    that mixture with weights ``pi_k ∝ w_k c_k``: ``mu = sum pi_k mu_k``,
    ``var = sum pi_k (1/P_k + (mu_k - mu)^2)``. The moments are exact; only the shape
    (Gaussian, diagonal) is approximated. Cost is ``K^n`` terms, so only
    ``alpha in {1, 1/2, 1/3, ...}`` are accepted.

    Parameters
    ----------
    mu, logvar : Tensor, shape (K, B, d)
    mask : Tensor, shape (K, B), bool
    alpha : float
        Pooling exponent, ``1/n`` for a positive integer n.
    prior_expert : bool
        Add N(0, I) as an always-present expert.

    Returns
    -------
    mu, logvar : Tensor, shape (B, d)
    """
    _check_experts(mu, logvar, mask)
    n = round(1.0 / alpha) if alpha > 0 else 0
    if n < 1 or abs(1.0 / alpha - n) > 1e-6:
        raise ValueError(f"holder_pool needs alpha = 1/n for a positive integer n (1, 0.5, 1/3, ...), got {alpha}")
    if prior_expert:
        mu, logvar, mask = _with_prior(mu, logvar, mask)
    _require_present(mask)
    mu = torch.where(mask[..., None], mu, torch.zeros_like(mu))  # absent experts: finite placeholders
    logvar = torch.where(mask[..., None], logvar, torch.zeros_like(logvar))
    k = mu.shape[0]
    tuples = torch.tensor(list(itertools.product(range(k), repeat=n)), device=mu.device)  # (T, n)
    prec = (-logvar).exp()  # (K, B, d)
    p_j, m_j, lv_j = prec[tuples], mu[tuples], logvar[tuples]  # (T, n, B, d)
    p_t = p_j.mean(1)  # (T, B, d)
    mu_t = (p_j * m_j).mean(1) / p_t  # (T, B, d)
    log_c = (-(LOG_2PI + lv_j).mean(1) + LOG_2PI - p_t.log()
             - ((p_j * m_j.pow(2)).mean(1) - p_t * mu_t.pow(2))).mul(0.5).sum(-1)  # (T, B)
    log_w = torch.where(mask, -mask.sum(0).to(mu.dtype).log(), torch.full_like(mu[..., 0], -math.inf))  # (K, B)
    log_pi = torch.log_softmax(log_w[tuples].sum(1) + log_c, dim=0)[..., None]  # (T, B, 1)
    pi = log_pi.exp()
    mean = (pi * mu_t).sum(0)  # (B, d)
    var = (pi * (1.0 / p_t + (mu_t - mean).pow(2))).sum(0)  # (B, d)
    return mean, var.log()


# ----------------------------------------------------------------------------- learned aggregators

def _gather_inputs(names: Sequence[str], h: dict[str, torch.Tensor], mask: torch.Tensor | None,
                   detach: torch.Tensor | None, embed_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack encoder outputs in `names` order, zero-filling missing modalities and
    stopping the gradient where `detach` is set.

    Returns
    -------
    hs : Tensor, shape (M, B, E)
    mask : Tensor, shape (B, M), bool
    """
    unknown = sorted(set(h) - set(names))
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; this aggregator knows {list(names)}")
    if not h:
        raise ValueError("h is empty: give at least one modality's encoder output")
    ref = next(iter(h.values()))
    b = ref.shape[0]
    for name, x in h.items():
        if x.shape != (b, embed_dim):
            raise ValueError(f"h[{name!r}] must have shape ({b}, {embed_dim}), got {tuple(x.shape)}")
    if mask is None:
        mask = torch.tensor([m in h for m in names], device=ref.device).expand(b, len(names))
    elif mask.shape != (b, len(names)) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape ({b}, {len(names)}) over {list(names)}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    missing = [m for i, m in enumerate(names) if m not in h and bool(mask[:, i].any())]
    if missing:
        raise ValueError(f"mask marks {missing} present but h has no such entries")
    if not bool(mask.any(1).all()):
        empty = (~mask.any(1)).nonzero().flatten().tolist()
        raise ValueError(f"samples {empty} have no present modality; every sample needs at least one")
    if detach is not None and (detach.shape != mask.shape or detach.dtype != torch.bool):
        raise ValueError(f"detach must be a bool tensor of shape {tuple(mask.shape)}, got "
                         f"{detach.dtype} {tuple(detach.shape)}")
    hs = []
    for i, m in enumerate(names):
        x = h.get(m, ref.new_zeros(b, embed_dim))  # (B, E)
        if detach is not None:
            x = torch.where(detach[:, i, None], x.detach(), x)
        hs.append(torch.where(mask[:, i, None], x, torch.zeros_like(x)))
    return torch.stack(hs), mask  # (M, B, E), (B, M)


class SetAggregator(nn.Module):
    """Permutation-invariant set fusion, MUNI's default subset posterior (METHOD.md, route 1).

    ``pooled = (1/|S|) sum_{m in S} (h_m + e_m)`` (a Deep-Sets mean pool [5] with a learned
    type embedding ``e_m`` per modality), then an MLP gives ``(mu_S, logvar_S)``.
    The type embeddings are keyed by modality name, so the output does not depend on the
    order of `names` or of the `h` dict.

    Parameters
    ----------
    names : list[str]
        Modality names; the columns of `mask` and `detach` follow this order.
    embed_dim : int
        Width E of the encoder outputs ``h_m``.
    latent_dim : int
        Latent dimension d.
    hidden : int
        Width of the MLP head.
    """

    def __init__(self, names: list[str], embed_dim: int, latent_dim: int, hidden: int = 256):
        super().__init__()
        self.names, self.embed_dim, self.latent_dim = list(names), embed_dim, latent_dim
        self.pool_dim = embed_dim
        self.type_embedding = nn.ParameterDict({m: nn.Parameter(0.02 * torch.randn(embed_dim)) for m in names})
        self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, 2 * latent_dim))

    def pool(self, h: dict[str, torch.Tensor], mask: torch.Tensor | None = None,
             detach: torch.Tensor | None = None) -> torch.Tensor:
        """Masked mean of ``h_m + e_m``: (B, embed_dim). Arguments as in `forward`."""
        hs, mask = _gather_inputs(self.names, h, mask, detach, self.embed_dim)  # (M, B, E), (B, M)
        types = torch.stack([self.type_embedding[m] for m in self.names])[:, None]  # (M, 1, E)
        summed = ((hs + types) * mask.T[..., None]).sum(0)  # (B, E)
        return summed / mask.sum(1, keepdim=True)  # (B, E)

    def head(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each (B, d), from a pooled embedding (B, embed_dim)."""
        return self.mlp(pooled).chunk(2, dim=-1)

    def forward(self, h: dict[str, torch.Tensor], mask: torch.Tensor | None = None,
                detach: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Subset posterior ``q(z | x_S)``.

        Parameters
        ----------
        h : dict[str, Tensor (B, embed_dim)]
            Encoder outputs; modalities absent from the dict count as missing.
        mask : Tensor, shape (B, M), bool, optional
            Per-sample presence over `names`; None means "present iff in `h`".
        detach : Tensor, shape (B, M), bool, optional
            Stop the gradient into ``h[m][b]`` where set (MUNI's target-detached
            self-reconstruction, METHOD.md route 2).

        Returns
        -------
        mu, logvar : Tensor, shape (B, latent_dim)
        """
        return self.head(self.pool(h, mask, detach))


class PoEAggregator(nn.Module):
    """Learned product of experts: each ``h_m`` -> Gaussian expert, fused with the N(0, I)
    prior expert by `product_of_experts` [1]. Same interface as `SetAggregator`;
    `pool` returns ``[mu_S, logvar_S]`` (B, 2 * latent_dim) as the condition vector.
    """

    def __init__(self, names: list[str], embed_dim: int, latent_dim: int, hidden: int = 256):
        super().__init__()
        self.names, self.embed_dim, self.latent_dim = list(names), embed_dim, latent_dim
        self.pool_dim = 2 * latent_dim
        self.experts = nn.ModuleDict({m: nn.Sequential(nn.Linear(embed_dim, hidden), nn.SiLU(),
                                                       nn.Linear(hidden, 2 * latent_dim)) for m in names})

    def forward(self, h: dict[str, torch.Tensor], mask: torch.Tensor | None = None,
                detach: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Subset posterior ``q(z | x_S)``; arguments and returns as `SetAggregator.forward`."""
        hs, mask = _gather_inputs(self.names, h, mask, detach, self.embed_dim)  # (M, B, E), (B, M)
        out = torch.stack([self.experts[m](hs[i]) for i, m in enumerate(self.names)])  # (M, B, 2d)
        mu, logvar = out.chunk(2, dim=-1)  # 2 x (M, B, d)
        return product_of_experts(mu, logvar, mask.T, prior_expert=True)

    def pool(self, h: dict[str, torch.Tensor], mask: torch.Tensor | None = None,
             detach: torch.Tensor | None = None) -> torch.Tensor:
        """``[mu_S, logvar_S]``: (B, 2 * latent_dim)."""
        return torch.cat(self(h, mask, detach), dim=-1)


AGGREGATORS: dict[str, type[nn.Module]] = {"set": SetAggregator, "poe": PoEAggregator}

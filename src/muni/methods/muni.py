"""MUNI: multimodal unified latent diffusion (Yeo, Min, Sung 2026), as reconstructed in
``shared/design/METHOD.md``.

Modality encoders ``e_m``, expressive stochastic decoders ``p_m(x_m | z)`` and one shared
flow-matching prior ``p_psi(z)`` over a shared stochastic latent ``z``, trained jointly with
one optimizer and one backward per step under the routed objective (`Muni.loss`):

1. non-mixture aggregation: one Gaussian ``q(z | x_S)`` from all observed modalities;
2. target-detached self-reconstruction: decoder ``m`` reconstructs an observed ``x_m`` from
   ``z`` recomputed with ``h_m`` detached, so encoder ``m`` gains nothing by copying private
   detail into ``z`` (for the kinds in ``detach_kinds``; a label has no private detail, and
   detaching it starves its encoder: measured on quick PolyMNIST-QL, see docs/results);
3. leave-one-out prior routing: the prior's flow-matching loss sees only latents of subsets
   ``[M] \\ {m}``.

Beyond the paper (METHOD.md, "coherent one-to-many generation"): the prior's velocity network
takes the moments of a subset posterior as a condition, dropped at random during training, so
``conditional_sampler="prior"`` draws one broad latent that agrees with the given modalities
and decodes every target from it; classifier-free guidance weight ``guidance``.

Also beyond the paper, three switches on how the objective moves during training, off by default
(docs/results/ita-probes.md, section 8; the Digits-ITA preset takes the last two): the rate's
weight ramped up (``beta_warmup``), route 2's stop-gradient phased in (``detach_warmup``), and
balanced teaching (``target_balance``, `TeachingBalance`): the gradient each target modality
sends into the cross-prediction latent moved toward the targets' mean norm, so a
high-dimensional target (2048-dim audio) does not drown what only smaller ones pay for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
from torch.func import functional_call

from muni.config import check_ranges
from muni.errors import InputError
from muni.flow.paths import LinearPath
from muni.flow.prior import FlowPrior
from muni.methods.aggregation import AGGREGATORS, kl_normal
from muni.methods.base import Method, check_generate_args, check_kind_weights, presence
from muni.modalities.base import KINDS, Modality
from muni.modalities import CodecConfig, build_decoder, build_encoder


@dataclass
class MuniSampling:
    """MUNI's sampler options (`generate` keywords, ``--sample KEY=VALUE``); None: the config's."""

    conditional_sampler: Literal["prior", "posterior"] | None = None  # how z is drawn given x
    guidance: float | None = None            # classifier-free guidance weight of the prior sampler
    prior_nfe: int | None = None             # ODE steps of the latent prior
    decoder_nfe: int | None = None           # ODE steps of flow decoders
    temperature: float | None = None         # decoder temperature
    prior_temperature: float | None = None   # scale of the prior sampler's initial noise


@dataclass
class MuniConfig:
    latent_dim: int = 32                     # size of the shared latent z
    codec: CodecConfig = field(default_factory=lambda: CodecConfig(  # encoder/decoder backbones; the mean
        image_decoder="residual_private", audio_decoder="residual_private"))  # decoder plus a private
                                             # refiner: coherence of the mean decoder, twice its coherent
                                             # diversity (docs/results/decoders.md)
    aggregation: Literal["set", "poe"] = "set"               # route 1: subset posterior q(z | x_S)
    agg_hidden: int = 256                    # hidden width of the set aggregator's MLP
    logvar_max: float = 10.0                 # soft upper bound of the posterior log-variance,
                                             # ``b - softplus(b - raw)`` (identity to 1e-4 below b - 9):
                                             # an outlying input (one loud FSDD recording) once drove it
                                             # to 328 and the rate to inf (Digits-ITA, seed 1, step 1005)
    self_recon: Literal["target_detached", "full_detach", "attached"] = "full_detach"  # route 2; full_detach
                                             # won the 3-seed ablation on every joint column (README)
    detach_kinds: tuple[str, ...] = ("image", "audio", "text")  # kinds route 2 applies to; labels carry
                                             # no private detail, so their self-reconstruction stays attached
    detach_warmup: int = 0                   # steps over which route 2's stop-gradient is phased in: the
                                             # encoders get a share 1 - step / detach_warmup of the
                                             # self-reconstruction gradient (autoencoding first); 0: none
    prior_route: Literal["leave_one_out", "all_subsets", "full_set"] = "leave_one_out"      # route 3
    rate_target: Literal["standard_normal", "flow_prior"] = "standard_normal"  # KL(q || .) target
    beta: float = 0.5                        # weight of the rate (minimality) term
    beta_warmup: int = 0                     # steps over which the rate's weight rises linearly from 0
                                             # to beta (KL annealing, Bowman et al. 2016); 0: none
    free_nats: float = 0.0                   # rate floor: a batch's KL below it costs nothing (free
                                             # bits, Kingma et al. 2016, spread over the dimensions)
    subset_sampler: Literal["uniform", "weighted"] = "uniform"  # distribution of observed subsets S
    kind_weights: dict[str, float] = field(default_factory=lambda: {"image": 1.0, "audio": 1.0,
                                                        "categorical": 100.0, "text": 20.0})
    target_balance: float = 0.0              # how far each target modality's teaching gradient (into the
                                             # cross-prediction latent) moves toward the targets' mean norm:
                                             # 0 not at all, 1 all the way (`TeachingBalance`)
    prior_hidden: int = 256                  # prior velocity MLP width
    prior_depth: int = 4                     # prior velocity MLP residual blocks
    prior_weight: float = 1.0                # weight of the prior's flow-matching loss
    prior_detach: bool = True                # prior trains on detached latents and conditions
    cond_drop: float = 0.3                   # probability the prior's condition is dropped
    conditional_sampler: Literal["prior", "posterior"] = "prior"  # how generate() draws z given x
    guidance: float = 4.0                    # classifier-free guidance weight of the prior sampler (README)
    prior_nfe: int = 32                      # ODE steps of the prior sampler
    prior_solver: Literal["euler", "heun"] = "euler"
    temperature: float = 1.0                 # decoder sampling temperature
    prior_temperature: float = 1.0           # scale of the prior sampler's initial noise

    def __post_init__(self) -> None:
        check_kind_weights(self.kind_weights)
        check_ranges("model.", self, [
            *[(n, getattr(self, n) >= 1, ">= 1") for n in ("latent_dim", "agg_hidden", "prior_hidden",
                                                           "prior_depth", "prior_nfe")],
            ("logvar_max", math.isfinite(self.logvar_max), "a finite number"),
            *[(n, getattr(self, n) >= 0, ">= 0") for n in ("beta", "beta_warmup", "detach_warmup", "free_nats",
                                                           "prior_weight", "guidance", "temperature",
                                                           "prior_temperature")],
            ("cond_drop", 0 <= self.cond_drop < 1, "in [0, 1)"),
            ("target_balance", 0 <= self.target_balance <= 1, "in [0, 1]"),
            ("detach_kinds", set(self.detach_kinds) <= set(KINDS), f"kinds among {', '.join(KINDS)}")])


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by the factor `TeachingBalance`
    derives from its norm (and records that norm)."""

    @staticmethod
    def forward(ctx, z, balance, i):
        ctx.balance, ctx.i = balance, i
        return z.view_as(z)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.balance.observe(ctx.i, grad), None, None


class TeachingBalance(nn.Module):
    """Balanced teaching: the gradient each target modality's decoder sends back into the latent
    is multiplied by ``(mean / norm) ** strength``, where ``norm`` is that target's gradient norm
    and ``mean`` the mean over the targets. At strength 1 every target teaches with the mean
    norm (the sum of the norms, the overall size of the likelihood's gradient against the rate's,
    is kept); at 0 nothing changes.

    Norms are running means (momentum `momentum`) kept in a buffer, so one backward pass, which
    reaches the targets one after another, can scale each with the others' recent norms.
    """

    def __init__(self, n: int, strength: float = 1.0, momentum: float = 0.98) -> None:
        super().__init__()
        self.strength, self.momentum = strength, momentum
        self.register_buffer("norms", torch.zeros(n))            # 0: not seen yet

    def forward(self, z: torch.Tensor, i: int) -> torch.Tensor:
        return _ScaleGrad.apply(z, self, i) if torch.is_grad_enabled() else z

    @torch.no_grad()
    def observe(self, i: int, grad: torch.Tensor) -> float:
        norm = float(grad.norm())
        if norm == 0.0 or not math.isfinite(norm):
            return 1.0
        old = float(self.norms[i])
        self.norms[i] = norm if old == 0.0 else self.momentum * old + (1 - self.momentum) * norm
        seen = self.norms[self.norms > 0]
        return float(seen.mean() / self.norms[i]) ** self.strength


class Muni(Method):
    """The MUNI model: one network for every any-to-any task.

    Args:
        modalities: the dataset's modality declarations, in a fixed order.
        cfg: the method's config.
    """

    method = "muni"
    Sampling = MuniSampling
    may_skip_parameters = False  # every step runs every encoder, decoder, the aggregator and the prior

    def __init__(self, modalities: dict[str, Modality], cfg: MuniConfig):
        super().__init__()
        self.modalities = dict(modalities)
        self.names = list(modalities)
        self.cfg = cfg
        c = cfg.codec
        self.encoders = nn.ModuleDict({n: build_encoder(m, c) for n, m in modalities.items()})
        self.decoders = nn.ModuleDict({n: build_decoder(m, c, cfg.latent_dim) for n, m in modalities.items()})
        self.aggregator = AGGREGATORS[cfg.aggregation](self.names, c.embed_dim, cfg.latent_dim, cfg.agg_hidden)
        self.prior = FlowPrior(cfg.latent_dim, cond_dim=2 * cfg.latent_dim, hidden=cfg.prior_hidden,
                               depth=cfg.prior_depth, cond_drop=cfg.cond_drop)
        self.path = LinearPath()
        self.balance = (TeachingBalance(len(self.names), cfg.target_balance) if cfg.target_balance > 0
                        else None)                       # balanced teaching, when switched on
        self.steps_done: int | None = None       # set by the training loop (`begin_step`)
        # a refiner that waits for `codec.private_start` leaves its parameters out of early steps
        self.may_skip_parameters = any(getattr(d, "start", 0) > 0 for d in self.decoders.values())

    def begin_step(self, step: int) -> None:
        self.steps_done = step
        for decoder in self.decoders.values():
            decoder.begin_step(step)

    def rate_weight(self) -> float:
        """The rate's weight now: ``beta``, ramped up from 0 over the first ``beta_warmup``
        training steps. Outside the training loop (``steps_done`` unset) it is ``beta``."""
        cfg = self.cfg
        if cfg.beta_warmup <= 0 or self.steps_done is None:
            return cfg.beta
        return cfg.beta * min(1.0, (self.steps_done + 1) / cfg.beta_warmup)

    def attached_share(self) -> float:
        """The share of route 2's self-reconstruction gradient the encoders get now: falls
        linearly from 1 to 0 over the first ``detach_warmup`` training steps, then 0 (the full
        stop-gradient). Outside the training loop it is 0."""
        cfg = self.cfg
        if cfg.detach_warmup <= 0 or self.steps_done is None:
            return 0.0
        return max(0.0, 1.0 - self.steps_done / cfg.detach_warmup)

    # ------------------------------------------------------------------ posterior
    def encode(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Encoder outputs ``{m: (B, embed_dim)}`` of the modalities present in `batch`."""
        return {n: self.encoders[n](x) for n, x in batch.items()}

    def posterior(self, h: dict[str, torch.Tensor], mask: torch.Tensor,
                  detach: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Moments of ``q(z | x_S)``: mask (B, M) marks S per sample; returns mu, logvar (B, d)."""
        full = self._full_h(h, mask.shape[0])
        mu, raw = self.aggregator(full, mask, detach)
        bound = self.cfg.logvar_max
        return mu, bound - nn.functional.softplus(bound - raw)

    def _full_h(self, h: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
        """Fill absent modalities with zeros so the aggregator sees every name (masked out)."""
        ref = next(iter(h.values()))
        return {n: h[n] if n in h else ref.new_zeros(b, ref.shape[1]) for n in self.names}

    # ------------------------------------------------------------------ subsets
    def sample_subsets(self, b: int, generator: torch.Generator | None = None,
                       present: torch.Tensor | None = None) -> torch.Tensor:
        """Observed subsets S per sample, (B, M) bool, never empty.

        ``uniform``: uniform over the 2^M - 1 non-empty subsets. ``weighted``: a third
        singletons, a third leave-one-out sets, a third uniform. With `present` (B, M) (incomplete
        tuples), the same distributions over each sample's present modalities.
        """
        m = len(self.names)
        if present is None:
            codes = torch.randint(1, 2 ** m, (b,), generator=generator)
            mask = (codes[:, None] >> torch.arange(m)) & 1 == 1  # (B, M)
            have = torch.ones(b, m, dtype=torch.bool)
        else:
            have = present.cpu()
            k = have.sum(1)                                      # (B,) present modalities
            span = (2 ** k - 1).double()
            codes = (torch.rand(b, generator=generator, dtype=torch.float64) * span).long().clamp_max(
                span.long() - 1) + 1                             # uniform in [1, 2^k - 1]
            rank = (have.long().cumsum(1) - 1).clamp_min(0)      # position among the present
            mask = ((codes[:, None] >> rank) & 1 == 1) & have    # (B, M)
        if self.cfg.subset_sampler == "weighted":
            kind = torch.randint(0, 3, (b,), generator=generator)
            if present is None:
                pick = torch.randint(0, m, (b,), generator=generator)
            else:
                pick = torch.multinomial(have.float(), 1, generator=generator).squeeze(1)
            one = nn.functional.one_hot(pick, m).bool()
            loo = torch.where((have.sum(1) > 1)[:, None], have & ~one, one)
            mask = torch.where((kind == 0)[:, None], one, mask)
            mask = torch.where((kind == 1)[:, None], loo, mask)
        return mask if present is None else mask.to(present.device)

    def _prior_subsets(self, b: int, present: torch.Tensor | None = None) -> torch.Tensor:
        """Subsets whose latents train the prior (route 3), (B, M) bool; within `present`
        (incomplete tuples), a sample with one modality gives that one."""
        m = len(self.names)
        route = self.cfg.prior_route
        if present is None:
            if route == "full_set" or m == 1:
                return torch.ones(b, m, dtype=torch.bool)
            if route == "leave_one_out":
                return ~nn.functional.one_hot(torch.randint(0, m, (b,)), m).bool()
            return self.sample_subsets(b)  # all_subsets
        if route == "full_set" or m == 1:
            return present
        if route == "leave_one_out":
            drop = torch.multinomial(present.float(), 1).squeeze(1)
            loo = present & ~nn.functional.one_hot(drop, m).bool()
            return torch.where(loo.any(1, keepdim=True), loo, present)
        return self.sample_subsets(b, present=present)  # all_subsets

    # ------------------------------------------------------------------ objective
    def loss(self, batch: dict[str, torch.Tensor],
             present: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The routed objective for one minibatch.

        Draws the observed subsets S (within each sample's modalities, for incomplete tuples
        marked by `present`; see `muni.methods.base`), computes `routed_terms` and sums them
        with the kind weights. Returns ``{"loss": scalar, <term>: detached scalar, ...}``.
        """
        cfg = self.cfg
        have = presence(self.names, batch, present)              # (B, M) or None: complete
        b = next(iter(batch.values())).shape[0]
        terms = self.routed_terms(batch, self.sample_subsets(b, present=have), have)
        rate = terms.pop("rate_floored", terms["rate"])
        total = rate * self.rate_weight() + terms["prior"] * cfg.prior_weight
        for name in self.names:
            w = cfg.kind_weights.get(self.modalities[name].kind, 1.0)
            total = total + w * (terms[f"cross/{name}"] + terms[f"self/{name}"])
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = total
        return out

    def routed_terms(self, batch: dict[str, torch.Tensor], mask: torch.Tensor,
                     present: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Every term of the objective, unweighted and attached to the graph.

        Args:
            batch: the modalities, ``{m: (B, ...)}``.
            mask: observed subsets S, (B, M) bool (within `present`).
            present: (B, M) bool, which samples have which modality (None: all). Absent
                entries enter no term; a modality absent from the whole batch runs neither its
                encoder nor its decoder, so the loss is that of the batch without it.

        Returns:
            ``cross/<m>``: mean over the batch of ``L_m(x_m | z_S)`` where m is not in S;
            ``self/<m>``: the same where m is in S, from the route-2 latent;
            ``rate``: mean KL(q(z | x_S) || p) estimate; ``prior``: route-3 flow loss.
        """
        b = mask.shape[0]
        if present is not None:
            batch = {n: batch[n] for i, n in enumerate(self.names) if bool(present[:, i].any())}
        h = self.encode(batch)                                   # {m: (B, E)}

        # Route 1: one non-mixture posterior of the observed subset.
        mu, logvar = self.posterior(h, mask)                     # (B, d) each
        eps = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * eps                      # (B, d)

        terms: dict[str, torch.Tensor] = {}
        for i, name in enumerate(self.names):
            if name not in batch:                                # absent from every sample
                terms[f"cross/{name}"] = terms[f"self/{name}"] = z.new_zeros(())
                continue
            observed = mask[:, i]                                # (B,)
            z_self = self._self_recon_latent(h, mask, i, z, eps)  # Route 2
            z_cross = z if self.balance is None else self.balance(z, i)
            z_in = torch.where(observed[:, None], z_self, z_cross)  # (B, d)
            per = self.decoders[name].loss(batch[name], z_in, own=observed)  # (B,)
            if present is None:
                terms[f"cross/{name}"] = (per * ~observed).sum() / b
            else:                                                # absent targets enter no term
                per = torch.where(present[:, i], per, torch.zeros_like(per))
                terms[f"cross/{name}"] = (per * (present[:, i] & ~observed)).sum() / b
            terms[f"self/{name}"] = (per * observed).sum() / b

        # Rate (minimality): KL(q(z | x_S) || p); with free nats, the part below the floor is free.
        terms["rate"] = self._rate(z, mu, logvar).mean()
        if self.cfg.free_nats > 0:
            terms["rate_floored"] = self._floored_rate(terms["rate"], mu, logvar)
        # Route 3: the prior learns from broad (leave-one-out) latents only, conditioned on the
        # posterior of a random subset of that broad set (dropped with prob cond_drop).
        terms["prior"] = self._prior_loss(h, present)
        return terms

    def _self_recon_latent(self, h, mask, i: int, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The latent decoder i reconstructs its own observed modality from (route 2)."""
        mode = self.cfg.self_recon
        if mode == "attached" or self.modalities[self.names[i]].kind not in self.cfg.detach_kinds:
            return z
        if mode == "full_detach":
            cut = z.detach()
        else:
            detach = torch.zeros_like(mask)
            detach[:, i] = True                                  # stop-gradient on h_i only
            mu_t, logvar_t = self.posterior(h, mask, detach)
            cut = mu_t + (0.5 * logvar_t).exp() * eps
        share = self.attached_share()
        # The same value as `z`; the gradient is `share` of the attached one plus the rest cut.
        return cut if share == 0 else cut + share * (z - cut)

    def _floored_rate(self, rate: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Free bits (Kingma et al. 2016, Eq. 15): ``sum_j max(lambda, E_batch KL_j)`` over the d
        latent dimensions with ``lambda = free_nats / d``, so the encoders may carry up to
        `free_nats` nats (a factor worth a few nats is not priced out) before the rate pushes back.
        Against the flow prior (no per-dimension KL) the batch mean is floored as a whole."""
        if self.cfg.rate_target != "standard_normal":
            return rate.clamp_min(self.cfg.free_nats)
        per_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)   # (d,)
        return per_dim.clamp_min(self.cfg.free_nats / per_dim.shape[0]).sum()

    def _rate(self, z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Per-sample KL(q || p) estimate, (B,).

        ``standard_normal``: closed form against N(0, I). ``flow_prior``: ``-H[q] + CE`` where
        the cross-entropy ``-E_q log p_psi(z)`` is bounded, up to a constant, by the prior's
        flow-matching error under the ELBO weighting of the linear path (Kingma et al. 2021,
        Eq. 17; LSGM, Vahdat et al. 2021): with ``alpha_t = t, sigma_t = 1 - t`` the weight of
        ``||v - u||^2`` is ``-SNR'(t) (1 - t)^2 / 2 = t / (1 - t)``, truncated at t <= 0.95.
        Only the encoder receives this gradient: the prior's parameters are detached here, so
        the prior itself is trained by route 3 alone.
        """
        if self.cfg.rate_target == "standard_normal":
            return kl_normal(mu, logvar)
        d = z.shape[1]
        neg_entropy = -0.5 * (logvar + 1.0 + math.log(2 * math.pi)).sum(1)  # (B,)
        t = torch.rand(z.shape[0], device=z.device) * 0.95
        x0 = torch.randn_like(z)
        zt = self.path.location(x0, z, t)
        u = self.path.velocity(x0, z, t)
        net = self.prior.net
        params = {k: p.detach() for k, p in net.named_parameters()}
        null = self.prior.null_cond.detach().expand(z.shape[0], -1)  # unconditional branch
        v = functional_call(net, params, (zt, t, null))          # (B, d), no grad to the prior
        weight = t / (1.0 - t)                                   # (B,)
        ce = 0.5 * d * math.log(2 * math.pi) + 0.5 * weight * (v - u).pow(2).sum(1)
        return neg_entropy + ce

    def _prior_loss(self, h: dict[str, torch.Tensor], present: torch.Tensor | None = None) -> torch.Tensor:
        b = next(iter(h.values())).shape[0]
        broad = self._prior_subsets(b, present)                  # (B, M)
        if self.cfg.prior_detach:
            h = {n: x.detach() for n, x in h.items()}
        mu_b, logvar_b = self.posterior(h, broad)
        z_b = mu_b + (0.5 * logvar_b).exp() * torch.randn_like(mu_b)  # (B, d)
        # condition: posterior moments of a random non-empty subset of the broad set
        keep = broad & (torch.rand(broad.shape) < 0.5)
        empty = ~keep.any(1)
        first = torch.argmax(broad.float(), dim=1)               # some member of the broad set
        keep[empty, first[empty]] = True
        mu_c, logvar_c = self.posterior(h, keep)
        cond = torch.cat([mu_c, logvar_c], 1)                    # (B, 2d)
        per = self.prior.loss(z_b, cond=cond)                    # (B,)
        if present is None:
            return per.mean()
        # Incomplete tuples: the prior learns only from the samples with the most modalities in
        # the batch (or one fewer), whose broad latents are what a whole tuple's latent looks like.
        # Latents of modality-poor samples (a digit label alone) leave factors undecided; taught
        # to draw those, the prior drew views that disagree on the quadrant (docs/results/incomplete.md).
        k = present.sum(1)                                       # (B,)
        rich = k >= k.max() - 1
        return (per * rich).sum() / rich.sum()

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, given: dict[str, torch.Tensor], targets: list[str], n: int | None = None,
                 generator: torch.Generator | None = None, *, guidance: float | None = None,
                 prior_nfe: int | None = None, decoder_nfe: int | None = None,
                 temperature: float | None = None, prior_temperature: float | None = None,
                 conditional_sampler: str | None = None) -> dict[str, torch.Tensor]:
        """Any-to-any generation (see `muni.methods.base`).

        Empty `given`: ``z ~ p_psi(z)`` by ODE, every target decoded from the same z.
        Otherwise ``conditional_sampler`` ``posterior`` draws ``z ~ q(z | x_given)``;
        ``prior`` draws ``z`` from the prior conditioned on ``q(z | x_given)``'s moments with
        classifier-free guidance weight `guidance`.
        """
        cfg = self.cfg
        b = check_generate_args(self.modalities, given, targets, n)
        sampler = conditional_sampler or cfg.conditional_sampler
        if sampler not in ("prior", "posterior"):
            raise InputError(f"conditional_sampler must be 'prior' or 'posterior', got {sampler!r}")
        w = cfg.guidance if guidance is None else guidance
        nfe = prior_nfe or cfg.prior_nfe
        tau = cfg.prior_temperature if prior_temperature is None else prior_temperature
        device = next(self.parameters()).device
        if not given:
            z = self.prior.sample(b, cond=None, nfe=nfe, solver=cfg.prior_solver, generator=generator,
                                  temperature=tau)
        else:
            given = {k: v.to(device) for k, v in given.items()}
            h = self.encode(given)
            mask = torch.tensor([n in given for n in self.names], device=device).expand(b, -1)
            mu, logvar = self.posterior(h, mask)
            if sampler == "posterior":
                eps = torch.randn(mu.shape, generator=generator, device=device)
                z = mu + (0.5 * logvar).exp() * eps
            else:
                cond = torch.cat([mu, logvar], 1)
                z = self.prior.sample(b, cond=cond, guidance=w, nfe=nfe, solver=cfg.prior_solver,
                                      generator=generator, temperature=tau)
        temp = cfg.temperature if temperature is None else temperature
        return {t: self.decoders[t].sample(z, generator=generator, temperature=temp, nfe=decoder_nfe)
                for t in targets}

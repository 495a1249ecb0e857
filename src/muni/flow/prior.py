"""The shared latent prior ``p_psi(z)`` of MUNI: flow matching in latent space.

A velocity network ``v_psi(z_t, t, cond)`` is trained with the conditional flow-matching
loss on the linear path from ``N(0, I)`` (t = 0) to latents (t = 1) [1, 2]; samples are
drawn by integrating the ODE ``dz/dt = v_psi`` with `muni.flow.samplers.integrate`.

The optional condition (for MUNI: the pooled subset embedding) is trained with
classifier-free guidance [3]: each sample's condition is replaced by a learned null
vector with probability `cond_drop`, so one network is both the conditional and the
unconditional prior. At sampling, ``v = v_null + w (v_cond - v_null)``, Eq. (6) [3].

References
----------
[1] Lipman et al., "Flow Matching for Generative Modeling", ICLR 2023.
[2] Liu et al., "Flow Straight and Fast: Learning to Generate and Transfer Data with
    Rectified Flow", ICLR 2023.
[3] Ho & Salimans, "Classifier-Free Diffusion Guidance", NeurIPS 2021 workshop (2022).
"""

from __future__ import annotations

import torch
from torch import nn

from muni.flow.paths import LinearPath, flow_matching_loss
from muni.flow.samplers import integrate
from muni.flow.velocity import VelocityMLP


class FlowPrior(nn.Module):
    """Flow-matching prior over latent vectors, optionally conditional with CFG.

    Parameters
    ----------
    latent_dim : int
        Latent dimension d.
    cond_dim : int
        Width of the condition vector; 0 gives a purely unconditional prior.
    hidden, depth : int
        Width and number of residual blocks of the `VelocityMLP`.
    cond_drop : float
        Probability of replacing a given condition by the learned null vector in `loss`.
    """

    def __init__(self, latent_dim: int, cond_dim: int = 0, hidden: int = 256, depth: int = 4,
                 cond_drop: float = 0.3):
        super().__init__()
        if not 0.0 <= cond_drop <= 1.0:
            raise ValueError(f"cond_drop must lie in [0, 1], got {cond_drop}")
        self.latent_dim, self.cond_dim, self.cond_drop = latent_dim, cond_dim, cond_drop
        self.net = VelocityMLP(latent_dim, hidden=hidden, depth=depth, cond_dim=cond_dim)
        self.null_cond = nn.Parameter(torch.zeros(cond_dim)) if cond_dim > 0 else None
        self.path = LinearPath()

    def _cond_or_null(self, cond: torch.Tensor | None, batch: int) -> torch.Tensor | None:
        """The condition to feed the network: `cond`, the null vector when None, or None
        for an unconditional prior. Returns (B, cond_dim) or None."""
        if self.null_cond is None:
            if cond is not None:
                raise ValueError("this FlowPrior is unconditional (cond_dim=0) but a cond was given")
            return None
        if cond is None:
            return self.null_cond.expand(batch, self.cond_dim)
        if cond.shape != (batch, self.cond_dim):
            raise ValueError(f"cond must have shape ({batch}, {self.cond_dim}), got {tuple(cond.shape)}")
        return cond

    def velocity(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """``v_psi(z_t, t, cond)``: (B, d) from z_t (B, d), t (B,), cond (B, cond_dim) or None
        (None means the null condition when ``cond_dim > 0``)."""
        return self.net(z_t, t, self._cond_or_null(cond, z_t.shape[0]))

    def loss(self, z: torch.Tensor, cond: torch.Tensor | None = None, cond_keep: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-sample conditional flow-matching loss, Eq. (14) [1] on the path of Eq. (22) [1].

        Parameters
        ----------
        z : Tensor, shape (B, d)
            Latents (the data end of the path, t = 1).
        cond : Tensor, shape (B, cond_dim), optional
            Conditions; None trains the unconditional (null) branch only.
        cond_keep : Tensor, shape (B,), bool, optional
            Which samples keep their condition; None draws ``keep ~ Bernoulli(1 - cond_drop)``
            (classifier-free guidance training, Sec. 3.2 [3]).
        generator : torch.Generator, optional
            Source of the times, the noise and the condition drop.

        Returns
        -------
        Tensor, shape (B,)
            ``||v_psi(z_t, t, c) - (z - x0)||^2`` averaged over the latent dimensions.
        """
        b = z.shape[0]
        if cond is not None and self.null_cond is not None:
            if cond_keep is None:
                cond_keep = torch.rand(b, device=z.device, generator=generator) >= self.cond_drop
            elif cond_keep.shape != (b,) or cond_keep.dtype != torch.bool:
                raise ValueError(f"cond_keep must be a bool tensor of shape ({b},), got "
                                 f"{cond_keep.dtype} {tuple(cond_keep.shape)}")
            cond = torch.where(cond_keep[:, None], self._cond_or_null(cond, b), self.null_cond)  # (B, C)
        return flow_matching_loss(self.velocity, z, path=self.path, generator=generator, reduce=False, cond=cond)

    def guided_velocity(self, cond: torch.Tensor | None, guidance: float):
        """The velocity callable ``(z_t, t) -> v`` used for sampling.

        With a condition and ``guidance != 1`` the conditional and null branches are
        evaluated in one batch and combined as ``v_null + w (v_cond - v_null)``, Eq. (6) [3].
        """
        if cond is None or guidance == 1.0:
            return lambda z_t, t: self.velocity(z_t, t, cond)

        def fn(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            b = z_t.shape[0]
            both = torch.cat([self._cond_or_null(cond, b), self.null_cond.expand(b, self.cond_dim)])  # (2B, C)
            v_cond, v_null = self.net(torch.cat([z_t, z_t]), torch.cat([t, t]), both).chunk(2)  # 2 x (B, d)
            return v_null + guidance * (v_cond - v_null)
        return fn

    @torch.no_grad()
    def sample(self, n: int, cond: torch.Tensor | None = None, guidance: float = 1.0, nfe: int = 32,
               solver: str = "euler", generator: torch.Generator | None = None,
               temperature: float = 1.0) -> torch.Tensor:
        """Draw latents by solving the probability-flow ODE from t = 0 to t = 1.

        Parameters
        ----------
        n : int
            Number of samples.
        cond : Tensor, shape (n, cond_dim), optional
            Conditions; None samples the unconditional (null) prior.
        guidance : float
            Classifier-free guidance weight w (1 = plain conditional, no extra evaluation).
        nfe : int
            Velocity evaluations the solver may spend (per branch).
        solver : str
            One of `muni.flow.samplers.SOLVERS`.
        generator : torch.Generator, optional
            Source of the initial noise.
        temperature : float
            Scale of the initial noise, ``x0 = temperature * eps``.

        Returns
        -------
        Tensor, shape (n, d)
        """
        p = self.net.proj_in.weight
        x0 = temperature * torch.randn(n, self.latent_dim, device=p.device, dtype=p.dtype, generator=generator)
        if cond is not None:
            cond = self._cond_or_null(cond, n)  # validated (n, cond_dim)
        return integrate(self.guided_velocity(cond, guidance), x0, nfe, solver=solver)

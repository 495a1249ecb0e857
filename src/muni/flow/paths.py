"""Probability paths for flow matching.

Convention (as in torchcfm): ``t = 0`` is noise ``x0 ~ N(0, I)`` and ``t = 1`` is data ``x1``.
The linear (rectified-flow / optimal-transport) path of Lipman et al. 2023, Eq. (22) and
Liu et al. 2023:

    x_t = (1 - (1 - sigma_min) t) x0 + t x1,      u_t = x1 - (1 - sigma_min) x0.

A path is a small class, not an ``nn.Module``; it never owns the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearPath:
    """Linear conditional path between noise and data (sigma_min = 0 gives rectified flow)."""

    sigma_min: float = 0.0

    def sample_t(self, n: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform times in [0, 1): (n,)."""
        return torch.rand(n, device=device, generator=generator)

    def location(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t for times `t` of shape (B,) broadcast over the trailing dims of x0/x1."""
        t = _expand(t, x1)
        return (1.0 - (1.0 - self.sigma_min) * t) * x0 + t * x1

    def velocity(self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The conditional target velocity u_t(x | x0, x1) (independent of t for this path)."""
        return x1 - (1.0 - self.sigma_min) * x0

    def sample(self, x1: torch.Tensor, *, generator: torch.Generator | None = None):
        """Draw (t, x_t, u_t) for data `x1`: t (B,), x_t and u_t shaped like x1."""
        x0 = torch.randn(x1.shape, device=x1.device, dtype=x1.dtype, generator=generator)
        t = self.sample_t(x1.shape[0], device=x1.device, generator=generator).to(x1.dtype)
        return t, self.location(x0, x1, t), self.velocity(x0, x1, t)


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1)))


def flow_matching_loss(velocity_fn, x1: torch.Tensor, *, path: LinearPath = LinearPath(),
                       generator: torch.Generator | None = None, reduce: bool = True, **cond) -> torch.Tensor:
    """Conditional flow-matching loss ``E_t,x0 ||v(x_t, t, cond) - u_t||^2`` (Lipman et al. 2023, Eq. 14).

    Args:
        velocity_fn: callable ``(x_t, t, **cond) -> v`` with v shaped like x_t.
        x1: data, (B, ...).
        reduce: mean over the batch when True, else per-sample losses (B,) (mean over dims).
    """
    t, xt, ut = path.sample(x1, generator=generator)
    v = velocity_fn(xt, t, **cond)
    per = (v - ut).pow(2).flatten(1).mean(1)  # (B,)
    return per.mean() if reduce else per

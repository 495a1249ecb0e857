"""ODE samplers for flow models: pure functions over a velocity callable.

``velocity_fn(x, t) -> v`` with ``t`` a (B,) tensor. Integration runs from ``t = 0`` (noise)
to ``t = 1`` (data). ``nfe`` is the number of velocity evaluations the solver may spend.
"""

from __future__ import annotations

from typing import Callable

import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SOLVERS = ("euler", "heun")


@torch.no_grad()
def euler(velocity_fn: VelocityFn, x: torch.Tensor, nfe: int, t0: float = 0.0, t1: float = 1.0) -> torch.Tensor:
    """Explicit Euler with `nfe` uniform steps."""
    if nfe < 1:
        raise ValueError(f"nfe must be >= 1, got {nfe}")
    ts = torch.linspace(t0, t1, nfe + 1, device=x.device, dtype=x.dtype)
    for i in range(nfe):
        t = ts[i].expand(x.shape[0])
        x = x + (ts[i + 1] - ts[i]) * velocity_fn(x, t)
    return x


@torch.no_grad()
def heun(velocity_fn: VelocityFn, x: torch.Tensor, nfe: int, t0: float = 0.0, t1: float = 1.0) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Alg. 1 without noise): nfe // 2 steps,
    each two evaluations (at least one step)."""
    steps = max(1, nfe // 2)
    ts = torch.linspace(t0, t1, steps + 1, device=x.device, dtype=x.dtype)
    for i in range(steps):
        h = ts[i + 1] - ts[i]
        d1 = velocity_fn(x, ts[i].expand(x.shape[0]))
        x_pred = x + h * d1
        d2 = velocity_fn(x_pred, ts[i + 1].expand(x.shape[0]))
        x = x + h * 0.5 * (d1 + d2)
    return x


def integrate(velocity_fn: VelocityFn, x: torch.Tensor, nfe: int, solver: str = "euler") -> torch.Tensor:
    """Integrate from noise `x` at t = 0 to t = 1 with the named solver."""
    try:
        fn = {"euler": euler, "heun": heun}[solver]
    except KeyError:
        raise ValueError(f"unknown ODE solver {solver!r}; choose one of {SOLVERS}") from None
    return fn(velocity_fn, x, nfe)

"""Velocity networks for flow matching on latent vectors.

The network only maps ``(z_t, t, cond) -> v``; it knows nothing about paths, losses or
samplers (those live in `muni.flow.paths` and `muni.flow.samplers`).

References
----------
[1] Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (sinusoidal embedding).
[2] Peebles & Xie, "Scalable Diffusion Models with Transformers" (DiT), ICCV 2023
    (timestep embedder, adaLN-Zero conditioning, zero-initialised output layer).
[3] Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0,
                       scale: float = 1_000.0) -> torch.Tensor:
    """Sinusoidal embedding of scalar times, Sec. 3.5 [1] as used for timesteps in [2].

    Parameters
    ----------
    t : Tensor, shape (B,)
        Times; flow times lie in [0, 1] and are multiplied by `scale` first so that the
        fastest frequency resolves small time differences.
    dim : int
        Embedding width (an odd `dim` gets one zero pad column).
    max_period : float
        Slowest period of the sinusoids.
    scale : float
        Multiplier applied to `t` before embedding.

    Returns
    -------
    Tensor, shape (B, dim)
        ``[cos(s t w_i), sin(s t w_i)]`` with ``w_i = max_period^(-i / half)``.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # (B, 2 * half)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb.to(t.dtype if t.is_floating_point() else torch.float32)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """FiLM [3]: ``x * (1 + scale) + shift``."""
    return x * (1.0 + scale) + shift


class AdaLNBlock(nn.Module):
    """Residual MLP block with adaptive LayerNorm (adaLN-Zero, Sec. 3.2 [2]).

    ``x + gate(c) * MLP(LN(x) * (1 + scale(c)) + shift(c))``; the modulation is
    zero-initialised so each block starts as the identity.
    """

    def __init__(self, hidden: int, mlp_ratio: float = 2.0):
        super().__init__()
        inner = int(hidden * mlp_ratio)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden, inner), nn.SiLU(), nn.Linear(inner, hidden))
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 3 * hidden))
        nn.init.zeros_(self.modulation[-1].weight)
        nn.init.zeros_(self.modulation[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.modulation(c).chunk(3, dim=-1)  # 3 x (B, H)
        return x + gate * self.mlp(_modulate(self.norm(x), shift, scale))  # (B, H)


class VelocityMLP(nn.Module):
    """Velocity field ``v(z_t, t, cond)`` for latent vectors.

    Input projection, `depth` adaLN residual blocks conditioned on
    ``c = emb_t(t) [+ emb_c(cond)]``, and a modulated, zero-initialised output layer
    (so ``v = 0`` at initialisation, as in [2]).

    Parameters
    ----------
    dim : int
        Latent dimension d.
    hidden : int
        Width of the residual stream.
    depth : int
        Number of residual blocks.
    cond_dim : int
        Width of the optional condition vector; 0 makes the network unconditional.
    freq_dim : int
        Width of the sinusoidal time embedding fed to the time MLP.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 4, cond_dim: int = 0, freq_dim: int = 256):
        super().__init__()
        self.dim, self.cond_dim, self.freq_dim = dim, cond_dim, freq_dim
        self.time_embed = nn.Sequential(nn.Linear(freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.cond_embed = (nn.Sequential(nn.Linear(cond_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
                           if cond_dim > 0 else None)
        self.proj_in = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(AdaLNBlock(hidden) for _ in range(depth))
        self.norm_out = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation_out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.proj_out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.modulation_out[-1].weight)
        nn.init.zeros_(self.modulation_out[-1].bias)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity at ``(z_t, t)``.

        Parameters
        ----------
        z_t : Tensor, shape (B, d)
        t : Tensor, shape (B,)
        cond : Tensor, shape (B, cond_dim), required iff ``cond_dim > 0``

        Returns
        -------
        Tensor, shape (B, d)
        """
        if (cond is None) != (self.cond_embed is None):
            raise ValueError(f"VelocityMLP(cond_dim={self.cond_dim}) got cond="
                             f"{None if cond is None else tuple(cond.shape)}: pass a (B, {self.cond_dim}) "
                             "condition exactly when cond_dim > 0")
        c = self.time_embed(timestep_embedding(t, self.freq_dim).to(z_t.dtype))  # (B, H)
        if self.cond_embed is not None:
            c = c + self.cond_embed(cond)  # (B, H)
        x = self.proj_in(z_t)  # (B, H)
        for block in self.blocks:
            x = block(x, c)  # (B, H)
        shift, scale = self.modulation_out(c).chunk(2, dim=-1)  # 2 x (B, H)
        return self.proj_out(_modulate(self.norm_out(x), shift, scale))  # (B, d)

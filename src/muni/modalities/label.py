"""Codecs for categorical modalities (int64 class indices, (B,)).

- `LabelEncoder`: class embedding -> MLP -> ``(B, embed_dim)``.
- `LabelDecoder`: MLP(z) -> logits; a softmax distribution, already stochastic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from muni.modalities.base import Modality
from muni.modalities.interface import Decoder, Encoder
from muni.modalities.config import CodecConfig


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer SiLU MLP ``d_in -> hidden -> d_out``."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out))


def sample_categorical(logits: torch.Tensor, temperature: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw from ``softmax(logits / temperature)`` along the last dim; argmax when temperature is 0.

    Parameters
    ----------
    logits : Tensor
        (B, K) unnormalised log-probabilities.
    temperature : float
        >= 0; 0 gives the argmax.
    generator : torch.Generator, optional
        Randomness for `torch.multinomial`.

    Returns
    -------
    Tensor
        (B,) int64 indices.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = F.softmax(logits.float() / temperature, dim=-1)  # (B, K)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class LabelEncoder(Encoder):
    """``(B,) int64 -> (B, embed_dim)``: embedding of width ``mlp_width``, then an MLP."""

    def __init__(self, modality: Modality, cfg: CodecConfig) -> None:
        super().__init__(modality, cfg.embed_dim)
        self.embed = nn.Embedding(int(modality.num_classes), cfg.mlp_width)
        self.net = mlp(cfg.mlp_width, cfg.mlp_width, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.embed(x.long()))  # (B, mlp_width)
        return self.net(h)  # (B, embed_dim)


class LabelDecoder(Decoder):
    """Categorical ``p(y | z) = softmax(MLP(z))``; ``loss`` is the cross-entropy in nats, (B,)."""

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        self.net = mlp(latent_dim, cfg.mlp_width, int(modality.num_classes))

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """(B, K) class logits."""
        return self.net(z)

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        return F.cross_entropy(self.logits(z), x.long(), reduction="none")  # (B,)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        return sample_categorical(self.logits(z), temperature, generator)  # (B,)

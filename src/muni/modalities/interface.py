"""The encoder / decoder interface every modality codec implements (`muni.modalities.codecs` builds them).

An `Encoder` maps a batch in model format (see `muni.modalities.base`) to an embedding
``h_m`` of size ``cfg.embed_dim``. A `Decoder` is a conditional distribution ``p_m(x_m | z)``
over one modality given a latent ``z`` of size ``latent_dim``:

- ``loss(x, z) -> (B,)`` is a per-sample loss *summed* over the modality's dimensions, in nats
  for likelihood decoders (categorical cross-entropy; token cross-entropy summed over the
  non-pad targets, EOS included; the full Laplace/Gaussian NLL). Flow decoders return the
  conditional flow-matching loss summed over dimensions, which is an upper-bound surrogate
  of the NLL on the same scale, so terms of different modalities add up sensibly.
- ``sample(z, generator=, temperature=, nfe=)`` draws one sample per latent, in model format.

The codecs of each kind (`muni.modalities.image`, `muni.modalities.label`, `muni.modalities.text`) subclass these;
`muni.modalities.codecs` picks one per modality.
"""

from __future__ import annotations

import torch
from torch import nn

from muni.modalities.base import Modality

# Nominal range of continuous kinds in model format, and the range samples are clamped to.
DATA_RANGE: dict[str, tuple[float, float]] = {"image": (0.0, 1.0), "audio": (-1.0, 1.0)}
SAMPLE_CLAMP: dict[str, tuple[float, float]] = {"image": (0.0, 1.0), "audio": (-1.5, 1.5)}


def to_signed(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Map a continuous batch from its nominal range `DATA_RANGE[kind]` to [-1, 1]."""
    lo, hi = DATA_RANGE[kind]
    return (x - lo) * (2.0 / (hi - lo)) - 1.0


def from_signed(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Inverse of `to_signed`."""
    lo, hi = DATA_RANGE[kind]
    return (x + 1.0) * ((hi - lo) / 2.0) + lo


class Encoder(nn.Module):
    """``forward(x) -> (B, embed_dim)`` for a batch `x` of one modality in model format."""

    def __init__(self, modality: Modality, embed_dim: int) -> None:
        super().__init__()
        self.modality = modality
        self.embed_dim = embed_dim


class Decoder(nn.Module):
    """A conditional distribution ``p(x | z)`` over one modality.

    Subclasses implement `loss` and `sample`; mean-type decoders also `mean`.
    """

    def __init__(self, modality: Modality, latent_dim: int) -> None:
        super().__init__()
        self.modality = modality
        self.latent_dim = latent_dim

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample loss summed over dimensions (nats for likelihood decoders).

        Parameters
        ----------
        x : Tensor
            Targets in model format, (B, ...).
        z : Tensor
            Latents, (B, latent_dim).
        own : Tensor, optional
            (B,) bool: True where `x` was observed by the encoders that made `z` (a
            self-reconstruction), False where it was not (a cross-reconstruction). Only decoders
            with a private latent read it (`muni.modalities.image.PrivateDecoder`: posterior
            private latent where own, prior draw elsewhere); None means all own.

        Returns
        -------
        Tensor
            (B,) losses.
        """
        raise NotImplementedError

    def begin_step(self, step: int) -> None:
        """The training steps done so far, passed on by the method before each step's loss, for
        a decoder whose loss changes with training progress. No-op by default."""

    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        """Draw one sample per latent.

        Parameters
        ----------
        z : Tensor
            Latents, (B, latent_dim).
        generator : torch.Generator, optional
            Source of all randomness, for reproducible samples.
        temperature : float
            Softmax temperature of discrete decoders (0 = argmax); scale of the initial noise
            of flow decoders and of the private latent's prior draw (0 = deterministic);
            ignored by mean decoders.
        nfe : int, optional
            Velocity evaluations of flow decoders (default ``cfg.flow_nfe``); ignored otherwise.

        Returns
        -------
        Tensor
            (B, ...) samples in model format.
        """
        raise NotImplementedError



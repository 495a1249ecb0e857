"""Modality codecs: the encoder / decoder interface every method composes, and its factory.

An `Encoder` maps a batch in model format (see `muni.modalities.base`) to an embedding
``h_m`` of size ``cfg.embed_dim``. A `Decoder` is a conditional distribution ``p_m(x_m | z)``
over one modality given a latent ``z`` of size ``latent_dim``:

- ``loss(x, z) -> (B,)`` is a per-sample loss *summed* over the modality's dimensions, in nats
  for likelihood decoders (categorical cross-entropy; token cross-entropy summed over the
  non-pad targets, EOS included; the full Laplace/Gaussian NLL). Flow decoders return the
  conditional flow-matching loss summed over dimensions, which is an upper-bound surrogate
  of the NLL on the same scale, so terms of different modalities add up sensibly.
- ``sample(z, generator=, temperature=, nfe=)`` draws one sample per latent, in model format.

Which class serves which kind is written in the explicit tables of `build_encoder` and
`build_decoder`; MUNI and the VAE baselines (MVAE, MMVAE, MoPoE, HELVAE) only call these.
"""

from __future__ import annotations

import torch
from torch import nn

from muni.errors import ConfigError
from muni.modalities.base import Modality
from muni.nn.config import CodecConfig

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

    def loss(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-sample loss summed over dimensions (nats for likelihood decoders).

        Parameters
        ----------
        x : Tensor
            Targets in model format, (B, ...).
        z : Tensor
            Latents, (B, latent_dim).

        Returns
        -------
        Tensor
            (B,) losses.
        """
        raise NotImplementedError

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
            of flow decoders; ignored by mean decoders.
        nfe : int, optional
            Velocity evaluations of flow decoders (default ``cfg.flow_nfe``); ignored otherwise.

        Returns
        -------
        Tensor
            (B, ...) samples in model format.
        """
        raise NotImplementedError


def _check_spatial(modality: Modality) -> None:
    if len(modality.shape) != 3 or modality.shape[1] % 4 or modality.shape[2] % 4:
        raise ConfigError(f"modality {modality.name!r} ({modality.kind}) has shape {modality.shape}; "
                          f"the conv codecs need (C, H, W) with H and W divisible by 4")


def _check_text(modality: Modality) -> None:
    if len(modality.shape) != 1 or modality.shape[0] < 2:
        raise ConfigError(f"text modality {modality.name!r} has shape {modality.shape}; "
                          f"expected (L,) with L >= 2 (room for BOS and EOS)")


def _check_cfg(cfg: CodecConfig) -> None:
    for key, allowed in (("image_decoder", ("flow", "gaussian")), ("audio_decoder", ("flow", "gaussian")),
                         ("likelihood", ("laplace", "gaussian")), ("flow_solver", ("euler", "heun"))):
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"codec.{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    if cfg.image_likelihood not in (None, "laplace", "gaussian", "bernoulli"):
        raise ConfigError(f"codec.image_likelihood={cfg.image_likelihood!r} is not one of "
                          f"laplace, gaussian, bernoulli (or unset: the shared codec.likelihood)")
    if cfg.likelihood_scale <= 0:
        raise ConfigError(f"codec.likelihood_scale must be > 0, got {cfg.likelihood_scale}")


def build_encoder(modality: Modality, cfg: CodecConfig) -> Encoder:
    """The encoder of `modality`: conv net (image, audio), bi-GRU (text), MLP (categorical)."""
    # Imported here: the codec modules subclass `Encoder` / `Decoder` from this module.
    from muni.nn.image import ConvEncoder
    from muni.nn.label import LabelEncoder
    from muni.nn.sequence import TextEncoder

    _check_cfg(cfg)
    encoders = {"image": ConvEncoder, "audio": ConvEncoder, "text": TextEncoder, "categorical": LabelEncoder}
    if modality.kind in ("image", "audio"):
        _check_spatial(modality)
    return encoders[modality.kind](modality, cfg)


def build_decoder(modality: Modality, cfg: CodecConfig, latent_dim: int) -> Decoder:
    """The decoder of `modality` given latents of size `latent_dim`.

    Image and audio use ``cfg.image_decoder`` / ``cfg.audio_decoder`` ("flow" or "gaussian");
    text is autoregressive; categorical is a softmax.
    """
    from muni.nn.image import FlowDecoder, MeanDecoder
    from muni.nn.label import LabelDecoder
    from muni.nn.sequence import TextDecoder

    _check_cfg(cfg)
    continuous = {"flow": FlowDecoder, "gaussian": MeanDecoder}
    if modality.kind == "image":
        cls = continuous[cfg.image_decoder]
    elif modality.kind == "audio":
        cls = continuous[cfg.audio_decoder]
    else:
        cls = {"text": TextDecoder, "categorical": LabelDecoder}[modality.kind]
    if modality.kind in ("image", "audio"):
        _check_spatial(modality)
    elif modality.kind == "text":
        _check_text(modality)
    return cls(modality, cfg, latent_dim)

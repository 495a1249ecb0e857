"""Modality codecs: which encoder and decoder serve each modality kind.

The interface (`Encoder`, `Decoder`) lives in `muni.modalities.interface`; which class serves which
kind is written in the explicit tables of `build_encoder` and `build_decoder`. MUNI and the VAE
baselines (MVAE, MMVAE, MoPoE, HELVAE) only call these.
"""

from __future__ import annotations

from muni.errors import ConfigError
from muni.modalities.base import Modality
from muni.modalities.config import CodecConfig
from muni.modalities.image import (ConvEncoder, FlowDecoder, MeanDecoder, PrivateDecoder,
                                  ResidualFlowDecoder, ResidualPrivateDecoder)
from muni.modalities.interface import Decoder, Encoder
from muni.modalities.label import LabelDecoder, LabelEncoder
from muni.modalities.text import TextDecoder, TextEncoder


# Decoders of image and audio (``codec.image_decoder`` / ``codec.audio_decoder``).
CONTINUOUS = {"gaussian": MeanDecoder, "private": PrivateDecoder, "residual_flow": ResidualFlowDecoder,
              "residual_private": ResidualPrivateDecoder, "flow": FlowDecoder}
CONTINUOUS_DECODERS = tuple(CONTINUOUS)


def _check_spatial(modality: Modality) -> None:
    if len(modality.shape) != 3 or modality.shape[1] % 4 or modality.shape[2] % 4:
        raise ConfigError(f"modality {modality.name!r} ({modality.kind}) has shape {modality.shape}; "
                          f"the conv codecs need (C, H, W) with H and W divisible by 4")


def _check_text(modality: Modality) -> None:
    if len(modality.shape) != 1 or modality.shape[0] < 2:
        raise ConfigError(f"text modality {modality.name!r} has shape {modality.shape}; "
                          f"expected (L,) with L >= 2 (room for BOS and EOS)")


def _check_cfg(cfg: CodecConfig) -> None:
    for key, allowed in (("image_decoder", CONTINUOUS_DECODERS), ("audio_decoder", CONTINUOUS_DECODERS),
                         ("likelihood", ("laplace", "gaussian")), ("flow_solver", ("euler", "heun")),
                         ("private_likelihood", ("calibrated", "laplace"))):
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"codec.{key}={getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    if cfg.image_likelihood not in (None, "laplace", "gaussian", "bernoulli"):
        raise ConfigError(f"codec.image_likelihood={cfg.image_likelihood!r} is not one of "
                          f"laplace, gaussian, bernoulli (or unset: the shared codec.likelihood)")
    if cfg.likelihood_scale <= 0:
        raise ConfigError(f"codec.likelihood_scale must be > 0, got {cfg.likelihood_scale}")


def build_encoder(modality: Modality, cfg: CodecConfig) -> Encoder:
    """The encoder of `modality`: conv net (image, audio), bi-GRU (text), MLP (categorical)."""
    _check_cfg(cfg)
    encoders = {"image": ConvEncoder, "audio": ConvEncoder, "text": TextEncoder, "categorical": LabelEncoder}
    if modality.kind in ("image", "audio"):
        _check_spatial(modality)
    return encoders[modality.kind](modality, cfg)


def build_decoder(modality: Modality, cfg: CodecConfig, latent_dim: int) -> Decoder:
    """The decoder of `modality` given latents of size `latent_dim`.

    Image and audio use ``cfg.image_decoder`` / ``cfg.audio_decoder`` (a key of `CONTINUOUS`);
    text is autoregressive; categorical is a softmax.
    """
    _check_cfg(cfg)
    if modality.kind == "image":
        cls = CONTINUOUS[cfg.image_decoder]
    elif modality.kind == "audio":
        cls = CONTINUOUS[cfg.audio_decoder]
    else:
        cls = {"text": TextDecoder, "categorical": LabelDecoder}[modality.kind]
    if modality.kind in ("image", "audio"):
        _check_spatial(modality)
    elif modality.kind == "text":
        _check_text(modality)
    return cls(modality, cfg, latent_dim)

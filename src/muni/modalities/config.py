"""The one config for every modality codec (encoder + decoder) of a model.

Defaults are the *quick* sizes: small enough that a MUNI step over three 32x32 image views
and two labels runs at several steps per second on two CPU cores (a flow decoder costs about
four mean decoders). Paper presets raise the widths (e.g. width=32, flow_width=32..64,
text_width=128); nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from muni.config import check_ranges

DecoderKind = Literal["gaussian", "private", "residual_flow", "residual_private", "flow"]
Likelihood = Literal["laplace", "gaussian"]
ImageLikelihood = Literal["laplace", "gaussian", "bernoulli"]
Solver = Literal["euler", "heun"]
PrivateLikelihood = Literal["calibrated", "laplace"]
PrivatePrior = Literal["standard", "conditional"]
PrivateGrad = Literal["raw", "unit"]


@dataclass
class CodecConfig:
    """Backbone sizes and decoder choices shared by all modality codecs of one model.

    The fixed likelihood scale 0.75 (on the [0, 1] image scale, [-1, 1] for audio) is the
    Laplace scale of the MMVAE / MoPoE PolyMNIST code; with it a Laplace/Gaussian NLL sum
    and a flow-matching loss sum are of the same order (see `muni.modalities.image`).
    """

    embed_dim: int = 128  # encoder output size h_m
    width: int = 16  # base channels of conv encoders (width, 2w, 4w) and mean decoders (2w, w)
    mlp_width: int = 128  # hidden size of the label MLPs
    image_decoder: DecoderKind = "flow"  # "gaussian": mean decoder; "private": mean decoder with a private
    # latent (MMVAE+); "residual_flow": mean decoder plus a flow of its residual; "residual_private":
    # mean decoder plus a private-latent refiner (a conditional VAE over the mean); "flow": flow matching
    audio_decoder: DecoderKind = "flow"  # same choice for audio spectrograms
    likelihood: Likelihood = "laplace"  # likelihood of mean decoders, fixed scale below
    likelihood_scale: float = 0.75  # Laplace b / Gaussian sigma of mean decoders, in data units
    image_likelihood: ImageLikelihood | None = None  # images' own likelihood; None: `likelihood`.
    # "bernoulli" (cross-entropy on [0, 1] pixels, MVAE's MNIST choice) suits sparse strokes on
    # black, where a wide Laplace's per-pixel median is the black canvas (the Digits-ITA preset)
    flow_width: int = 16  # flow U-Net channels at H/2 (2 flow_width at H/4)
    flow_nfe: int = 16  # default ODE velocity evaluations when sampling a flow decoder
    flow_solver: Solver = "euler"  # ODE solver of flow decoders (see muni.flow.samplers)
    flow_fraction: float = 0.25  # share of the batch a residual flow's (or refiner's) loss is
    # estimated on (it trains that net only; see ResidualFlowDecoder, ResidualPrivateDecoder)
    text_width: int = 64  # token embedding and GRU hidden size of text codecs
    private_dim: int = 16  # size of the private latent w of "private" and "residual_private" decoders
    private_beta: float = 1.0  # weight of KL(q(w | x) || N(0, I)) in a "private" decoder's loss
    private_likelihood: PrivateLikelihood = "calibrated"  # the "residual_private" refiner's likelihood:
    # a Gaussian with the batch's MSE as variance, or the mean decoder's fixed-scale one ("laplace")
    private_prior: PrivatePrior = "standard"  # the refiner's prior of w: N(0, I), or "conditional":
    # a Gaussian p(w | z) from a small MLP of the (detached) shared latent (see ResidualPrivateDecoder)
    private_grad: PrivateGrad = "unit"  # the calibrated refiner's gradient scaled by its variance,
    # to a unit-variance Gaussian's size, so it does not take the global gradient clip; "raw": not
    private_start: int = 1000  # training steps before the refiner learns (MUNI passes the step on);
    # until then a "residual_private" decoder trains and decodes as its mean decoder, at its cost.
    # Both defaults since 2026-12-03: PolyMNIST-QL at 2 and 20 minutes, docs/results/decoders.md

    def __post_init__(self) -> None:
        check_ranges("model.codec.", self, [
            *[(n, getattr(self, n) >= 1, ">= 1") for n in ("embed_dim", "width", "mlp_width",
                                                           "flow_width", "flow_nfe", "text_width",
                                                           "private_dim")],
            ("private_beta", self.private_beta >= 0, ">= 0"),
            ("private_start", self.private_start >= 0, ">= 0"),
            ("flow_fraction", 0 < self.flow_fraction <= 1, "in (0, 1]"),
            ("likelihood_scale", self.likelihood_scale > 0, "> 0")])

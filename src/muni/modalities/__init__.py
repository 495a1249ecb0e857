"""Modalities: one module per kind, each holding that kind's preprocessing and codecs.

- `base`: the `Modality` spec (name, kind, shape, classes) and the batch contract;
- `image`: conv encoder, flow-matching and mean decoders (images; spectrograms reuse them);
- `audio`: log-mel spectrograms, their inversion to WAV (codecs: `image`'s, on spectrograms);
- `text`: vocabulary, tokenising, GRU encoder and autoregressive decoder;
- `label`: categorical encoder and softmax decoder;
- `interface` (the `Encoder` / `Decoder` every codec implements), `config` (`CodecConfig`),
  `codecs` (which codec serves which kind: `build_encoder`, `build_decoder`), `writers`
  (PNG sheets and WAV files).
"""

from muni.modalities.base import KINDS, PAD_ID, Modality, check_modality_names
from muni.modalities.codecs import build_decoder, build_encoder
from muni.modalities.config import CodecConfig
from muni.modalities.image import (ConvEncoder, FlowDecoder, MeanDecoder, PrivateDecoder, ResidualFlowDecoder,
                                  ResidualPrivateDecoder)
from muni.modalities.interface import Decoder, Encoder
from muni.modalities.label import LabelDecoder, LabelEncoder
from muni.modalities.text import BOS_ID, EOS_ID, TextDecoder, TextEncoder

__all__ = [
    "KINDS", "PAD_ID", "Modality", "check_modality_names", "BOS_ID", "EOS_ID", "CodecConfig",
    "ConvEncoder", "Decoder", "Encoder", "FlowDecoder", "LabelDecoder", "LabelEncoder", "MeanDecoder",
    "PrivateDecoder", "ResidualFlowDecoder", "ResidualPrivateDecoder",
    "TextDecoder", "TextEncoder", "build_decoder", "build_encoder",
]

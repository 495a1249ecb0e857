"""Modality networks ("codecs"): encoders ``x_m -> h_m`` and decoders ``p_m(x_m | z)``.

Methods build them with `build_encoder` / `build_decoder` from one `CodecConfig`.
"""

from muni.nn.codecs import build_decoder, build_encoder
from muni.nn.config import CodecConfig
from muni.nn.interface import Decoder, Encoder
from muni.nn.image import ConvEncoder, FlowDecoder, MeanDecoder
from muni.nn.label import LabelDecoder, LabelEncoder
from muni.nn.sequence import BOS_ID, EOS_ID, TextDecoder, TextEncoder

__all__ = [
    "BOS_ID", "EOS_ID", "CodecConfig", "ConvEncoder", "Decoder", "Encoder", "FlowDecoder",
    "LabelDecoder", "LabelEncoder", "MeanDecoder", "TextDecoder", "TextEncoder",
    "build_decoder", "build_encoder",
]

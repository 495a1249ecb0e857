"""The text modality: a small fixed word vocabulary, tokenising and decoding, and its codecs.

Token ids: ``PAD_ID`` = 0 pads after the end, then ``<bos>``, ``<eos>``, ``<unk>``, then the
words. A sequence of length L is ``<bos> w1 … wn <eos> <pad> …`` (n <= L - 2).

Codecs (int64 token ids (B, L); the vocabulary size is ``num_classes``):
- `TextEncoder`: token embedding -> one-layer bidirectional GRU over the unpadded tokens ->
  the two final hidden states -> linear -> ``(B, embed_dim)``.
- `TextDecoder`: autoregressive GRU ``p(w_{i+1} | w_{<=i}, z)``; ``z`` sets the initial hidden
  state and is concatenated to every step's input. Teacher forcing from BOS in training.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from muni.errors import InputError
from muni.modalities.base import PAD_ID, Modality
from muni.modalities.config import CodecConfig
from muni.modalities.interface import Decoder, Encoder
from muni.modalities.label import sample_categorical

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
BOS_ID, EOS_ID, UNK_ID = 1, 2, 3
assert SPECIALS[PAD_ID] == "<pad>"

_WORD = re.compile(r"[a-z]+|[0-9]|[:,.]")


def split_words(text: str) -> list[str]:
    """Lower-case words, single numerals and the punctuation ``: , .`` ("upper-left" -> upper, left)."""
    return _WORD.findall(text.lower())


def build_vocab(texts: Iterable[str]) -> list[str]:
    """Specials followed by every word of `texts`, sorted: a deterministic vocabulary."""
    words = sorted({w for t in texts for w in split_words(t)})
    return list(SPECIALS) + words


def encode(text: str, vocab: Sequence[str], length: int) -> np.ndarray:
    """Token ids of `text`, shape (length,) int64: BOS, words, EOS, PAD padding."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = [BOS_ID] + [index.get(w, UNK_ID) for w in split_words(text)] + [EOS_ID]
    if len(ids) > length:
        raise InputError(f"text {text!r} needs {len(ids)} tokens, more than the length {length}")
    return np.array(ids + [PAD_ID] * (length - len(ids)), np.int64)


def words_of(ids: Sequence[int], vocab: Sequence[str]) -> list[str]:
    """The words of one id sequence, up to the first EOS (BOS and PAD skipped)."""
    out = []
    for i in (int(t) for t in ids):
        if i == EOS_ID:
            break
        if i in (PAD_ID, BOS_ID):
            continue
        out.append(vocab[i] if 0 <= i < len(vocab) else "<unk>")
    return out


def decode(ids: Sequence[int], vocab: Sequence[str]) -> str:
    """Readable text of one id sequence: words joined by spaces, punctuation attached."""
    return re.sub(r" ([:,.])", r"\1", " ".join(words_of(ids, vocab)))


# ---------------------------------------------------------------------------- codecs
class TextEncoder(Encoder):
    """``(B, L) int64 -> (B, embed_dim)`` with a packed bidirectional GRU (pads are skipped)."""

    def __init__(self, modality: Modality, cfg: CodecConfig) -> None:
        super().__init__(modality, cfg.embed_dim)
        d = cfg.text_width
        self.embed = nn.Embedding(int(modality.num_classes), d, padding_idx=PAD_ID)
        self.gru = nn.GRU(d, d, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(2 * d, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x != PAD_ID).sum(1).clamp(min=1)  # (B,)
        e = self.embed(x.long())  # (B, L, d)
        packed = pack_padded_sequence(e, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)  # (2, B, d): last state of the forward and backward directions
        return self.proj(torch.cat([h[0], h[1]], dim=1))  # (B, embed_dim)


class TextDecoder(Decoder):
    """Autoregressive GRU decoder.

    ``loss`` is the token cross-entropy (nats) summed over the targets ``x[:, 1:]`` that are not
    PAD, so the EOS prediction counts and everything after it does not. ``sample`` starts from
    BOS and draws tokens from ``softmax(logits / temperature)`` (argmax at 0), never PAD or BOS;
    after EOS it writes PAD. A sequence that reaches the last position without EOS gets EOS
    there, so samples always have the stored layout ``[BOS, w.., EOS, PAD..]`` of length L.
    """

    def __init__(self, modality: Modality, cfg: CodecConfig, latent_dim: int) -> None:
        super().__init__(modality, latent_dim)
        d, vocab = cfg.text_width, int(modality.num_classes)
        self.length = modality.shape[0]
        self.embed = nn.Embedding(vocab, d, padding_idx=PAD_ID)
        self.z_init = nn.Linear(latent_dim, d)
        self.z_input = nn.Linear(latent_dim, d)
        self.gru = nn.GRU(2 * d, d, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def _step(self, tokens: torch.Tensor, z_in: torch.Tensor, h: torch.Tensor):
        """Run the GRU over `tokens` (B, T) with per-step latent input `z_in` (B, d)."""
        e = self.embed(tokens)  # (B, T, d)
        inp = torch.cat([e, z_in[:, None].expand(-1, e.shape[1], -1)], dim=2)  # (B, T, 2d)
        out, h = self.gru(inp, h)  # (B, T, d), (1, B, d)
        return self.head(out), h  # (B, T, V), (1, B, d)

    def loss(self, x: torch.Tensor, z: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        x = x.long()
        h0 = torch.tanh(self.z_init(z))[None]  # (1, B, d)
        logits, _ = self._step(x[:, :-1], self.z_input(z), h0)  # (B, L-1, V)
        target = x[:, 1:]  # (B, L-1)
        ce = F.cross_entropy(logits.transpose(1, 2), target, reduction="none")  # (B, L-1)
        return (ce * (target != PAD_ID)).sum(1)  # (B,)

    @torch.no_grad()
    def sample(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
               temperature: float = 1.0, nfe: int | None = None) -> torch.Tensor:
        b = z.shape[0]
        out = torch.full((b, self.length), PAD_ID, dtype=torch.long, device=z.device)  # (B, L)
        out[:, 0] = BOS_ID
        done = torch.zeros(b, dtype=torch.bool, device=z.device)  # (B,)
        h = torch.tanh(self.z_init(z))[None]  # (1, B, d)
        z_in = self.z_input(z)  # (B, d)
        for i in range(1, self.length):
            logits, h = self._step(out[:, i - 1:i], z_in, h)  # (B, 1, V)
            logits = logits[:, 0].float()  # (B, V)
            logits[:, [PAD_ID, BOS_ID]] = float("-inf")
            if i == self.length - 1:
                tok = torch.full_like(done, EOS_ID, dtype=torch.long)
            else:
                tok = sample_categorical(logits, temperature, generator)  # (B,)
            out[:, i] = torch.where(done, PAD_ID, tok)
            done = done | (tok == EOS_ID)
            if bool(done.all()):
                break
        return out

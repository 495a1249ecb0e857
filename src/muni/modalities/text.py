"""Text modality helpers: a small fixed word vocabulary, tokenising and decoding.

Token ids: ``PAD_ID`` = 0 pads after the end, then ``<bos>``, ``<eos>``, ``<unk>``, then the
words. A sequence of length L is ``<bos> w1 … wn <eos> <pad> …`` (n <= L - 2).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

from muni.errors import InputError
from muni.modalities.base import PAD_ID

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

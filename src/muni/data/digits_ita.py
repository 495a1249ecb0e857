"""Digits-ITA: image, text and audio of one digit class (and, for image and text, a quadrant).

A tuple draws a digit class c and a quadrant q (all 40 pairs equally often):
- ``image`` (1, 28, 28): an MNIST digit of class c scaled to 14x14 in quadrant q of a black canvas;
- ``text`` (L,): a caption naming c and q from one of `TEMPLATES`, the digit written as a word
  or a numeral and the position in one of two wordings; `parse_caption` recovers (c, q);
- ``audio`` (1, 32, 64): an FSDD recording of c by a random speaker (train takes for train,
  test takes for test) as a normalised log-mel spectrogram (`muni.modalities.audio`).

Quadrants as in `muni.data.polymnist_quadrant`: 0 upper-left, 1 upper-right, 2 lower-left,
3 lower-right. Factors: ``digit``, ``quadrant``, ``writer`` (MNIST index), ``template``,
``speaker`` (index into the sorted FSDD speakers), ``recording`` (index into the split's
sorted FSDD file list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from muni.data.cache import SplitArrays
from muni.data.polymnist_quadrant import balanced_content, place_in_quadrant, resize_digits, split_rng
from muni.data.sources import load_fsdd, load_mnist
from muni.modalities import audio as audio_lib
from muni.modalities import text as text_lib
from muni.modalities.base import Modality

RECIPE_VERSION = 1
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Two wordings per quadrant; the parser reads the vertical and the horizontal word.
POSITIONS = (("upper left", "top left"), ("upper right", "top right"),
             ("lower left", "bottom left"), ("lower right", "bottom right"))
_VERTICAL = {"upper": 0, "top": 0, "lower": 1, "bottom": 1}
_HORIZONTAL = {"left": 0, "right": 1}
# {d}: the digit (word or numeral), {p}: the position. At most 10 words, so L = 12 fits.
TEMPLATES = (
    "a handwritten {d} in the {p} corner",
    "{p}: the number {d}",
    "the digit {d}, {p}",
    "{d} written in the {p}",
    "there is a {d} in the {p} quadrant",
    "{p} quadrant shows a {d}",
    "an image of the number {d} at the {p}",
    "digit {d} in the {p}",
    "a {d} drawn at the {p}",
    "the {p} holds a handwritten {d}",
    "{d} at {p}",
    "number {d}, {p} corner",
    "a {d} sits in the {p}",
    "{p} corner: {d}",
    "someone wrote {d} in the {p}",
    "the handwritten digit {d} appears at the {p}",
    "a {d} placed in the {p} of the image",
    "in the {p} there is a {d}",
)
TEXT_LENGTH = 12

PRESETS: dict[str, dict] = {
    "quick": dict(n_train=20_000, n_test=2_000),
    "paper": dict(n_train=100_000, n_test=10_000),
}


@dataclass(frozen=True)
class Config:
    """Recipe of Digits-ITA (defaults = the quick preset)."""

    n_train: int = 20_000
    n_test: int = 2_000
    canvas: int = 28
    digit_size: int = 14
    mnist_source: str = "idx"


def caption(template: int, digit: int, quadrant: int, numeral: bool, wording: int) -> str:
    """The caption text of one template, digit form (word/numeral) and position wording (0/1)."""
    d = str(digit) if numeral else DIGIT_WORDS[digit]
    return TEMPLATES[template].format(d=d, p=POSITIONS[quadrant][wording])


def all_captions() -> list[str]:
    return [caption(t, d, q, num, w) for t in range(len(TEMPLATES)) for d in range(10)
            for q in range(4) for num in (False, True) for w in (0, 1)]


VOCAB: list[str] = text_lib.build_vocab(all_captions())


def parse_caption(tokens: Sequence[int], vocab: Sequence[str] = VOCAB) -> tuple[int, int] | None:
    """(digit, quadrant) named by a token sequence, or None when it names not exactly one of each."""
    words = text_lib.words_of(tokens, vocab)
    digits = [DIGIT_WORDS.index(w) if w in DIGIT_WORDS else int(w) for w in words
              if w in DIGIT_WORDS or (len(w) == 1 and w.isdigit())]
    vert = [_VERTICAL[w] for w in words if w in _VERTICAL]
    horiz = [_HORIZONTAL[w] for w in words if w in _HORIZONTAL]
    if len(digits) != 1 or len(vert) != 1 or len(horiz) != 1:
        return None
    return digits[0], 2 * vert[0] + horiz[0]


def modalities(cfg: Config) -> dict[str, Modality]:
    p = audio_lib.AUDIO_PARAMS
    return {
        "image": Modality("image", "image", (1, cfg.canvas, cfg.canvas)),
        "text": Modality("text", "text", (TEXT_LENGTH,), len(VOCAB),
                         {"vocab": VOCAB, "bos_id": text_lib.BOS_ID, "eos_id": text_lib.EOS_ID}),
        "audio": Modality("audio", "audio", (1, p["n_mels"], p["frames"]), params=dict(p)),
    }


def build(cfg: Config, split: str, seed: int, data_dir=None) -> tuple[SplitArrays, dict[str, str]]:
    """Build one split. Returns its arrays and the checksums of the sources used."""
    images, labels, mnist_sum = load_mnist(split, data_dir, cfg.mnist_source)
    fsdd = load_fsdd(split, data_dir)
    n = cfg.n_train if split == "train" else cfg.n_test
    rng = split_rng("digits-ita", seed, split)
    digit, quadrant = balanced_content(rng, n)

    writer = np.empty(n, np.int64)
    recording = np.empty(n, np.int64)
    for c in range(10):
        rows = np.flatnonzero(digit == c)
        writer[rows] = rng.choice(np.flatnonzero(labels == c), rows.size)
        recording[rows] = rng.choice(np.flatnonzero(fsdd.digits == c), rows.size)
    template = rng.integers(0, len(TEMPLATES), n)
    numeral = rng.integers(0, 2, n).astype(bool)
    wording = rng.integers(0, 2, n)

    canvas = place_in_quadrant(resize_digits(images[writer], cfg.digit_size), quadrant, cfg.canvas)
    encoded: dict[str, np.ndarray] = {}
    text = np.empty((n, TEXT_LENGTH), np.int64)
    for i in range(n):
        s = caption(int(template[i]), int(digit[i]), int(quadrant[i]), bool(numeral[i]), int(wording[i]))
        if s not in encoded:
            encoded[s] = text_lib.encode(s, VOCAB, TEXT_LENGTH)
        text[i] = encoded[s]
    used, which = np.unique(recording, return_inverse=True)           # spectrograms of used takes only
    waves = audio_lib.fix_length([fsdd.waves[r] for r in used], audio_lib.num_samples(audio_lib.AUDIO_PARAMS))
    mels = audio_lib.log_mel(waves, audio_lib.AUDIO_PARAMS).numpy()       # (U, 1, n_mels, frames)

    storage = {"image": np.rint(canvas[:, None] * 255.0).astype(np.uint8), "text": text,
               "audio": mels[which.reshape(-1)]}
    factors = {"digit": digit, "quadrant": quadrant, "writer": writer, "template": template,
               "speaker": fsdd.speakers[recording], "recording": recording}
    return SplitArrays(storage, factors), {f"mnist_{split}": mnist_sum, f"fsdd_{split}": fsdd.checksum}

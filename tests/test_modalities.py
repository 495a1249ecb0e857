"""Modality helpers: text vocabulary, log-mel audio and its inversion, batch writers, sheets."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io.wavfile
import torch
from PIL import Image

from muni.data.sources import load_fsdd
from muni.errors import InputError
from muni.modalities import Modality, PAD_ID
from muni.modalities import audio as audio_lib
from muni.modalities import text as text_lib
from muni.modalities.writers import sample_sheet, write_batch

P = audio_lib.AUDIO_PARAMS


def test_text_encode_decode():
    vocab = text_lib.build_vocab(["top left: the number 7", "a seven, upper-left"])
    ids = text_lib.encode("Top left: the number 7", vocab, 10)
    assert ids.shape == (10,) and ids[0] == text_lib.BOS_ID and ids[-1] == PAD_ID
    assert text_lib.EOS_ID in ids.tolist()
    assert text_lib.decode(ids, vocab) == "top left: the number 7"
    assert text_lib.split_words("upper-left") == ["upper", "left"]
    assert text_lib.decode(text_lib.encode("a zebra", vocab, 5), vocab) == "a <unk>"
    with pytest.raises(InputError):
        text_lib.encode("a seven upper left a seven upper left", vocab, 6)


def test_mel_filterbank():
    fb = audio_lib.mel_filterbank(P)
    assert fb.shape == (P["n_mels"], P["n_fft"] // 2 + 1)
    assert (fb.sum(1) > 0).all() and fb.min() >= 0 and fb.max() <= 1
    centres = fb.argmax(1)
    assert (np.diff(centres) >= 0).all()


def _speech(n=4) -> torch.Tensor:
    fsdd = load_fsdd("test")
    return audio_lib.log_mel(audio_lib.fix_length(fsdd.waves[:n], audio_lib.num_samples(P)))


def test_log_mel_shape_and_range():
    spec = _speech()
    assert spec.shape == (4, 1, P["n_mels"], P["frames"]) and spec.dtype == torch.float32
    assert spec.min() >= -1.0 and -1.5 < spec.max() < 1.5
    silence = audio_lib.log_mel(np.zeros((1, audio_lib.num_samples(P)), np.float32))
    assert torch.allclose(silence, torch.full_like(silence, -1.0))


def test_audio_round_trip_to_wav(tmp_path):
    spec = _speech()
    m = Modality("audio", "audio", tuple(spec.shape[1:]), params=dict(P))
    paths = write_batch(m, spec, tmp_path, "a")
    wavs = [p for p in paths if p.suffix == ".wav"]
    assert len(wavs) == 4 and any(p.suffix == ".png" for p in paths)
    for i, p in enumerate(wavs):
        rate, x = scipy.io.wavfile.read(p)
        assert rate == 8000 and x.dtype == np.int16 and len(x) == audio_lib.num_samples(P)
        again = audio_lib.log_mel((x / 32767.0)[None].astype(np.float32))
        assert (again - spec[i:i + 1]).abs().mean() < 0.1   # Griffin-Lim keeps the spectrogram


def test_write_batch_image_categorical_text(tmp_path):
    img = Modality("view", "image", (3, 8, 8))
    [png] = write_batch(img, torch.rand(5, 3, 8, 8), tmp_path, "v")
    assert Image.open(png).size[0] >= 3 * 64
    cat = Modality("quadrant", "categorical", (), 4, {"class_names": ["ul", "ur", "ll", "lr"]})
    [txt] = write_batch(cat, torch.tensor([3, 0]), tmp_path, "q")
    assert txt.read_text() == "0\t3\tlr\n1\t0\tul\n"
    vocab = text_lib.build_vocab(["a seven"])
    tm = Modality("text", "text", (4,), len(vocab), {"vocab": vocab})
    [txt] = write_batch(tm, torch.from_numpy(np.stack([text_lib.encode("a seven", vocab, 4)])), tmp_path, "t")
    assert txt.read_text() == "a seven\n"


def test_sample_sheet_any_modalities(tmp_path):
    vocab = text_lib.build_vocab(["a seven"])
    mods = {"rgb": Modality("rgb", "image", (3, 16, 16)), "gray": Modality("gray", "image", (1, 28, 28)),
            "label": Modality("label", "categorical", (), 10),
            "text": Modality("text", "text", (4,), len(vocab), {"vocab": vocab}),
            "audio": Modality("audio", "audio", (1, 32, 64), params=dict(P))}
    batch = {"rgb": torch.rand(3, 3, 16, 16), "gray": torch.rand(3, 1, 28, 28),
             "label": torch.tensor([1, 2, 3]),
             "text": torch.from_numpy(np.stack([text_lib.encode("a seven", vocab, 4)] * 3)),
             "audio": torch.rand(3, 1, 32, 64) * 2 - 1}
    path = sample_sheet(batch, mods, tmp_path / "sheet.png", captions=["x", "y", "z"])
    w, h = Image.open(path).size
    assert w > h / 2 and h > 200

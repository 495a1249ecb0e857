"""Audio modality: fixed-size normalised log-mel spectrograms and their inversion to waves.

Forward: wave (8 kHz) -> trimmed/padded to ``(frames - 1) * hop_length`` samples -> power STFT
(Hann window, centred) -> mel filterbank (HTK scale, triangular) -> ``log10(mel + log_eps)``
-> ``2 * (log - log_lo) / (log_hi - log_lo) - 1`` (roughly [-1, 1]; silence is -1).
Inverse: undo the normalisation, mel -> linear power with the filterbank's pseudo-inverse,
then Griffin-Lim phase recovery with `torch.stft` / `torch.istft`.

Codecs: a spectrogram is a one-channel image, so `muni.modalities.codecs` serves audio with the
conv encoder and the flow / mean decoders of `muni.modalities.image`.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch

AUDIO_PARAMS: dict[str, Any] = {
    "sample_rate": 8000, "n_fft": 256, "hop_length": 128, "n_mels": 32, "frames": 64,
    "fmin": 0.0, "fmax": 4000.0, "log_eps": 1e-5, "log_lo": -5.0, "log_hi": 2.0,
}


def read_wav(data: bytes) -> tuple[int, np.ndarray]:
    """Decode a WAV file's bytes: ``(sample rate, float32 samples in [-1, 1])``, channels last.

    Integer PCM is scaled to [-1, 1]: 8-bit WAVs are unsigned around 128 (``(x - 128) / 128``);
    16/32-bit (and 24-bit, which scipy left-aligns in int32) are signed (``x / max``, the
    scaling every dataset build has used). Float samples pass through.

    Raises
    ------
    ValueError
        A file that is not a WAV, is cut short (header or data), or holds non-finite samples.
    """
    import struct
    import warnings

    import scipy.io.wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", scipy.io.wavfile.WavFileWarning)  # e.g. data cut short
            rate, x = scipy.io.wavfile.read(io.BytesIO(data))
    except (ValueError, struct.error, EOFError, scipy.io.wavfile.WavFileWarning) as e:
        raise ValueError(f"not a readable WAV file ({e})") from None
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.signedinteger):
        x = x / float(np.iinfo(x.dtype).max)
    elif not np.issubdtype(x.dtype, np.floating) or not np.isfinite(x).all():
        raise ValueError("WAV samples must be finite numbers")
    return int(rate), x.astype(np.float32)


def num_samples(params: dict[str, Any]) -> int:
    """Wave length that gives exactly ``frames`` centred STFT frames."""
    return (params["frames"] - 1) * params["hop_length"]


def mel_filterbank(params: dict[str, Any]) -> np.ndarray:
    """Triangular HTK-mel filterbank, shape (n_mels, n_fft // 2 + 1), float32."""
    sr, n_fft, n_mels = params["sample_rate"], params["n_fft"], params["n_mels"]
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(params["fmin"]), mel(params["fmax"]), n_mels + 2))
    freqs = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


def fix_length(waves: list[np.ndarray], length: int) -> np.ndarray:
    """Keep the first `length` samples of each wave, zero-pad shorter ones: (B, length) float32."""
    out = np.zeros((len(waves), length), np.float32)
    for i, w in enumerate(waves):
        out[i, : min(length, len(w))] = w[:length]
    return out


def log_mel(waves: np.ndarray | torch.Tensor, params: dict[str, Any] = AUDIO_PARAMS) -> torch.Tensor:
    """Normalised log-mel spectrograms.

    Parameters
    ----------
    waves : (B, T) float in [-1, 1], T = `num_samples(params)`.

    Returns
    -------
    (B, 1, n_mels, frames) float32, roughly in [-1, 1].
    """
    x = torch.as_tensor(waves, dtype=torch.float32)
    window = torch.hann_window(params["n_fft"])
    spec = torch.stft(x, params["n_fft"], params["hop_length"], window=window,
                      center=True, return_complex=True).abs().pow(2)        # (B, F, frames)
    mel = torch.from_numpy(mel_filterbank(params)) @ spec                   # (B, n_mels, frames)
    log = torch.log10(mel + params["log_eps"])
    lo, hi = params["log_lo"], params["log_hi"]
    return (2.0 * (log - lo) / (hi - lo) - 1.0).unsqueeze(1)


def mel_to_wave(spec: torch.Tensor, params: dict[str, Any] = AUDIO_PARAMS, n_iter: int = 32,
                seed: int = 0) -> torch.Tensor:
    """Invert normalised log-mel spectrograms to waves by Griffin-Lim.

    Parameters
    ----------
    spec : (B, 1, n_mels, frames) in model format.
    n_iter : Griffin-Lim iterations.
    seed : seed of the initial random phase (the result is deterministic).

    Returns
    -------
    (B, T) float32 waves in [-1, 1] at ``params["sample_rate"]``, T = `num_samples(params)`.
    """
    n_fft, hop = params["n_fft"], params["hop_length"]
    lo, hi = params["log_lo"], params["log_hi"]
    log = (spec.detach().float().cpu()[:, 0] + 1.0) / 2.0 * (hi - lo) + lo
    mel = (10.0 ** log - params["log_eps"]).clamp_min(0.0)
    inv = torch.from_numpy(np.linalg.pinv(mel_filterbank(params)))
    mag = (inv @ mel).clamp_min(0.0).sqrt()                                  # (B, F, frames)
    window = torch.hann_window(n_fft)
    g = torch.Generator().manual_seed(seed)
    phase = torch.exp(2j * np.pi * torch.rand(mag.shape, generator=g))
    length = num_samples(params)
    for _ in range(n_iter):
        wave = torch.istft(mag * phase, n_fft, hop, window=window, center=True, length=length)
        est = torch.stft(wave, n_fft, hop, window=window, center=True, return_complex=True)
        phase = est / est.abs().clamp_min(1e-8)
    wave = torch.istft(mag * phase, n_fft, hop, window=window, center=True, length=length)
    return wave.clamp(-1.0, 1.0)

"""Write batches of any modality to files a person opens, and side-by-side sample sheets.

`write_batch` per kind:
    image        ``<stem>.png``: a grid of the batch
    categorical  ``<stem>.txt``: one line per sample, ``index<TAB>class id<TAB>class name``
    text         ``<stem>.txt``: one decoded caption per line
    audio        ``<stem>_000.wav``, … (Griffin-Lim inversion, 16-bit, ``params["sample_rate"]``)
                 and ``<stem>.png``: a grid of the spectrograms
`sample_sheet` draws every modality of the same samples in one PNG, one row per sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io.wavfile
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from muni.modalities import audio as audio_lib
from muni.modalities import text as text_lib
from muni.errors import InputError
from muni.modalities.base import Modality

_CELL_WIDTH = {"image": 1.4, "audio": 2.4, "text": 3.2, "categorical": 1.4}


def image_grid(x: torch.Tensor, ncol: int | None = None, pad: int = 2, min_cell: int = 64) -> np.ndarray:
    """Tile images (B, C, H, W) in [0, 1] (C = 1 or 3) into one (H', W', 3) uint8 array.

    Small images are enlarged by an integer factor (nearest) so a cell is >= `min_cell` pixels.
    """
    x = x.detach().float().cpu().clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    b, _, h, w = x.shape
    scale = max(1, math.ceil(min_cell / max(h, w)))
    if scale > 1:
        x = x.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
        h, w = h * scale, w * scale
    ncol = ncol or math.ceil(math.sqrt(b))
    nrow = math.ceil(b / ncol)
    grid = np.full((nrow * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
    pix = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(b):
        r, c = divmod(i, ncol)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = pix[i]
    return grid


def spectrogram_images(spec: torch.Tensor) -> torch.Tensor:
    """Colour pictures of normalised log-mel spectrograms: (B, 1, M, T) -> (B, 3, M, T), low at the bottom."""
    v = ((spec.detach().float().cpu()[:, 0] + 1.0) / 2.0).clamp(0, 1).flip(1).numpy()
    rgb = colormaps["magma"](v)[..., :3]                                  # (B, M, T, 3)
    return torch.from_numpy(rgb).permute(0, 3, 1, 2).float()


def decode_text(modality: Modality, tokens: torch.Tensor) -> list[str]:
    """Readable captions of a text batch (B, L); raw ids when the modality carries no vocabulary."""
    vocab = modality.params.get("vocab")
    if vocab is None:
        return [" ".join(str(int(t)) for t in row) for row in tokens]
    return [text_lib.decode(row.tolist(), vocab) for row in tokens]


def class_names(modality: Modality, labels: torch.Tensor) -> list[str]:
    names = modality.params.get("class_names")
    return [names[int(i)] if names else str(int(i)) for i in labels]


def output_path(out_dir: str | Path, name: str) -> Path:
    """``out_dir / name`` for a plain file name, refusing anything that would land elsewhere
    (a separator, ``..``, an absolute path: names may come from a checkpoint's metadata)."""
    out_dir = Path(out_dir)
    path = out_dir / name
    if Path(name).name != name or name in ("", ".", "..") or path.resolve().parent != out_dir.resolve():
        raise InputError(f"refusing to write {name!r}: not a file name inside {out_dir}")
    return path


def write_batch(modality: Modality, batch: torch.Tensor, out_dir: str | Path, stem: str) -> list[Path]:
    """Write one modality's batch (model format) under `out_dir`; returns the files written.

    Every file lands directly in `out_dir` (`output_path` refuses a `stem` that is a path).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if modality.kind == "image":
        path = output_path(out_dir, f"{stem}.png")
        Image.fromarray(image_grid(batch)).save(path)
        return [path]
    if modality.kind == "categorical":
        path = output_path(out_dir, f"{stem}.txt")
        names = class_names(modality, batch)
        path.write_text("".join(f"{i}\t{int(c)}\t{n}\n" for i, (c, n) in enumerate(zip(batch, names))))
        return [path]
    if modality.kind == "text":
        path = output_path(out_dir, f"{stem}.txt")
        path.write_text("".join(s + "\n" for s in decode_text(modality, batch)))
        return [path]
    # audio
    params = {**audio_lib.AUDIO_PARAMS, **modality.params}
    waves = (audio_lib.mel_to_wave(batch, params).numpy() * 32767).round().astype(np.int16)
    paths = []
    for i, w in enumerate(waves):
        paths.append(output_path(out_dir, f"{stem}_{i:03d}.wav"))
        scipy.io.wavfile.write(paths[-1], int(params["sample_rate"]), w)
    png = output_path(out_dir, f"{stem}.png")
    Image.fromarray(image_grid(spectrogram_images(batch), min_cell=128)).save(png)
    return paths + [png]


def sample_sheet(batches: dict[str, torch.Tensor], modalities: dict[str, Modality], path: str | Path,
                 captions: Sequence[str] | None = None) -> Path:
    """One PNG with every modality of the same samples side by side.

    Parameters
    ----------
    batches : {name: (B, ...)} in model format; every modality of `modalities` present is drawn.
    modalities : the declarations (decide how each column is drawn).
    path : the PNG to write.
    captions : optional label per row (e.g. "given: digit"), printed left of the row.
    """
    names = [n for n in modalities if n in batches]
    rows = next(iter(batches[n] for n in names)).shape[0]
    widths = [_CELL_WIDTH[modalities[n].kind] for n in names]
    fig = Figure(figsize=(sum(widths) + (1.5 if captions else 0.2), 1.3 * rows + 0.4))
    axes = fig.subplots(rows, len(names), squeeze=False, gridspec_kw={"width_ratios": widths})
    for j, name in enumerate(names):
        m, x = modalities[name], batches[name]
        axes[0, j].set_title(name, fontsize=9)
        if m.kind == "image":
            cells = list(x.detach().float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy())
        elif m.kind == "audio":
            cells = list(spectrogram_images(x).permute(0, 2, 3, 1).numpy())
        elif m.kind == "text":
            cells = decode_text(m, x)
        else:
            cells = class_names(m, x)
        for i, cell in enumerate(cells):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if isinstance(cell, str):
                ax.text(0.5, 0.5, cell, ha="center", va="center", wrap=True, fontsize=8,
                        transform=ax.transAxes)
                for side in ax.spines.values():
                    side.set_visible(False)
            else:
                ax.imshow(cell.squeeze(-1) if cell.shape[-1] == 1 else cell, cmap="gray",
                          vmin=0, vmax=1, aspect="auto" if m.kind == "audio" else "equal",
                          interpolation="nearest")
    if captions:
        for i, c in enumerate(captions):
            axes[i, 0].set_ylabel(c, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path

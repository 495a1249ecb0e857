"""Optional TensorBoard logging of a training run (``muni train --tensorboard``).

Beside ``log.csv`` (always written), `TensorBoard` mirrors every logged row as scalars and every
sample sheet the run draws as an image (``samples/<sheet>``), and plays the unconditional audio
samples (``audio/<modality>``, Griffin-Lim inverted, as in the WAVs). Events go to
``<run>/tensorboard``; ``tensorboard --logdir runs/`` shows every run. Needs the optional extra
``pip install 'muni[tensorboard]'``; asking for it without the package is one clear error.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from muni.errors import MuniError


class TensorBoard:
    """A TensorBoard event writer for one run (rank 0 only)."""

    def __init__(self, log_dir: str | Path):
        self.require()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir))

    @staticmethod
    def require() -> None:
        """Raise one `MuniError` when the tensorboard package is missing."""
        try:
            importlib.import_module("torch.utils.tensorboard")
        except ImportError:
            raise MuniError("--tensorboard needs the tensorboard package: pip install 'muni[tensorboard]'") from None

    def scalars(self, row: dict[str, float]) -> None:
        """One row of ``log.csv``: every entry but ``step`` as a scalar at that step."""
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and np.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def sheets(self, folder: Path, step: int) -> None:
        """Every PNG sheet and WAV sample in `folder` (one sampling of the run) at `step`."""
        import scipy.io.wavfile
        from PIL import Image

        for png in sorted(folder.glob("*.png")):
            with Image.open(png) as im:
                self.writer.add_image(f"samples/{png.stem}", np.asarray(im.convert("RGB")), step,
                                      dataformats="HWC")
        for wav in sorted(folder.glob("*.wav")):
            rate, x = scipy.io.wavfile.read(wav)
            x = x.astype(np.float32) / 32768.0 if x.dtype == np.int16 else x.astype(np.float32)
            self.writer.add_audio(f"audio/{wav.stem}", x[None], step, sample_rate=int(rate))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

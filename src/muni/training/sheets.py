"""Sample sheets drawn during and after training (`muni.run.run_training`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger("muni.training")


class SampleSheets:
    """Sample sheets a person opens: unconditional, and conditional on each single modality.

    Rows of a conditional sheet show the given test sample's modalities beside the generated
    ones; the conditions are the first `n` test samples, so sheets of different runs match.
    Sheets are an output, not the run: one that cannot be written (disk full, permissions) is
    a logged warning and training goes on. Audio modalities of the unconditional samples are
    also written as WAVs; `tensorboard` (a `muni.training.tensorboard.TensorBoard`) receives
    every sheet and sound. On incomplete test data a sheet given ``m`` conditions on the first
    test samples that have ``m``.
    """

    def __init__(self, test_set, n: int = 8, seed: int = 0, tensorboard=None):
        self.test_set, self.n, self.seed, self.tensorboard = test_set, n, seed, tensorboard

    def __call__(self, model, step: int, out_dir, name: str | None = None) -> None:
        folder = Path(out_dir) / "samples" / (name or f"step-{step:07d}")
        try:
            self._draw(model, folder)
            if self.tensorboard is not None:
                self.tensorboard.sheets(folder, step)
        except OSError as e:
            log.warning("could not write the sample sheets in %s: %s; training goes on", folder,
                        e.strerror or e)

    def _draw(self, model, folder: Path) -> None:
        from muni.modalities.writers import sample_sheet, write_batch

        folder.mkdir(parents=True, exist_ok=True)
        names = list(model.modalities)
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            gen = model.generate({}, names, n=self.n, generator=g)
            sample_sheet(gen, model.modalities, folder / "unconditional.png")
            for name, m in model.modalities.items():
                if m.kind == "audio":
                    for path in write_batch(m, gen[name][:2], folder, f"unconditional-{name}"):
                        if path.suffix == ".png":
                            path.unlink()  # the sheet shows the spectrograms already
            for given in names:
                have = self.test_set.present.get(given)
                rows = torch.arange(len(self.test_set)) if have is None else have.nonzero().flatten()
                if not len(rows):
                    continue
                x = self.test_set.batch(rows[:self.n], [given])[given]
                targets = [m for m in names if m != given]
                out = model.generate({given: x}, targets, generator=g)
                sample_sheet({given: x, **out}, model.modalities, folder / f"given-{given}.png",
                             captions=[f"given {given}"] * len(x))

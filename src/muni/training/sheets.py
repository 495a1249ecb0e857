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
    a logged warning and training goes on.
    """

    def __init__(self, test_set, n: int = 8, seed: int = 0):
        self.test_set, self.n, self.seed = test_set, n, seed

    def __call__(self, model, step: int, out_dir, name: str | None = None) -> None:
        folder = Path(out_dir) / "samples" / (name or f"step-{step:07d}")
        try:
            self._draw(model, folder)
        except OSError as e:
            log.warning("could not write the sample sheets in %s: %s; training goes on", folder,
                        e.strerror or e)

    def _draw(self, model, folder: Path) -> None:
        from muni.modalities.writers import sample_sheet

        folder.mkdir(parents=True, exist_ok=True)
        names = list(model.modalities)
        g = torch.Generator().manual_seed(self.seed)
        with torch.no_grad():
            gen = model.generate({}, names, n=self.n, generator=g)
            sample_sheet(gen, model.modalities, folder / "unconditional.png")
            real = self.test_set.batch(torch.arange(self.n))
            for given in names:
                targets = [m for m in names if m != given]
                out = model.generate({given: real[given]}, targets, generator=g)
                sample_sheet({given: real[given], **out}, model.modalities, folder / f"given-{given}.png",
                             captions=[f"given {given}"] * self.n)

"""The training log: ``out_dir/log.csv``, one row per logging window, written by rank 0."""

from __future__ import annotations

import csv
import os
from pathlib import Path


class CsvLog:
    """Append-only CSV of training metrics, safe to resume.

    Columns are fixed by the first row (``step``, ``time_s``, ``samples_per_s``, ``lr``, then
    every loss term and ``grad_norm``). A run writes a row every ``log_every`` steps and a
    partial-window row when it stops. On resume from step ``k`` the rows after ``k``, the
    partial-window rows of earlier stops (step not a multiple of ``log_every``; the resumed run
    carries their window on) and a half-written last line left by a killed process are dropped,
    so the log of a resumed run reads exactly like that of an uninterrupted one.

    Parameters
    ----------
    path : path
        The CSV file.
    resume_step : int or None
        None starts a fresh log (an existing file is replaced); an int keeps rows up to it.
    log_every : int
        The logging interval, to recognise partial-window rows on resume.
    """

    def __init__(self, path: str | os.PathLike, resume_step: int | None = None,
                 log_every: int = 1) -> None:
        self.path = Path(path)
        self.columns: list[str] | None = None
        if resume_step is None or not self.path.exists():
            self.path.write_text("")
            return
        text = self.path.read_text()
        complete = text[:text.rfind("\n") + 1]  # drop a half-written last line
        lines = complete.splitlines()
        self.columns = next(csv.reader(lines[:1]), None)
        kept = [r for r in csv.DictReader(lines)
                if int(r["step"]) <= resume_step and int(r["step"]) % log_every == 0]
        with open(self.path, "w", newline="") as f:
            if self.columns:
                w = csv.DictWriter(f, self.columns)
                w.writeheader()
                w.writerows(kept)

    def write(self, row: dict[str, float | int]) -> None:
        """Append one row (a header first if the file is empty); flushed immediately."""
        with open(self.path, "a", newline="") as f:
            if self.columns is None:
                self.columns = list(row)
                csv.DictWriter(f, self.columns).writeheader()
            csv.DictWriter(f, self.columns, restval="", extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) and k in ("time_s", "samples_per_s")
                     else v) for k, v in row.items()})


def read_log(path: str | os.PathLike) -> list[dict[str, float]]:
    """The rows of a ``log.csv`` as floats (``step`` as int)."""
    with open(path, newline="") as f:
        return [{k: (int(v) if k == "step" else float(v) if v != "" else float("nan"))
                 for k, v in r.items()} for r in csv.DictReader(f)]


def format_terms(terms: dict[str, float]) -> dict[str, str]:
    """Loss terms as short strings for the progress bar."""
    return {k: f"{v:.4g}" for k, v in terms.items()}

"""Where muni reads raw data and writes caches.

- Raw data: ``--data-dir`` if given, else ``$MUNI_DATA_DIR``, else ``~/.local/share/muni/data``
  (downloads land there on machines with internet).
- Caches (built datasets, evaluation classifiers): ``$MUNI_CACHE_DIR``, else ``~/.cache/muni``.
  The data directory may be read-only; caches never go there.
"""

from __future__ import annotations

import os
from pathlib import Path

from muni.errors import InputError

DATA_ENV = "MUNI_DATA_DIR"
CACHE_ENV = "MUNI_CACHE_DIR"


def data_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "share" / "muni" / "data"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "muni"


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> None:
    """Raise `InputError` when `path` cannot become a writable directory; creates nothing.

    Commands call it before loading data or models, so a typo'd or read-only output path is
    reported in a second, not after the expensive part.
    """
    folder = Path(path)
    if folder.exists():
        if not folder.is_dir():
            raise InputError(f"{flag} {str(folder)!r}: exists and is not a directory")
        existing = folder
    else:
        existing = folder.absolute().parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise InputError(f"{flag} {str(folder)!r}: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{flag} {str(folder)!r}: {str(existing)!r} is not writable")

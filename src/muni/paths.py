"""Where muni reads raw data and writes caches.

- Raw data: ``--data-dir`` if given, else ``$MUNI_DATA_DIR``, else ``~/.local/share/muni/data``
  (downloads land there on machines with internet).
- Caches (built datasets, evaluation classifiers): ``$MUNI_CACHE_DIR``, else ``~/.cache/muni``.
  The data directory may be read-only; caches never go there.
"""

from __future__ import annotations

import os
from pathlib import Path

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

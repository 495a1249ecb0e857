"""On-disk cache of built datasets.

Layout: ``cache_dir()/datasets/<name>-<preset>-seed<seed>-<recipehash>/`` holding one
``<split>.npz`` per split (arrays ``storage/<modality>``, ``factors/<factor>`` and, where some
samples lack a modality, ``present/<modality>``) and
``manifest.json`` (recipe, seed, counts, SHA-256 of every split file, source checksums).

A cache entry is built in a temporary sibling directory and moved into place with one
`os.replace`, so a failed build (missing data, interrupt) never leaves a half-written entry.
On load the manifest's recipe and the split file's SHA-256 are checked; a stale or corrupted
entry is logged and rebuilt. A cache directory that cannot be written is one `MuniError` line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from muni.data.sources import sha256_file
from muni.errors import MuniError
from muni.paths import cache_dir

log = logging.getLogger("muni.data")


@dataclass
class SplitArrays:
    """One built split: ``storage`` {modality: (N, ...)}, ``factors`` {factor: (N,) int64} and,
    for incomplete tuples, ``present`` {modality: (N,) bool} (`muni.data.base`)."""

    storage: dict[str, np.ndarray]
    factors: dict[str, np.ndarray]
    present: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.storage.values())).shape[0]


# build() -> ({split: arrays}, {source: checksum})
Builder = Callable[[], tuple[dict[str, SplitArrays], dict[str, str]]]


def recipe_hash(recipe: dict[str, Any]) -> str:
    """Short SHA-256 of the canonical JSON of a recipe."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def entry_dir(name: str, preset: str, seed: int, recipe: dict[str, Any]) -> Path:
    return cache_dir() / "datasets" / f"{name}-{preset}-seed{seed}-{recipe_hash(recipe)}"


def save_split(arrays: SplitArrays, path: Path) -> None:
    flat = {f"storage/{k}": v for k, v in arrays.storage.items()}
    flat.update({f"factors/{k}": v for k, v in arrays.factors.items()})
    flat.update({f"present/{k}": v for k, v in arrays.present.items()})
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_split(path: Path) -> SplitArrays:
    out = SplitArrays({}, {})
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            group, name = key.split("/", 1)
            getattr(out, group)[name] = z[key]
    return out


def _problem(entry: Path, recipe: dict[str, Any], split: str) -> str | None:
    """Why `entry` cannot serve `split` (None when it can)."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        return "missing or unreadable manifest"
    if manifest.get("recipe") != recipe:
        return "stale recipe"
    expected = manifest.get("files", {}).get(split)
    path = entry / f"{split}.npz"
    if not expected or not path.exists() or sha256_file(path) != expected:
        return f"{split}.npz fails its checksum"
    return None


def _write_entry(entry: Path, recipe: dict[str, Any], seed: int, build: Builder) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        splits, sources = build()
        files, counts = {}, {}
        for split, arrays in splits.items():
            save_split(arrays, tmp / f"{split}.npz")
            files[split] = sha256_file(tmp / f"{split}.npz")
            counts[split] = len(arrays)
        manifest = {"recipe": recipe, "seed": seed, "counts": counts, "files": files,
                    "sources": sources}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(tmp, entry)
        except OSError:  # a concurrent process finished the same entry first
            if _problem(entry, recipe, next(iter(files))) is not None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_or_build(name: str, preset: str, seed: int, recipe: dict[str, Any], split: str,
                  build: Builder) -> tuple[SplitArrays, dict[str, Any], Path]:
    """The cached `split` of a dataset, building (all splits) first when needed.

    Returns
    -------
    arrays : the split's storage and factors.
    manifest : the entry's manifest.json.
    entry : the cache directory.
    """
    entry = entry_dir(name, preset, seed, recipe)
    problem = _problem(entry, recipe, split) if entry.exists() else "not built"
    if problem is not None:
        if problem != "not built":
            log.warning("dataset cache %s: %s; rebuilding", entry, problem)
        try:
            _write_entry(entry, recipe, seed, build)
        except OSError as e:
            raise MuniError(f"dataset cache {entry}: cannot build it ({e.strerror or e}"
                            f"{': ' + str(e.filename) if e.filename else ''}); MUNI_CACHE_DIR must "
                            f"be a writable directory") from None
        problem = _problem(entry, recipe, split)
        if problem is not None:
            raise RuntimeError(f"dataset cache {entry}: {problem} right after building")
    manifest = json.loads((entry / "manifest.json").read_text())
    return load_split(entry / f"{split}.npz"), manifest, entry

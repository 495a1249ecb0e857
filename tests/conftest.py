"""Shared fixtures: real data from the shared data directory, caches in a session tmp dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# CI sets MUNI_DATA_DIR; locally default to the shared data directory beside the repository.
os.environ.setdefault("MUNI_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
os.environ["MUNI_OFFLINE"] = "1"  # tests never touch the network

# The suite runs as two pytest-xdist workers on two cores: one torch thread each, otherwise
# the workers' thread pools oversubscribe the cores and small models run many times slower.
import torch  # noqa: E402

torch.set_num_threads(1)

TINY = {"n_train": 200, "n_test": 100}


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """Every cache of this session lives in one temporary directory."""
    path = tmp_path_factory.mktemp("muni-cache")
    old = os.environ.get("MUNI_CACHE_DIR")
    os.environ["MUNI_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("MUNI_CACHE_DIR", None)
    else:
        os.environ["MUNI_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return Path(os.environ["MUNI_DATA_DIR"])


def _tiny(name: str) -> dict:
    from muni.data import load_dataset

    return {s: load_dataset(name, s, seed=0, **TINY) for s in ("train", "test")}


@pytest.fixture(scope="session")
def tiny_polymnist(cache_dir):
    """Tiny PolyMNIST-Quadrant build (200 train / 100 test tuples): {split: dataset}."""
    return _tiny("polymnist-quadrant")


@pytest.fixture(scope="session")
def tiny_ita(cache_dir):
    """Tiny Digits-ITA build (200 train / 100 test tuples): {split: dataset}."""
    return _tiny("digits-ita")

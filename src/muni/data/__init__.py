"""Datasets: raw sources (MNIST, FSDD, backgrounds), the two benchmarks and imported datasets.

``load_dataset("polymnist-quadrant", "train", preset="quick", seed=0)`` returns a cached,
checksummed `MultimodalDataset`, built on first use from the raw data in the data directory.
Builder parameters can be overridden, e.g. ``n_train=200, n_test=100`` for tiny test builds.
A dataset imported with ``muni data import SPEC --name NAME`` (`muni.data.userdata`) loads by
its name the same way; it was built once from its spec, so it ignores the preset and the seed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch

from muni.data import digits_ita, polymnist_quadrant, userdata
from muni.data.base import MultimodalDataset
from muni.data.cache import SplitArrays, load_or_build, recipe_hash
from muni.data.sources import SPLITS
from muni.errors import ConfigError, InputError, MuniError
from muni.modalities.base import Modality

PRESETS: tuple[str, ...] = ("quick", "paper")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered benchmark: its recipe dataclass, presets, modalities and builder."""

    name: str
    description: str
    config: type
    presets: dict[str, dict[str, Any]]
    modalities: Callable[[Any], dict[str, Modality]]
    build: Callable[..., tuple[SplitArrays, dict[str, str]]]
    version: int

    def make_config(self, preset: str, **overrides: Any):
        if preset not in self.presets:
            raise InputError(f"unknown preset {preset!r} for {self.name}; choose one of "
                             f"{', '.join(self.presets)}")
        fields = {f.name for f in dataclasses.fields(self.config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for dataset {self.name}; "
                              f"known: {', '.join(sorted(fields))}")
        return self.config(**{**self.presets[preset], **overrides})


DATASETS: dict[str, DatasetSpec] = {
    "polymnist-quadrant": DatasetSpec(
        "polymnist-quadrant", "K RGB MNIST views sharing digit and quadrant, plus digit and quadrant labels",
        polymnist_quadrant.Config, polymnist_quadrant.PRESETS, polymnist_quadrant.modalities,
        polymnist_quadrant.build, polymnist_quadrant.RECIPE_VERSION),
    "digits-ita": DatasetSpec(
        "digits-ita", "image (MNIST digit in a quadrant), caption text and spoken-digit audio",
        digits_ita.Config, digits_ita.PRESETS, digits_ita.modalities,
        digits_ita.build, digits_ita.RECIPE_VERSION),
}


def is_imported(name: str) -> bool:
    """Whether `name` is a dataset imported into the cache (not a built-in)."""
    return (name not in DATASETS and isinstance(name, str) and bool(userdata.DATASET_NAME.fullmatch(name))
            and (userdata.imported_root() / name / "manifest.json").is_file())


def check_dataset(name: str) -> str:
    """`name` when it is a built-in or an imported dataset, else one `MuniError` listing both."""
    if name in DATASETS or is_imported(name):
        return name
    imported = userdata.imported_names()
    raise MuniError(f"unknown dataset {name!r}; the built-in datasets are {', '.join(DATASETS)}; "
                    + (f"imported: {', '.join(imported)}" if imported else
                       "none is imported (muni data import SPEC --name NAME)"))


def get_spec(name: str) -> DatasetSpec:
    """The recipe of a built-in dataset."""
    if name not in DATASETS:
        check_dataset(name)
        raise MuniError(f"dataset {name!r} was imported from a spec; it has no built-in recipe")
    return DATASETS[name]


def _no_overrides(name: str, overrides: dict[str, Any]) -> None:
    if overrides:
        raise ConfigError(f"dataset {name} was imported from a spec and takes no builder parameters "
                          f"({', '.join(sorted(overrides))}); change the spec and import it again")


def dataset_modalities(name: str, preset: str = "quick", **overrides: Any) -> dict[str, Modality]:
    """The modalities of a dataset, without building it."""
    if is_imported(name):
        _no_overrides(name, overrides)
        return userdata.imported_modalities(name)
    spec = get_spec(name)
    return spec.modalities(spec.make_config(preset, **overrides))


def load_dataset(name: str, split: str = "train", preset: str = "quick", seed: int = 0,
                 data_dir: str | os.PathLike | None = None, **overrides: Any) -> MultimodalDataset:
    """One split of a benchmark, from the cache or built (all splits) and cached first.

    Parameters
    ----------
    name : a key of `DATASETS`, or the name of an imported dataset.
    split : "train" or "test".
    preset : a key of the dataset's presets ("quick", "paper").
    seed : same seed -> byte-identical arrays.
    data_dir : raw data directory (default ``$MUNI_DATA_DIR``).
    **overrides : fields of the dataset's ``Config`` (e.g. ``n_train=200``).
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if is_imported(name):
        _no_overrides(name, overrides)
        return userdata.load_imported(name, split)
    spec = get_spec(name)
    cfg = spec.make_config(preset, **overrides)
    recipe = {"dataset": name, "version": spec.version, "seed": seed, "config": dataclasses.asdict(cfg)}

    def build():
        built = {s: spec.build(cfg, s, seed, data_dir) for s in SPLITS}
        sources = {k: v for _, srcs in built.values() for k, v in srcs.items()}
        return {s: arrays for s, (arrays, _) in built.items()}, sources

    arrays, manifest, entry = load_or_build(name, preset, seed, recipe, split, build)
    return MultimodalDataset(
        name=name, split=split, modalities=spec.modalities(cfg),
        storage={k: torch.from_numpy(v) for k, v in arrays.storage.items()},
        factors={k: torch.from_numpy(v) for k, v in arrays.factors.items()},
        present={k: torch.from_numpy(v) for k, v in arrays.present.items()},
        info={"preset": preset, "seed": seed, "recipe_version": spec.version,
              "recipe_hash": recipe_hash(recipe), "config": recipe["config"],
              "checksum": manifest["files"][split], "sources": manifest["sources"],
              "cache": str(entry)})


__all__ = ["DATASETS", "PRESETS", "DatasetSpec", "MultimodalDataset", "check_dataset", "dataset_modalities",
           "get_spec", "is_imported", "load_dataset"]

"""`muni data export`: a built dataset as files that `muni data import` reads back unchanged.

Layout of the export folder::

    spec.toml              the dataset spec (`muni.data.userdata`)
    tuples.csv             id, split, one column per text and label modality and per factor
    <image>/<id>.png       one lossless PNG per sample and image modality (L or RGB)
    <audio>/<id>.wav       the recording each sample's spectrogram was computed from
    <text>.vocab.txt       the text modality's vocabulary in id order, so token ids match

Ids are ``<split>-<index>`` with a fixed width, so the importer's id order is the dataset's
order. Factors become ``integer = true`` labels, a label modality's factor is the modality
itself, and an absent modality is an absent file or an empty cell: importing ``spec.toml``
gives byte-identical ``storage``, ``factors`` and ``present``.

A log-mel spectrogram cannot be turned back into its wave exactly, so audio is exported from
the recordings it was built from, found through `WAVE_SOURCES` (Digits-ITA: its ``recording``
factor indexes the split's sorted FSDD files, read by the same `read_wav` -> `fix_length` ->
`log_mel` as the builder). A dataset with audio and no entry there is refused.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from muni.data.base import MultimodalDataset
from muni.data.sources import load_fsdd
from muni.data.tables import ID_PATTERN
from muni.errors import InputError, MuniError
from muni.modalities import text as text_lib
from muni.paths import data_dir as default_data_dir

# The factors the benchmarks' evaluation classifiers read (`muni.evaluation.classifiers`); the
# other factors (writer, template, speaker, ...) are exported as labels with evaluate = false.
CONTENT_FACTORS: dict[str, tuple[str, ...]] = {"polymnist-quadrant": ("digit", "quadrant"),
                                               "digits-ita": ("digit", "quadrant")}


def _fsdd_recordings(split: str, ds: MultimodalDataset, data_dir) -> dict[str, list[Path]]:
    """Digits-ITA: ``{"audio": the FSDD file of each sample}`` (`recording` indexes the split's files)."""
    directory = default_data_dir(data_dir) / "fsdd" / "recordings"
    names = load_fsdd(split, data_dir).names
    return {"audio": [directory / names[r] for r in ds.factors["recording"].tolist()]}


# dataset -> (split, dataset, data_dir) -> {audio modality: source WAV per sample}
WAVE_SOURCES: dict[str, Callable[..., dict[str, list[Path]]]] = {"digits-ita": _fsdd_recordings}


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    return "[" + ", ".join(_toml(x) for x in v) + "]"


def _section(title: str, items: dict) -> str:
    return f"\n[{title}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in items.items())


def export_dataset(splits: dict[str, MultimodalDataset], out: str | os.PathLike, *, data_dir=None) -> Path:
    """Write `splits` (``{"train": ds, "test": ds}`` of one dataset) to the folder `out`."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"export folder {str(out)!r} exists and is not empty")
    first = next(iter(splits.values()))
    name, modalities = first.name, first.modalities
    audio = [m for m in modalities.values() if m.kind == "audio"]
    if audio and name not in WAVE_SOURCES:
        raise InputError(f"cannot export the audio of {name!r}: a spectrogram cannot be turned back into its "
                         f"recording exactly, and no source recordings are known for this dataset")
    try:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.absolute().parent, prefix=f".{out.name}."))
    except OSError as e:
        raise MuniError(f"export folder {str(out)!r}: cannot create it ({e.strerror or e})") from None
    try:
        _write(splits, tmp, data_dir)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except OSError as e:
        raise MuniError(f"export folder {str(out)!r}: cannot write it ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write(splits: dict[str, MultimodalDataset], out: Path, data_dir) -> None:
    from PIL import Image

    first = next(iter(splits.values()))
    modalities = first.modalities
    texts = [m for m in modalities.values() if m.kind == "text"]
    labels = [m for m in modalities.values() if m.kind == "categorical"]
    factors = [f for f in first.factors
               if not (f in modalities and all(_same_as_modality(ds, f) for ds in splits.values()))]
    header = ["id", "split"] + [m.name for m in texts + labels] + factors
    clash = {c for c in header if header.count(c) > 1}
    if clash or any(not ID_PATTERN.fullmatch(f) for f in factors):
        raise InputError(f"cannot export {first.name!r}: its factor names {sorted(clash or factors)} cannot be "
                         f"CSV columns beside id, split and the modalities")
    width = max(6, len(str(max(len(ds) for ds in splits.values()))))
    rows = []
    for split, ds in splits.items():
        waves = WAVE_SOURCES[ds.name](split, ds, data_dir) if ds.name in WAVE_SOURCES else {}
        full = np.ones(len(ds), bool)
        present = {k: ds.present[k].numpy() if k in ds.present else full for k in modalities}
        for i in range(len(ds)):
            sid = f"{split}-{i:0{width}d}"
            row = {"id": sid, "split": split}
            for m in modalities.values():
                if not present[m.name][i]:
                    continue
                x = ds.storage[m.name][i].numpy()
                if m.kind == "image":
                    (out / m.name).mkdir(exist_ok=True)
                    if x.shape[0] not in (1, 3) or x.dtype != np.uint8:
                        raise InputError(f"cannot export image modality {m.name!r}: PNG holds 1 or 3 uint8 channels")
                    Image.fromarray(x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)).save(out / m.name / f"{sid}.png")
                elif m.kind == "audio":
                    (out / m.name).mkdir(exist_ok=True)
                    shutil.copyfile(waves[m.name][i], out / m.name / f"{sid}.wav")
                elif m.kind == "text":
                    row[m.name] = " ".join(text_lib.words_of(x, m.params["vocab"]))
                    if not np.array_equal(text_lib.encode(row[m.name], m.params["vocab"], m.shape[0]), x):
                        raise InputError(f"cannot export text modality {m.name!r}: sample {i} of {split} does "
                                         f"not read back as the same tokens")
                else:
                    row[m.name] = m.params.get("class_names", [str(k) for k in range(m.num_classes)])[int(x)]
            for f in factors:
                v = int(ds.factors[f][i])
                row[f] = "" if v < 0 else str(v)
            rows.append(row)
    with open(out / "tuples.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    spec = f"# Exported by muni data export from {first.name}; import with muni data import.\n"
    spec += f"name = {_toml(first.name + '-export')}\nid = \"id\"\n"
    spec += _section("split", {"source": "tuples.csv", "column": "split"})
    for m in modalities.values():
        if m.kind == "image":
            entry = {"kind": "image", "source": f"{m.name}/", "size": list(m.shape[1:]), "channels": m.shape[0]}
        elif m.kind == "audio":
            entry = {"kind": "audio", "source": f"{m.name}/", **m.params}
        elif m.kind == "text":
            (out / f"{m.name}.vocab.txt").write_text("\n".join(m.params["vocab"]) + "\n", encoding="utf-8")
            entry = {"kind": "text", "source": "tuples.csv", "column": m.name, "length": m.shape[0],
                     "vocab": f"{m.name}.vocab.txt"}
        else:
            entry = {"kind": "label", "source": "tuples.csv", "column": m.name,
                     "classes": m.params.get("class_names", [str(k) for k in range(m.num_classes)])}
        spec += _section(f"modalities.{m.name}", entry)
    content = CONTENT_FACTORS.get(first.name)
    for f in factors:
        entry = {"source": "tuples.csv", "column": f, "integer": True}
        if content is not None and f not in content:
            entry["evaluate"] = False                        # a private factor: recorded only
        spec += _section(f"labels.{f}", entry)
    (out / "spec.toml").write_text(spec, encoding="utf-8")


def _same_as_modality(ds: MultimodalDataset, name: str) -> bool:
    """Whether factor `name` is what importing label modality `name` records (its class, -1 absent)."""
    m = ds.modalities[name]
    if m.kind != "categorical":
        return False
    present = ds.present.get(name)
    value = ds.storage[name] if present is None else ds.storage[name].where(present, -1)
    return bool((value == ds.factors[name]).all())

"""Users' own datasets: a TOML spec, imported into the same cached `MultimodalDataset` as the benchmarks.

``muni data import SPEC --name NAME`` reads a spec like this one (paths are relative to the
spec's folder)::

    name = "digits"                  # optional; --name overrides it
    id = "id"                        # the id column of every table source (default "id")

    [split]                          # a column of a table: values "train" / "test" ...
    source = "tuples.csv"            #   (optional when the spec has one table source)
    column = "split"
    # ... or a rule, deterministic in the id:  test_fraction = 0.2   seed = 0

    [modalities.image]               # modalities are modelled, in the order written here
    kind = "image"                   # image | label (alias categorical) | text | audio
    source = "images/"               # a folder of <id>.png / .jpg / .jpeg files ...
    size = [28, 28]                  # (H, W); default: the first image's; others are resized
    channels = 1                     # 1 (L) or 3 (RGB); default: the first image's

    [modalities.caption]
    kind = "text"
    source = "tuples.csv"            # ... or a CSV / JSONL / parquet / Hugging Face column
    column = "caption"
    length = 12                      # tokens with <bos> and <eos>; default: the longest text's
    vocab = "vocab.txt"              # one token per line; default: the train split's words

    [modalities.speech]
    kind = "audio"
    source = "audio/"                # <id>.wav files
    sample_rate = 8000               # + any key of `muni.modalities.audio.AUDIO_PARAMS`

    [modalities.digit]
    kind = "label"
    source = "tuples.csv"
    column = "digit"
    classes = ["0", "1", "2"]        # default: the sorted distinct values

    [labels.writer]                  # ground truth for evaluation only, not modelled
    source = "tuples.csv"
    column = "writer"
    integer = true                   # store the non-negative integers as they are ...
    # classes = [...]                # ... or as indices of declared classes (the default)
    evaluate = false                 # recorded only: no evaluation classifier reads it (a
                                     # private factor); default true

The ids of the dataset are the union of its modalities' ids; samples are ordered by id
(string order). An id that one modality's source lacks (no file, an empty cell) is an
**incomplete tuple**: its ``present`` mask is False and its storage row zeros. Every sample
needs at least one modality. A label modality is also a factor of the same name; a missing
label is ``-1`` in ``factors``. Table sources may hold image / audio file paths (relative
to the spec's folder) or their bytes.

Preprocessing is the benchmark builders' own: images uint8 (C, H, W), resized bilinearly and
converted between L and RGB with a warning; text via `muni.modalities.text.encode`; audio
via `read_wav`, channels averaged and other sample rates resampled (scipy) with a warning, then
`fix_length` and `log_mel`. Bad input is one `MuniError` naming the file and line or the spec
key. The built arrays go to ``cache_dir()/datasets/imported/<NAME>/`` (``train.npz``,
``test.npz``, ``manifest.json`` with the spec, the modalities, counts and SHA-256s), written
in a temporary folder and moved into place, so a failed import leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muni.data.base import MultimodalDataset
from muni.data.cache import SplitArrays, load_split, save_split
from muni.data.sources import SPLITS, sha256_file
from muni.data.tables import Cell, Column, Sources, file_bytes, source_format
from muni.errors import ConfigError, DataIntegrityError, InputError, MuniError
from muni.modalities import audio as audio_lib
from muni.modalities import text as text_lib
from muni.modalities.base import NAME_PATTERN, Modality
from muni.paths import cache_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger("muni.data")

FORMAT_VERSION = 1
KINDS = {"image": "image", "label": "categorical", "categorical": "categorical", "text": "text",
         "audio": "audio"}
SOURCE_KEYS = ("kind", "source", "column", "format")
KIND_KEYS: dict[str, tuple[str, ...]] = {"image": ("size", "channels"), "categorical": ("classes",),
                                         "text": ("length", "vocab"), "audio": tuple(audio_lib.AUDIO_PARAMS)}
LABEL_KEYS = ("source", "column", "format", "classes", "integer", "evaluate")
DATASET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")  # a folder name in the cache
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


@dataclass(frozen=True)
class SourceRef:
    """Where a modality, label or split comes from; `key` is its spec table (``modalities.image``)."""

    key: str
    path: Path
    fmt: str
    column: str | None


@dataclass(frozen=True)
class Entry:
    """One ``[modalities.NAME]`` or ``[labels.NAME]`` table; `options` hold the kind's keys."""

    name: str
    kind: str
    source: SourceRef
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserSpec:
    path: Path
    name: str | None
    id_column: str
    split: SourceRef | tuple[float, int]  # a column, or the rule (test_fraction, seed)
    modalities: list[Entry]
    labels: list[Entry]
    raw: dict[str, Any]


# ---------------------------------------------------------------------------- the spec
def _key(where: str, key: str) -> str:
    """``spec.toml: modalities.image`` + ``size`` -> ``spec.toml: modalities.image.size``."""
    return f"{where} {key}" if where.endswith(":") else f"{where}.{key}"


def _get(table: dict, key: str, where: str, types: tuple[type, ...], what: str, default: Any = None) -> Any:
    if key not in table:
        return default
    v = table[key]
    if isinstance(v, bool) and bool not in types or not isinstance(v, types):
        raise ConfigError(f"{_key(where, key)} must be {what}, got {v!r}")
    return v


def _unknown(table: dict, allowed, where: str) -> None:
    unknown = [k for k in table if k not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(allowed)}")


def _table(parent: dict, key: str, where: str) -> dict:
    v = parent.get(key, {})
    if not isinstance(v, dict):
        raise ConfigError(f"{where}{key} must be a table ([{key}]), got {v!r}")
    return v


def _source(t: dict, where: str, root: Path, required: bool = True) -> SourceRef | None:
    src = _get(t, "source", where, (str,), "a path relative to the spec's folder")
    if src is None:
        if required:
            raise ConfigError(f"{where}.source: missing; a folder or a table file")
        return None
    path = root / src
    column = _get(t, "column", where, (str,), "a column name")
    return SourceRef(where, path, source_format(path, _get(t, "format", where, (str,), "a format name"), where),
                     column)


def _classes(t: dict, where: str) -> tuple[str, ...] | None:
    classes = _get(t, "classes", where, (list,), "a list of class names")
    if classes is None:
        return None
    if not classes or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes):
        raise ConfigError(f"{where}.classes must be a non-empty list of strings, got {classes!r}")
    names = tuple(str(c) for c in classes)
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.classes: duplicate class names in {classes!r}")
    return names


def _options(kind: str, t: dict, where: str) -> dict[str, Any]:
    """The kind-specific keys of a modality, type-checked (values are checked again by `Modality`)."""
    opts: dict[str, Any] = {}
    if kind == "image":
        size = _get(t, "size", where, (list,), "[height, width]")
        if size is not None:
            if len(size) != 2 or not all(type(s) is int and 1 <= s <= 4096 for s in size):
                raise ConfigError(f"{where}.size must be [height, width], integers in 1..4096, got {size!r}")
            opts["size"] = tuple(size)
        channels = _get(t, "channels", where, (int,), "1 or 3")
        if channels not in (None, 1, 3):
            raise ConfigError(f"{where}.channels must be 1 or 3, got {channels!r}")
        opts["channels"] = channels
    elif kind == "categorical":
        opts["classes"] = _classes(t, where)
    elif kind == "text":
        length = _get(t, "length", where, (int,), "an integer")
        if length is not None and not 2 <= length <= 4096:
            raise ConfigError(f"{where}.length must be in 2..4096 (with <bos> and <eos>), got {length}")
        opts["length"] = length
        opts["vocab"] = _get(t, "vocab", where, (str,), "a vocabulary file path")
    else:
        for key in KIND_KEYS["audio"]:
            v = _get(t, key, where, (int, float), "a number")
            if v is not None:
                if not math.isfinite(v):
                    raise ConfigError(f"{where}.{key} must be finite, got {v!r}")
                opts[key] = v
    return opts


def parse_spec(path: str | os.PathLike) -> UserSpec:
    """Read and validate a dataset spec (module docstring); a bad one is a `ConfigError`."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no such dataset spec {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    root, at = path.parent, f"{path}: "
    _unknown(raw, ("name", "id", "split", "modalities", "labels"), f"{path}")
    name = _get(raw, "name", f"{path}:", (str,), "a string")
    id_column = _get(raw, "id", f"{path}:", (str,), "a column name", "id")

    entries = {}
    for group, allowed in (("modalities", None), ("labels", LABEL_KEYS)):
        out = []
        for n, t in _table(raw, group, at).items():
            where = f"{at}{group}.{n}"
            if not NAME_PATTERN.fullmatch(n):
                raise ConfigError(f"{where}: a name is a letter then up to 63 letters, digits or underscores")
            if not isinstance(t, dict):
                raise ConfigError(f"{where} must be a table ([{group}.{n}]), got {t!r}")
            if allowed is None:
                kind = _get(t, "kind", where, (str,), "a kind name")
                if kind not in KINDS:
                    problem = "missing" if kind is None else f"unknown kind {kind!r}"
                    raise ConfigError(f"{where}.kind: {problem}; choose one of {', '.join(KINDS)}")
                kind = KINDS[kind]
                _unknown(t, SOURCE_KEYS + KIND_KEYS[kind], where)
                opts = _options(kind, t, where)
            else:
                _unknown(t, allowed, where)
                kind, opts = "label", {"classes": _classes(t, where),
                                       "integer": _get(t, "integer", where, (bool,), "true or false", False),
                                       "evaluate": _get(t, "evaluate", where, (bool,), "true or false", True)}
                if opts["integer"] and opts["classes"] is not None:
                    raise ConfigError(f"{where}: integer = true stores the values as they are; drop classes")
            out.append(Entry(n, kind, _source(t, where, root), opts))
        entries[group] = out
    if not entries["modalities"]:
        raise ConfigError(f"{at}no [modalities.NAME] table; a dataset needs at least one modality")
    clash = {e.name for e in entries["modalities"]} & {e.name for e in entries["labels"]}
    if clash:
        raise ConfigError(f"{at}labels.{sorted(clash)[0]}: a label modality is already a factor of that name")

    split_t = _table(raw, "split", at)
    where = f"{at}split"
    if "test_fraction" in split_t:
        _unknown(split_t, ("test_fraction", "seed"), where)
        frac = _get(split_t, "test_fraction", where, (int, float), "a number in (0, 1)")
        seed = _get(split_t, "seed", where, (int,), "an integer >= 0", 0)
        if not 0 < frac < 1 or seed < 0:
            raise ConfigError(f"{where}: needs 0 < test_fraction < 1 and seed >= 0, got {frac!r} and {seed!r}")
        split: SourceRef | tuple[float, int] = (float(frac), seed)
    else:
        _unknown(split_t, ("source", "column", "format"), where)
        tables = {(e.source.path, e.source.fmt) for e in entries["modalities"] + entries["labels"]
                  if e.source.fmt != "folder"}
        column = _get(split_t, "column", where, (str,), "a column name")
        if column is None:
            raise ConfigError(f"{where}.column: missing; declare [split] with the column holding train / "
                              f"test, or test_fraction = ...")
        if "source" in split_t:
            split = _source(split_t, where, root)
        elif len(tables) == 1:
            split = SourceRef(where, *next(iter(tables)), column)
        else:
            raise ConfigError(f"{where}.source: missing; the spec has {len(tables)} table sources, name the "
                              f"one holding the split column")
    return UserSpec(path, name, id_column, split, entries["modalities"], entries["labels"], raw)


# ---------------------------------------------------------------------------- preprocessing
def _label_values(entry: Entry, column: Column, ids: list[str], what: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N,) int64 (-1 where missing) and the class names (empty when stored as integers)."""
    out = np.full(len(ids), -1, np.int64)
    values: dict[int, tuple[str, Cell]] = {}
    for i, sid in enumerate(ids):
        if sid in column:
            cell = column[sid]
            v = cell.value
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise InputError(f"{cell.where}: {what} value {v!r} must be a string or an integer")
            values[i] = (str(v), cell)
    if entry.options.get("integer"):
        for i, (v, cell) in values.items():
            if not (v.isascii() and v.isdigit()) or len(v) > 18:
                raise InputError(f"{cell.where}: {what} value {v!r} is not a non-negative integer")
            out[i] = int(v)
        return out, ()
    classes = entry.options.get("classes")
    if classes is None:
        found = {v for v, _ in values.values()}
        numeric = all(re.fullmatch(r"-?[0-9]{1,18}", v) for v in found)
        classes = tuple(sorted(found, key=(lambda s: (int(s), s)) if numeric else None))
        if not classes:
            raise InputError(f"{what}: the column has no values")
    index = {c: k for k, c in enumerate(classes)}
    for i, (v, cell) in values.items():
        if v not in index:
            shown = ", ".join(classes[:12]) + (", ..." if len(classes) > 12 else "")
            raise InputError(f"{cell.where}: {what} value {v!r} is not one of its classes ({shown})")
        out[i] = index[v]
    return out, classes


def _categorical(entry, column, ids, train, root):
    values, classes = _label_values(entry, column, ids, entry.source.key)
    m = Modality(entry.name, "categorical", (), len(classes), {"class_names": list(classes)})
    return np.maximum(values, 0), m


def _read_vocab(path: Path, key: str) -> list[str]:
    try:
        words = [w.strip() for w in path.read_text(encoding="utf-8").splitlines() if w.strip()]
    except FileNotFoundError:
        raise ConfigError(f"{key}.vocab: no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}.vocab: cannot read {str(path)!r} ({getattr(e, 'strerror', None) or e})") from None
    if words[:len(text_lib.SPECIALS)] != list(text_lib.SPECIALS):
        words = list(text_lib.SPECIALS) + words
    dup = sorted({w for w in words if words.count(w) > 1})
    if dup:
        raise ConfigError(f"{key}.vocab: {path} lists {dup[0]!r} twice")
    return words


def _text(entry, column, ids, train, root):
    key, texts = entry.source.key, {}
    for i, sid in enumerate(ids):
        if sid in column:
            cell = column[sid]
            v = cell.value
            if isinstance(v, Path):
                v = file_bytes(cell, root)
                try:
                    v = v.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise InputError(f"{cell.where}: not UTF-8 text") from None
            if not isinstance(v, str):
                raise InputError(f"{cell.where}: {key} value {v!r} must be a string")
            texts[i] = (v, cell)
    opts = entry.options
    vocab = (_read_vocab(root / opts["vocab"], key) if opts.get("vocab")
             else text_lib.build_vocab(t for i, (t, _) in texts.items() if train[i]))
    length = opts.get("length") or max([len(text_lib.split_words(t)) + 2 for t, _ in texts.values()] + [2])
    out = np.zeros((len(ids), length), np.int64)
    for i, (t, cell) in texts.items():
        try:
            out[i] = text_lib.encode(t, vocab, length)
        except InputError as e:
            raise InputError(f"{cell.where}: {key}: {e}") from None
    m = Modality(entry.name, "text", (length,), len(vocab),
                 {"vocab": vocab, "bos_id": text_lib.BOS_ID, "eos_id": text_lib.EOS_ID})
    return out, m


def _open_image(cell: Cell, root: Path):
    from PIL import Image
    import io

    data = file_bytes(cell, root)
    try:
        im = Image.open(io.BytesIO(data))
        im.load()
        return im
    except Exception as e:  # PIL raises many types for a malformed file (OSError, SyntaxError, ...)
        raise DataIntegrityError(f"{cell.where}: not a readable image ({type(e).__name__}: {e})") from None


def _progress(ids: list[str], key: str):
    """`ids` with a progress bar (hidden for small datasets)."""
    from tqdm.auto import tqdm

    return tqdm(ids, desc=f"import {key}", leave=False, disable=len(ids) < 2000)


def _image(entry, column, ids, train, root):
    from PIL import Image

    opts, key = entry.options, entry.source.key
    first = _open_image(column[next(s for s in ids if s in column)], root)
    h, w = opts.get("size") or (first.height, first.width)
    c = opts.get("channels") or (1 if first.mode in _GRAY_MODES else 3)
    out = np.zeros((len(ids), c, h, w), np.uint8)
    converted, resized, mode = [], [], "L" if c == 1 else "RGB"
    for i, sid in enumerate(_progress(ids, key)):
        if sid not in column:
            continue
        im = _open_image(column[sid], root)
        if im.mode != mode:
            if not (im.mode == "P" and c == 3):
                converted.append(f"{column[sid].where} ({im.mode})")
            im = im.convert(mode)
        if im.size != (w, h):
            resized.append(f"{column[sid].where} ({im.width}x{im.height})")
            im = im.resize((w, h), Image.BILINEAR)
        x = np.asarray(im, np.uint8)
        out[i] = x[None] if c == 1 else x.transpose(2, 0, 1)
    if converted:
        log.warning("%s: converted %d image(s) to %s (first: %s)", key, len(converted), mode, converted[0])
    if resized:
        log.warning("%s: resized %d image(s) to %dx%d (first: %s)", key, len(resized), w, h, resized[0])
    return out, Modality(entry.name, "image", (c, h, w))


def _audio(entry, column, ids, train, root):
    from scipy.signal import resample_poly

    key = entry.source.key
    params = {**audio_lib.AUDIO_PARAMS, **entry.options}
    try:
        m = Modality(entry.name, "audio", (1, params["n_mels"], params["frames"]), params=params)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None
    rate_to = params["sample_rate"]
    rows, waves, mixed, resampled = [], [], [], []
    for i, sid in enumerate(_progress(ids, key)):
        if sid not in column:
            continue
        cell = column[sid]
        try:
            rate, x = audio_lib.read_wav(file_bytes(cell, root))
        except ValueError as e:
            raise DataIntegrityError(f"{cell.where}: {e}") from None
        if rate < 1:
            raise DataIntegrityError(f"{cell.where}: sample rate {rate}")
        if x.ndim > 1:  # as the benchmark builders: the mean of the channels
            if x.shape[1] != 1:
                mixed.append(f"{cell.where} ({x.shape[1]} channels)")
            x = x.mean(axis=1)
        if rate != rate_to:
            resampled.append(f"{cell.where} ({rate} Hz)")
            g = math.gcd(rate, rate_to)
            x = resample_poly(x, rate_to // g, rate // g).astype(np.float32)
        rows.append(i)
        waves.append(x)
    if mixed:
        log.warning("%s: mixed %d multi-channel recording(s) down to mono (first: %s)", key, len(mixed), mixed[0])
    if resampled:
        log.warning("%s: resampled %d recording(s) to %d Hz (first: %s)", key, len(resampled), rate_to,
                    resampled[0])
    out = np.zeros((len(ids), *m.shape), np.float32)
    n = audio_lib.num_samples(params)
    for s in range(0, len(rows), 256):
        out[rows[s:s + 256]] = audio_lib.log_mel(audio_lib.fix_length(waves[s:s + 256], n), params).numpy()
    return out, m


PREPROCESS = {"image": _image, "categorical": _categorical, "text": _text, "audio": _audio}


# ---------------------------------------------------------------------------- building
def _test_split(spec: UserSpec, sources: Sources, ids: list[str], known: set[str]) -> np.ndarray:
    """(N,) bool: which samples are in the test split."""
    if isinstance(spec.split, tuple):
        frac, seed = spec.split
        u = [int.from_bytes(hashlib.sha256(f"{seed}/{i}".encode()).digest()[:8], "big") / 2 ** 64 for i in ids]
        return np.array(u) < frac
    ref = spec.split
    column = sources.column(ref.path, ref.fmt, ref.column, None, ref.key)
    _check_orphans(column, known, "split")
    out = np.zeros(len(ids), bool)
    for k, sid in enumerate(ids):
        if sid not in column:
            raise InputError(f"id {sid!r} has no split: no {ref.column!r} value for it in {ref.path}")
        cell = column[sid]
        if cell.value not in SPLITS:
            raise InputError(f"{cell.where}: split {cell.value!r} must be one of {', '.join(SPLITS)}")
        out[k] = cell.value == "test"
    return out


def _check_orphans(column: Column, known: set[str], what: str) -> None:
    for sid, cell in column.items():
        if sid not in known:
            raise InputError(f"{cell.where}: id {sid!r} has a {what} but no modality; every sample needs "
                             f"at least one")


def build_arrays(spec: UserSpec) -> tuple[dict[str, SplitArrays], dict[str, Modality]]:
    """Both splits of a spec's dataset and its modalities."""
    sources = Sources(spec.id_column)
    columns = {e.name: sources.column(e.source.path, e.source.fmt, e.source.column,
                                      "image" if e.kind == "image" else e.kind, e.source.key)
               for e in spec.modalities}
    labels = {e.name: sources.column(e.source.path, e.source.fmt, e.source.column, "label", e.source.key)
              for e in spec.labels}
    for e in spec.modalities:
        if not columns[e.name]:
            raise InputError(f"{e.source.key}: no values in column {e.source.column!r} of {e.source.path}")
    known = set().union(*map(set, columns.values()))
    ids = sorted(known)
    for name, column in labels.items():
        _check_orphans(column, known, f"label {name!r}")
    test = _test_split(spec, sources, ids, known)
    for s, mask in (("train", ~test), ("test", test)):
        if not mask.any():
            raise InputError(f"{spec.path}: the {s} split is empty ({len(ids)} samples, all in the other split)")
    root = spec.path.parent
    storage, modalities, present, factors = {}, {}, {}, {}
    for e in spec.modalities:
        storage[e.name], modalities[e.name] = PREPROCESS[e.kind](e, columns[e.name], ids, ~test, root)
        present[e.name] = np.array([i in columns[e.name] for i in ids], bool)
        if e.kind == "categorical":
            factors[e.name] = np.where(present[e.name], storage[e.name], -1).astype(np.int64)
    for e in spec.labels:
        factors[e.name] = _label_values(e, labels[e.name], ids, e.source.key)[0]
    splits = {}
    for s, mask in (("train", ~test), ("test", test)):
        rows = np.flatnonzero(mask)
        splits[s] = SplitArrays({k: v[rows] for k, v in storage.items()}, {k: v[rows] for k, v in factors.items()},
                                {k: v[rows] for k, v in present.items() if not v[rows].all()})
    return splits, modalities


# ---------------------------------------------------------------------------- the cache
def imported_root() -> Path:
    return cache_dir() / "datasets" / "imported"


def imported_names() -> list[str]:
    """Names of the datasets imported into the cache, sorted."""
    root = imported_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / "manifest.json").is_file())


def check_name(name: str, builtin) -> str:
    """`name` when it can name an imported dataset, else an `InputError`."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise InputError(f"dataset name {name!r} must be a letter then up to 63 letters, digits, '_', '.' or '-'")
    if name in builtin:
        raise InputError(f"dataset name {name!r} is a built-in dataset; choose another --name")
    return name


def import_dataset(spec_path: str | os.PathLike, name: str | None = None, *, force: bool = False,
                   builtin=()) -> Path:
    """Validate `spec_path`, build both splits and cache them under `name`; returns the entry folder."""
    spec = parse_spec(spec_path)
    if name is None and spec.name is None:
        raise InputError(f"{spec.path}: no name; pass --name NAME or set name = \"...\" in the spec")
    name = check_name(name or spec.name, builtin)
    entry = imported_root() / name
    if entry.exists() and not force:
        raise InputError(f"dataset {name!r} is already imported ({entry}); pass --force to replace it")
    splits, modalities = build_arrays(spec)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{name}."))
    except OSError as e:
        raise MuniError(f"dataset cache {entry.parent}: cannot write it ({e.strerror or e}); MUNI_CACHE_DIR "
                        f"must be a writable directory") from None
    old = entry.parent / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    try:
        files = {}
        for s, arrays in splits.items():
            save_split(arrays, tmp / f"{s}.npz")
            files[s] = sha256_file(tmp / f"{s}.npz")
        manifest = {"format": FORMAT_VERSION, "name": name, "spec_path": str(spec.path.absolute()),
                    "spec_sha256": sha256_file(spec.path), "spec": spec.raw,
                    "modalities": [m.to_json() for m in modalities.values()],
                    "factors": list(splits["train"].factors),
                    "content_factors": [e.name for e in spec.modalities if e.kind == "categorical"]
                    + [e.name for e in spec.labels if e.options.get("evaluate", True)],
                    "counts": {s: len(a) for s, a in splits.items()},
                    "absent": {s: {k: int((~v).sum()) for k, v in a.present.items()} for s, a in splits.items()},
                    "files": files}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
        if entry.exists():
            os.replace(entry, old)
        try:
            os.replace(tmp, entry)
        except OSError:
            if old.exists():
                os.replace(old, entry)
            raise
    except OSError as e:
        raise MuniError(f"dataset cache {entry}: cannot write it ({e.strerror or e})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return entry


def _manifest(name: str) -> tuple[Path, dict[str, Any]]:
    entry = imported_root() / name
    try:
        return entry, json.loads((entry / "manifest.json").read_text())
    except (OSError, ValueError):
        raise DataIntegrityError(f"imported dataset {name!r}: {entry / 'manifest.json'} is missing or unreadable; "
                                 f"import it again with muni data import SPEC --name {name} --force") from None


def imported_modalities(name: str) -> dict[str, Modality]:
    _, manifest = _manifest(name)
    try:
        return {d["name"]: Modality.from_json(d) for d in manifest["modalities"]}
    except (KeyError, TypeError, ValueError) as e:
        raise DataIntegrityError(f"imported dataset {name!r}: malformed manifest ({e}); import it again") from None


def load_imported(name: str, split: str) -> MultimodalDataset:
    """One split of an imported dataset, its SHA-256 checked against the manifest."""
    entry, manifest = _manifest(name)
    path = entry / f"{split}.npz"
    expected = manifest.get("files", {}).get(split)
    if not expected or not path.is_file() or sha256_file(path) != expected:
        raise DataIntegrityError(f"imported dataset {name!r}: {path} fails its checksum; import it again with "
                                 f"muni data import {manifest.get('spec_path', 'SPEC')} --name {name} --force")
    arrays = load_split(path)
    return MultimodalDataset(
        name=name, split=split, modalities=imported_modalities(name),
        storage={k: torch.from_numpy(v) for k, v in arrays.storage.items()},
        factors={k: torch.from_numpy(v) for k, v in arrays.factors.items()},
        present={k: torch.from_numpy(v) for k, v in arrays.present.items()},
        info={"preset": "imported", "seed": None, "recipe_version": manifest.get("format"),
              "recipe_hash": hashlib.sha256("".join(sorted(manifest["files"].values())).encode()).hexdigest()[:12],
              "config": {"spec": manifest.get("spec")}, "checksum": expected,
              "content_factors": manifest.get("content_factors", list(arrays.factors)),
              "sources": {"spec": manifest.get("spec_sha256")}, "cache": str(entry)})

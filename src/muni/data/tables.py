"""The sources of a user dataset (`muni.data.userdata`): folders of files and table columns.

Reading a source gives a `Column`, ``{id: Cell}``. A cell holds the raw value (a file path
for a folder, the cell's content for a table) and where it came from (``"data/tuples.csv
line 5"``, ``"data/images/7.png"``), which every error message quotes. An empty cell (CSV
``""``, JSON ``null``, an absent key) is no cell: that sample lacks the column, which makes
an incomplete tuple, not an error.

Formats (`FORMATS`), inferred from the path unless the spec says ``format = ...``:
- ``folder``: files ``<id>.<ext>`` (extensions per kind in `EXTENSIONS`); hidden files are
  skipped, files of other extensions are skipped with a warning.
- ``csv``: UTF-8, a header row naming the columns, every row as many fields as the header.
- ``jsonl``: one JSON object per line; ids may be strings or integers.
- ``parquet``: a file or a folder of parquet files (needs ``pyarrow``: ``pip install muni[hf]``).
- ``hf``: a Hugging Face ``datasets.Dataset`` saved with ``save_to_disk`` (``pip install muni[hf]``);
  image and audio features are read undecoded, as their file bytes.
"""

from __future__ import annotations

import csv
import importlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muni.errors import ConfigError, DataMissingError, InputError, MuniError

log = logging.getLogger("muni.data")

FORMATS = ("folder", "csv", "jsonl", "parquet", "hf")
EXTENSIONS: dict[str, tuple[str, ...]] = {"image": (".png", ".jpg", ".jpeg"), "audio": (".wav",),
                                          "text": (".txt",)}
_SUFFIX_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
# An id is a file stem in folders and exports: never a path, never blank.
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True)
class Cell:
    value: Any
    where: str


Column = dict[str, Cell]


@dataclass
class Table:
    """A table source read once: rows as dicts (empty cells dropped) and where each row is."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]]
    where: list[str]


def check_id(value: Any, where: str) -> str:
    """The id `value` as a string, or an `InputError` naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: id {value!r} must be a string or an integer")
    text = str(value)
    if not ID_PATTERN.fullmatch(text):
        raise InputError(f"{where}: bad id {text!r}; an id is 1 to 128 letters, digits, '_', '.' or '-' "
                         f"and starts with a letter, a digit or '_'")
    return text


def source_format(path: Path, declared: str | None, key: str) -> str:
    """The format of the source at `path` (`declared` when the spec names one)."""
    if not path.exists():
        raise DataMissingError(f"{key}.source: no such file or folder {str(path)!r}")
    if declared is not None:
        if declared not in FORMATS:
            raise ConfigError(f"{key}.format: unknown format {declared!r}; choose one of {', '.join(FORMATS)}")
        return declared
    if path.is_dir():
        hf = ("dataset_info.json", "state.json", "dataset_dict.json")
        return "hf" if any((path / n).exists() for n in hf) else "folder"
    if path.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    raise ConfigError(f"{key}.source: cannot tell the format of {str(path)!r} from its name; use a folder, "
                      f".csv, .jsonl or .parquet, or set {key}.format to one of {', '.join(FORMATS)}")


def _optional(module: str, fmt: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MuniError(f"{fmt} sources need the optional package {module!r}: pip install 'muni[hf]'") from None


# ---------------------------------------------------------------------------- tables
def _read_csv(path: Path) -> Table:
    rows, where, line = [], [], 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [h.strip() for h in next(reader, [])]
            line = reader.line_num
            if not header or not all(header):
                raise InputError(f"{path} line 1: the header row must name every column, got {header!r}")
            for fields in reader:
                line = reader.line_num
                if not fields:
                    continue
                if len(fields) != len(header):
                    raise InputError(f"{path} line {line}: {len(fields)} fields, the header has {len(header)}")
                rows.append({k: v for k, v in zip(header, fields) if v != ""})
                where.append(f"{path} line {line}")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise InputError(f"{path} line {line + 1}: malformed CSV ({e})") from None
    return Table(path, header, rows, where)


def _read_jsonl(path: Path) -> Table:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows, where, columns = [], [], {}
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise InputError(f"{path} line {i}: not JSON ({getattr(e, 'msg', e)})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path} line {i}: expected a JSON object, got {type(obj).__name__}")
        rows.append({k: v for k, v in obj.items() if v is not None})
        where.append(f"{path} line {i}")
        columns.update(dict.fromkeys(obj))
    return Table(path, list(columns), rows, where)


def _read_parquet(path: Path) -> Table:
    pq = _optional("pyarrow.parquet", "parquet")
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise InputError(f"{path}: not a readable parquet file or folder ({e})") from None
    rows = [{k: v for k, v in r.items() if v is not None} for r in table.to_pylist()]
    return Table(path, list(table.column_names), rows, [f"{path} row {i}" for i in range(1, len(rows) + 1)])


def _read_hf(path: Path) -> Table:
    datasets = _optional("datasets", "Hugging Face")
    try:
        ds = datasets.load_from_disk(str(path))
    except (OSError, ValueError, FileNotFoundError) as e:
        raise InputError(f"{path}: not a dataset saved with datasets' save_to_disk ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise InputError(f"{path} holds the splits {', '.join(ds)}; point the source at one of them "
                         f"(e.g. {path / next(iter(ds))}) and declare [split]")
    for name, feature in ds.features.items():  # file bytes, not decoded arrays
        if isinstance(feature, (datasets.Image, datasets.Audio)):
            ds = ds.cast_column(name, type(feature)(decode=False))
    rows = [{k: v for k, v in r.items() if v is not None} for r in ds.to_list()]
    return Table(path, list(ds.column_names), rows, [f"{path} row {i}" for i in range(1, len(rows) + 1)])


READERS = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet, "hf": _read_hf}


# ---------------------------------------------------------------------------- columns
class Sources:
    """Reads each table of a spec once and serves its columns keyed by the `id_column`."""

    def __init__(self, id_column: str) -> None:
        self.id_column = id_column
        self._tables: dict[tuple[Path, str], Table] = {}

    def table(self, path: Path, fmt: str) -> Table:
        if (path, fmt) not in self._tables:
            try:
                table = READERS[fmt](path)
            except (OSError, MemoryError) as e:
                raise InputError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None
            if self.id_column not in table.columns:
                raise InputError(f"{path}: no id column {self.id_column!r} (set the spec's top-level "
                                 f"id = \"...\"); its columns: {', '.join(map(str, table.columns))}")
            seen: dict[str, str] = {}
            for row, where in zip(table.rows, table.where):
                if self.id_column not in row:
                    raise InputError(f"{where}: empty id")
                i = check_id(row[self.id_column], where)
                if i in seen:
                    raise InputError(f"{where}: duplicate id {i!r} (first at {seen[i]})")
                seen[i] = where
            self._tables[(path, fmt)] = table
        return self._tables[(path, fmt)]

    def column(self, path: Path, fmt: str, column: str | None, kind: str | None, key: str) -> Column:
        """The cells of one source: a folder's files of `kind`, or a table's `column`."""
        if fmt == "folder":
            if column is not None:
                raise ConfigError(f"{key}.column: a folder source has no columns (files are keyed by id)")
            if kind not in EXTENSIONS:
                raise ConfigError(f"{key}.source: a {kind} comes from a table column, not a folder")
            return _folder(path, EXTENSIONS[kind])
        if column is None:
            raise ConfigError(f"{key}.column: missing; name the column of {str(path)!r} to read")
        table = self.table(path, fmt)
        if column not in table.columns or column == self.id_column:
            raise ConfigError(f"{key}.column: no column {column!r} in {path}; its columns: "
                              f"{', '.join(str(c) for c in table.columns if c != self.id_column)}")
        return {str(row[self.id_column]): Cell(row[column], where)
                for row, where in zip(table.rows, table.where) if column in row}


def _folder(path: Path, extensions: tuple[str, ...]) -> Column:
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; set format for a file source")
    out: Column = {}
    skipped = []
    for f in sorted(path.iterdir()):
        if f.name.startswith(".") or not f.is_file():
            continue
        if f.suffix.lower() not in extensions:
            skipped.append(f.name)
            continue
        i = check_id(f.stem, str(f))
        if i in out:
            raise InputError(f"{f}: duplicate id {i!r} (also {out[i].where})")
        out[i] = Cell(f, str(f))
    if skipped:
        log.warning("%s: skipped %d file(s) that are not %s (first: %s)", path, len(skipped),
                    "/".join(extensions), skipped[0])
    if not out:
        raise InputError(f"{path}: no {'/'.join(extensions)} files")
    return out


def file_bytes(cell: Cell, root: Path) -> bytes:
    """The bytes a cell names: a file path (relative to the spec's folder), raw bytes, or a
    ``{"bytes": ..., "path": ...}`` record (parquet / Hugging Face image and audio features)."""
    value = cell.value
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        value = root / value
    if not isinstance(value, Path):
        raise InputError(f"{cell.where}: expected a file path or file bytes, got {type(cell.value).__name__}")
    try:
        return value.read_bytes()
    except FileNotFoundError:
        raise DataMissingError(f"{cell.where}: no such file {str(value)!r}") from None
    except OSError as e:
        raise InputError(f"{cell.where}: cannot read {str(value)!r} ({e.strerror or e})") from None

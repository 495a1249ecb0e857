"""Users' own datasets: TOML specs, `muni data import` / `export`, bad input, the round trip.

Tiny datasets are written here from synthetic PNG / WAV / CSV / JSONL files; the cache is a
per-test folder. The round trip exports tiny builds of both benchmarks and imports them back.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.io import wavfile

from muni.cli import main
from muni.data import dataset_modalities, load_dataset
from muni.data.export import export_dataset
from muni.data.userdata import import_dataset, imported_names, imported_root
from muni.errors import MuniError
from muni.modalities.audio import AUDIO_PARAMS, num_samples

FUZZ = settings(max_examples=50, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
IDS = [f"s{i}" for i in range(10)]
SPEC = """\
name = "toy"

[split]
column = "split"

[modalities.image]
kind = "image"
source = "images/"
size = [8, 8]
channels = 1

[modalities.caption]
kind = "text"
source = "tuples.csv"
column = "caption"
length = 6

[modalities.speech]
kind = "audio"
source = "audio/"

[modalities.digit]
kind = "label"
source = "tuples.csv"
column = "digit"
classes = ["0", "1", "2"]

[labels.writer]
source = "tuples.csv"
column = "writer"
integer = true
"""


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MUNI_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _png(path: Path, value: int, size=(8, 8), mode="L") -> None:
    Image.new(mode, size, value if mode == "L" else (value, 0, 255 - value)).save(path)


def _wav(path: Path, rate: int = 8000, channels: int = 1, freq: float = 5.0) -> None:
    wave = (np.sin(np.arange(num_samples(AUDIO_PARAMS)) / freq) * 3000).astype(np.int16)
    wavfile.write(path, rate, wave if channels == 1 else np.stack([wave] * channels, 1))


def _rows() -> list[dict]:
    return [{"id": s, "split": "test" if i >= 7 else "train", "caption": f"a digit {i % 3}",
             "digit": str(i % 3), "writer": str(100 + i)} for i, s in enumerate(IDS)]


def _csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def make_toy(root: Path, spec: str = SPEC, rows: list[dict] | None = None) -> Path:
    """A 10-sample dataset: s0 lacks its image, s1 its caption, s2 its recording and label."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir()
    (root / "audio").mkdir()
    rows = _rows() if rows is None else rows
    for i, s in enumerate(IDS):
        if s != "s0":
            _png(root / "images" / f"{s}.png", 20 * i)
        if s != "s2":
            _wav(root / "audio" / f"{s}.wav", freq=3.0 + i)
    for r in rows:
        if r["id"] == "s1":
            r["caption"] = ""
        if r["id"] == "s2":
            r["digit"] = ""
    _csv(root / "tuples.csv", rows)
    (root / "spec.toml").write_text(spec)
    return root / "spec.toml"


def assert_nothing_cached() -> None:
    root = imported_root()
    assert not root.exists() or not list(root.iterdir()), list(root.iterdir())


# ---------------------------------------------------------------------------- good specs
def test_import_builds_a_checksummed_dataset_with_incomplete_tuples(tmp_path):
    entry = import_dataset(make_toy(tmp_path / "toy"), builtin=("digits-ita",))
    assert entry.name == "toy" and imported_names() == ["toy"]
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 7, "test": 3} and set(manifest["files"]) == {"train", "test"}
    train, test = load_dataset("toy", "train"), load_dataset("toy", "test")
    assert list(train.modalities) == ["image", "caption", "speech", "digit"]
    assert train.modalities == dataset_modalities("toy")
    assert train.storage["image"].shape == (7, 1, 8, 8) and train.storage["image"].dtype == torch.uint8
    assert train.storage["speech"].shape == (7, 1, AUDIO_PARAMS["n_mels"], AUDIO_PARAMS["frames"])
    assert train.storage["caption"].shape == (7, 6)
    assert train.present["image"].tolist() == [False] + [True] * 6
    assert train.present["caption"].tolist() == [True, False] + [True] * 5
    assert not train.present["speech"][2] and not train.present["digit"][2]
    assert int(train.storage["image"][0].abs().sum()) == 0 and int(train.storage["image"][3, 0, 0, 0]) == 60
    assert train.factors["digit"].tolist() == [0, 1, -1, 0, 1, 2, 0]
    assert train.factors["writer"].tolist() == list(range(100, 107))
    assert test.complete and test.present == {}
    for m in train.modalities.values():
        m.check_batch(train.batch(torch.arange(7))[m.name])
    with pytest.raises(MuniError, match="--force"):
        import_dataset(tmp_path / "toy" / "spec.toml")
    import_dataset(tmp_path / "toy" / "spec.toml", force=True)


def test_corrupted_cache_entry_asks_for_a_reimport(tmp_path):
    entry = import_dataset(make_toy(tmp_path / "toy"))
    with open(entry / "train.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00garbage")
    with pytest.raises(MuniError, match="fails its checksum.*--force"):
        load_dataset("toy", "train")


def test_jsonl_source_split_rule_vocab_file_and_text_folder(tmp_path):
    root = tmp_path / "j"
    root.mkdir()
    (root / "notes").mkdir()
    lines = [json.dumps({"key": i, "tag": ["cat", "dog"][i % 2], "n": i}) for i in range(20)]
    (root / "t.jsonl").write_text("\n".join(lines[:10]) + "\n\n" + "\n".join(lines[10:]) + "\n")
    for i in range(0, 20, 2):
        (root / "notes" / f"{i}.txt").write_text(f"the {['red', 'blue'][i % 4 // 2]} one\n")
    (root / "vocab.txt").write_text("the\nred\nblue\none\n")
    (root / "spec.toml").write_text("""
id = "key"
[split]
test_fraction = 0.3
seed = 1
[modalities.tag]
kind = "categorical"
source = "t.jsonl"
column = "tag"
[modalities.note]
kind = "text"
source = "notes"
vocab = "vocab.txt"
[labels.n]
source = "t.jsonl"
column = "n"
""")
    import_dataset(root / "spec.toml", "j")
    train, test = load_dataset("j", "train"), load_dataset("j", "test")
    assert len(train) + len(test) == 20 and len(test) >= 1
    assert train.modalities["tag"].params["class_names"] == ["cat", "dog"]
    assert train.modalities["note"].params["vocab"][4:] == ["the", "red", "blue", "one"]
    assert train.modalities["note"].shape == (5,)
    assert int(train.present["note"].sum()) + int(test.present["note"].sum()) == 10
    # undeclared integer-looking classes sort as numbers; the same spec splits the same way
    assert sorted(train.factors["n"].tolist() + test.factors["n"].tolist()) == list(range(20))
    import_dataset(root / "spec.toml", "j2")
    assert torch.equal(load_dataset("j2", "test").factors["n"], test.factors["n"])


def test_parquet_source_with_image_bytes(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "p"
    root.mkdir()
    images = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (4, 4), (40 * i, 0, 0)).save(buf, "PNG")
        images.append({"bytes": buf.getvalue(), "path": None})
    table = pa.table({"id": [f"r{i}" for i in range(6)], "split": ["train"] * 4 + ["test"] * 2,
                      "img": images, "label": [0, 1, 0, 1, None, 1]})
    pq.write_table(table, root / "data.parquet")
    (root / "spec.toml").write_text("""
[split]
column = "split"
[modalities.img]
kind = "image"
source = "data.parquet"
column = "img"
[modalities.label]
kind = "label"
source = "data.parquet"
column = "label"
""")
    import_dataset(root / "spec.toml", "pq")
    train, test = load_dataset("pq", "train"), load_dataset("pq", "test")
    assert train.modalities["img"].shape == (3, 4, 4)
    assert train.storage["img"][:, 0, 0, 0].tolist() == [0, 40, 80, 120]
    assert test.factors["label"].tolist() == [-1, 1] and test.present["label"].tolist() == [False, True]


def test_hugging_face_dataset_saved_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    root = tmp_path / "hf"
    wav, png = io.BytesIO(), io.BytesIO()
    wavfile.write(wav, 8000, np.zeros(500, np.int16))
    Image.new("L", (5, 3), 9).save(png, "PNG")
    ds = datasets.Dataset.from_dict(
        {"id": ["a", "b", "c"], "split": ["train", "train", "test"], "text": ["one", "two", None],
         "image": [{"bytes": png.getvalue(), "path": None}] * 3, "audio": [wav.getvalue()] * 3},
        features=datasets.Features({"id": datasets.Value("string"), "split": datasets.Value("string"),
                                    "text": datasets.Value("string"), "image": datasets.Image(),
                                    "audio": datasets.Value("binary")}))
    ds.save_to_disk(str(root / "saved"))
    (root / "spec.toml").write_text("""
[split]
column = "split"
[modalities.text]
kind = "text"
source = "saved"
column = "text"
[modalities.image]
kind = "image"
source = "saved"
column = "image"
[modalities.audio]
kind = "audio"
source = "saved"
column = "audio"
""")
    import_dataset(root / "spec.toml", "hf")
    test = load_dataset("hf", "test")
    assert test.present["text"].tolist() == [False] and len(load_dataset("hf", "train")) == 2
    assert test.storage["image"].shape == (1, 1, 3, 5) and int(test.storage["image"].max()) == 9


def test_conversions_warn_and_still_import(tmp_path, caplog):
    spec = make_toy(tmp_path / "toy")
    _png(tmp_path / "toy" / "images" / "s3.png", 60, size=(12, 10), mode="RGB")
    _wav(tmp_path / "toy" / "audio" / "s4.wav", rate=16000, channels=2)
    with caplog.at_level(logging.WARNING, logger="muni.data"):
        import_dataset(spec)
    text = caplog.text
    assert "converted 1 image(s) to L" in text and "s3.png" in text and "resized 1 image(s) to 8x8" in text
    assert "resampled 1 recording(s) to 8000 Hz" in text and "mixed 1 multi-channel" in text
    assert load_dataset("toy", "train").storage["image"].shape == (7, 1, 8, 8)


# ---------------------------------------------------------------------------- bad specs and files
def _edit(old: str, new: str):
    return lambda spec: spec.replace(old, new, 1)


BAD_SPECS = [
    (_edit('kind = "image"', 'kind = "video"'), ["modalities.image.kind", "'video'"]),
    (_edit("channels = 1", "channels = 1\ncolour = 2"), ["modalities.image", "unknown key 'colour'"]),
    (_edit('name = "toy"', 'name = "toy"\nsplits = 3'), ["spec.toml", "unknown key 'splits'"]),
    (_edit("size = [8, 8]", "size = 8"), ["modalities.image.size", "[height, width]"]),
    (_edit('source = "tuples.csv"', 'source = "nope.csv"'), ["modalities.caption.source", "nope.csv"]),
    (_edit('source = "audio/"', 'source = "sounds/"'), ["modalities.speech.source", "sounds"]),
    (_edit('column = "caption"', 'column = "title"'), ["modalities.caption.column", "'title'", "tuples.csv"]),
    (_edit("[split]", "[split\n"), ["spec.toml", "not valid TOML", "line"]),
    (_edit('column = "split"', 'column = "split"\ntest_fraction = 0.2'), ["split", "unknown key 'column'"]),
    (_edit("length = 6", "length = 1"), ["modalities.caption.length"]),
    (_edit("[modalities.speech]", "[modalities.speech]\nsample_rate = 8000.5"), ["modalities.speech"]),
    (_edit("[modalities.speech]", "[modalities.speech]\nn_fft = 64"), ["modalities.speech", "hop_length"]),
    (_edit("integer = true", "integer = true\nclasses = ['1']"), ["labels.writer", "classes"]),
    (_edit('[labels.writer]', '[labels.digit]'), ["labels.digit", "already a factor"]),
]


@pytest.mark.parametrize("edit,needles", BAD_SPECS)
def test_bad_specs_name_the_key(edit, needles, tmp_path):
    spec = make_toy(tmp_path / "toy", edit(SPEC))
    with pytest.raises(MuniError) as e:
        import_dataset(spec)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    assert_nothing_cached()


def _rows_with(**changes):
    def edit(rows):
        for k, (i, v) in changes.items():
            rows[i][k] = v
        return rows
    return edit


BAD_FILES = [
    ("duplicate id", lambda root: _csv(root / "tuples.csv", _rows() + [_rows()[3]]), ["tuples.csv line 12", "duplicate id 's3'", "line 5"]),
    ("label outside classes", lambda root: _csv(root / "tuples.csv", _rows_with(digit=(4, "7"))(_rows())),
     ["tuples.csv line 6", "'7'", "classes"]),
    ("empty split", lambda root: _csv(root / "tuples.csv", [dict(r, split="train") for r in _rows()]),
     ["test split is empty"]),
    ("bad split value", lambda root: _csv(root / "tuples.csv", _rows_with(split=(5, "val"))(_rows())),
     ["tuples.csv line 7", "'val'"]),
    ("bad id", lambda root: _csv(root / "tuples.csv", _rows_with(id=(5, "s 5"))(_rows())),
     ["tuples.csv line 7", "bad id 's 5'"]),
    ("text too long", lambda root: _csv(root / "tuples.csv", _rows_with(caption=(4, "one two three four five"))(_rows())),
     ["tuples.csv line 6", "7 tokens", "length 6"]),
    ("integer label", lambda root: _csv(root / "tuples.csv", _rows_with(writer=(3, "x1"))(_rows())),
     ["tuples.csv line 5", "'x1'", "integer"]),
    ("ragged row", lambda root: (root / "tuples.csv").write_text((root / "tuples.csv").read_text() + "s99,train\n"),
     ["tuples.csv line 12", "2 fields"]),
    ("corrupt png", lambda root: (root / "images" / "s4.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken"),
     ["s4.png", "not a readable image"]),
    ("truncated png", lambda root: (root / "images" / "s4.png").write_bytes((root / "images" / "s5.png").read_bytes()[:50]),
     ["s4.png", "not a readable image"]),
    ("corrupt wav", lambda root: (root / "audio" / "s6.wav").write_bytes(b"RIFF0000WAVEjunk"),
     ["s6.wav", "WAV"]),
    ("bad file name", lambda root: _png(root / "images" / "s 1.png", 3), ["s 1.png", "bad id"]),
    ("same id twice in a folder", lambda root: shutil.copy(root / "images" / "s3.png", root / "images" / "s3.jpg"),
     ["s3.png", "s3.jpg", "duplicate id"]),
    ("id without modality", lambda root: _csv(root / "tuples.csv", _rows() + [
        {"id": "s77", "split": "train", "caption": "", "digit": "", "writer": "3"}]),
     ["tuples.csv line 12", "'s77'", "no modality"]),
]


@pytest.mark.parametrize("what,damage,needles", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_name_the_file_and_line(what, damage, needles, tmp_path, capsys):
    spec = make_toy(tmp_path / "toy")
    damage(tmp_path / "toy")
    with pytest.raises(MuniError) as e:
        import_dataset(spec)
    for needle in needles:
        assert needle in str(e.value), str(e.value)
    assert_nothing_cached()
    capsys.readouterr()
    assert main(["data", "import", str(spec), "--name", "bad"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("muni: error:") and needles[0] in err[0]
    assert_nothing_cached()


def test_missing_image_path_in_a_table_names_the_row(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    _png(root / "a.png", 3)
    _csv(root / "t.csv", [{"id": "a", "split": "train", "path": "a.png"},
                          {"id": "b", "split": "test", "path": "missing.png"}])
    (root / "spec.toml").write_text('[modalities.img]\nkind = "image"\nsource = "t.csv"\ncolumn = "path"\n'
                                    '[split]\ncolumn = "split"\n')
    with pytest.raises(MuniError, match=r"t\.csv line 3.*missing\.png"):
        import_dataset(root / "spec.toml", "t")
    assert_nothing_cached()


def test_cli_import_and_unknown_dataset_names(tmp_path, capsys):
    spec = make_toy(tmp_path / "toy")
    assert main(["data", "import", str(spec), "--name", "digits-ita"]) == 2
    assert "built-in" in capsys.readouterr().err
    assert main(["data", "import", str(tmp_path / "none.toml"), "--name", "x"]) == 2
    assert "none.toml" in capsys.readouterr().err
    assert main(["data", "import", str(spec), "--name", "mine"]) == 0
    assert "mine train: 7 samples" in capsys.readouterr().out
    assert main(["data", "info", "mine"]) == 0
    assert "absent in 1 samples" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", "nope", "--dry-run"])
    assert e.value.code == 2
    assert "'nope'" in capsys.readouterr().err
    assert main(["train", "--dataset", "mine", "--dry-run"]) == 0


# ---------------------------------------------------------------------------- fuzzing
TOML_LINES = st.sampled_from([
    "[split]", "[modalities.a]", "[modalities.b]", "[labels.c]", "[modalities]", "[labels.a]",
    'kind = "image"', 'kind = "text"', 'kind = "label"', 'kind = "audio"', 'kind = "x"', "kind = 3",
    'source = "images/"', 'source = "tuples.csv"', 'source = "audio/"', 'source = "../"', 'source = ""',
    'column = "caption"', 'column = "digit"', 'column = "split"', 'column = "id"', 'column = 1',
    "size = [8, 8]", "size = [0, 8]", "size = []", "channels = 3", "channels = 2", "length = 3",
    "length = 99999", "classes = []", 'classes = ["0", "0"]', 'classes = ["0"]', "integer = true",
    "test_fraction = 0.5", "test_fraction = 1", "seed = -1", "n_mels = 0", "sample_rate = 16000",
    "fmax = 1e9", 'vocab = "tuples.csv"', 'vocab = "nope"', 'id = "digit"', 'name = "x"', "x = 1",
    'format = "hf"', 'format = "zip"', "a = [", "= 3", "[[split]]", "nan = nan",
])


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(["insert", "replace", "delete"]), st.integers(0, 40), TOML_LINES),
                      max_size=4))
def test_fuzz_spec_text_raises_only_muni_errors(edits, tmp_path_factory):
    """The toy spec with a few lines inserted, replaced or deleted: mostly valid TOML, wrong meaning."""
    lines = SPEC.splitlines()
    for op, at, line in edits:
        at %= len(lines) + 1
        key = line.split("=")[0].strip()
        start = max([i + 1 for i in range(at) if lines[i].startswith("[")] + [0])
        end = min([i for i in range(at, len(lines)) if lines[i].startswith("[")] + [len(lines)])
        same = [i for i in range(start, end) if "=" in line and lines[i].split("=")[0].strip() == key]
        if op == "insert" and same:  # a second `key =` in a table is a TOML error: set it instead
            lines[same[0]] = line
        elif op == "insert":
            lines.insert(at, line)
        elif at < len(lines):
            lines[at:at + 1] = [line] if op == "replace" else []
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    try:
        spec = make_toy(root, "\n".join(lines) + "\n")
        try:
            import_dataset(spec, "fuzz", force=True)
        except MuniError:
            pass
    finally:
        shutil.rmtree(root, ignore_errors=True)


CELL = st.one_of(st.sampled_from(["", "0", "1", "2", "7", "train", "test", "val", "s1", "a b", "-1", "x" * 300]),
                 st.text(max_size=12))


ID = st.one_of(st.sampled_from(IDS), st.sampled_from(IDS), CELL)


@FUZZ
@given(rows=st.lists(st.tuples(ID, st.sampled_from(["train", "test", "train", "val", ""]), CELL, CELL),
                     min_size=0, max_size=8),
       fmt=st.sampled_from(["csv", "jsonl", "raw"]), raw=st.text(max_size=80))
def test_fuzz_table_contents_raise_only_muni_errors(rows, fmt, raw, tmp_path_factory):
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    try:
        source = f"t.{'jsonl' if fmt == 'jsonl' else 'csv'}"
        records = [{"id": i, "split": s, "caption": c, "digit": d} for i, s, c, d in rows]
        if fmt == "csv":
            _csv(root / source, records or [{"id": "", "split": "", "caption": "", "digit": ""}])
        elif fmt == "jsonl":
            (root / source).write_text("".join(json.dumps(r) + "\n" for r in records))
        else:
            (root / source).write_text("id,split,caption,digit\n" + raw)
        (root / "spec.toml").write_text(f"""
[split]
column = "split"
[modalities.caption]
kind = "text"
source = "{source}"
column = "caption"
[modalities.digit]
kind = "label"
source = "{source}"
column = "digit"
""")
        try:
            import_dataset(root / "spec.toml", "fuzz", force=True)
        except MuniError:
            pass
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---------------------------------------------------------------------------- export / import round trip
def _assert_identical(a, b) -> None:
    for group in ("storage", "factors", "present"):
        x, y = getattr(a, group), getattr(b, group)
        assert set(x) == set(y), (group, sorted(x), sorted(y))
        for k in x:
            assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, (group, k)
            assert x[k].numpy().tobytes() == y[k].numpy().tobytes(), (group, k)
    assert a.modalities == b.modalities
    assert all(a.modalities[k].params == b.modalities[k].params for k in a.modalities)


@pytest.mark.parametrize("name", ["digits-ita", "polymnist-quadrant"])
def test_export_then_import_is_byte_identical(name, tiny_ita, tiny_polymnist, tmp_path):
    # session fixtures as arguments: built in the session cache before `cache` redirects it
    built = {"digits-ita": tiny_ita, "polymnist-quadrant": tiny_polymnist}[name]
    out = export_dataset(built, tmp_path / "export")
    assert (out / "spec.toml").is_file() and (out / "tuples.csv").is_file()
    import_dataset(out / "spec.toml", "rt")
    for split, ds in built.items():
        _assert_identical(ds, load_dataset("rt", split))
    with pytest.raises(MuniError, match="not empty"):
        export_dataset(built, out)


def test_export_refuses_audio_without_source_recordings(tiny_ita, tmp_path):
    other = {s: dataclasses.replace(ds, name="someone-elses") for s, ds in tiny_ita.items()}
    with pytest.raises(MuniError, match="audio"):
        export_dataset(other, tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_training_on_the_imported_export_gives_the_same_losses(tiny_ita, tmp_path, monkeypatch):
    import muni.run
    from muni.run import RunSpec, run_training

    import_dataset(export_dataset(tiny_ita, tmp_path / "export") / "spec.toml", "ita-rt")
    real = muni.run.load_dataset
    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: (
        tiny_ita[split] if name == "digits-ita" else real(name, split, *a, **k)))
    spec = RunSpec.resolve("muni", "digits-ita", "quick", 0,
                           ["train.steps=2", "train.batch_size=8", "train.log_every=1", "train.num_threads=1"])
    a = run_training(spec, tmp_path / "builtin", progress=False, log=lambda *_: None)
    b = run_training(dataclasses.replace(spec, dataset="ita-rt"), tmp_path / "imported", progress=False,
                     log=lambda *_: None)
    assert a["final_losses"] == b["final_losses"]
    strip = lambda p: [ln.split(",")[:-1] for ln in p.read_text().splitlines()]  # noqa: E731
    assert (tmp_path / "builtin" / "log.csv").read_text().splitlines()[0] == \
        (tmp_path / "imported" / "log.csv").read_text().splitlines()[0]
    assert len(strip(tmp_path / "builtin" / "log.csv")) == 3

"""Benchmark datasets: determinism, shared content, split disjointness, captions, cache, CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from muni.cli import main
from muni.data import DATASETS, dataset_modalities, digits_ita, load_dataset, polymnist_quadrant
from muni.data.sources import load_backgrounds, load_fsdd, load_mnist
from muni.errors import ConfigError, MuniError
from muni.modalities import audio as audio_lib

from conftest import TINY


def _rows(x: np.ndarray) -> set[str]:
    return {hashlib.sha256(r.tobytes()).hexdigest() for r in x.reshape(len(x), -1)}


@pytest.mark.parametrize("module", [polymnist_quadrant, digits_ita])
def test_build_is_deterministic_in_the_seed(module):
    cfg = module.Config(n_train=120, n_test=40)
    a, _ = module.build(cfg, "train", 0)
    b, _ = module.build(cfg, "train", 0)
    c, _ = module.build(cfg, "train", 1)
    for name in a.storage:
        assert a.storage[name].tobytes() == b.storage[name].tobytes(), name
    assert any(a.storage[n].tobytes() != c.storage[n].tobytes() for n in a.storage)
    image = "view0" if "view0" in a.storage else "image"
    assert a.storage[image].tobytes() != c.storage[image].tobytes()


def test_cached_dataset_matches_a_fresh_build(tiny_polymnist):
    ds = tiny_polymnist["test"]
    built, _ = polymnist_quadrant.build(polymnist_quadrant.Config(**TINY), "test", 0)
    for name, x in built.storage.items():
        assert np.array_equal(ds.storage[name].numpy(), x)


@pytest.mark.parametrize("name", list(DATASETS))
def test_batches_are_in_model_format(name, request):
    ds = request.getfixturevalue({"polymnist-quadrant": "tiny_polymnist", "digits-ita": "tiny_ita"}[name])["train"]
    assert len(ds) == TINY["n_train"]
    assert ds.modalities == dataset_modalities(name, "quick", **TINY)
    batch = ds.batch(torch.arange(16))
    for m in ds.modalities.values():
        m.check_batch(batch[m.name])
        if m.kind == "image":
            assert ds.storage[m.name].dtype == torch.uint8 and batch[m.name].dtype == torch.float32
    assert set(["digit", "quadrant"]) <= set(ds.factors)


def test_polymnist_views_share_digit_and_quadrant(tiny_polymnist):
    ds = tiny_polymnist["train"]
    _, labels, _ = load_mnist("train")
    backgrounds, _ = load_backgrounds(3)
    f = {k: v.numpy() for k, v in ds.factors.items()}
    c, half = 32, 16
    writers = np.stack([f[f"writer{k}"] for k in range(3)], 1)
    assert (labels[writers] == f["digit"][:, None]).all()           # same class in every view
    assert (writers[:, 0] != writers[:, 1]).all() and (writers[:, 1] != writers[:, 2]).all() \
        and (writers[:, 0] != writers[:, 2]).all()                   # by different writers
    for k, bg in enumerate(backgrounds):
        view = ds.storage[f"view{k}"].numpy().astype(np.float32)
        ys, xs = f[f"crop_y{k}"], f[f"crop_x{k}"]
        crop = np.stack([bg[y:y + c, x:x + c].transpose(2, 0, 1) for y, x in zip(ys, xs)]).astype(np.float32)
        diff = np.abs(view - crop).sum(1)                            # (N, c, c): the digit's strokes
        mass = np.stack([diff[:, (q // 2) * half:(q // 2 + 1) * half, (q % 2) * half:(q % 2 + 1) * half]
                         .sum((1, 2)) for q in range(4)], 1)
        assert (mass.argmax(1) == f["quadrant"]).all()
        assert (mass.max(1) > 0.9 * mass.sum(1)).all()               # nothing outside the quadrant


def test_digits_ita_content(tiny_ita):
    ds = tiny_ita["test"]
    f = {k: v.numpy() for k, v in ds.factors.items()}
    img = ds.storage["image"].numpy()[:, 0].astype(np.float32)
    mass = np.stack([img[:, (q // 2) * 14:(q // 2 + 1) * 14, (q % 2) * 14:(q % 2 + 1) * 14].sum((1, 2))
                     for q in range(4)], 1)
    assert (mass.argmax(1) == f["quadrant"]).all() and (mass.max(1) == mass.sum(1)).all()
    _, labels, _ = load_mnist("test")
    assert (labels[f["writer"]] == f["digit"]).all()
    for tokens, d, q in zip(ds.storage["text"].tolist(), f["digit"], f["quadrant"]):
        assert digits_ita.parse_caption(tokens) == (d, q)
    fsdd = load_fsdd("test")
    assert (fsdd.digits[f["recording"]] == f["digit"]).all()
    rec = f["recording"][:5]
    waves = audio_lib.fix_length([fsdd.waves[r] for r in rec], audio_lib.num_samples(audio_lib.AUDIO_PARAMS))
    assert torch.allclose(ds.storage["audio"][:5], audio_lib.log_mel(waves))


def test_every_caption_parses_back():
    assert len(digits_ita.TEMPLATES) >= 15
    for t in range(len(digits_ita.TEMPLATES)):
        for d in range(10):
            for q in range(4):
                for numeral in (False, True):
                    for wording in (0, 1):
                        s = digits_ita.caption(t, d, q, numeral, wording)
                        tokens = digits_ita.text_lib.encode(s, digits_ita.VOCAB, digits_ita.TEXT_LENGTH)
                        assert digits_ita.parse_caption(tokens) == (d, q), s
    enc = lambda s: digits_ita.text_lib.encode(s, digits_ita.VOCAB, 12)  # noqa: E731
    assert digits_ita.parse_caption(enc("a seven and a 3 top left")) is None
    assert digits_ita.parse_caption(enc("a seven in the corner")) is None
    assert digits_ita.parse_caption([0] * 12) is None


def test_splits_are_disjoint(tiny_polymnist, tiny_ita):
    train_images, _, _ = load_mnist("train")
    test_images, _, _ = load_mnist("test")
    for ds, keys in ((tiny_polymnist, ["writer0", "writer1", "writer2"]), (tiny_ita, ["writer"])):
        used_train = _rows(train_images[np.concatenate([ds["train"].factors[k].numpy() for k in keys])])
        used_test = _rows(test_images[np.concatenate([ds["test"].factors[k].numpy() for k in keys])])
        assert used_train and used_test and not used_train & used_test
    assert not _rows(tiny_ita["train"].storage["audio"].numpy()) & _rows(tiny_ita["test"].storage["audio"].numpy())


def test_registry_errors():
    with pytest.raises(MuniError, match="polymnist-quadrant.*digits-ita"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="n_tran"):
        load_dataset("digits-ita", n_tran=3)
    mods = dataset_modalities("polymnist-quadrant", "paper")
    assert mods["view0"].shape == (3, 64, 64) and mods["quadrant"].num_classes == 4
    assert dataset_modalities("digits-ita")["audio"].params["sample_rate"] == 8000


def _entry(ds) -> Path:
    return Path(ds.info["cache"])


def test_corrupted_cache_is_rebuilt(tiny_ita, caplog):
    ds = tiny_ita["train"]
    path = _entry(ds) / "train.npz"
    good = path.read_bytes()
    path.write_bytes(good[:-100] + bytes(100))
    again = load_dataset("digits-ita", "train", **TINY)
    assert "rebuilding" in caplog.text and path.read_bytes() == good
    for k in ds.storage:
        assert torch.equal(again.storage[k], ds.storage[k])


def test_stale_cache_is_rebuilt(tiny_polymnist, caplog):
    manifest = _entry(tiny_polymnist["test"]) / "manifest.json"
    m = json.loads(manifest.read_text())
    m["recipe"]["version"] = -1
    manifest.write_text(json.dumps(m))
    load_dataset("polymnist-quadrant", "test", **TINY)
    assert "stale recipe" in caplog.text
    assert json.loads(manifest.read_text())["recipe"]["version"] == polymnist_quadrant.RECIPE_VERSION


def test_missing_data_cli_exit_2_and_no_cache_left(tmp_path, capsys, cache_dir):
    before = sorted(os.listdir(cache_dir / "datasets")) if (cache_dir / "datasets").exists() else []
    code = main(["data", "build", "digits-ita", "--seed", "123", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "MUNI_DATA_DIR" in err and str(tmp_path) in err and len(err.strip().splitlines()) == 1
    after = sorted(os.listdir(cache_dir / "datasets")) if (cache_dir / "datasets").exists() else []
    assert after == before


def test_cli_show_and_info_quick_preset(tmp_path, capsys):
    assert main(["data", "show", "digits-ita", "--n", "4", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert {"digits-ita-test-sheet.png", "digits-ita-test-image.png", "digits-ita-test-text.txt",
            "digits-ita-test-audio_003.wav", "digits-ita-test-audio.png"} <= names
    assert main(["data", "info", "digits-ita"]) == 0
    out = capsys.readouterr().out
    assert "[train] 20000 samples" in out and "[test] 2000 samples" in out
    assert "factor digit      counts [2000, 2000" in out

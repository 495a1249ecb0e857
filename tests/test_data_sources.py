"""Raw sources: integrity checks, missing-data messages, alternative MNIST arrays, FSDD split."""

from __future__ import annotations

import gzip
import shutil
import time

import numpy as np
import pytest

from muni.data import sources
from muni.errors import DataIntegrityError, DataMissingError


def _mnist_copy(data_dir, tmp_path, split="test"):
    """A tmp data dir holding copies of one MNIST split's files."""
    (tmp_path / "mnist").mkdir()
    for name in sources.MNIST_FILES[split]:
        shutil.copy(data_dir / "mnist" / name, tmp_path / "mnist" / name)
    return tmp_path / "mnist"


def test_mnist_official_files():
    images, labels, _ = sources.load_mnist("train")
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    images, labels, _ = sources.load_mnist("test")
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)


def test_any_gzip_of_the_official_files_passes(data_dir, tmp_path):
    d = _mnist_copy(data_dir, tmp_path)
    name = sources.MNIST_FILES["test"][1]
    raw = gzip.decompress((d / name).read_bytes())
    (d / name).write_bytes(gzip.compress(raw, compresslevel=1))
    assert sources.load_mnist("test", tmp_path)[1].shape == (10000,)


@pytest.mark.parametrize("damage", ["content", "truncated"])
def test_corrupted_mnist_rejected(data_dir, tmp_path, damage):
    d = _mnist_copy(data_dir, tmp_path)
    path = d / sources.MNIST_FILES["test"][0]
    if damage == "content":
        raw = bytearray(gzip.decompress(path.read_bytes()))
        raw[5000] ^= 0xFF
        path.write_bytes(gzip.compress(bytes(raw)))
    else:
        path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataIntegrityError, match="t10k-images"):
        sources.load_mnist("test", tmp_path)


def test_missing_mnist_names_files_dir_and_variable(tmp_path):
    with pytest.raises(DataMissingError) as e:
        sources.load_mnist("train", tmp_path)
    msg = str(e.value)
    for part in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", str(tmp_path / "mnist"),
                 "MUNI_DATA_DIR", "--data-dir"):
        assert part in msg


def test_failed_download_is_quick_and_clear(tmp_path, monkeypatch):
    monkeypatch.delenv(sources.OFFLINE_ENV, raising=False)

    def offline(url, timeout):
        assert timeout <= 10
        raise OSError("network unreachable")

    monkeypatch.setattr(sources.urllib.request, "urlopen", offline)
    t = time.time()
    with pytest.raises(DataMissingError, match="download failed.*network unreachable"):
        sources.load_mnist("test", tmp_path)
    assert time.time() - t < 5
    assert not any((tmp_path / "mnist").glob("*"))  # nothing half-downloaded


def test_user_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "mnist").mkdir()
    images = rng.integers(0, 256, (30, 20, 20), dtype=np.uint8)
    np.savez(tmp_path / "mnist" / "mnist-test.npz", images=images, labels=np.arange(30) % 10)
    got, labels, checksum = sources.load_mnist("test", tmp_path, source="npz")
    assert np.array_equal(got, images) and labels.dtype == np.int64 and len(checksum) == 64
    np.savez(tmp_path / "mnist" / "mnist-test.npz", images=images.astype(np.float32), labels=np.arange(30))
    with pytest.raises(DataIntegrityError, match="uint8"):
        sources.load_mnist("test", tmp_path, source="npz")
    with pytest.raises(DataMissingError, match="mnist-train.npz"):
        sources.load_mnist("train", tmp_path, source="npz")


def test_fsdd_conventional_split():
    train, test = sources.load_fsdd("train"), sources.load_fsdd("test")
    assert len(train.waves) == 2700 and len(test.waves) == 300
    assert not set(train.names) & set(test.names)
    assert all(int(n.rsplit("_", 1)[1][:-4]) < 5 for n in test.names)
    assert all(int(n.rsplit("_", 1)[1][:-4]) >= 5 for n in train.names)
    assert np.bincount(test.digits).tolist() == [30] * 10
    assert all(w.dtype == np.float32 and np.abs(w).max() <= 1.0 for w in test.waves)


def test_fsdd_missing(tmp_path):
    with pytest.raises(DataMissingError, match="MUNI_DATA_DIR"):
        sources.load_fsdd("test", tmp_path)


def test_backgrounds():
    images, checksum = sources.load_backgrounds(3)
    assert [im.shape[-1] for im in images] == [3, 3, 3] and all(im.dtype == np.uint8 for im in images)
    assert len(checksum) == 64

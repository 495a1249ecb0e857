"""Raw sources: MNIST, the Free Spoken Digit Dataset (FSDD) and background photographs.

Everything is read from the data directory (`muni.paths.data_dir`), laid out as::

    <data_dir>/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   official idx files
    <data_dir>/mnist/mnist-{train,test}.npz                            optional user arrays
    <data_dir>/fsdd/recordings/{digit}_{speaker}_{index}.wav           8 kHz mono
    <data_dir>/backgrounds/<BACKGROUNDS[k]>                            one photo per view

A missing file is downloaded into the data directory when the machine is online (never when
``MUNI_OFFLINE=1``); otherwise one `DataMissingError` names the files, the directory searched
and how to point muni elsewhere. MNIST idx files are verified by the SHA-256 of their
*decompressed* bytes, so any gzip of the official files passes.

User arrays (``mnist_source="npz"``): ``mnist-train.npz`` / ``mnist-test.npz`` each holding
``images`` (N, H, W) uint8 and ``labels`` (N,) integer in [0, 9].
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muni.errors import DataIntegrityError, DataMissingError, InputError
from muni.modalities.audio import read_wav
from muni.paths import DATA_ENV, data_dir as default_data_dir

OFFLINE_ENV = "MUNI_OFFLINE"
DOWNLOAD_TIMEOUT_S = 5.0

MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# SHA-256 of the decompressed official files.
MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                 "https://storage.googleapis.com/cvdf-datasets/mnist/")
MNIST_NPZ: dict[str, str] = {"train": "mnist-train.npz", "test": "mnist-test.npz"}
MNIST_SOURCES = ("idx", "npz")

FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.tar.gz"
FSDD_SAMPLE_RATE = 8000
FSDD_TEST_TAKES = 5  # takes 0-4 are the conventional test split
_FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")

# View k of PolyMNIST uses BACKGROUNDS[k] (scikit-image's bundled samples).
BACKGROUNDS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "rocket.jpg")
BACKGROUND_URL = "https://raw.githubusercontent.com/scikit-image/scikit-image/main/skimage/data/"

SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def _download(url: str, dest: Path) -> str | None:
    """Fetch `url` into `dest` atomically; return None on success, else the reason."""
    if os.environ.get(OFFLINE_ENV):
        return f"downloads disabled by {OFFLINE_ENV}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as r:
            data = r.read()
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, dest)
        return None
    except Exception as e:  # offline, read-only data dir, HTTP error: all mean "not available"
        return f"{type(e).__name__}: {e}"


def _missing(what: str, directory: Path, names: list[str], reason: str | None) -> DataMissingError:
    shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    why = f" (download failed: {reason})" if reason else ""
    return DataMissingError(
        f"{what} not found: missing {shown} in {directory}{why}. Put the files there, or point "
        f"${DATA_ENV} (or --data-dir) at a data directory holding mnist/, fsdd/ and backgrounds/")


def _ensure(what: str, directory: Path, names: list[str], mirrors: tuple[str, ...]) -> None:
    """Download absent `names` from the first working mirror or raise one `DataMissingError`."""
    reason = None
    for name in names:
        if (directory / name).exists():
            continue
        for base in mirrors:
            reason = _download(base + name, directory / name)
            if reason is None:
                break
        if reason:
            break  # offline: do not wait for every file to time out
    still = [n for n in names if not (directory / n).exists()]
    if still:
        raise _missing(what, directory, still, reason)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- MNIST

def _read_idx_gz(path: Path) -> np.ndarray:
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as e:
        raise DataIntegrityError(f"{path} is not a valid gzip file ({e}); delete it and retry")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST_SHA256[path.name]:
        raise DataIntegrityError(
            f"{path} fails its checksum (SHA-256 of the decompressed bytes {digest[:16]}…, expected "
            f"{MNIST_SHA256[path.name][:16]}…); delete it and retry")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(split: str, data_dir: str | os.PathLike | None = None,
               source: str = "idx") -> tuple[np.ndarray, np.ndarray, str]:
    """One MNIST split.

    Parameters
    ----------
    split : "train" or "test".
    data_dir : data directory (default `muni.paths.data_dir()`).
    source : "idx" (the official gzipped idx files, verified) or "npz" (user arrays, see module doc).

    Returns
    -------
    images : (N, H, W) uint8.
    labels : (N,) int64 in [0, 9].
    checksum : SHA-256 identifying the source files.
    """
    _check_split(split)
    directory = default_data_dir(data_dir) / "mnist"
    if source == "idx":
        names = list(MNIST_FILES[split])
        _ensure("MNIST", directory, names, MNIST_MIRRORS)
        images, labels = (_read_idx_gz(directory / n) for n in names)
        checksum = hashlib.sha256("".join(MNIST_SHA256[n] for n in names).encode()).hexdigest()
    elif source == "npz":
        path = directory / MNIST_NPZ[split]
        if not path.exists():
            raise _missing("MNIST arrays", directory, [path.name], None)
        try:
            with np.load(path, allow_pickle=False) as z:
                images, labels = z["images"], z["labels"]
        except (OSError, ValueError, KeyError, zlib.error) as e:
            raise DataIntegrityError(f"{path} is not an npz with arrays 'images' and 'labels' ({e})")
        if (images.dtype != np.uint8 or images.ndim != 3 or labels.shape != images.shape[:1]
                or labels.size == 0 or labels.min() < 0 or labels.max() > 9):
            raise DataIntegrityError(
                f"{path}: expected images (N, H, W) uint8 and labels (N,) in [0, 9], got images "
                f"{images.shape} {images.dtype} and labels {labels.shape} {labels.dtype}")
        checksum = sha256_file(path)
    else:
        raise InputError(f"unknown MNIST source {source!r}; choose one of {', '.join(MNIST_SOURCES)}")
    if images.shape[0] != labels.shape[0]:
        raise DataIntegrityError(f"MNIST {split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return np.array(images, np.uint8), labels.astype(np.int64), checksum


# ----------------------------------------------------------------------------- FSDD

@dataclass
class FsddSplit:
    """The FSDD recordings of one split.

    Attributes:
        waves: one float32 array in [-1, 1] per recording, 8 kHz.
        digits: (R,) int64 spoken digit.
        speakers: (R,) int64 index into `speaker_names`.
        names: file names, sorted.
        speaker_names: every speaker of the whole dataset, sorted.
        checksum: SHA-256 over the names and bytes of this split's files.
    """

    waves: list[np.ndarray]
    digits: np.ndarray
    speakers: np.ndarray
    names: list[str]
    speaker_names: list[str]
    checksum: str


def _fetch_fsdd(directory: Path) -> str | None:
    """Download the FSDD repository archive and unpack its recordings; None on success."""
    if os.environ.get(OFFLINE_ENV):
        return f"downloads disabled by {OFFLINE_ENV}"
    try:
        with urllib.request.urlopen(FSDD_URL, timeout=DOWNLOAD_TIMEOUT_S) as r:
            data = r.read()
        tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=".recordings."))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for m in tar.getmembers():
                name = m.name.rsplit("/", 1)[-1]
                if "/recordings/" in m.name and m.isfile() and _FSDD_NAME.match(name):
                    (tmp / name).write_bytes(tar.extractfile(m).read())
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def load_fsdd(split: str, data_dir: str | os.PathLike | None = None) -> FsddSplit:
    """The FSDD recordings of `split` (takes 0-4 test, 5-49 train), read with scipy."""
    _check_split(split)
    directory = default_data_dir(data_dir) / "fsdd" / "recordings"
    names = sorted(p.name for p in directory.glob("*.wav")) if directory.is_dir() else []
    if not names:
        reason = _fetch_fsdd(directory)
        names = sorted(p.name for p in directory.glob("*.wav")) if directory.is_dir() else []
        if not names:
            raise _missing("FSDD recordings", directory, ["{digit}_{speaker}_{index}.wav"], reason)
    parsed = [(n, _FSDD_NAME.match(n)) for n in names]
    bad = [n for n, m in parsed if m is None]
    if bad:
        raise DataIntegrityError(f"{directory}: unexpected file names {bad[:3]}; expected "
                                 "{digit}_{speaker}_{index}.wav")
    speaker_names = sorted({m[2] for _, m in parsed})
    keep = [(n, m) for n, m in parsed if (int(m[3]) < FSDD_TEST_TAKES) == (split == "test")]
    h = hashlib.sha256()
    waves = []
    for n, _ in keep:
        raw = (directory / n).read_bytes()
        h.update(n.encode() + raw)
        try:
            rate, x = read_wav(raw)
        except ValueError as e:
            raise DataIntegrityError(f"{directory / n}: {e}") from None
        if rate != FSDD_SAMPLE_RATE:
            raise DataIntegrityError(f"{directory / n}: sample rate {rate}, expected {FSDD_SAMPLE_RATE}")
        if x.ndim > 1:
            x = x.mean(axis=1)
        waves.append(x)
    digits = np.array([int(m[1]) for _, m in keep], np.int64)
    if set(digits.tolist()) != set(range(10)):
        raise DataIntegrityError(f"{directory}: the {split} split lacks recordings of digits "
                                 f"{sorted(set(range(10)) - set(digits.tolist()))}")
    speakers = np.array([speaker_names.index(m[2]) for _, m in keep], np.int64)
    return FsddSplit(waves, digits, speakers, [n for n, _ in keep], speaker_names, h.hexdigest())


# ----------------------------------------------------------------------------- backgrounds

def load_backgrounds(n: int, data_dir: str | os.PathLike | None = None) -> tuple[list[np.ndarray], str]:
    """The first `n` background photographs as (H, W, 3) uint8 arrays, plus their SHA-256."""
    if n > len(BACKGROUNDS):
        raise InputError(f"{n} views need {n} background photographs; only {len(BACKGROUNDS)} exist")
    from PIL import Image

    directory = default_data_dir(data_dir) / "backgrounds"
    names = list(BACKGROUNDS[:n])
    _ensure("background images", directory, names, (BACKGROUND_URL,))
    images, h = [], hashlib.sha256()
    for name in names:
        h.update(sha256_file(directory / name).encode())
        try:
            with Image.open(directory / name) as im:
                images.append(np.asarray(im.convert("RGB")))
        except OSError as e:
            raise DataIntegrityError(f"{directory / name} is not a readable image ({e})")
    return images, h.hexdigest()

"""Evaluation classifiers: small nets trained on the real train split, scored on the test split.

One net per non-label modality, one head per content factor it carries. With
`ClassifierConfig.share` (`--classifiers shared`; not the default) alike modalities, those of one
kind, shape, parameters and content factors such as PolyMNIST-QL's three views, share one net
trained on a mixture (each training sample shows one of them, drawn at random) for
`group_epochs` passes over the samples: about a third of the time on PolyMNIST-QL, with a lower
view0 digit accuracy (docs/results/classifiers.md). The nets:
- image: a small CNN with digit (10) and quadrant (4) heads; the conv features are flattened,
  not pooled, so the position (quadrant) survives;
- text: token embedding + 1-D convolution + max-pooling over time, digit and quadrant heads;
  where the dataset has a deterministic caption parser, `predict` uses it whenever it parses
  and the net otherwise (both accuracies are reported);
- audio: a CNN on the log-mel spectrogram, digit head.
A categorical label modality is its own prediction. On an imported dataset (`muni data import`)
every image, text and audio modality gets a head for every declared label (its ground-truth
factors), trained on the samples that have the modality and a known label, and
`MIN_ACCURACY` decides which of them may score coherence (`Classifiers.usable`). `features` is the penultimate layer
(for Fréchet distances and diversity). Weights are cached as safetensors + JSON (never pickle)
under ``cache_dir()/classifiers/<dataset>-<preset>-<hash>/``, the hash covering the classifier
config and the dataset recipe, so a changed recipe retrains them. Like the dataset cache
(`muni.data.cache`), an entry is written in a temporary sibling directory and moved into place
in one rename, and ``classifiers.json`` records the SHA-256 and size of every weight file; an
entry that fails the check (a file missing, truncated or altered) is logged and retrained.
Training takes fewer torch threads while other processes keep the CPUs busy
(`muni.training.threads.governed`), as `muni train` does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from muni.config import config_hash
from muni.data import digits_ita, load_dataset
from muni.data.base import MultimodalDataset
from muni.errors import InputError, MuniError
from muni.modalities.base import Modality
from muni.training.threads import governed
from muni.paths import cache_dir

# Content factors each modality kind carries (restricted to those the dataset has).
CONTENT_BY_KIND: dict[str, tuple[str, ...]] = {
    "image": ("digit", "quadrant"), "text": ("digit", "quadrant"), "audio": ("digit",)}
NUM_CLASSES: dict[str, int] = {"digit": 10, "quadrant": 4}
# A classifier below this held-out accuracy scores no coherence: its errors would read as the
# model's (`Classifiers.usable`); the benchmarks' classifiers are at 0.98-1.00.
MIN_ACCURACY = 0.9
# An imported dataset's classifiers train for at least this many steps (more epochs on small
# data: 4 epochs of 1500 captions are 48 steps, and left a text digit head at 0.26).
MIN_STEPS_IMPORTED = 1000
# Deterministic caption parsers: tokens -> (digit, quadrant) or None.
TEXT_PARSERS: dict[str, Callable] = {"digits-ita": digits_ita.parse_caption}
FORMAT_VERSION = 2
log = logging.getLogger("muni.evaluation")
# Training builds larger than a preset's train split: the same recipe and seed with more tuples
# (real MNIST training digits only; the test split, and so every evaluation, is unchanged).
# On PolyMNIST-QL's backgrounds the 16-px quick digits are hard to read: from the 20k quick
# tuples the view0 digit classifier stopped at 94-97.7%, below the 98% the evaluation needs.
TRAIN_TUPLES: dict[str, int] = {"polymnist-quadrant": 60_000}


@dataclass
class ClassifierConfig:
    """Size and schedule of the evaluation classifiers (sized for a 2-core CPU at `quick`)."""

    epochs: int = 4                # passes over the training build
    batch_size: int = 128
    lr: float = 2e-3               # Adam, one-cycle schedule
    width: int = 32                # channels of the first conv layers (text: embedding size)
    feature_dim: int = 64          # penultimate layer = `features`
    max_train: int | None = None   # cap on training samples (tiny test builds)
    seed: int = 0
    share: bool = False            # one net per group of alike modalities (`share_groups`)
    group_epochs: float = 3.5      # a shared net's passes over the samples (each shows one member)
    group_batch_size: int = 64     # and its batch (channels-last images: faster per sample on CPU)


# `--classifiers` of `muni eval` and `muni bench`: the evaluation classifiers by how they map
# modalities to nets. Results record it (`Classifiers.sharing`); every committed table is scored
# with `separate`, the default.
SHARING: dict[str, ClassifierConfig] = {"separate": ClassifierConfig(), "shared": ClassifierConfig(share=True)}


class ImageNet(nn.Module):
    """Two conv layers at each of three resolutions; features from a global max-pool (what: the
    digit, anywhere) and a 2x2 average pool (where: the quadrant), then linear -> features; one
    head per factor. (One conv per resolution left PolyMNIST-QL view0 at 94% digit accuracy.)"""

    def __init__(self, shape: tuple[int, ...], heads: dict[str, int], width: int, feature_dim: int):
        super().__init__()
        c, w = shape[0], width

        def block(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU()]

        self.conv = nn.Sequential(
            *block(c, w), *block(w, w), nn.MaxPool2d(2),                  # (B, W, H/2, W/2)
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),      # (B, 2W, H/4, W/4)
            *block(2 * w, 2 * w))
        self.where = nn.AdaptiveAvgPool2d(2)                              # (B, 2W, 2, 2)
        self.proj = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * w * 5, feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict({f: nn.Linear(feature_dim, k) for f, k in heads.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 0.05)  # per image
        h = self.conv(x)                                                  # (B, 2W, h, w)
        h = torch.cat([h.amax((2, 3)), self.where(h).flatten(1)], 1)      # (B, 10W)
        return self.proj(h)                                               # (B, F)


class TextNet(nn.Module):
    """Embedding, conv over tokens, max over time, linear -> features; heads per factor."""

    def __init__(self, vocab_size: int, heads: dict[str, int], width: int, feature_dim: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, width, padding_idx=0)
        self.conv = nn.Conv1d(width, 2 * width, 3, padding=1)
        self.proj = nn.Sequential(nn.Linear(2 * width, feature_dim), nn.ReLU())
        self.heads = nn.ModuleDict({f: nn.Linear(feature_dim, k) for f, k in heads.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x).transpose(1, 2)        # (B, E, L)
        h = torch.relu(self.conv(h)).amax(-1)    # (B, 2E)
        return self.proj(h)                      # (B, F)


def build_net(m: Modality, heads: dict[str, int], cfg: ClassifierConfig) -> nn.Module:
    if m.kind == "text":
        return TextNet(int(m.num_classes), heads, cfg.width, cfg.feature_dim)
    return ImageNet(m.shape, heads, cfg.width, cfg.feature_dim)  # images and log-mel audio


def _imported(dataset: MultimodalDataset) -> bool:
    from muni.data import DATASETS

    return dataset.name not in DATASETS


def content_factors(dataset: MultimodalDataset) -> dict[str, tuple[str, ...]]:
    """Content factors of every modality of `dataset` (a label modality carries itself; on an
    imported dataset every other modality carries every declared label but those declared
    ``evaluate = false``)."""
    out = {}
    for name, m in dataset.modalities.items():
        if m.kind == "categorical":
            out[name] = (name,) if name in dataset.factors else ()
        elif _imported(dataset):
            out[name] = tuple(f for f in dataset.factors
                              if f in dataset.info.get("content_factors", dataset.factors))
        else:
            out[name] = tuple(f for f in CONTENT_BY_KIND[m.kind] if f in dataset.factors)
    return out


def factor_classes(train: MultimodalDataset, test: MultimodalDataset) -> dict[str, int]:
    """Number of classes of every factor: a label modality's own, the benchmarks' (`NUM_CLASSES`),
    else one more than the largest value in either split."""
    out = {}
    for f, v in train.factors.items():
        m = train.modalities.get(f)
        if m is not None and m.kind == "categorical":
            out[f] = int(m.num_classes)
        elif f in NUM_CLASSES and not _imported(train):
            out[f] = NUM_CLASSES[f]
        else:
            out[f] = int(max(int(v.max()), int(test.factors[f].max()) if f in test.factors else 0)) + 1
    return out


def share_groups(modalities: dict[str, Modality], content: dict[str, tuple[str, ...]],
                 share: bool) -> list[tuple[str, ...]]:
    """The modalities that get a classifier, grouped by net: with `share`, every modality of one
    kind, shape, parameters and content factors shares a net; else each has its own."""
    groups: dict[str, list[str]] = {}
    for name, m in modalities.items():
        if m.kind == "categorical" or not content.get(name):
            continue
        key = json.dumps([{k: v for k, v in m.to_json().items() if k != "name"}, list(content[name])],
                         sort_keys=True, default=str) if share else name
        groups.setdefault(key, []).append(name)
    return [tuple(g) for g in groups.values()]


def _rows(dataset: MultimodalDataset, name: str | tuple[str, ...],
          factors: tuple[str, ...] = ()) -> torch.Tensor:
    """Indices of the samples that have modality `name` (any of a group) and a known value of any
    of `factors`."""
    names = (name,) if isinstance(name, str) else name
    ones = torch.ones(len(dataset), dtype=torch.bool)
    keep = torch.stack([dataset.present.get(k, ones) for k in names]).any(0)
    if factors:
        keep &= torch.stack([dataset.factors[f] >= 0 for f in factors]).any(0)
    return keep.nonzero().flatten()


class Classifiers:
    """The evaluation classifiers of one dataset.

    Attributes
    ----------
    content : ``{modality: factors}`` the factors each modality carries.
    accuracy : ``{modality: {factor: held-out accuracy}}``; for parsed text also
        ``<factor>_net`` (the net alone) and ``parse_rate`` (captions the parser reads).
    """

    def __init__(self, modalities: dict[str, Modality], content: dict[str, tuple[str, ...]],
                 nets: dict[str, nn.Module], accuracy: dict[str, dict[str, float]],
                 parser: Callable | None = None, info: dict | None = None):
        self.modalities, self.content, self.nets = modalities, content, nets
        self.accuracy, self.parser, self.info = accuracy, parser, info or {}
        for net in nets.values():
            net.eval()

    @property
    def sharing(self) -> str:
        """``shared`` when one net serves several modalities, else ``separate`` (also entries from
        before the choice); a dataset without alike modalities has the same classifiers either way."""
        return self.info.get("sharing", "separate")

    def usable(self, threshold: float = MIN_ACCURACY) -> tuple["Classifiers", dict[str, float]]:
        """These classifiers with every (modality, factor) head below `threshold` held-out
        accuracy taken out of `content`, and those refused: ``{"<modality>:<factor>": acc}``."""
        refused = {f"{m}:{f}": a for m, acc in self.accuracy.items() for f, a in acc.items()
                   if f in self.content.get(m, ()) and a < threshold}
        content = {m: tuple(f for f in fs if f"{m}:{f}" not in refused) for m, fs in self.content.items()}
        return Classifiers(self.modalities, content, self.nets, self.accuracy, self.parser, self.info), refused

    def _check(self, modality: str, x: torch.Tensor) -> None:
        if modality not in self.modalities:
            raise InputError(f"no classifier for modality {modality!r}; have: {', '.join(self.modalities)}")
        self.modalities[modality].check_batch(x, what="classifier input")

    @torch.no_grad()
    def logits(self, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.nets[modality]
        h = net(x.float() if self.modalities[modality].kind != "text" else x.long())
        return {f: head(h) for f, head in net.heads.items()}

    @torch.no_grad()
    def predict(self, modality: str, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predicted content factors of a batch: ``{factor: (B,) int64}``."""
        self._check(modality, x)
        m = self.modalities[modality]
        if m.kind == "categorical":
            return {modality: x.long()} if self.content[modality] else {}
        pred = {f: v.argmax(-1) for f, v in self.logits(modality, x).items()}
        if m.kind == "text" and self.parser is not None:
            vocab = m.params.get("vocab")
            for i, row in enumerate(x.tolist()):
                parsed = self.parser(row, vocab) if vocab else self.parser(row)
                if parsed is not None:
                    for f, v in zip(("digit", "quadrant"), parsed):
                        if f in pred:
                            pred[f][i] = v
        return pred

    @torch.no_grad()
    def features(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``(B, F)``; a label gives its one-hot vector."""
        self._check(modality, x)
        m = self.modalities[modality]
        if m.kind == "categorical":
            return nn.functional.one_hot(x.long(), int(m.num_classes)).float()
        return self.nets[modality](x.float() if m.kind != "text" else x.long())


def _mixture(train: MultimodalDataset, names: tuple[str, ...], idx: torch.Tensor,
             g: torch.Generator) -> torch.Tensor:
    """The inputs of the samples `idx`, each showing one of the modalities `names` that it has,
    drawn uniformly."""
    if len(names) == 1:
        return train.batch(idx, list(names))[names[0]]
    present = train.present_batch(idx, list(names))
    if present is None:
        pick = torch.randint(len(names), (len(idx),), generator=g)
    else:
        pick = torch.multinomial(torch.stack([present[k] for k in names], 1).float(), 1, generator=g)[:, 0]
    parts = {j: train.batch(idx[pick == j], [k])[k] for j, k in enumerate(names)}
    x = parts[0].new_empty((len(idx), *parts[0].shape[1:]))
    for j, part in parts.items():
        x[pick == j] = part
    return x


def _train_one(net: nn.Module, train: MultimodalDataset, names: tuple[str, ...], factors: tuple[str, ...],
               cfg: ClassifierConfig) -> None:
    """Train `net` on the modalities `names` (one, or a group sharing the net: `_mixture`)."""
    g = torch.Generator().manual_seed(cfg.seed)
    rows = _rows(train, names, factors)                    # samples that have it (and a label)
    n = len(rows) if cfg.max_train is None else min(cfg.max_train, len(rows))
    group = len(names) > 1
    batch = cfg.group_batch_size if group else cfg.batch_size
    per_epoch = -(-n // batch)
    epochs = cfg.group_epochs if group else cfg.epochs
    if _imported(train) and cfg.max_train is None:
        epochs = max(epochs, -(-MIN_STEPS_IMPORTED // per_epoch))
    steps = math.ceil(epochs * per_epoch)
    image = len(train.modalities[names[0]].shape) == 3
    layout = torch.channels_last if group and image else torch.contiguous_format
    net.to(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.15)
    net.train()
    bar = tqdm(total=steps, desc=f"classifier {'+'.join(names)}", leave=False)
    done = 0
    with governed() as governor:  # fewer threads while other processes keep the CPUs busy
        for _ in range(math.ceil(epochs)):
            perm = rows[torch.randperm(len(rows), generator=g)[:n]]
            for s in range(0, n, batch):
                if done == steps:  # a fraction of the last pass (`group_epochs`)
                    break
                idx = perm[s:s + batch]
                h = net(_mixture(train, names, idx, g).contiguous(memory_format=layout))
                loss = sum(nn.functional.cross_entropy(net.heads[f](h), train.factors[f][idx], ignore_index=-1)
                           for f in factors if (train.factors[f][idx] >= 0).any())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                governor.poll()
                bar.update()
                done += 1
    bar.close()
    net.to(memory_format=torch.contiguous_format)  # as a loaded net is
    net.eval()


def _accuracy(clf: Classifiers, test: MultimodalDataset, name: str) -> dict[str, float]:
    """Held-out accuracy per factor, over the test samples that have the modality and the label."""
    rows = _rows(test, name)
    x = test.storage[name][rows]
    preds = [clf.predict(name, test.batch(rows[s:s + 1000], [name])[name]) for s in range(0, len(x), 1000)]
    acc = {}
    for f in clf.content[name]:
        truth = test.factors[f][rows]
        known = truth >= 0
        if not known.any():
            raise MuniError(f"dataset {test.name}: no test sample has both {name!r} and a value of "
                            f"{f!r}; the classifier cannot be scored")
        acc[f] = float((torch.cat([p[f] for p in preds])[known] == truth[known]).double().mean())
    if test.modalities[name].kind == "text" and clf.parser is not None:
        parser, clf.parser = clf.parser, None
        acc.update({f"{f}_net": v for f, v in _accuracy(clf, test, name).items()})
        clf.parser = parser
        vocab = test.modalities[name].params.get("vocab")
        acc["parse_rate"] = sum(parser(r, vocab) is not None for r in x.tolist()) / len(x)
    return acc


def train_classifiers(train: MultimodalDataset, test: MultimodalDataset,
                      cfg: ClassifierConfig = ClassifierConfig()) -> Classifiers:
    """Train one classifier per non-label modality on `train`; score it on `test`."""
    torch.manual_seed(cfg.seed)
    content = content_factors(train)
    classes = factor_classes(train, test)
    nets = {}
    groups = share_groups(train.modalities, content, cfg.share)
    for group in groups:
        net = build_net(train.modalities[group[0]], {f: classes[f] for f in content[group[0]]}, cfg)
        _train_one(net, train, group, content[group[0]], cfg)
        nets.update(dict.fromkeys(group, net))
    clf = Classifiers(train.modalities, content, nets, {}, TEXT_PARSERS.get(train.name),
                      {"classes": classes, "sharing": "shared" if any(len(g) > 1 for g in groups) else "separate"})
    clf.accuracy = {name: ({f: 1.0 for f in content[name]} if name not in nets else _accuracy(clf, test, name))
                    for name in train.modalities}
    return clf


def classifier_dir(dataset: MultimodalDataset, cfg: ClassifierConfig) -> Path:
    """Cache folder: hash of the classifier config and the dataset recipe. `share` (and the
    groups' schedule) enters the hash only where a group has several modalities, so a dataset
    it does not change (Digits-ITA) and ``share=False`` keep the entries from before it existed."""
    recipe = {k: dataset.info.get(k) for k in ("recipe_hash", "recipe_version", "config", "seed")}
    groups = [g for g in share_groups(dataset.modalities, content_factors(dataset), cfg.share) if len(g) > 1]
    fields = {k: v for k, v in asdict(cfg).items() if k not in ("share", "group_epochs", "group_batch_size")}
    grouped = [groups, cfg.group_epochs, cfg.group_batch_size] if groups else []
    h = config_hash(fields, recipe, FORMAT_VERSION, *grouped)
    return cache_dir() / "classifiers" / f"{dataset.name}-{dataset.info.get('preset', 'custom')}-{h}"


def _digest(path: Path) -> dict[str, int | str]:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def save_classifiers(clf: Classifiers, path: Path, cfg: ClassifierConfig) -> None:
    """Write the cache entry `path` atomically: a temporary sibling directory, then one rename.

    Raises
    ------
    MuniError
        When the cache directory cannot be written (one line naming it).
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    except OSError as e:
        raise MuniError(f"classifier cache {path.parent}: cannot write there ({e.strerror or e}); "
                        f"set MUNI_CACHE_DIR to a writable directory") from None
    try:
        files = {}
        for name, net in clf.nets.items():
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp / f"{name}.safetensors"))
            files[name] = _digest(tmp / f"{name}.safetensors")
        meta = {"format_version": FORMAT_VERSION, "config": asdict(cfg), "accuracy": clf.accuracy,
                "classes": clf.info.get("classes"),
                "content": {k: list(v) for k, v in clf.content.items()}, "files": files,
                "modalities": {k: m.to_json() for k, m in clf.modalities.items()}, "info": clf.info}
        (tmp / "classifiers.json").write_text(json.dumps(meta, indent=2))
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as e:
        raise MuniError(f"classifier cache {path}: cannot write it ({e.strerror or e}); set "
                        f"MUNI_CACHE_DIR to a writable directory") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cache_problem(path: Path) -> str | None:
    """Why the cache entry `path` cannot be used (None when every weight file matches its
    recorded SHA-256 and size and every classifier the manifest lists is present)."""
    try:
        meta = json.loads((path / "classifiers.json").read_text())
        files, content = meta["files"], meta["content"]
    except (OSError, ValueError, KeyError, TypeError):
        return "missing or unreadable classifiers.json (or one without checksums)"
    if meta.get("format_version") != FORMAT_VERSION or not isinstance(files, dict):
        return f"format version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
    for name, factors in content.items():
        kind = (meta.get("modalities", {}).get(name) or {}).get("kind")
        if factors and kind != "categorical" and name not in files:
            return f"no weights recorded for the {name} classifier"
    for name, want in files.items():
        file = path / f"{name}.safetensors"
        if not file.is_file():
            return f"{file.name} is missing"
        if _digest(file) != want:
            return f"{file.name} fails its checksum (truncated or altered)"
    return None


def load_classifiers(path: Path, dataset_name: str) -> Classifiers:
    """Load a cache entry; call `cache_problem` first (this trusts the files it lists)."""
    meta = json.loads((path / "classifiers.json").read_text())
    cfg = ClassifierConfig(**meta["config"])
    mods = {k: Modality.from_json(v) for k, v in meta["modalities"].items()}
    content = {k: tuple(v) for k, v in meta["content"].items()}
    classes = meta.get("classes") or NUM_CLASSES  # entries from before it name the benchmarks' factors
    nets = {}
    for name in meta["files"]:
        nets[name] = build_net(mods[name], {f: classes[f] for f in content[name]}, cfg)
        nets[name].load_state_dict(load_file(str(path / f"{name}.safetensors")))
    return Classifiers(mods, content, nets, meta["accuracy"], TEXT_PARSERS.get(dataset_name), meta["info"])


def load_or_train_classifiers(dataset_name: str, preset: str = "quick", seed: int = 0,
                              cfg: ClassifierConfig | None = None, data_dir=None,
                              **overrides) -> Classifiers:
    """The evaluation classifiers of a dataset, from the cache or trained and cached first.

    Parameters
    ----------
    dataset_name, preset, seed, data_dir, **overrides : as for `muni.data.load_dataset`
        (overrides such as ``n_train=2000`` give tiny builds for tests).
    cfg : classifier size and schedule (default `ClassifierConfig()`).
    """
    cfg = cfg or ClassifierConfig()
    train = load_dataset(dataset_name, "train", preset, seed, data_dir, **overrides)
    more = TRAIN_TUPLES.get(dataset_name, 0)
    if more > len(train) and "n_train" not in overrides:  # explicit (test) builds stay as asked
        train = load_dataset(dataset_name, "train", preset, seed, data_dir, **{**overrides, "n_train": more})
    path = classifier_dir(train, cfg)
    if path.exists() and not path.is_dir():
        raise MuniError(f"classifier cache {path}: exists and is not a directory; remove it or set "
                        f"MUNI_CACHE_DIR elsewhere")
    problem = cache_problem(path) if path.exists() else "not trained"
    if problem is None:
        return load_classifiers(path, dataset_name)
    if problem != "not trained":
        log.warning("classifier cache %s: %s; retraining", path, problem)
    test = load_dataset(dataset_name, "test", preset, seed, data_dir, **overrides)
    t0 = time.perf_counter()
    clf = train_classifiers(train, test, cfg)
    clf.info = {**clf.info, "dataset": dataset_name, "preset": preset, "seed": seed, "overrides": overrides,
                "train_tuples": len(train), "train_seconds": round(time.perf_counter() - t0, 1),
                "path": str(path)}
    save_classifiers(clf, path, cfg)
    return clf

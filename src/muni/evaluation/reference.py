"""Reference models: the bounds and sanity rows every evaluation table carries.

Each satisfies the `Generative` protocol over one split (the test split in reports):
- ``oracle``: real samples whose content (digit and quadrant) matches the given content;
  unconditionally, real joint tuples. The ceiling, up to classifier error.
- ``independent``: every target from a different random real tuple, whatever the condition.
  Its expected scores are the chance levels `muni.evaluation.coherence` computes exactly.
- ``shuffled``: the oracle's real tuples with every modality shuffled across the batch
  (real, sharp samples whose content no longer matches): must score at chance.
- ``noise``: uniform-noise images, random tokens, noise spectrograms, uniform labels.
- ``blank``: constant images, all-padding text, silent spectrograms, uniform labels.
- ``prototype``: one fixed real tuple per content (digit and quadrant): as coherent as the
  oracle, with no variation at all for one condition; diversity and coherent diversity must
  read it as 0.
``shuffled``, ``noise`` and ``blank`` are the sanity rows: a metric that rewards them is broken.

The oracle reads the content of a given non-label sample by looking it up in the split (the
harness only conditions on real test samples); anything else is refused with an `InputError`.
"""

from __future__ import annotations

import torch

from muni.data.base import MultimodalDataset
from muni.errors import InputError
from muni.evaluation.classifiers import content_factors
from muni.methods.base import NoSampling, check_generate_args


def _key(x: torch.Tensor, kind: str) -> bytes:
    """A hashable key of one sample in model format (images back to their uint8 storage)."""
    if kind == "image":
        x = (x.float() * 255).round().to(torch.uint8)
    return x.contiguous().numpy().tobytes()


class ReferenceModel:
    """Base: holds the split, validates arguments, and draws real samples at indices."""

    Sampling = NoSampling

    def __init__(self, dataset: MultimodalDataset):
        self.dataset = dataset
        self.modalities = dataset.modalities

    def generate(self, given: dict[str, torch.Tensor], targets: list[str], n: int | None = None,
                 generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        b = check_generate_args(self.modalities, given, targets, n)
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        return self._generate(given, list(targets), b, g)

    def _generate(self, given, targets, b, g) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _random_indices(self, b: int, g: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.dataset), (b,), generator=g)


class Oracle(ReferenceModel):
    """Real samples matching the given content; real joint tuples when nothing is given."""

    def __init__(self, dataset: MultimodalDataset):
        super().__init__(dataset)
        self.content = content_factors(dataset)
        self._lookup: dict[str, dict[bytes, int]] = {}
        self._pools: dict[tuple, dict[tuple, torch.Tensor]] = {}

    def _index_of(self, name: str, x: torch.Tensor) -> torch.Tensor:
        kind = self.modalities[name].kind
        if name not in self._lookup:
            self._lookup[name] = {_key(row, kind): i for i, row in
                                  enumerate(self.dataset.batch(slice(None), [name])[name])}
        try:
            return torch.tensor([self._lookup[name][_key(row, kind)] for row in x])
        except KeyError:
            raise InputError(f"oracle: a given {name!r} sample is not in the {self.dataset.split} "
                             f"split of {self.dataset.name}; the oracle only conditions on its samples") from None

    def given_content(self, given: dict[str, torch.Tensor], b: int) -> dict[str, torch.Tensor]:
        """``{factor: (B,)}`` the content the given modalities determine."""
        out: dict[str, torch.Tensor] = {}
        for name, x in given.items():
            if self.modalities[name].kind == "categorical":
                vals = {name: x.long()} if self.content[name] else {}
            else:
                idx = self._index_of(name, x)
                vals = {f: self.dataset.factors[f][idx] for f in self.content[name]}
            for f, v in vals.items():
                if f in out and not torch.equal(out[f], v):
                    raise InputError(f"oracle: the given modalities disagree on {f!r}")
                out[f] = v
        return out

    def _pool(self, factors: tuple[str, ...]) -> dict[tuple, torch.Tensor]:
        if factors not in self._pools:
            keys = torch.stack([self.dataset.factors[f] for f in factors], 1)
            uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
            self._pools[factors] = {tuple(u.tolist()): torch.nonzero(inv == j).flatten()
                                    for j, u in enumerate(uniq)}
        return self._pools[factors]

    def matching_indices(self, given, b, g) -> torch.Tensor:
        content = self.given_content(given, b)
        if not content:
            return self._random_indices(b, g)
        factors = tuple(sorted(content))
        pools = self._pool(factors)
        rows = torch.stack([content[f] for f in factors], 1).tolist()
        u = torch.rand(b, generator=g)
        out = []
        for r, ui in zip(rows, u.tolist()):
            pool = pools.get(tuple(r))
            if pool is None:
                raise InputError(f"oracle: no {self.dataset.split} sample has content "
                                 f"{dict(zip(factors, r))}")
            out.append(pool[int(ui * len(pool))])
        return torch.stack(out)

    def _generate(self, given, targets, b, g):
        return self.dataset.batch(self.matching_indices(given, b, g), targets)


class Independent(ReferenceModel):
    """Every target from its own random real tuple, independent of the condition."""

    def _generate(self, given, targets, b, g):
        return {t: self.dataset.batch(self._random_indices(b, g), [t])[t] for t in targets}


class Shuffled(Oracle):
    """The oracle's tuples with each target shuffled across the batch."""

    def _generate(self, given, targets, b, g):
        out = super()._generate(given, targets, b, g)
        return {t: v[torch.randperm(b, generator=g)] for t, v in out.items()}


class Prototype(Oracle):
    """The oracle with each content's pool cut to its first tuple: one fixed real sample per
    class, for every condition and unconditionally (a model that copies one training image per
    class)."""

    def _pool(self, factors: tuple[str, ...]) -> dict[tuple, torch.Tensor]:
        return {k: v[:1] for k, v in super()._pool(factors).items()}

    def _random_indices(self, b: int, g: torch.Generator) -> torch.Tensor:
        factors = tuple(sorted({f for fs in self.content.values() for f in fs}))
        idx = super()._random_indices(b, g)
        first = self._pool(factors)
        keys = torch.stack([self.dataset.factors[f][idx] for f in factors], 1).tolist()
        return torch.stack([first[tuple(k)][0] for k in keys])


def _uniform_labels(m, b, g) -> torch.Tensor:
    return torch.randint(int(m.num_classes), (b,), generator=g)


class _Filled(ReferenceModel):
    """Targets filled by kind without looking at the condition; labels uniformly random."""

    fills: dict = {}

    def _generate(self, given, targets, b, g):
        out = {}
        for t in targets:
            m = self.modalities[t]
            out[t] = _uniform_labels(m, b, g) if m.kind == "categorical" else self.fills[m.kind](m, b, g)
        return out


class Noise(_Filled):
    """Uniform noise in every modality's value range; labels uniformly random."""

    fills = {"text": lambda m, b, g: torch.randint(int(m.num_classes), (b, *m.shape), generator=g),
             "audio": lambda m, b, g: torch.rand((b, *m.shape), generator=g) * 2 - 1,
             "image": lambda m, b, g: torch.rand((b, *m.shape), generator=g)}


class Blank(_Filled):
    """Constant images (mid-grey), all-padding text, silent spectrograms; uniform labels."""

    fills = {"text": lambda m, b, g: torch.zeros((b, *m.shape), dtype=torch.int64),
             "audio": lambda m, b, g: torch.full((b, *m.shape), -1.0),
             "image": lambda m, b, g: torch.full((b, *m.shape), 0.5)}


REFERENCE_MODELS: dict[str, type[ReferenceModel]] = {
    "oracle": Oracle, "independent": Independent, "shuffled": Shuffled, "noise": Noise, "blank": Blank,
    "prototype": Prototype}
SANITY_ROWS: tuple[str, ...] = ("shuffled", "noise", "blank")

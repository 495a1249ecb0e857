"""The suites of `muni bench`, as data.

A suite is a dataset and named rows; a row is a method with ``--set`` overrides and sampler
options. Rows that differ only in their sampler options share one trained run (a sampler option
is not a training switch). `Sweep` names a sampler option whose values the bench sweeps on the
seed-0 run of a row, and the task it scores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from muni.errors import ConfigError


@dataclass(frozen=True)
class Row:
    """One table row: a method with ``--set`` overrides, scored with sampler options."""

    method: str
    overrides: tuple[str, ...] = ()
    sampling: tuple[tuple[str, Any], ...] = ()            # (option, value) for every generate call


@dataclass(frozen=True)
class Sweep:
    """Coherence against the values of one sampler option (seed-0 run of a row).

    ``task="unconditional"`` scores unconditional coherence; ``task="labels"`` scores, for each
    label factor in `factors`, Single-L→I and one-to-many coherence given that label.
    """

    option: str
    values: tuple[float, ...]
    task: Literal["unconditional", "labels"] = "unconditional"
    factors: tuple[str, ...] = ()


NFE_SWEEP = Sweep("prior_nfe", (2, 4, 8, 16, 32, 100))
GUIDANCE_SWEEP = Sweep("guidance", (1.0, 2.0, 4.0, 6.0), "labels", ("digit", "quadrant"))


@dataclass(frozen=True)
class Suite:
    dataset: str
    rows: dict[str, Row]                                   # row name -> row
    summary: str = ""
    sweeps: dict[str, tuple[Sweep, ...]] = field(default_factory=dict)   # row name -> its sweeps
    speed_options: dict[str, tuple[dict[str, Any], ...]] = field(default_factory=dict)
    # row name -> sampler options its unconditional sampling speed is measured at (default: none)


_BASELINES = {"MVAE": Row("mvae"), "MMVAE": Row("mmvae"), "MoPoE": Row("mopoe"),
              "HELVAE": Row("helvae"), "JointFlow": Row("jointflow"),
              "MMGen": Row("mmgen")}
_PRIOR_NFE_SPEED = ({"prior_nfe": 8}, {"prior_nfe": 32})
_MUNI_SPEED = {"MUNI": _PRIOR_NFE_SPEED}

_ABLATION = {
    "MUNI (default)": Row("muni"),
    "aggregation=poe": Row("muni", ("model.aggregation=poe",)),
    "self_recon=attached": Row("muni", ("model.self_recon=attached",)),
    "self_recon=target_detached": Row("muni", ("model.self_recon=target_detached",)),  # the default
    # until the 3-seed ablation of 2026-11-23 (docs/results/quick/REPORT.md) chose full_detach
    "prior_route=all_subsets": Row("muni", ("model.prior_route=all_subsets",)),
    "prior_route=full_set": Row("muni", ("model.prior_route=full_set",)),
    "decoder=flow": Row("muni", ("model.codec.image_decoder=flow", "model.codec.audio_decoder=flow")),
    "decoder=private": Row("muni", ("model.codec.image_decoder=private", "model.codec.audio_decoder=private")),
    "decoder=residual_flow": Row("muni", ("model.codec.image_decoder=residual_flow",
                                          "model.codec.audio_decoder=residual_flow")),
    "decoder=gaussian": Row("muni", ("model.codec.image_decoder=gaussian",  # the default until
                                     "model.codec.audio_decoder=gaussian")),  # 2026-12-02
    "private_grad=raw": Row("muni", ("model.codec.private_grad=raw",)),  # the default until 2026-12-03
    "private_start=0": Row("muni", ("model.codec.private_start=0",)),   # the default until 2026-12-03
    "private_prior=conditional": Row("muni", ("model.codec.private_prior=conditional",)),
    "detach_kinds=+categorical": Row("muni", ("model.detach_kinds=image,audio,text,categorical",)),
    "rate_target=flow_prior": Row("muni", ("model.rate_target=flow_prior",)),
    # twice the learning rate (docs/results/lr-ita): whether a rate that helps on Digits-ITA
    # costs PolyMNIST-QL anything
    "lr=2e-3": Row("muni", ("train.lr=2e-3",)),
    # a sampler option: scored on the default's runs, not retrained
    "conditional_sampler=posterior": Row("muni", (), (("conditional_sampler", "posterior"),)),
}

_ABLATION_ITA = {
    "MUNI (preset)": Row("muni"),
    "private_start=0": Row("muni", ("model.codec.private_start=0",)),
    "flow_fraction=0.125": Row("muni", ("model.codec.flow_fraction=0.125",)),
    "flow_fraction=0.0625": Row("muni", ("model.codec.flow_fraction=0.0625",)),
    # twice the learning rate: MUNI on Digits-ITA is bound by its steps (docs/results/lr-ita)
    "lr=2e-3": Row("muni", ("train.lr=2e-3",)),
}

# Every Digits-ITA method of issue 16 at the quick preset's learning rate and at twice it: whether
# a doubled rate helps MUNI alone or every method (docs/results/lr-ita)
_LR_ITA = {f"{name}{tag}": Row(method, overrides)
           for name, method in (("JointFlow", "jointflow"), ("MoPoE", "mopoe"), ("MUNI", "muni"))
           for tag, overrides in (("", ()), (" lr=2e-3", ("train.lr=2e-3",)))}

SUITES: dict[str, Suite] = {
    "polymnist-quadrant": Suite("polymnist-quadrant", {**_BASELINES, "MUNI": Row("muni")},
                                "PolyMNIST-Quadrant-Labels: the paper's controlled table",
                                {"MUNI": (NFE_SWEEP, GUIDANCE_SWEEP)}, _MUNI_SPEED),
    "digits-ita": Suite("digits-ita", {"JointFlow": Row("jointflow"), "MMGen": Row("mmgen"),
                                       "MoPoE": Row("mopoe"), "MUNI": Row("muni")},
                        "Digits-ITA: image-text-audio, many-to-one and unconditional",
                        {"MUNI": (NFE_SWEEP,)}, _MUNI_SPEED),
    "ablation": Suite("polymnist-quadrant", _ABLATION, "one row per MUNI switch value, everything else fixed",
                      speed_options={row: _PRIOR_NFE_SPEED for row in _ABLATION}),
    # Digits-ITA's preset against its refiner start until 2026-12-03, against the share of rows
    # its audio refiner learns on (docs/results/decoders.md) and against a doubled learning rate;
    # `--rows` picks a pair
    "ablation-ita": Suite("digits-ita", _ABLATION_ITA, "Digits-ITA's MUNI preset against one switch value",
                          speed_options={row: _PRIOR_NFE_SPEED for row in _ABLATION_ITA}),
    "lr-ita": Suite("digits-ita", _LR_ITA, "each Digits-ITA method at the preset's learning rate and at twice it"),
}


def expand(names: list[str]) -> list[str]:
    """Suite names with ``all`` expanded, in order, without repeats."""
    out = []
    for n in names:
        if n != "all" and n not in SUITES:
            raise ConfigError(f"unknown suite {n!r}; choose from {', '.join(SUITES)}, all")
        out += list(SUITES) if n == "all" else [n]
    return list(dict.fromkeys(out))

"""Explicit registries: methods and run presets, feeding the CLI's choices.

A method is a model class with a ``method`` name and a config dataclass; it is built from the
dataset's modalities and that config. A preset fixes the training budget and the backbone sizes
per dataset, identical for every method so that tables compare like with like.

The other registries live beside the one layer that reads them, so that no module imports a
layer above its own (this file imports the methods, and the data and evaluation layers below
them must not import it back):

- datasets and dataset presets: `muni.data.DATASETS`, `muni.data.PRESETS` (read by `load_dataset`);
- evaluation tasks and table layouts: `muni.evaluation.report.TASKS`, `LAYOUTS`;
- reference models (oracle, independent, sanity rows): `muni.evaluation.reference.REFERENCE_MODELS`;
- MUNI's subset aggregators: `muni.methods.aggregation.AGGREGATORS` (a config switch of MUNI);
- bench suites: `muni.bench.suites.SUITES` (data);
- CLI commands: `COMMANDS` of the command-line module (a dict of command modules).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from muni.config import apply_overrides, from_dict
from muni.errors import CheckpointError, ConfigError
from muni.methods.jointflow import JointFlow, JointFlowConfig
from muni.methods.helvae import HELVAE, HELVAEConfig
from muni.methods.mmgen import MMGen, MMGenConfig
from muni.methods.mmvae import MMVAE, MMVAEConfig
from muni.methods.mopoe import MoPoE, MoPoEConfig
from muni.methods.muni import Muni, MuniConfig
from muni.methods.mvae import MVAE, MVAEConfig
from muni.modalities.base import Modality


@dataclass(frozen=True)
class MethodSpec:
    model: type[nn.Module]
    config: type
    summary: str


METHODS: dict[str, MethodSpec] = {
    "muni": MethodSpec(Muni, MuniConfig, "MUNI: encoders, stochastic decoders, shared flow prior, routed objective"),
    "mvae": MethodSpec(MVAE, MVAEConfig, "MVAE (Wu & Goodman 2018): PoE posterior, sub-sampled ELBO"),
    "mmvae": MethodSpec(MMVAE, MMVAEConfig, "MMVAE (Shi et al. 2019): MoE posterior, stratified ELBO / DReG"),
    "mopoe": MethodSpec(MoPoE, MoPoEConfig, "MoPoE (Sutter et al. 2021): mixture of subset PoEs"),
    "helvae": MethodSpec(HELVAE, HELVAEConfig, "HELVAE (Vo & Valera 2026): Hölder (alpha=0.5) pooled posterior"),
    "jointflow": MethodSpec(JointFlow, JointFlowConfig,
                            "MMGen/UniDiffuser-style decoupled joint flow over frozen per-modality latents"),
    "mmgen": MethodSpec(MMGen, MMGenConfig,
                        "MMGen: shared spatial image latents, grouped patch tokens, one flow transformer "
                        "with per-modality times and task embeddings"),
}

# Preset -> dataset -> (model overrides shared by every method, training overrides) and
# `METHOD_PRESETS`: dataset -> method -> model overrides of that method alone (every preset).
# Overrides use the `--set` syntax of the CLI; `codec.*` keys exist in every method's config.
# Digits-ITA images are white strokes on black (93% of pixels near 0): every method models them
# with a Bernoulli likelihood there; under the wide Laplace of the PolyMNIST setting they decode
# to the per-pixel median, a black canvas (`benchmarks/ita_likelihood.sh`).
PRESETS: dict[str, dict[str, dict[str, list[str]]]] = {
    "quick": {
        "polymnist-quadrant": {"model": ["ae_steps=1500"], "train": ["steps=3000", "batch_size=128", "lr=1e-3", "sample_every=1000", "ckpt_every=500"]},
        "digits-ita": {"model": ["ae_steps=1500", "codec.image_likelihood=bernoulli"], "train": ["steps=3000", "batch_size=128", "lr=1e-3", "sample_every=1000", "ckpt_every=500"]},
    },
    "paper": {
        "polymnist-quadrant": {"model": ["codec.width=64", "codec.flow_width=64", "codec.embed_dim=256",
                                         "latent_dim=64", "ae_steps=50000"],
                               "train": ["steps=100000", "batch_size=256", "lr=5e-4", "sample_every=5000", "ckpt_every=2000"]},
        "digits-ita": {"model": ["codec.width=64", "codec.flow_width=64", "codec.embed_dim=256",
                                 "latent_dim=64", "ae_steps=50000", "codec.image_likelihood=bernoulli"],
                       "train": ["steps=100000", "batch_size=256", "lr=5e-4", "sample_every=5000", "ckpt_every=2000"]},
    },
}

# Datasets imported with `muni data import` (users' own data) take these entries: the benchmarks'
# training budget per preset; backbone sizes stay the codec defaults at quick.
IMPORTED_PRESETS: dict[str, dict[str, list[str]]] = {
    "quick": {"model": ["ae_steps=1500"], "train": ["steps=3000", "batch_size=128", "lr=1e-3", "sample_every=1000", "ckpt_every=500"]},
    "paper": {"model": ["codec.width=64", "codec.flow_width=64", "codec.embed_dim=256", "latent_dim=64",
                        "ae_steps=50000"],
              "train": ["steps=100000", "batch_size=256", "lr=5e-4", "sample_every=5000", "ckpt_every=2000"]},
}


def run_preset(preset: str, dataset: str) -> dict[str, list[str]]:
    """The ``{"model": [...], "train": [...]}`` overrides of `preset` for `dataset`; a dataset the
    presets do not name (an imported one) takes `IMPORTED_PRESETS`."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[preset].get(dataset, IMPORTED_PRESETS[preset])


# MUNI's rate weight on Digits-ITA is 0.1, not the default 0.5. At 0.5 the rate prices the
# quadrant (about 1.4 nats, paid for only by text<->image prediction) out of the shared latent;
# at 0.1 it returns, and every Digits-ITA column rises (docs/results/ita-probes.md, sections 1
# and 3). PolyMNIST-QL keeps 0.5: there 0.1 raises coherence but lowers the within-condition
# diversity from 0.16-0.23 to 0.10-0.15 (2 seeds, `benchmarks/pq_beta.sh`), against issue 15's aim.
#
# Digits-ITA keeps the mean decoder for images: there the residual_private refiner with the prior
# N(0, I) drew digit strokes the condition does not ask for ((T+A)->I digit 0.578 -> 0.180, seed 0,
# 3000 steps, before the latent held the quadrant; docs/results/decoders.md).
#
# Its audio takes the refiner with a conditional prior p(w | z), its gradient at unit scale, and
# a decoder temperature of 0.3 (docs/results/decoders.md, "Digits-ITA audio"; 20 minutes, 1 seed).
# The mean decoder's speaker-averaged spectrograms of "six" and "seven" are read as 8 and 0, so
# (T+I)->A digit stays at 0.852 although the latent holds the digit. Under N(0, I) the refiner's w
# took over the digit and its draws were read right 0.46 of the time; under p(w | z) they are read
# right 0.998 at temperature 0 and 0.970 at 0.3, the lowest temperature whose audio diversity
# (0.81 of real recordings') meets issue 15's 0.8. The calibrated likelihood's gradient, left raw,
# is 2-4x the rest of the model's and takes the global gradient clip: the latent then learns
# slower per step (private_grad=unit, every refiner's default since 2026-12-03, scales it by the
# refiner's variance; the loss is unchanged).
# With all three: (T+I)->A digit 0.966, unconditional coherence 0.810 (mean decoders: 0.666).
# The refiner costs about 30% of the training throughput, and at 5 minutes (3 seeds) MUNI is
# below its mean-decoder preset on 7 of 10 columns; for runs that short, audio_decoder=gaussian.
#
# Its refiner learns from step 1000 on, the codec's default (codec.private_start; until the
# end of 2026-12-03 this preset set 0, as in the measurements above). Pairs on one machine, each
# run alone (docs/results/decoders.md; `muni bench --suite ablation-ita` reruns them): at 20
# minutes (1 seed, refiner-start/ita20-pair) the start is higher on 8 of 10 columns, unconditional
# coherence 0.710 against 0.656, with 13% more steps (until step 1000 a step costs the mean
# decoder's); at 5 minutes (3 seeds, refiner-start/ita5-*) higher on 7 of 10, mostly within one
# seed spread.
#
# And Digits-ITA attaches route 2 for its first 1000 steps and balances the targets' teaching
# halfway (detach_warmup, target_balance). Without them the 2048-dim audio NLL is 77% of what
# teaches the encoders, and MUNI sits on a plateau where the latent holds the digit but not the
# quadrant until step 900 to beyond 3000, by seed; with them it leaves it by about step 1500
# (2 of 2 seeds at 2300 steps, 3 of 3 in the 5-minute bench; docs/results/ita-probes.md,
# section 8). PolyMNIST-QL does not take them: there the same pair lowered Single-L->I digit
# from 0.99 to 0.74-0.78 and unconditional coherence from 0.72-0.75 to 0.24-0.28 (2 seeds,
# 3000 steps, section 8).
#
# MMGen's patch is 7 on Digits-ITA: its 28 x 28 images make a 14 x 14 latent grid, which the
# default patch of 4 does not divide; 7 makes one token per quadrant (4 tokens), 2 would make
# 49 and cost 0.33 s per flow step against 0.14 on PolyMNIST-QL's 16 (2 cores).
METHOD_PRESETS: dict[str, dict[str, list[str]]] = {
    "digits-ita": {"mmgen": ["patch=7"],
                   "muni": ["beta=0.1", "codec.image_decoder=gaussian", "codec.audio_decoder=residual_private",
                            "codec.private_prior=conditional", "temperature=0.3",
                            "detach_warmup=1000", "target_balance=0.5"]},
}


def method_spec(name: str) -> MethodSpec:
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}") from None


def model_config(method: str, dataset: str, preset: str, overrides: list[str] = ()) -> Any:
    """The method's config for a dataset and preset, with user overrides applied last."""
    spec = method_spec(method)
    entry = run_preset(preset, dataset)
    cfg = spec.config()
    cfg = apply_overrides(cfg, [o for o in entry["model"] if _has_key(cfg, o)])
    cfg = apply_overrides(cfg, METHOD_PRESETS.get(dataset, {}).get(method, []))
    return apply_overrides(cfg, list(overrides))


def _has_key(cfg: Any, override: str) -> bool:
    node = cfg
    for part in override.split("=", 1)[0].split("."):
        names = {f.name for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else set()
        if part not in names:
            return False
        node = getattr(node, part)
    return True


def build_model(method: str, modalities: dict[str, Modality], cfg: Any) -> nn.Module:
    spec = method_spec(method)
    if not isinstance(cfg, spec.config):
        raise ConfigError(f"method {method!r} expects a {spec.config.__name__}, got {type(cfg).__name__}")
    return spec.model(modalities, cfg)


def load_model(path: str | Path, *, ema: bool = True, expect_method: str | None = None) -> nn.Module:
    """Rebuild a trained model from a checkpoint (directory or run directory); never unpickles.

    The EMA weights are used when the checkpoint has them and `ema` is true.
    """
    from muni.training.checkpoint import load_checkpoint, load_state_into

    ckpt = load_checkpoint(path, expect_method=expect_method)
    meta = ckpt.meta
    try:
        method = meta["method"]
        if not isinstance(meta["modalities"], list):
            raise TypeError("meta.modalities must be a list")
        modalities = {m.name: m for m in map(Modality.from_json, meta["modalities"])}
        if len(modalities) != len(meta["modalities"]) or not modalities:
            raise ValueError("meta.modalities must name distinct modalities")
        cfg = from_dict(method_spec(method).config, meta["model_config"])
    except KeyError as e:
        raise CheckpointError(f"{ckpt.path}: checkpoint metadata lacks {e}; not a muni model "
                              f"checkpoint") from None
    except (TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{ckpt.path}: malformed checkpoint metadata: {e}") from None
    try:
        model = build_model(method, modalities, cfg)
    except (ValueError, RuntimeError, TypeError, KeyError, IndexError, ZeroDivisionError) as e:
        raise CheckpointError(f"{ckpt.path}: cannot build {method} from the recorded config and "
                              f"modalities ({e})") from None
    try:
        load_state_into(model, ckpt.model_state(ema=ema))
    except CheckpointError as e:
        raise CheckpointError(f"{ckpt.path}: {e}") from None
    model.eval()
    model.checkpoint_meta = meta
    return model

"""Incomplete tuples: presence masks in datasets, and every method training on present
modalities only (or refusing, clearly).

For each method: a modality absent from a whole batch gets exactly zero gradient and the loss
equals the loss of the batch without it; the filler values of absent entries change nothing;
a tiny incomplete dataset trains (JointFlow refuses it with a ConfigError).
"""

from __future__ import annotations

import pytest
import torch

from muni.data.base import MultimodalDataset, make_incomplete
from muni.errors import ConfigError
from muni.methods.muni import Muni, MuniConfig
from muni.registry import METHODS
from muni.training import TrainConfig, train
from tests.test_baselines_vae import CODEC, LATENT, MODS, make_batch

B = 8
VAES = ("mvae", "mmvae", "mopoe", "helvae")


def build(method: str, **kw):
    torch.manual_seed(0)
    if method == "muni":
        return Muni(MODS, MuniConfig(latent_dim=LATENT, codec=CODEC, agg_hidden=16, prior_hidden=16,
                                     prior_depth=1, prior_nfe=2, **kw))
    spec = METHODS[method]
    return spec.model(MODS, spec.config(latent_dim=LATENT, codec=CODEC, **kw))


def loss_of(model, batch, present=None, seed: int = 0) -> torch.Tensor:
    """The scalar loss with the method's randomness fixed by `seed`."""
    torch.manual_seed(seed)
    if isinstance(model, Muni):
        return model.loss(batch, present)["loss"]
    return model.loss(batch, present, generator=torch.Generator().manual_seed(seed))["loss"]


def garbage_like(x: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if x.dtype.is_floating_point:
        return torch.rand(x.shape, generator=g) * 50 - 25
    return torch.randint(0, 6, x.shape, generator=g).to(x.dtype)


@pytest.mark.parametrize("method", ["muni", *VAES])
def test_a_modality_absent_from_the_batch_gets_zero_gradient_and_changes_nothing(method):
    model = build(method)
    batch = make_batch(B)
    absent = {"cap": torch.zeros(B, dtype=torch.bool)}
    loss = loss_of(model, batch, absent)
    loss.backward()
    grads = [p.grad for p in model.encoders["cap"].parameters()]
    assert all(g is None or not g.any() for g in grads)
    assert all(p.grad is None or not p.grad.any() for p in model.decoders["cap"].parameters())
    without = {k: v for k, v in batch.items() if k != "cap"}
    assert torch.equal(loss.detach(), loss_of(model, without).detach())


@pytest.mark.parametrize("method", ["muni", *VAES])
def test_absent_entries_are_never_read(method):
    """Partly present modalities: replacing the filler of absent entries by garbage changes
    neither the loss nor any gradient (up to float summation order: the text encoder packs
    sequences by length, and garbage filler has other lengths)."""
    model = build(method)
    batch = make_batch(B)
    present = {"img": torch.arange(B) % 2 == 0, "cap": torch.arange(B) % 3 != 0,
               "mel": torch.arange(B) >= 2, "digit": torch.arange(B) != 1}

    def run(batch):
        model.zero_grad(set_to_none=True)
        loss = loss_of(model, batch, present)
        loss.backward()
        return loss.detach(), [p.grad.clone() if p.grad is not None else None for p in model.parameters()]

    loss, grads = run(batch)
    other = {k: torch.where(present[k].view(-1, *[1] * (v.dim() - 1)), v, garbage_like(v, 3))
             for k, v in batch.items()}
    loss2, grads2 = run(other)
    assert torch.isfinite(loss) and torch.equal(loss, loss2)
    for g, g2 in zip(grads, grads2):
        assert (g is None) == (g2 is None)
        if g is not None:
            torch.testing.assert_close(g, g2, rtol=1e-5, atol=1e-6)


def test_a_complete_mask_is_the_complete_path():
    model = build("muni")
    batch = make_batch(B)
    full = {k: torch.ones(B, dtype=torch.bool) for k in batch}
    assert torch.equal(loss_of(model, batch, full), loss_of(model, batch))


def test_muni_subsets_stay_within_each_sample_and_are_uniform_over_its_subsets():
    model = build("muni")
    n = 6000
    present = torch.zeros(n, 4, dtype=torch.bool)
    present[:, [0, 2]] = True                     # samples with two of the four modalities
    present[: n // 2, 3] = True                   # half with a third
    torch.manual_seed(1)
    s = model.sample_subsets(n, present=present)
    assert not (s & ~present).any() and s.any(1).all()
    two = s[n // 2:][:, [0, 2]]
    codes = two[:, 0].long() + 2 * two[:, 1].long()
    freq = torch.bincount(codes, minlength=4)[1:].float() / len(codes)
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.03)
    three = s[: n // 2][:, [0, 2, 3]]
    assert len({tuple(r.tolist()) for r in three}) == 7
    model.cfg.subset_sampler = "weighted"
    w = model.sample_subsets(n, present=present)
    assert not (w & ~present).any() and w.any(1).all()


def test_make_incomplete_is_seeded_zeroes_what_it_drops_and_keeps_one_modality():
    torch.manual_seed(0)
    batch = make_batch(400)
    ds = MultimodalDataset("toy", "train", MODS, batch)
    assert make_incomplete(ds, 0.0, 0) is ds and ds.complete
    part = make_incomplete(ds, 0.5, seed=3)
    have = torch.stack([part.present[k] for k in MODS], 1)        # (N, M)
    assert not part.complete and have.any(1).all()
    partial = ~have.all(1)
    assert partial.sum() == 200                                    # exactly half, each losing >= 1
    for k in MODS:
        gone = ~part.present[k]
        assert not part.storage[k][gone].any()
        assert torch.equal(part.storage[k][~gone], batch[k][~gone])
    again = make_incomplete(ds, 0.5, seed=3)
    assert all(torch.equal(again.present[k], part.present[k]) for k in MODS)
    other = make_incomplete(ds, 0.5, seed=4)
    assert not all(torch.equal(other.present[k], part.present[k]) for k in MODS)
    assert torch.equal(part.present_batch([0, 1])["img"], part.present["img"][:2])
    assert ds.present_batch([0, 1]) is None


@pytest.mark.parametrize("method", ["muni", *VAES, "jointflow", "mmgen"])
def test_a_tiny_incomplete_dataset_trains_or_is_refused(method, tmp_path):
    ds = make_incomplete(MultimodalDataset("toy", "train", MODS, make_batch(32)), 0.9, seed=0)
    if method in ("jointflow", "mmgen"):
        spec = METHODS[method]
        torch.manual_seed(0)
        model = spec.model(MODS, spec.config(latent_dim=LATENT, codec=CODEC, ae_steps=1, patch=1)
                           if method == "mmgen" else spec.config(latent_dim=LATENT, codec=CODEC, ae_steps=1))
    else:
        model = build(method)
    cfg = TrainConfig(steps=3, batch_size=8, sample_every=0, ckpt_every=0, log_every=1, num_threads=1)
    if method in ("jointflow", "mmgen"):
        with pytest.raises(ConfigError, match="incomplete tuples"):
            train(model, ds, cfg, tmp_path / "run", progress=False)
        return
    result = train(model, ds, cfg, tmp_path / "run", progress=False)
    assert result.steps_done == 3 and all(torch.isfinite(torch.tensor(v)) for v in result.final_losses.values())


def test_muni_prior_learns_only_from_the_samples_richest_in_modalities():
    """Route 3 on incomplete tuples: the latents of samples with fewer than (most - 1) modalities
    never reach the prior, whatever they hold."""
    model = build("muni")
    h = {n: torch.randn(B, 16) for n in MODS}
    present = torch.ones(B, 4, dtype=torch.bool)
    present[:3, 1:] = False                                   # three samples with one modality
    torch.manual_seed(0)
    loss = model._prior_loss(h, present)
    h2 = {n: torch.where((torch.arange(B) < 3)[:, None], torch.randn(B, 16) * 9, x) for n, x in h.items()}
    torch.manual_seed(0)
    assert torch.equal(loss, model._prior_loss(h2, present))
    torch.manual_seed(0)
    assert not torch.equal(model._prior_loss(h2, torch.ones(B, 4, dtype=torch.bool)),
                           model._prior_loss(h, torch.ones(B, 4, dtype=torch.bool)))

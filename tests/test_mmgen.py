"""MMGen: patch grouping, the decoupled sampler, stage switch, the generate protocol, a 2-D toy
joint distribution learnt by the decoupled flow, and a tiny run through the training loop."""

from __future__ import annotations

import itertools

import pytest
import torch

from muni.data.base import MultimodalDataset
from muni.errors import ConfigError
from muni.methods.base import check_generate_output
from muni.methods.jointflow import ABSENT, GENERATE, GIVEN, sample_times
from muni.methods.mmgen import (DecoupledTransformer, MMGen, MMGenConfig, TokenGroup, decoupled_euler,
                                decoupled_flow_loss, group_tokens, patchify, to_velocity, unpatchify,
                                ungroup_tokens)
from muni.modalities import CodecConfig
from muni.modalities.base import Modality

MODS = {"a": Modality("a", "image", (1, 16, 16)),
        "b": Modality("b", "image", (1, 16, 16)),
        "rgb": Modality("rgb", "image", (3, 8, 8)),
        "label": Modality("label", "categorical", (), num_classes=5)}


def make_model(ae_steps: int = 2, **kw) -> MMGen:
    torch.manual_seed(0)
    codec = CodecConfig(embed_dim=16, width=8, mlp_width=16, image_decoder="gaussian", audio_decoder="gaussian")
    cfg = MMGenConfig(latent_channels=2, ae_width=4, ae_downsample=4, patch=2, latent_dim=4, codec=codec, ae_steps=ae_steps,
                      width=16, depth=1, heads=2, nfe=3, **kw)
    model = MMGen(MODS, cfg)
    if ae_steps == 0:
        model.enter_stage(1)
    return model


def make_batch(b: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 5, (b,), generator=g)
    a = (label.float()[:, None, None, None] / 4 + 0.1 * torch.randn(b, 1, 16, 16, generator=g)).clamp(0, 1)
    return {"a": a, "b": 1 - a, "rgb": torch.rand(b, 3, 8, 8, generator=g), "label": label}


# ---------------------------------------------------------------------------- tokens
def test_patch_grouping_round_trips_exactly():
    z = torch.randn(3, 4, 6, 8)
    for p in (1, 2):
        tokens = patchify(z, p)
        assert tokens.shape == (3, (6 // p) * (8 // p), 4 * p * p)
        assert torch.equal(unpatchify(tokens, (4, 6, 8), p), z)
    # one token holds one location's patch: the top-left 2x2 block of every channel
    assert torch.equal(patchify(z, 2)[:, 0], z[:, :, :2, :2].reshape(3, -1))
    group = TokenGroup(("x", "y"), (4, 6, 8), 2)
    lat = {"x": z, "y": torch.randn(3, 4, 6, 8)}
    feats = group_tokens(group, lat)
    assert feats.shape == (3, group.length, 2 * group.dim) == (3, 12, 32)
    back = ungroup_tokens(group, feats)
    assert all(torch.equal(back[k], lat[k]) for k in lat)
    vec = TokenGroup(("v",), (5,))
    v = {"v": torch.randn(3, 5)}
    assert torch.equal(ungroup_tokens(vec, group_tokens(vec, v))["v"], v["v"])


def test_model_groups_images_of_one_shape_and_checks_the_patch():
    model = make_model()
    assert [(g.members, g.latent_shape, g.length) for g in model.groups] == [
        (("a", "b"), (2, 4, 4), 4), (("rgb",), (2, 2, 2), 1), (("label",), (5,), 1)]
    assert set(model.image_ae) == {"1x16x16", "3x8x8"}                   # one autoencoder per shape
    with pytest.raises(ConfigError, match="patch=3 must divide"):
        MMGen(MODS, MMGenConfig(patch=3))
    with pytest.raises(ConfigError, match="mmgen depth"):
        MMGenConfig(depth=0)


# ---------------------------------------------------------------------------- sampler
def test_decoupled_euler_holds_given_and_absent_modalities_exactly():
    names = ["x", "y", "w"]
    z0 = {"x": torch.randn(5, 2, 4, 4), "y": torch.randn(5, 3), "w": torch.randn(5, 1)}
    role = torch.tensor([[GIVEN, GENERATE, ABSENT], [GENERATE, GENERATE, GENERATE], [GIVEN, GIVEN, GENERATE],
                         [ABSENT, GENERATE, GIVEN], [GENERATE, ABSENT, ABSENT]])
    seen = []

    def velocity(z, t, r):
        seen.append(t.clone())
        return {k: 7.0 + 100 * torch.randn_like(v) for k, v in z.items()}

    out = decoupled_euler(velocity, dict(z0), role, names, 4)
    for j, n in enumerate(names):
        held = role[:, j] != GENERATE
        assert torch.equal(out[n][held], z0[n][held])
        assert (out[n][~held] != z0[n][~held]).all()
    for i, t in enumerate(seen):
        assert torch.all(t[role == GIVEN] == 1.0) and torch.all(t[role == ABSENT] == 0.0)
        assert torch.allclose(t[role == GENERATE], torch.tensor(i / 4))


def test_model_sampler_returns_given_latents_unchanged():
    model = make_model(ae_steps=0)
    model.loss(make_batch(32))
    model.eval()
    batch = make_batch(5)
    given = {"b": batch["b"], "label": batch["label"]}
    z = model.sample_latents(given, ["a", "rgb"], 5, generator=torch.Generator().manual_seed(1))
    lat = model.encode_latents(given)
    assert torch.equal(z["b"], lat["b"]) and torch.equal(z["label"], lat["label"])
    out = model.generate(given, ["label"])                                 # a given label decodes to itself
    assert torch.equal(model.generate({"label": batch["label"]}, ["label"])["label"], batch["label"])
    assert out["label"].shape == (5,)


# ---------------------------------------------------------------------------- stages
def _grads(params):
    return [p.grad for p in params]


def test_stage_switch_freezes_autoencoders_and_trains_the_transformer():
    model = make_model(ae_steps=2, prediction="v")
    ae, flow = model.autoencoder_parameters(), list(model.velocity.parameters())
    assert len(ae) + len(flow) == len(list(model.parameters()))
    out = model.loss(make_batch(16))
    out["loss"].backward()
    assert out["stage"].item() == 1 and out["flow/a"] == 0 and out["recon/a"] > 0 and out["recon/label"] == 0
    assert all(g is not None for g in _grads(ae)) and all(g is None for g in _grads(flow))
    model.zero_grad(set_to_none=True)
    model.enter_stage(1)
    batch = make_batch(256, seed=3)
    out = model.loss(batch)
    # latents normalised on this batch and v = 0 at init: E||z - x0||^2 / d = 1 + 1 per modality
    assert abs(out["loss"].item() - 2.0) < 0.3
    for n, z in model.encode_latents(batch).items():
        assert abs(z.mean().item()) < 1e-4 and abs(z.pow(2).mean().item() - 1.0) < 1e-3, n
    out["loss"].backward()
    assert all(g is None for g in _grads(ae))
    assert sum(g.abs().sum() for g in _grads(flow) if g is not None) > 0
    assert set(model.frozen_parameter_names()) == {n for n, _ in model.named_parameters()
                                                   if not n.startswith("velocity.")}


def test_flow_loss_skips_modalities_held_clean():
    groups = [TokenGroup(("x",), (2, 4, 4), 2), TokenGroup(("y",), (3,))]
    net = DecoupledTransformer(groups, width=16, depth=1, heads=2)
    z1 = {"x": torch.randn(6, 2, 4, 4), "y": torch.randn(6, 3)}
    t, role = torch.rand(6, 2), torch.full((6, 2), GENERATE)
    role[:, 0], t[:, 0] = GIVEN, 1.0
    torch.manual_seed(0)
    ref, per = decoupled_flow_loss(net, z1, t, role, ["x", "y"])
    assert torch.all(per[:, 0] == 0) and torch.all(per[:, 1] > 0)
    net.heads["x"].bias.data.fill_(1e3)                                    # garbage on the given one only
    torch.manual_seed(0)
    out, _ = decoupled_flow_loss(net, z1, t, role, ["x", "y"])
    assert torch.allclose(out, ref)


def test_x_prediction_turns_the_clean_latent_into_the_path_velocity():
    """A head that predicts the clean latent exactly gives the exact path velocity z1 - x0 (for
    t below the clip), and a perfect x-predictor scores zero loss."""
    names = ["x", "y"]
    z1 = {"x": torch.randn(8, 2, 4, 4), "y": torch.randn(8, 3)}
    x0 = {k: torch.randn_like(v) for k, v in z1.items()}
    t = torch.rand(8, 2) * 0.9
    zt = {n: t[:, j].view(-1, *[1] * (z1[n].dim() - 1)) * z1[n]
          + (1 - t[:, j].view(-1, *[1] * (z1[n].dim() - 1))) * x0[n] for j, n in enumerate(names)}
    v = to_velocity(z1, zt, t, names, "x")
    assert all(torch.allclose(v[n], z1[n] - x0[n], atol=1e-4) for n in names)
    assert to_velocity(z1, zt, t, names, "v") is z1
    oracle = lambda z, tt, r: z1                                             # noqa: E731
    role = torch.full((8, 2), GENERATE)
    loss, _ = decoupled_flow_loss(oracle, z1, t, role, names, "x")
    assert loss.item() < 1e-8


# ---------------------------------------------------------------------------- a known joint
def test_decoupled_flow_learns_a_2d_joint_conditionally_and_unconditionally():
    """Two scalar "modalities" with the joint 1/2 N((-1, -1), 0.1^2 I) + 1/2 N((1, 1), 0.1^2 I):
    unconditional draws agree in sign and sit near +-1; given x = 1, y sits near 1."""
    torch.manual_seed(0)
    names = ["x", "y"]
    net = DecoupledTransformer([TokenGroup(("x",), (1,)), TokenGroup(("y",), (1,))], width=32, depth=1, heads=2,
                               freq_dim=32)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in range(800):
        s = torch.randint(0, 2, (256, 1)).float() * 2 - 1
        z1 = {"x": s + 0.1 * torch.randn(256, 1), "y": s + 0.1 * torch.randn(256, 1)}
        t, role = sample_times(256, 2, 0.25, 0.1)
        loss, _ = decoupled_flow_loss(net, z1, t, role, names, "x")
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    field = lambda z, tt, r: to_velocity(net(z, tt, r), z, tt, names, "x")  # noqa: E731
    n = 2000
    g = torch.Generator().manual_seed(1)
    z = {k: torch.randn(n, 1, generator=g) for k in names}
    joint = decoupled_euler(field, z, torch.full((n, 2), GENERATE), names, 50)
    x, y = joint["x"][:, 0], joint["y"][:, 0]
    assert (torch.sign(x) == torch.sign(y)).float().mean() > 0.95
    assert abs((x > 0).float().mean() - 0.5) < 0.1
    assert ((x.abs() - 1).abs() < 0.4).float().mean() > 0.9
    z = {"x": torch.ones(n, 1), "y": torch.randn(n, 1, generator=g)}
    role = torch.tensor([GIVEN, GENERATE]).expand(n, 2)
    cond = decoupled_euler(field, z, role, names, 50)["y"][:, 0]
    assert (cond > 0).float().mean() > 0.95 and abs(cond.median() - 1.0) < 0.2
    z = {"x": torch.randn(n, 1, generator=g), "y": torch.randn(n, 1, generator=g)}
    role = torch.tensor([GENERATE, ABSENT]).expand(n, 2)                   # the marginal of x alone
    marg = decoupled_euler(field, z, role, names, 50)["x"][:, 0]
    assert abs((marg > 0).float().mean() - 0.5) < 0.1


# ---------------------------------------------------------------------------- generate
def test_generate_protocol_every_task():
    model = make_model(ae_steps=0)
    model.loss(make_batch(32))
    model.eval()
    batch = make_batch(3, seed=9)
    names = list(MODS)
    subsets = [list(s) for k in range(len(names) + 1) for s in itertools.combinations(names, k)]
    for given_names in subsets[::3]:
        given = {k: batch[k] for k in given_names}
        for targets in subsets[1::2]:
            n, b = (None, 3) if given else (4, 4)
            outs = [model.generate(given, targets, n=n, generator=torch.Generator().manual_seed(0)) for _ in (0, 1)]
            check_generate_output(MODS, outs[0], targets, b)
            for k in targets:
                assert torch.equal(outs[0][k], outs[1][k])
    a = model.generate({}, ["a"], n=16, generator=torch.Generator().manual_seed(0))["a"]
    c = model.generate({}, ["a"], n=16, generator=torch.Generator().manual_seed(1))["a"]
    assert not torch.equal(a, c)


def test_training_loop_runs_both_stages_and_resumes(tmp_path):
    from muni.training.logging import read_log
    from muni.training.loop import TrainConfig, train

    data = MultimodalDataset("toy4", "train", MODS, make_batch(64))
    cfg = TrainConfig(steps=3, batch_size=16, log_every=1, ckpt_every=1, ema_decay=0.9, num_threads=1)
    train(make_model(ae_steps=2), data, cfg, tmp_path, progress=False)
    cfg.steps = 5
    resumed = make_model(ae_steps=2)
    train(resumed, data, cfg, tmp_path, resume=True, progress=False)
    assert resumed.stage == 2 and bool(resumed.stats_ready)
    rows = read_log(tmp_path / "log.csv")
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 2]
    assert rows[0]["flow/a"] == 0 and rows[-1]["flow/a"] > 0 and rows[-1]["recon/a"] == 0
    torch.set_num_threads(1)

"""JointFlow (MMGen / UniDiffuser decoupled baseline): sampler, per-modality times, stage switch,
generate protocol, and a tiny run through the training loop with resume."""

from __future__ import annotations

import itertools
import time

import pytest
import torch

from muni.data.base import MultimodalDataset
from muni.errors import InputError
from muni.methods.base import check_generate_output
from muni.methods.jointflow import ABSENT, GENERATE, GIVEN, JointFlow, JointFlowConfig, joint_euler
from muni.modalities.base import Modality
from muni.modalities import CodecConfig

MODS = {"grey": Modality("grey", "image", (1, 16, 16)),
        "rgb": Modality("rgb", "image", (3, 16, 16)),
        "label": Modality("label", "categorical", (), num_classes=5)}


def make_model(ae_steps: int = 2, **kw) -> JointFlow:
    torch.manual_seed(0)
    codec = CodecConfig(embed_dim=16, width=8, mlp_width=16, image_decoder="gaussian", audio_decoder="gaussian")
    cfg = JointFlowConfig(latent_dim=4, codec=codec, ae_steps=ae_steps, width=16, depth=1, heads=2, nfe=3, **kw)
    model = JointFlow(MODS, cfg)
    if ae_steps == 0:  # what the training loop does at step 0 (`stage_at`)
        model.enter_stage(1)
    return model


def make_batch(b: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 5, (b,), generator=g)
    grey = (label.float()[:, None, None, None] / 4 + 0.1 * torch.randn(b, 1, 16, 16, generator=g)).clamp(0, 1)
    rgb = torch.rand(b, 3, 16, 16, generator=g)
    return {"grey": grey, "rgb": rgb, "label": label}


# ---------------------------------------------------------------------------- sampler
def test_joint_euler_holds_given_and_absent_tokens_exactly():
    b, m, d, nfe = 6, 3, 4, 5
    z0 = torch.randn(b, m, d)
    role = torch.tensor([[GIVEN, GENERATE, ABSENT], [GENERATE, GENERATE, GENERATE], [GIVEN, GIVEN, GENERATE],
                         [ABSENT, GENERATE, GIVEN], [GENERATE, ABSENT, ABSENT], [GIVEN, GENERATE, GENERATE]])
    seen = []

    def velocity(z, t, r):
        seen.append(t.clone())
        assert torch.equal(r, role)
        return 7.0 + 100 * torch.randn_like(z)  # large, random: held tokens must not move at all

    out = joint_euler(velocity, z0.clone(), role, nfe)
    held = role != GENERATE
    assert torch.equal(out[held], z0[held])
    assert (out[~held] != z0[~held]).all()
    assert len(seen) == nfe
    for i, t in enumerate(seen):  # given at t = 1, absent at t = 0, generated share t_i = i / nfe
        assert torch.all(t[role == GIVEN] == 1.0) and torch.all(t[role == ABSENT] == 0.0)
        assert torch.allclose(t[role == GENERATE], torch.tensor(i / nfe))

    # closed form: a constant velocity c moves generated tokens by exactly c over [0, 1]
    c = torch.randn(d)
    out = joint_euler(lambda z, t, r: c.expand_as(z), z0.clone(), role, nfe)
    assert torch.allclose(out[~held], z0[~held] + c, atol=1e-5)


def test_model_sampler_returns_given_latent_unchanged():
    model = make_model().eval()
    batch = make_batch(5)
    given = {"rgb": batch["rgb"], "label": batch["label"]}
    z = model.sample_latents(given, ["grey"], 5, generator=torch.Generator().manual_seed(1))
    lat = model.encode_latents(given)
    assert torch.equal(z[:, 1], lat["rgb"]) and torch.equal(z[:, 2], lat["label"])


# ---------------------------------------------------------------------------- training times
def test_per_modality_times_are_independent_and_uniform():
    model = make_model(p_given=0.2, p_absent=0.1)
    t, role = model.sample_times(200_000, generator=torch.Generator().manual_seed(0))
    assert t.shape == role.shape == (200_000, 3)
    assert torch.all(t[role == GIVEN] == 1) and torch.all(t[role == ABSENT] == 0)
    assert (role != GIVEN).any(1).all()                       # every sample trains some token
    frac = [(role == r).float().mean().item() for r in (GIVEN, ABSENT)]
    assert abs(frac[0] - 0.2) < 0.01 and abs(frac[1] - 0.1) < 0.01
    gen = role == GENERATE
    for i in range(3):                                        # marginals uniform on [0, 1)
        hist = torch.histc(t[gen[:, i], i], bins=10, min=0, max=1)
        assert torch.allclose(hist / hist.sum(), torch.full((10,), 0.1), atol=0.006)
    for i, j in itertools.combinations(range(3), 2):          # pairwise uncorrelated
        both = gen[:, i] & gen[:, j]
        r = torch.corrcoef(torch.stack([t[both, i], t[both, j]]))[0, 1]
        assert abs(r) < 0.01
    assert not torch.equal(t[:, 0], t[:, 1])


def test_loss_feeds_each_token_its_own_time():
    model = make_model(ae_steps=0)
    seen = {}
    model.velocity.register_forward_hook(lambda mod, args, out: seen.update(t=args[1], role=args[2]))
    model.loss(make_batch(64))
    t, role = seen["t"], seen["role"]
    assert t.shape == (64, 3)
    gen = role == GENERATE
    both = gen[:, 0] & gen[:, 1]
    assert both.any() and (t[both, 0] != t[both, 1]).all()


def test_flow_loss_skips_tokens_held_clean():
    model = make_model(ae_steps=0)
    b = 32
    role = torch.full((b, 3), GENERATE)
    role[:, 0] = GIVEN
    t = torch.rand(b, 3)
    t[:, 0] = 1.0
    model.sample_times = lambda n, device=None, generator=None: (t, role)
    batch = make_batch(b)
    torch.manual_seed(1)
    ref = model.loss(batch)
    shift = torch.zeros(1, 3, 4)
    shift[:, 0] = 1e3                                         # garbage on the given token only
    model.velocity.register_forward_hook(lambda mod, args, out: out + shift)
    torch.manual_seed(1)
    out = model.loss(batch)
    assert out["flow/grey"] == 0 and torch.allclose(out["loss"], ref["loss"])


# ---------------------------------------------------------------------------- stage switch
def _grads(params) -> list[torch.Tensor | None]:
    return [p.grad for p in params]


def test_stage_switch_freezes_autoencoders_and_trains_flow():
    model = make_model(ae_steps=2)
    assert "switched" in model.state_dict() and "latent_scale" in model.state_dict()
    assert [(s.name, s.steps, s.budget_fraction) for s in model.stages()] == [("autoencoders", 2, 0.5),
                                                                               ("flow", 0, 0.0)]
    ae = model.autoencoder_parameters()
    flow = list(model.velocity.parameters())
    assert len(ae) + len(flow) == len(list(model.parameters()))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(2):                                     # stage 1: AEs only
        out = model.loss(make_batch(16, seed=step))
        assert out["stage"].item() == 1 and out["loss"].requires_grad
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        assert all(g is not None for g in _grads(ae)) and any(g.abs().sum() > 0 for g in _grads(ae))
        assert all(g is None for g in _grads(flow))
        opt.step()
    assert model.stage == 1, "the training loop, not loss(), moves the model between stages"
    model.enter_stage(1)
    assert model.stage == 2 and model.current_stage() == 1 and not bool(model.stats_ready)
    before = [p.detach().clone() for p in ae]
    batch = make_batch(512, seed=5)
    out = model.loss(batch)                                   # stage 2: flow only
    assert out["stage"].item() == 2 and bool(model.stats_ready)
    # latents normalised on this batch and v = 0 at init: E||z - x0||^2 / d = 1 + 1 per token
    assert abs(out["loss"].item() - 2.0) < 0.25
    lat = torch.cat(list(model.encode_latents(batch).values()))
    assert abs(lat.pow(2).mean().item() - 1.0) < 1e-3
    opt.zero_grad(set_to_none=True)
    out["loss"].backward()
    assert all(g is None for g in _grads(ae))
    assert all(g is not None for g in _grads(flow)) and any(g.abs().sum() > 0 for g in _grads(flow))
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ae, before))  # AdamW leaves frozen AEs as they were
    assert set(out) == {"loss", "stage", *(f"{k}/{n}" for k in ("recon", "kl", "flow") for n in MODS)}

    fresh = make_model(ae_steps=2)                            # the stage and stats travel with the weights
    fresh.load_state_dict(model.state_dict())
    assert fresh.stage == 2 and bool(fresh.stats_ready)
    assert torch.equal(fresh.latent_scale, model.latent_scale)


def test_training_loop_runs_both_stages_and_resumes(tmp_path):
    from muni.training.logging import read_log
    from muni.training.loop import TrainConfig, train

    batch = make_batch(64)
    data = MultimodalDataset("toy3", "train", MODS, batch)
    cfg = TrainConfig(steps=3, batch_size=16, log_every=1, ckpt_every=1, ema_decay=0.9, num_threads=1)
    model = make_model(ae_steps=2)
    train(model, data, cfg, tmp_path, progress=False)
    cfg.steps = 5
    resumed = make_model(ae_steps=2)
    train(resumed, data, cfg, tmp_path, resume=True, progress=False)
    assert resumed.stage == 2
    rows = read_log(tmp_path / "log.csv")
    assert [r["stage"] for r in rows] == [1, 1, 2, 2, 2]
    assert rows[0]["flow/grey"] == 0 and rows[-1]["flow/grey"] > 0 and rows[-1]["recon/grey"] == 0
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------- generate
def test_generate_protocol_every_task():
    model = make_model(ae_steps=0)
    model.loss(make_batch(32))                                # measure latent stats
    model.eval()
    batch = make_batch(3, seed=9)
    names = list(MODS)
    subsets = [list(s) for k in range(len(names) + 1) for s in itertools.combinations(names, k)]
    for given_names in subsets:
        given = {k: batch[k] for k in given_names}
        for targets in subsets[1:]:
            n = None if given else 4
            b = 3 if given else 4
            outs = [model.generate(given, targets, n=n, generator=torch.Generator().manual_seed(s))
                    for s in (0, 0)]
            check_generate_output(MODS, outs[0], targets, b)
            assert set(outs[0]) == set(targets)
            for k in targets:
                assert outs[0][k].dtype == (torch.int64 if k == "label" else torch.float32)
                assert torch.equal(outs[0][k], outs[1][k])
    a = model.generate({}, ["grey"], n=64, generator=torch.Generator().manual_seed(0))["grey"]
    c = model.generate({}, ["grey"], n=64, generator=torch.Generator().manual_seed(1))["grey"]
    assert not torch.equal(a, c)


def test_generate_rejects_bad_arguments():
    model = make_model().eval()
    with pytest.raises(InputError, match="n >= 1"):
        model.generate({}, ["grey"])
    with pytest.raises(InputError, match="nope"):
        model.generate({}, ["nope"], n=2)
    with pytest.raises(InputError, match="rgb"):
        model.generate({"rgb": torch.rand(2, 1, 16, 16)}, ["grey"])


def test_time_budget_ends_stage_one_at_its_fraction_and_ema_copies_frozen_weights(tmp_path, monkeypatch):
    """Under a wall-clock budget the switch comes at `ae_fraction` of it, not after `ae_steps`;
    once frozen, the autoencoders' EMA shadow equals their weights (no pre-freeze average)."""
    import muni.training.loop as loop
    from muni.training import checkpoint as ckpt
    from muni.training.logging import read_log

    from muni.methods.base import stage_at

    model = make_model(ae_steps=10**6)
    assert stage_at(model.stages(), 10, 0.49) == 0 and stage_at(model.stages(), 10, 0.5) == 1
    assert stage_at(model.stages(), 10**6 - 1, None) == 0 and stage_at(model.stages(), 10**6, None) == 1
    model.enter_stage(1)
    assert model.stage == 2 and bool(model.state_dict()["switched"])
    assert set(model.frozen_parameter_names()) == {
        n for n, p in model.named_parameters() if not n.startswith("velocity.")}

    class Clock:  # 1 s per reading: the 1-minute budget runs out after a few dozen steps
        t = 0.0

        def perf_counter(self):
            self.t += 1.0
            return self.t

        def __getattr__(self, name):
            return getattr(time, name)

    monkeypatch.setattr(loop, "time", Clock())
    data = MultimodalDataset("toy3", "train", MODS, make_batch(64))
    cfg = loop.TrainConfig(steps=1000, batch_size=16, log_every=1, ckpt_every=0, ema_decay=0.9,
                           num_threads=1, minutes=1.0)
    model = make_model(ae_steps=10**6)
    result = loop.train(model, data, cfg, tmp_path, progress=False)
    torch.set_num_threads(1)
    stages = [r["stage"] for r in read_log(tmp_path / "log.csv")]
    assert result.stopped_reason.startswith("time budget") and result.steps_done < 1000
    first2 = stages.index(2)
    assert stages == [1] * first2 + [2] * (len(stages) - first2)
    assert 0.3 < first2 / len(stages) < 0.7  # the switch near half of the budget's steps
    ema = ckpt.load_checkpoint(tmp_path).group("ema")
    params = dict(model.named_parameters())
    for n in model.frozen_parameter_names():
        assert torch.equal(ema[f"shadow.{n}"], params[n]), n
    assert not all(torch.equal(ema[f"shadow.{n}"], p) for n, p in params.items() if n.startswith("velocity."))

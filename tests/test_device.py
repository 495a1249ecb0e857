"""Where and how a run computes: the device choice and its CPU fallback, bf16 autocast, and
``torch.compile`` giving the eager losses (issue 19's GPU path, checked on the CPU)."""

from __future__ import annotations

import pytest
import torch

import muni.run
from muni.errors import ConfigError
from muni.registry import METHODS
from muni.run import RunSpec, run_training
from muni.training import TrainConfig, train
from muni.training.distributed import choose_device
from muni.methods.base import autocast

TINY_MUNI = ("model.codec.width=8", "model.codec.embed_dim=16", "model.codec.mlp_width=16",
             "model.latent_dim=4", "model.prior_hidden=16", "model.prior_depth=1", "model.agg_hidden=16",
             "model.prior_nfe=2")


def test_the_device_choice_falls_back_to_the_cpu_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert choose_device("auto") == ("cpu", "device: cpu (--device auto: torch sees no CUDA device)")
    device, line = choose_device("cuda")
    assert device == "cpu" and "asked for a GPU but torch sees none; falling back to the CPU" in line
    assert choose_device("cpu")[0] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Some GPU")
    assert choose_device("auto") == ("cuda", "device: cuda (Some GPU, --device auto)")
    assert choose_device("cpu")[0] == "cpu"  # the CPU when asked, even beside a GPU
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda"):
        choose_device("tpu")


def test_bad_device_or_precision_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="train.device must be one of auto, cpu, cuda, got 'tpu'"):
        RunSpec.resolve("muni", overrides=["train.device=tpu"])
    with pytest.raises(ConfigError, match="train.precision must be one of auto, fp32, bf16, got 'fp16'"):
        RunSpec.resolve("muni", overrides=["train.precision=fp16"])


def test_the_new_train_fields_enter_a_spec_only_when_set():
    plain = RunSpec.resolve("muni")
    d = plain.to_dict()
    assert not {"device", "precision", "compile"} & set(d["train_config"])  # earlier runs keep their hash
    assert RunSpec.from_dict(d).hash() == plain.hash()
    for item in ("train.device=cpu", "train.precision=bf16", "train.compile=true"):
        spec = RunSpec.resolve("muni", overrides=[item])
        assert spec.hash() != plain.hash() and RunSpec.from_dict(spec.to_dict()) == spec
        plain.check_resumable(spec)  # each may change on resume


def test_cuda_asked_without_a_gpu_trains_on_the_cpu_and_says_so_once(tmp_path, tiny_polymnist, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(muni.run, "load_dataset", lambda name, split, *a, **k: tiny_polymnist[split])
    spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0,
                           [*TINY_MUNI, "train.steps=1", "train.batch_size=8", "train.device=cuda"])
    lines: list[str] = []
    summary = run_training(spec, tmp_path / "run", progress=False, log=lines.append)
    assert [line for line in lines if line.startswith("device:")] == [
        "device: cpu -- --device cuda asked for a GPU but torch sees none; falling back to the CPU"]
    assert (summary["device"], summary["precision"], summary["compiled"]) == ("cpu", "fp32", False)


def _dtypes_seen(model: torch.nn.Module) -> tuple[set[torch.dtype], list]:
    seen: set[torch.dtype] = set()
    hooks = [m.register_forward_hook(lambda m, a, o: seen.add(o.dtype)) for m in model.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d))]
    return seen, hooks


@pytest.mark.parametrize("method", list(METHODS))
def test_bf16_autocast_computes_in_bf16_and_stays_near_the_fp32_loss(method, tiny_polymnist):
    spec = RunSpec.resolve(method, "polymnist-quadrant", "quick", 0)
    torch.manual_seed(0)
    model = spec.build_model()
    batch = tiny_polymnist["train"].batch(torch.arange(8))
    cpu = torch.device("cpu")
    out = {}
    for precision in ("fp32", "bf16"):
        seen, hooks = _dtypes_seen(model)
        torch.manual_seed(1)
        with autocast(precision, cpu):
            loss = model.loss(batch)["loss"]
        for h in hooks:
            h.remove()
        assert seen == ({torch.bfloat16} if precision == "bf16" else {torch.float32})
        loss.backward()  # outside the autocast, as the loop does
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        out[precision] = float(loss.detach())
    assert out["bf16"] != out["fp32"]
    assert abs(out["bf16"] - out["fp32"]) <= 0.03 * abs(out["fp32"]) + 1.0


def test_train_records_the_precision_it_used(tiny_polymnist, tmp_path):
    spec = RunSpec.resolve("mopoe", "polymnist-quadrant", "quick", 0)
    cfg = TrainConfig(steps=2, batch_size=8, log_every=1, ckpt_every=0, ema_decay=0, precision="bf16")
    result = train(spec.build_model(), tiny_polymnist["train"], cfg, tmp_path / "run", progress=False)
    assert result.precision == "bf16" and all(torch.isfinite(torch.tensor(v)) for v in result.final_losses.values())


@pytest.mark.slow
def test_compiled_steps_give_the_eager_losses(tiny_polymnist, tmp_path, monkeypatch):
    """Three training steps of a tiny MUNI, compiled and eager, from the same seed. Inductor draws
    its random numbers with its own generator unless ``fallback_random`` is set, which makes it
    use eager's; kernel fusion still reorders float sums, hence the tolerance."""
    import torch._inductor.config

    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0, TINY_MUNI)
    losses = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        cfg = TrainConfig(steps=3, batch_size=8, log_every=1, ckpt_every=0, ema_decay=0, compile=compiled)
        result = train(spec.build_model(), tiny_polymnist["train"], cfg, tmp_path / f"c{compiled}", progress=False)
        losses[compiled] = result.final_losses
    assert losses[True].keys() == losses[False].keys()
    for k, v in losses[False].items():
        assert losses[True][k] == pytest.approx(v, rel=1e-3, abs=1e-3), k


def test_bf16_sampling_runs_in_bf16_and_returns_fp32(tiny_polymnist):
    from muni.evaluation.report import WithSampling
    from muni.methods.base import generate_with

    spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick", 0, TINY_MUNI)
    torch.manual_seed(0)
    model = spec.build_model().eval()
    names = list(model.modalities)
    out = {}
    with torch.no_grad():
        for precision in ("fp32", "bf16"):
            seen, hooks = _dtypes_seen(model)
            out[precision] = generate_with(model, {}, names, n=4, generator=torch.Generator().manual_seed(0),
                                           precision=precision)
            for h in hooks:
                h.remove()
            assert seen == {torch.bfloat16 if precision == "bf16" else torch.float32}
        via_wrapper = WithSampling(model, precision="bf16").generate({}, names, n=4,
                                                                    generator=torch.Generator().manual_seed(0))
    for name, x in out["bf16"].items():
        assert x.dtype == out["fp32"][name].dtype and x.shape == out["fp32"][name].shape
        assert torch.equal(x, via_wrapper[name])
    assert out["bf16"]["view0"].dtype == torch.float32

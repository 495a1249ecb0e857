"""Where a training step's time goes (issue 19): per module, per phase, and against the GEMM peak.

    python benchmarks/step_profile.py [--dataset polymnist-quadrant] [--methods muni mopoe]
                                 [--steps 30] [--threads 2] [--set KEY=VALUE ...]
                                 [--out docs/results/profile.md]

For each method at the quick preset: the model and a real batch of the quick build, then
`--steps` timed training steps (after 5 warm-up steps) split into data (the batch from the
in-memory dataset), forward, backward and optimizer; the forward split further by top-level
module (each encoder, decoder, the aggregator, the prior, the heads) with forward hooks (CPU
ops are synchronous, so a module's wall time is its forward's); the FLOPs of one step (forward
and backward, `torch.utils.flop_counter.FlopCounterMode`); and the fp32 GEMM rate of a 2048²
matmul measured in the same process at the same thread count. Run it with the machine to
itself: a competing job makes every number meaningless.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from muni.data import load_dataset
from muni.run import RunSpec
from muni.training.loop import _optimizer


def gemm_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def timed(fn, key: str, times: dict[str, float]):
    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        times[key] += time.perf_counter() - t
        return out
    return wrapper


def module_groups(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Top-level parts: each entry of a ModuleDict child (encoders.image, ...) or the child itself."""
    out = {}
    for name, child in model.named_children():
        if isinstance(child, torch.nn.ModuleDict):
            out.update({f"{name}.{k}": v for k, v in child.items()})
        else:
            out[name] = child
    return out


def profile(method: str, dataset: str, steps: int, overrides: list[str] = ()) -> dict:
    spec = RunSpec.resolve(method, dataset, "quick", overrides=overrides)
    ds = load_dataset(dataset, "train", "quick", 0)
    torch.manual_seed(0)
    model = spec.build_model()
    opt = _optimizer(model, spec.train)                  # the training loop's own
    bs = spec.train.batch_size
    times: dict[str, float] = defaultdict(float)
    starts: dict[str, float] = {}
    hooks = []
    for name, mod in module_groups(model).items():
        hooks.append(mod.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        hooks.append(mod.register_forward_hook(
            lambda m, a, o, n=name: times.__setitem__(n, times[n] + time.perf_counter() - starts[n])))
        if callable(getattr(mod, "loss", None)):  # decoders and the prior are called through .loss
            mod.loss = timed(mod.loss, name + ".loss", times)
    g = torch.Generator().manual_seed(0)

    def step(record: bool) -> None:
        t0 = time.perf_counter()
        batch = ds.batch(torch.randint(len(ds), (bs,), generator=g))
        t1 = time.perf_counter()
        loss = model.loss(batch)["loss"]
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if record:
            for k, v in (("data", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
                times["phase:" + k] += v

    for _ in range(5):
        step(False)
    times.clear()
    t = time.perf_counter()
    for _ in range(steps):
        step(True)
    wall = time.perf_counter() - t
    for h in hooks:
        h.remove()
    for mod in module_groups(model).values():
        mod.__dict__.pop("loss", None)
    with FlopCounterMode(display=False) as counter:
        step(False)
    return {"method": method, "steps": steps, "wall": wall, "samples_per_s": steps * bs / wall,
            "gflop_per_step": counter.get_total_flops() / 1e9,
            "times": {k: v / steps for k, v in times.items()}}


def table(results: list[dict], gemm: float, threads: int, dataset: str, overrides: list[str] = ()) -> str:
    import datetime
    import os

    lines = [f"# Training-step profile, {dataset}, quick preset, {threads} thread(s)", "",
             f"{datetime.date.today()}, {os.cpu_count()} CPUs, GPU "
             f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}; run with the "
             f"machine to itself.", "",
             f"fp32 GEMM (2048², same process): **{gemm:.1f} GFLOP/s**. Command: "
             f"`python benchmarks/step_profile.py --dataset {dataset} --threads {threads}"
             f"{' --set ' + ' '.join(overrides) if overrides else ''}`.", ""]
    for r in results:
        t = r["times"]
        step = sum(v for k, v in t.items() if k.startswith("phase:"))
        rate = r["gflop_per_step"] / step
        lines += [f"## {r['method']}: {r['samples_per_s']:.0f} samples/s, {step * 1e3:.1f} ms per step, "
                  f"{r['gflop_per_step']:.2f} GFLOP per step = {rate:.1f} GFLOP/s ({100 * rate / gemm:.0f}% of GEMM)", "",
                  "| part | ms per step | share of the step |", "| --- | --- | --- |"]
        for k, v in sorted(t.items(), key=lambda kv: (not kv[0].startswith("phase:"), -kv[1])):
            lines.append(f"| {k} | {v * 1e3:.1f} | {100 * v / step:.0f}% |")
        lines.append("")
    lines.append("Module rows are forward time only (inside `phase:forward`): `<module>` is its forward, "
                 "`<module>.loss` its loss call (decoders and the prior are called that way; a decoder's "
                 "loss includes its forward); a module called several times per step (an aggregator over "
                 "several subsets) is summed.")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="polymnist-quadrant")
    p.add_argument("--methods", nargs="+", default=["muni", "mopoe"])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                   help="config overrides as in `muni train --set` (e.g. model.codec.audio_decoder=gaussian)")
    p.add_argument("--out", default=None, help="write the markdown table here too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gemm = gemm_gflops()
    results = [profile(m, args.dataset, args.steps, args.overrides) for m in args.methods]
    text = table(results, gemm, args.threads, args.dataset, args.overrides)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

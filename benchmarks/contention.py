"""A training run beside one busy job (issue 19): seconds per step alone and with a fixed
competing load, for several thread settings.

    python benchmarks/contention.py [--steps 10] [--out docs/results/contention.md]

The competing load is one process running 2-thread fp32 matmuls (2048²) in a loop, started
before and stopped after each timed run. Each timed run is a fresh process training MUNI at the
quick preset on PolyMNIST-QL for `--steps` steps after 3 warm-up steps, with the thread count
and OpenMP wait policy of its row. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LOAD = ("import torch; torch.set_num_threads(2); a = torch.randn(2048, 2048)\n"
        "while True: a @ a")
STEP = """
import json, sys, time, torch
from muni.data import load_dataset
from muni.run import RunSpec
from muni.training.loop import _optimizer
threads, steps = int(sys.argv[1]), int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
spec = RunSpec.resolve("muni", "polymnist-quadrant", "quick")
ds = load_dataset("polymnist-quadrant", "train", "quick", 0)
torch.manual_seed(0)
model = spec.build_model()
opt = _optimizer(model, spec.train)
g = torch.Generator().manual_seed(0)
def step():
    loss = model.loss(ds.batch(torch.randint(len(ds), (128,), generator=g)))["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"s_per_step": (time.perf_counter() - t) / steps, "threads": torch.get_num_threads()}))
"""

ROWS = [("torch default threads", 0, None), ("torch default threads, OMP_WAIT_POLICY=PASSIVE", 0, "PASSIVE"),
        ("train.num_threads=1", 1, None), ("train.num_threads=1, OMP_WAIT_POLICY=PASSIVE", 1, "PASSIVE")]


def timed(threads: int, policy: str | None, steps: int, loaded: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    load = subprocess.Popen([sys.executable, "-c", LOAD]) if loaded else None
    try:
        if load:
            time.sleep(2)
        out = subprocess.run([sys.executable, "-c", STEP, str(threads), str(steps)], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if load:
            load.kill()
            load.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    lines = [f"# MUNI quick training beside one busy 2-thread job ({os.cpu_count()} CPUs)", "",
             f"`python benchmarks/contention.py --steps {args.steps}`; seconds per training step "
             "(batch 128, PolyMNIST-QL quick).", "",
             "| setting | threads | alone (s/step) | beside the load (s/step) | slowdown |", "| --- | --- | --- | --- | --- |"]
    for name, threads, policy in ROWS:
        alone = timed(threads, policy, args.steps, False)
        busy = timed(threads, policy, args.steps, True)
        lines.append(f"| {name} | {alone['threads']} | {alone['s_per_step']:.3f} | {busy['s_per_step']:.3f} "
                     f"| {busy['s_per_step'] / alone['s_per_step']:.1f}x |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

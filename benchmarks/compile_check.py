"""Are compiled training steps the eager ones? MUNI at the quick preset, eager and compiled.

    python benchmarks/compile_check.py [--dataset polymnist-quadrant] [--method muni] [--steps 60]

Trains `--steps` steps twice from the same seed, eager and with ``train.compile=true``, and
prints the loss logged every 10 steps. Inductor draws random numbers with its own generator;
``torch._inductor.config.fallback_random = True`` makes it use eager's, so the two rows can be
compared. Kernel fusion still reorders float sums, so they agree closely, not bitwise.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import torch._inductor.config

from muni.data import load_dataset
from muni.run import RunSpec
from muni.training import train


def losses(method: str, dataset: str, steps: int, compiled: bool) -> list[float]:
    spec = RunSpec.resolve(method, dataset, "quick", 0, [f"train.steps={steps}", "train.log_every=10",
                                                         "train.ckpt_every=0", f"train.compile={str(compiled).lower()}"])
    ds = load_dataset(dataset, "train", "quick", 0)
    torch.manual_seed(0)
    model = spec.build_model()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        train(model, ds, spec.train, tmp, progress=False, on_log=rows.append)
    return [r["loss"] for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="polymnist-quadrant")
    ap.add_argument("--method", default="muni")
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    torch._inductor.config.fallback_random = True
    eager = losses(args.method, args.dataset, args.steps, False)
    compiled = losses(args.method, args.dataset, args.steps, True)
    print("step      " + " ".join(f"{10 * (i + 1):>9d}" for i in range(len(eager))))
    print("eager     " + " ".join(f"{v:9.1f}" for v in eager))
    print("compiled  " + " ".join(f"{v:9.1f}" for v in compiled))
    worst = max(abs(a - b) / abs(a) for a, b in zip(eager, compiled))
    print(f"largest relative difference: {worst:.2e}")


if __name__ == "__main__":
    main()

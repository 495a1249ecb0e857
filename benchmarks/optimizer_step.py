"""Milliseconds per AdamW step on MUNI quick's parameters: the loop (one tensor at a time),
foreach (torch's default) and fused kernels (the training loop uses fused where torch has it).

    python benchmarks/optimizer_step.py [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from muni.run import RunSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    params = list(RunSpec.resolve("muni").build_model().parameters())
    for q in params:
        q.grad = torch.randn_like(q)
    print(f"{sum(q.numel() for q in params) / 1e6:.2f}M parameters, {args.threads} thread(s)")
    for name, kw in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-3, **kw)
        for _ in range(3):
            opt.step()
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.step()
        print(f"{name}: {(time.perf_counter() - t) / args.steps * 1e3:.1f} ms per step")


if __name__ == "__main__":
    main()

"""Unconditional sampling throughput of a trained run, fp32 against bf16 autocast (issue 19).

    python benchmarks/sampling_speed.py RUN [--nfe 8 16 32] [--n 64 256 1024] [--out FILE]

Loads the run's EMA weights and times ``generate({}, all modalities, n)`` per cell, the median
of three calls after one untimed call of the same size, under ``torch.inference_mode``, with the sampler options
``prior_nfe`` (MUNI) and ``precision``. The bench's cost table times n = 64, where the per-call
overhead weighs most. Run it with the machine to itself.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from muni.methods.base import generate_with, sampling_options
from muni.registry import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run")
    ap.add_argument("--nfe", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--n", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    model = load_model(args.run).eval()
    names = list(model.modalities)
    rows = []
    for n in args.n:
        for nfe in args.nfe:
            cell = {}
            for precision in ("fp32", "bf16"):
                opts = sampling_options(model, {"prior_nfe": nfe, "precision": precision})
                with torch.inference_mode():
                    generate_with(model, {}, names, n=n, generator=torch.Generator().manual_seed(0), **opts)
                    times = []
                    for seed in (1, 2, 3):
                        t = time.perf_counter()
                        generate_with(model, {}, names, n=n, generator=torch.Generator().manual_seed(seed), **opts)
                        times.append(time.perf_counter() - t)
                    cell[precision] = n / sorted(times)[1]  # the median of three calls
            rows.append((n, nfe, cell["fp32"], cell["bf16"]))
            print(f"n={n:5d} prior_nfe={nfe:3d}  fp32 {cell['fp32']:7.0f}  bf16 {cell['bf16']:7.0f} samples/s", flush=True)
    md = ["# Unconditional sampling throughput, fp32 and bf16 autocast\n",
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s). Run: `{args.run}`.\n",
          f"Command: `python benchmarks/sampling_speed.py {args.run} --nfe {' '.join(map(str, args.nfe))} "
          f"--n {' '.join(map(str, args.n))}`\n",
          "| n per call | prior NFE | fp32 samples/s | bf16 samples/s | bf16 / fp32 |", "| --- | --- | --- | --- | --- |"]
    md += [f"| {n} | {nfe} | {a:.0f} | {b:.0f} | {b / a:.2f}x |" for n, nfe, a, b in rows]
    text = "\n".join(md) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()

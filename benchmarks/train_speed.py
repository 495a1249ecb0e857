"""Training throughput per execution option (issue 19): fp32, bf16 autocast, torch.compile.

    python benchmarks/train_speed.py [--dataset polymnist-quadrant] [--methods muni mopoe]
                                     [--options fp32 bf16 compile compile+bf16] [--steps 30]
                                     [--device auto] [--threads 0] [--out docs/results/train-speed.md]

Each (method, option) trains in a fresh subprocess through the real loop (`muni.training.train`,
EMA and gradient clipping included) on the quick preset's model and batch: ``2 * --steps``
steps, logged in two windows. The first window holds the start (and, with compile, the
compilation); the second is the steady state, reported as samples/s. The mean loss of the
second window is printed beside it as a sanity check: bf16 and compile follow other numerics
and, compiled, other random draws, so it matches fp32 only roughly. Inductor keeps compiled
kernels in an on-disk cache, so a second invocation compiles faster than the first: the
``start`` column is that invocation's. Run it with the machine to itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIONS = {"fp32": {"precision": "fp32"}, "bf16": {"precision": "bf16"},
           "compile": {"precision": "fp32", "compile": True},
           "compile+bf16": {"precision": "bf16", "compile": True}}


def gemm_gflops(device: str, dtype: str, n: int = 2048, reps: int = 10) -> float:
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9


def one(method: str, dataset: str, option: str, steps: int, device: str, threads: int) -> dict:
    """Train one configuration; the result as a dict (run in a subprocess)."""
    import torch

    from muni.data import load_dataset
    from muni.run import RunSpec
    from muni.training import train
    from muni.training.distributed import choose_device

    if threads:
        torch.set_num_threads(threads)
    where = choose_device(device)[0]
    overrides = [f"train.{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in OPTIONS[option].items()]
    spec = RunSpec.resolve(method, dataset, "quick", 0, [*overrides, f"train.steps={2 * steps}",
                                                        f"train.log_every={steps}", "train.ckpt_every=0"])
    ds = load_dataset(dataset, "train", "quick", 0)
    torch.manual_seed(0)
    model = spec.build_model(where)
    rows: list[dict] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train(model, ds, spec.train, tmp, progress=False, on_log=rows.append)
    return {"method": method, "option": option, "device": where, "threads": torch.get_num_threads(),
            "start_s": rows[0]["time_s"], "samples_per_s": rows[1]["samples_per_s"],
            "loss": rows[1]["loss"], "total_s": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="polymnist-quadrant")
    ap.add_argument("--methods", nargs="+", default=["muni", "mopoe"])
    ap.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    ap.add_argument("--steps", type=int, default=30, help="steps per window (two windows)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        method, option = args.one.split(":")
        print(json.dumps(one(method, args.dataset, option, args.steps, args.device, args.threads)))
        return

    import platform
    import os

    import torch

    from muni.training.distributed import choose_device

    where = choose_device(args.device)[0]
    if args.threads:
        torch.set_num_threads(args.threads)
    gemm = {dt: gemm_gflops(where, dt) for dt in ("fp32", "bf16")}
    results = []
    for method in args.methods:
        for option in args.options:
            cmd = [sys.executable, __file__, "--one", f"{method}:{option}", "--dataset", args.dataset,
                   "--steps", str(args.steps), "--device", args.device, "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
                print(f"{method} {option}: failed\n{tail}", file=sys.stderr)
                results.append({"method": method, "option": option, "error": tail.splitlines()[-1] if tail else "?"})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{method:8s} {option:13s} {r['samples_per_s']:8.0f} samples/s  start {r['start_s']:6.1f} s  "
                  f"loss {r['loss']:.2f}", flush=True)
    gpu = torch.cuda.get_device_name() if where == "cuda" else None
    md = [f"# Training throughput per execution option, {args.dataset}, quick preset\n",
          f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"GPU {gpu or 'none'}; trained on {where}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU thread(s).\n",
          f"Command: `python benchmarks/train_speed.py --dataset {args.dataset} --methods {' '.join(args.methods)} "
          f"--options {' '.join(args.options)} --steps {args.steps} --device {args.device} --threads {args.threads}`\n",
          f"GEMM (2048², same process, {where}): fp32 {gemm['fp32']:.0f} GFLOP/s, bf16 {gemm['bf16']:.0f} GFLOP/s.\n",
          "| method | option | samples/s (steady) | vs fp32 | start (s, first window) | loss (second window) |",
          "| --- | --- | --- | --- | --- | --- |"]
    base = {r["method"]: r["samples_per_s"] for r in results if r.get("option") == "fp32" and "error" not in r}
    for r in results:
        if "error" in r:
            md.append(f"| {r['method']} | {r['option']} | failed: {r['error']} | | | |")
            continue
        ratio = f"{r['samples_per_s'] / base[r['method']]:.2f}x" if r["method"] in base else ""
        md.append(f"| {r['method']} | {r['option']} | {r['samples_per_s']:.0f} | {ratio} | {r['start_s']:.1f} | "
                  f"{r['loss']:.2f} |")
    md.append(f"\nEach row: a fresh process, {2 * args.steps} steps at the quick batch in two windows of "
              f"{args.steps}; 'start' is the first window's wall time (compilation included).")
    text = "\n".join(md) + "\n"
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()

"""MUNI training throughput with 1 and N processes (torchrun, gloo on CPU / NCCL on GPU).

    python benchmarks/scaling.py --out benchmarks/results/scaling [--procs 1 2] [--steps 50]
        [--warmup 10] [--batch-size 64] [--set model.latent_dim=16 ...]

Each world size runs the real CLI, ``python -m torch.distributed.run --nproc_per_node P -m
muni train --method muni --dataset polymnist-quadrant --preset quick``, for ``warmup + steps``
steps with a row of ``log.csv`` per step, no intermediate checkpoints and no sampling; the
throughput is ``steps * global batch / (time_s[warmup + steps] - time_s[warmup])``, so start-up,
data loading and the final checkpoint/sample sheets are not counted. Every process gets
``cores // P`` torch threads. Writes ``scaling.md`` (a table) and ``scaling.json`` (numbers
plus the machine: platform, CPU count, torch version, load average before each run) to --out.

The quick dataset build (~6 s) is cached in $MUNI_CACHE_DIR, outside the timed window. Run on
a quiet machine: the load average is recorded so a noisy measurement can be recognised.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_one(procs: int, threads: int, args, run_dir: Path) -> dict:
    total = args.warmup + args.steps
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "muni", "train", "--method", "muni", "--dataset", "polymnist-quadrant",
           "--preset", "quick", "--out", str(run_dir), "--no-progress",
           "--set", f"train.steps={total}", f"train.batch_size={args.batch_size}", "train.log_every=1",
           "train.ckpt_every=0", "train.sample_every=0", f"train.num_threads={threads}", *args.set]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed (exit {proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    with open(run_dir / "log.csv") as f:
        times = {int(r["step"]): float(r["time_s"]) for r in csv.DictReader(f)}
    dt = times[total] - times[args.warmup] if args.warmup else times[total]
    return {"processes": procs, "threads_per_process": threads, "global_batch": args.batch_size,
            "warmup_steps": args.warmup, "timed_steps": args.steps, "timed_s": round(dt, 3),
            "samples_per_s": round(args.steps * args.batch_size / dt, 1),
            "wall_s": round(time.time() - t0, 1), "load_average_before": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="directory for scaling.md and scaling.json")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="world sizes to measure")
    p.add_argument("--steps", type=int, default=50, help="timed steps per world size")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first")
    p.add_argument("--batch-size", type=int, default=64, help="global batch")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores to share out")
    p.add_argument("--set", nargs="*", default=[], help="extra --set overrides (model.*, train.*)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or any(n < 1 for n in args.procs):
        p.error("--steps >= 1, --warmup >= 0 and --procs >= 1 required")
    for n in args.procs:
        if args.batch_size % n:
            p.error(f"--batch-size {args.batch_size} is not divisible by {n} processes")

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "cores_used": args.cores, "python": platform.python_version(),
               "torch": torch.__version__, "cuda": torch.cuda.is_available(),
               "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    results = []
    with tempfile.TemporaryDirectory(prefix="muni-scaling-") as tmp:
        for n in args.procs:
            threads = max(1, args.cores // n)
            print(f"{n} process(es) x {threads} thread(s) ...", flush=True)
            results.append(run_one(n, threads, args, Path(tmp) / f"p{n}"))
            print(f"  {results[-1]['samples_per_s']} samples/s", flush=True)
    base = results[0]["samples_per_s"]
    for r in results:
        r["speedup"] = round(r["samples_per_s"] / base, 2)
    report = {"benchmark": "muni train throughput, polymnist-quadrant/quick",
              "overrides": args.set, "machine": machine, "results": results}
    (out / "scaling.json").write_text(json.dumps(report, indent=2))
    lines = [f"MUNI training throughput on polymnist-quadrant/quick, global batch {args.batch_size}, "
             f"{args.steps} timed steps after {args.warmup} warmup steps.", "",
             f"Machine: {machine['platform']}, {machine['cpu_count']} CPUs ({args.cores} used), "
             f"torch {machine['torch']}, load average at start {machine['load_average_start']}.", "",
             "| processes | threads / process | samples/s | speedup | load avg before |",
             "|---:|---:|---:|---:|---|"]
    for r in results:
        load = ", ".join(f"{x:.2f}" for x in r["load_average_before"]) if r["load_average_before"] else "-"
        lines.append(f"| {r['processes']} | {r['threads_per_process']} | {r['samples_per_s']} | "
                     f"{r['speedup']}x | {load} |")
    if args.set:
        lines += ["", "Overrides: `" + " ".join(args.set) + "`"]
    (out / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

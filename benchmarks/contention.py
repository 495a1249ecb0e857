"""A training run beside one busy job (issue 19): seconds per step alone and with a fixed
competing load, for several thread settings.

    python benchmarks/contention.py [--steps 30] [--repeats 1] [--load matmul|train] [--out FILE.md]

The competing load is one process started 2 s before and stopped after each timed run: either
2-thread fp32 matmuls (2048²) in a loop (``matmul``), or a second MUNI quick training loop with
torch's default thread count, fixed (``train``). Each timed run is a fresh process training MUNI
at the quick preset on PolyMNIST-QL for `--steps` steps after 3 warm-up steps, with the thread
count, OpenMP wait policy and thread governor (`muni.training.threads.ThreadGovernor`, polled
once per step as the training loop does) of its row. The adaptive row's time includes the
seconds before the governor's first measurement. With ``--repeats R`` every cell is the median of
R such runs (rows interleaved, so slow spells of the machine spread over them); the slowdown is
the ratio of the medians. Run it with the machine otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
from muni.training.threads import ThreadGovernor
threads, steps, adapt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
changes = 0
if threads:
    torch.set_num_threads(threads)
governor = ThreadGovernor() if adapt else None
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
    global changes
    if governor is not None and governor.poll() is not None:
        changes += 1
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"s_per_step": (time.perf_counter() - t) / steps, "threads": torch.get_num_threads(),
                  "changes": changes}))
"""

LOADS = {"matmul": [LOAD], "train": [STEP, "0", "1000000", "0"]}

# (name, fixed thread count or 0 for torch's, OpenMP wait policy, ThreadGovernor)
ROWS = [("adaptive (train.num_threads=0, the default)", 0, None, True),
        ("torch's default count, fixed", 0, None, False),
        ("torch's default count, fixed, OMP_WAIT_POLICY=PASSIVE", 0, "PASSIVE", False),
        ("train.num_threads=1", 1, None, False)]


def timed(threads: int, policy: str | None, adapt: bool, steps: int, loaded: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    load = subprocess.Popen([sys.executable, "-c"] + LOADS[loaded]) if loaded else None
    try:
        if load:
            time.sleep(2)
        out = subprocess.run([sys.executable, "-c", STEP, str(threads), str(steps), str(int(adapt))], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if load:
            load.kill()
            load.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--load", choices=sorted(LOADS), default="matmul")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    runs: dict[tuple[int, bool], list[dict]] = {}
    for _ in range(args.repeats):
        for i, (name, threads, policy, adapt) in enumerate(ROWS):
            for loaded in (False, True):
                run = timed(threads, policy, adapt, args.steps, args.load if loaded else None)
                runs.setdefault((i, loaded), []).append(run)
                print(name, "beside the load" if loaded else "alone", run, flush=True)
    lines = [f"`python benchmarks/contention.py --steps {args.steps} --repeats {args.repeats} "
             f"--load {args.load}`; seconds per training step (batch 128, PolyMNIST-QL quick), "
             f"{os.cpu_count()} CPUs; the median of {args.repeats} run(s) per cell.", "",
             "| setting | threads alone | alone (s/step) | threads at the end beside the load "
             "| thread changes beside the load | beside the load (s/step) | slowdown |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, (name, *_) in enumerate(ROWS):
        alone, busy = runs[(i, False)], runs[(i, True)]
        t_alone = statistics.median(r["s_per_step"] for r in alone)
        t_busy = statistics.median(r["s_per_step"] for r in busy)
        lines.append(f"| {name} | {'/'.join(sorted({str(r['threads']) for r in alone}))} | {t_alone:.3f} "
                     f"| {'/'.join(sorted({str(r['threads']) for r in busy}))} "
                     f"| {'/'.join(str(r['changes']) for r in busy)} | {t_busy:.3f} | {t_busy / t_alone:.1f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()

"""How strongly each target modality teaches a trained MUNI's encoders.

    python benchmarks/teaching_norms.py RUN [RUN ...] [--batches 8]

For each MUNI run (a `muni train` run directory or one of its ``ckpt-<step>`` directories), on
`batches` training batches of 128 with the routed objective: the norm of the gradient each
target's weighted likelihood sends into the cross-prediction latent (the quantity
``model.target_balance`` balances, read with a `TeachingBalance` of strength 0, which records
and changes nothing), and each target's share of their sum. Runs on CPU, 1 thread.
"""

from __future__ import annotations

import argparse
import sys

import torch

from muni.data import load_dataset
from muni.errors import MuniError
from muni.methods.muni import Muni, TeachingBalance
from muni.registry import load_model
from muni.training.checkpoint import load_checkpoint


def teaching_norms(run: str, batches: int = 8) -> dict[str, float]:
    model = load_model(run)
    if not isinstance(model, Muni):
        raise MuniError(f"{run}: a {type(model).__name__} run; teaching norms are MUNI's")
    meta = load_checkpoint(run).meta
    data = load_dataset(meta["dataset"], "train", meta["preset"], meta.get("data_seed", 0))
    model.train()
    total = torch.zeros(len(model.names))
    for k in range(batches):
        model.balance = TeachingBalance(len(model.names), strength=0.0, momentum=0.0)
        torch.manual_seed(k)
        out = model.loss(data.batch(torch.randint(0, len(data), (128,))))
        model.zero_grad(set_to_none=True)
        out["loss"].backward()
        total += model.balance.norms
    return dict(zip(model.names, (total / batches).tolist()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--batches", type=int, default=8)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        for run in args.runs:
            norms = teaching_norms(run, args.batches)
            s = sum(norms.values())
            print(f"{run}: " + ", ".join(f"{m} {v:.2f} ({v / s:.0%})" for m, v in norms.items()))
    except MuniError as e:
        print(f"teaching_norms: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a trained model's shared latent holds: linear probes, rate, and gradient shares.

    python benchmarks/latent_probes.py RUN [RUN ...] [--out FILE.json] [--n-train 4000]

For each run (a `muni train` run directory, or one of its ``ckpt-<step>`` directories) on a
benchmark dataset, and for each non-empty subset S of the modalities:

- **Linear probes**: multinomial logistic regression from the subset posterior mean
  ``E[z | x_S]`` to each factor of the dataset (digit, quadrant, speaker, ...), fitted on
  `n_train` training tuples and scored on the test split (accuracy; chance is printed beside).
  A factor a subset carries but its probe cannot read is not in the latent.
- **Rate**: the mean KL of ``q(z | x_S)`` to N(0, I) in nats (the minimality price paid).

And, for MUNI runs, on one training batch of every subset:

- **Gradient shares**: the norm of each objective term's gradient on each modality's encoder
  (cross-prediction of every target, self-reconstruction, rate), as a share of that encoder's
  summed term norms, with the kind weights applied: which term teaches each encoder.

Subset posterior means: MUNI's aggregator (`Muni.posterior`); the VAE baselines' product of
the present experts (MoPoE's subset posterior for the whole subset; MVAE's posterior).
Everything runs on CPU; the numbers go to stdout as Markdown and, with ``--out``, to JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch

from muni.data import load_dataset
from muni.errors import MuniError
from muni.methods.aggregation import kl_normal, product_of_experts
from muni.methods.muni import Muni
from muni.methods.vae import MultimodalVAE
from muni.registry import load_model
from muni.training.checkpoint import load_checkpoint


def subsets(names: list[str]) -> list[tuple[str, ...]]:
    return [s for k in range(1, len(names) + 1) for s in itertools.combinations(names, k)]


@torch.no_grad()
def posterior(model, batch: dict[str, torch.Tensor], subset: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and log-variance (B, d) of the model's posterior given the modalities in `subset`."""
    given = {k: batch[k] for k in subset}
    b = next(iter(given.values())).shape[0]
    if isinstance(model, Muni):
        mask = torch.tensor([n in given for n in model.names]).expand(b, -1)
        return model.posterior(model.encode(given), mask)
    if isinstance(model, MultimodalVAE):
        mu, logvar, mask = model.experts(given)
        return product_of_experts(mu, logvar, mask, prior_expert=getattr(model.cfg, "prior_expert", False))
    raise MuniError(f"{type(model).__name__}: no subset posterior to probe (MUNI and the VAE baselines have one)")


def encode_split(model, ds, n: int, subset: tuple[str, ...], batch_size: int = 500):
    idx = torch.arange(min(n, len(ds)))
    mus, rates = [], []
    for chunk in idx.split(batch_size):
        mu, logvar = posterior(model, ds.batch(chunk), subset)
        mus.append(mu)
        rates.append(kl_normal(mu, logvar))
    return torch.cat(mus), torch.cat(rates).mean().item(), {f: v[idx] for f, v in ds.factors.items()}


def probe(x_train, y_train, x_test, y_test, steps: int = 200) -> float:
    """Test accuracy of a multinomial logistic regression (L-BFGS, light L2) on standardised features."""
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    xtr, xte = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    torch.manual_seed(0)
    lin = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(xtr), y_train) + 1e-3 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return (lin(xte).argmax(1) == y_test).float().mean().item()


def gradient_shares(model: Muni, ds, n: int = 256, seed: int = 0) -> dict[str, dict[str, dict[str, float]]]:
    """subset -> encoder -> term -> share of that encoder's summed (weighted) term gradient norms."""
    cfg = model.cfg
    batch = ds.batch(torch.arange(n))
    out = {}
    model.train()
    for subset in subsets(model.names):
        torch.manual_seed(seed)
        mask = torch.tensor([nm in subset for nm in model.names]).expand(n, -1)
        terms = model.routed_terms(batch, mask)
        weighted = {"rate": cfg.beta * terms["rate"]}
        for nm in model.names:
            w = cfg.kind_weights.get(model.modalities[nm].kind, 1.0)
            key = "cross" if nm not in subset else "self"
            weighted[f"{key}/{nm}"] = w * terms[f"{key}/{nm}"]
        per_enc = {}
        for enc in subset:
            params = [p for p in model.encoders[enc].parameters() if p.requires_grad]
            norms = {}
            for k, v in weighted.items():
                grads = torch.autograd.grad(v, params, retain_graph=True, allow_unused=True)
                norms[k] = math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))
            total = sum(norms.values()) or 1.0
            per_enc[enc] = {k: round(v / total, 3) for k, v in norms.items() if v > 0}
        out["+".join(subset)] = per_enc
    model.eval()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories or ckpt-<step> directories")
    ap.add_argument("--n-train", type=int, default=4000, help="training tuples the probes are fitted on")
    ap.add_argument("--n-test", type=int, default=1000, help="test tuples the probes are scored on")
    ap.add_argument("--factors", nargs="+", default=None, help="factors to probe (default: all of the dataset's)")
    ap.add_argument("--no-gradients", action="store_true", help="skip the gradient shares")
    ap.add_argument("--out", default=None, help="write every number to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    report = {}
    for run in args.runs:
        try:
            model = load_model(run)
            meta = load_checkpoint(run).meta
            step = load_checkpoint(run).step
        except MuniError as e:
            print(f"latent_probes.py: {e}", file=sys.stderr)
            return 2
        train = load_dataset(meta["dataset"], "train", meta["preset"], meta.get("data_seed", 0))
        test = load_dataset(meta["dataset"], "test", meta["preset"], meta.get("data_seed", 0))
        factors = args.factors or [f for f in test.factors if int(test.factors[f].max()) < 100]
        rows = {}
        for subset in subsets(list(model.modalities)):
            xtr, rate, ytr = encode_split(model, train, args.n_train, subset)
            xte, _, yte = encode_split(model, test, args.n_test, subset)
            rows["+".join(subset)] = {"rate_nats": round(rate, 2),
                                      **{f: round(probe(xtr, ytr[f], xte, yte[f]), 3) for f in factors}}
        chance = {f: round(torch.bincount(test.factors[f]).max().item() / len(test), 3) for f in factors}
        entry = {"method": meta["method"], "step": step, "probes": rows, "majority_class": chance}
        if isinstance(model, Muni) and not args.no_gradients:
            entry["gradient_shares"] = gradient_shares(model, train)
        report[str(run)] = entry
        print(f"\n## {run} ({meta['method']}, step {step})\n")
        print("| subset | rate (nats) | " + " | ".join(factors) + " |")
        print("| --- | --- |" + " --- |" * len(factors))
        for s, r in rows.items():
            print(f"| {s} | {r['rate_nats']} | " + " | ".join(f"{r[f]:.3f}" for f in factors) + " |")
        print("| *majority class* | | " + " | ".join(f"{chance[f]:.3f}" for f in factors) + " |")
        for s, encs in entry.get("gradient_shares", {}).items():
            for enc, shares in encs.items():
                top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(shares.items(), key=lambda kv: -kv[1]))
                print(f"- S={s}, encoder {enc}: {top}")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

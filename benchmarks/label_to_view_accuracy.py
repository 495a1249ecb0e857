"""Label-to-image digit accuracy per view at several decoder temperatures (issue 15).

    python benchmarks/label_to_view_accuracy.py RUN [--n 500] [--temperatures 0 0.5 1]

Given the digit labels of the first `n` PolyMNIST-QL test tuples, generates every view with the
run's default sampler (seed 0) at each decoder temperature and prints, per view, the fraction
the evaluation classifier reads as the given digit. It locates a coherence loss: which view,
and whether the decoder's noise (temperature > 0) or its mean (temperature 0) causes it.
"""

from __future__ import annotations

import argparse

import torch

from muni.data import load_dataset
from muni.evaluation.classifiers import load_or_train_classifiers
from muni.registry import load_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = p.parse_args()
    test = load_dataset("polymnist-quadrant", "test")
    clf = load_or_train_classifiers("polymnist-quadrant", "quick", 0)
    model = load_model(args.run).eval()
    views = [m for m, spec in model.modalities.items() if spec.kind == "image"]
    given = test.batch(torch.arange(args.n), ["digit"])
    print("| temperature | " + " | ".join(views) + " |")
    print("| --- |" + " --- |" * len(views))
    for t in args.temperatures:
        out = model.generate(given, views, generator=torch.Generator().manual_seed(0), temperature=t)
        accs = [float((clf.predict(v, out[v])["digit"] == given["digit"]).float().mean()) for v in views]
        print(f"| {t:g} | " + " | ".join(f"{a:.3f}" for a in accs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

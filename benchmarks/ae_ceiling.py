"""How much of each image's content a two-stage method's stage-1 autoencoders keep: its ceiling.

JointFlow and MMGen generate in the latents of frozen autoencoders, so no generated image can
carry a digit its autoencoder cannot reconstruct. This script encodes real test images, decodes
them as generation does (``decode`` of the posterior mean; PolyMNIST-QL's Gaussian image
decoders and MMGen's spatial autoencoder return their mean) and scores the reconstructions with
the evaluation classifiers, beside the classifiers' accuracy on the real images. Runs of other
methods are refused.

    python benchmarks/ae_ceiling.py RUN_DIR [--dataset polymnist-quadrant] [--n 1000]

Prints a Markdown table: per image modality, the classifiers' digit / quadrant accuracy on the
real images and on their reconstructions.
"""

from __future__ import annotations

import argparse

import torch

from muni.data import load_dataset
from muni.errors import InputError, MuniError
from muni.evaluation.classifiers import load_or_train_classifiers
from muni.registry import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a JointFlow or MMGen run directory (muni train --method jointflow|mmgen --out RUN)")
    p.add_argument("--dataset", default="polymnist-quadrant")
    p.add_argument("--n", type=int, default=1000, help="test images per modality")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    model = load_model(args.run).eval()
    if getattr(model, "method", None) not in ("jointflow", "mmgen"):
        raise InputError(f"{args.run} holds a {getattr(model, 'method', '?')} run; this script reads JointFlow "
                         "and MMGen runs")
    test = load_dataset(args.dataset, "test", "quick")
    clf = load_or_train_classifiers(args.dataset, "quick")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[: args.n]
    truth = test.factor_batch(idx)
    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for name, m in model.modalities.items():
        if m.kind != "image":
            continue
        x = test.batch(idx, [name])[name]
        with torch.no_grad():
            recon = torch.cat([model.decode(name, model.encode_latents({name: xb})[name], generator=gen,
                                            temperature=model.cfg.temperature)
                               for xb in x.split(250)])
        cells = []
        for what in (x, recon):
            pred = clf.predict(name, what)
            cells += [f"{(pred[f] == truth[f]).float().mean().item():.3f}" for f in ("digit", "quadrant") if f in pred]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    print(f"{type(model).__name__} autoencoders of {args.run}: classifier accuracy on {args.n} test images, "
          "real vs reconstructed\n")
    print("| view | real digit | real quadrant | reconstructed digit | reconstructed quadrant |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    try:
        main()
    except MuniError as e:  # a wrong run directory or a missing data file: one line, no traceback
        raise SystemExit(f"error: {e}") from None

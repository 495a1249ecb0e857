"""What a private-latent decoder's ``w`` holds: linear probes from ``E[w | x_m]`` to each content
factor (issue 15; `docs/results/decoders.md`).

    python benchmarks/private_probes.py runs/decoders/muni-private [--n-train 3000 --n-test 1000]

For each modality whose decoder is a `PrivateDecoder`, fits a multinomial logistic regression
(`latent_probes.probe`) from the posterior mean of ``w`` to every factor of the dataset with
fewer than 64 classes (content, background crop offsets; not writer ids) on training tuples and scores it on test tuples. Private detail only would read at the majority
class rate; a factor read well above it sits in ``w``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from latent_probes import probe  # noqa: E402

from muni.data import load_dataset  # noqa: E402
from muni.modalities import PrivateDecoder  # noqa: E402
from muni.registry import load_model  # noqa: E402


MAX_CLASSES = 64


@torch.no_grad()
def private_means(dec: PrivateDecoder, ds, name: str, n: int) -> torch.Tensor:
    return torch.cat([dec.encoder(ds.batch(torch.arange(s, min(n, s + 500)), [name])[name]).chunk(2, 1)[0]
                      for s in range(0, n, 500)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    args = p.parse_args()
    model = load_model(args.run).eval()
    dataset = json.loads((Path(args.run) / "run.json").read_text())["dataset"]
    train, test = load_dataset(dataset, "train"), load_dataset(dataset, "test")
    # factors with few classes (content, background crop positions); writer ids have thousands
    factors = [f for f, v in train.factors.items() if int(v.max()) < MAX_CLASSES]
    print("| modality | " + " | ".join(f"{f} (majority)" for f in factors) + " |")
    print("| --- |" + " --- |" * len(factors))
    for name, dec in model.decoders.items():
        if not isinstance(dec, PrivateDecoder):
            continue
        wtr = private_means(dec, train, name, args.n_train)
        wte = private_means(dec, test, name, args.n_test)
        cells = []
        for f in factors:
            ytr, yte = train.factors[f][:args.n_train], test.factors[f][:args.n_test]
            acc = probe(wtr, ytr, wte, yte)
            majority = float((yte == torch.mode(ytr).values).float().mean())
            cells.append(f"{acc:.3f} ({majority:.3f})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

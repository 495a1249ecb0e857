"""MMGen's stage 1 alone: how much digit its shared spatial autoencoder keeps, per latent shape.

Trains `muni.methods.mmgen.SpatialAutoencoder` on every image view of a dataset (the stage-1
objective of `MMGen.loss`, batch 128, AdamW lr 1e-3) for a wall-clock budget, then scores the
reconstructions of real test images with the evaluation classifiers, as `ae_ceiling.py` does for
a whole run. One line per configuration.

    python benchmarks/mmgen_autoencoder.py [--dataset polymnist-quadrant] [--seconds 150] \\
        [--config CHANNELS:DOWNSAMPLE:WIDTH[:BETA] ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from muni.data import load_dataset
from muni.evaluation.classifiers import load_or_train_classifiers
from muni.methods.mmgen import SpatialAutoencoder
from muni.methods.aggregation import kl_normal
from muni.registry import model_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="polymnist-quadrant")
    p.add_argument("--seconds", type=float, default=150.0, help="training budget per configuration")
    p.add_argument("--config", nargs="+", default=["4:4:16"], help="CHANNELS:DOWNSAMPLE:WIDTH[:BETA] (BETA: the KL weight, "
                   "default 1e-3, MMGen's beta_ae)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=1000, help="test images per view")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train, test = load_dataset(args.dataset, "train", "quick"), load_dataset(args.dataset, "test", "quick")
    codec = model_config("mmgen", args.dataset, "quick").codec
    clf = load_or_train_classifiers(args.dataset, "quick")
    views = [n for n, m in train.modalities.items() if m.kind == "image"]
    idx = torch.arange(args.n)
    truth = test.factor_batch(idx)
    print("| latent (C x grid) | width | KL weight | steps | seconds | " + " | ".join(f"{v} digit" for v in views) + " |")
    print("| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in views) + " |")
    for item in args.config:
        parts = item.split(":")
        ch, down, width = map(int, parts[:3])
        beta = float(parts[3]) if len(parts) > 3 else 1e-3
        torch.manual_seed(0)
        ae = SpatialAutoencoder(train.modalities[views[0]].shape, ch, width,
                                codec.image_likelihood or codec.likelihood, codec.likelihood_scale, down)
        opt = torch.optim.AdamW(ae.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < args.seconds:
            batch = train.batch(torch.randint(0, len(train), (128,), generator=g), views)
            loss = 0.0
            for v in views:
                mu, logvar = ae.posterior(batch[v])
                z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
                loss = loss + ae.nll(batch[v], z).mean() + beta * kl_normal(mu.flatten(1), logvar.flatten(1)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        spent = time.perf_counter() - start
        cells = []
        with torch.no_grad():
            for v in views:
                x = test.batch(idx, [v])[v]
                recon = torch.cat([ae.mean(ae.posterior(xb)[0]) for xb in x.split(250)])
                cells.append(f"{(clf.predict(v, recon)['digit'] == truth['digit']).float().mean().item():.3f}")
        print(f"| {ch} x {ae.latent_shape[1]}x{ae.latent_shape[2]} | {width} | {beta:g} | {steps} | {spent:.0f} | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

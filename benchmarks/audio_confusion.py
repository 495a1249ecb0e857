"""Which spoken digits a Digits-ITA model gets wrong, and whether averaging alone explains it.

    python benchmarks/audio_confusion.py RUN [RUN ...] [--n 500] [--temperatures 0 1]

For each run: generates audio from image + text for the first `n` Digits-ITA test tuples (the
run's default sampler, seed 0) at each decoder temperature, and prints the fraction the
evaluation classifier reads as the tuple's digit with the confusion matrix (rows: the digit
asked for, columns: the digit read). Then, once, the same classifier on averages of real
training recordings of one digit (8, 32 and 128 at a time, pixel mean and pixel median): it tells
whether a mean decoder's speaker-averaged spectrogram is read as another digit for want of a
speaker, not for want of the digit in the latent.
"""

from __future__ import annotations

import argparse

import torch

from muni.data import load_dataset
from muni.evaluation.classifiers import load_or_train_classifiers
from muni.registry import load_model


def confusion(truth: torch.Tensor, pred: torch.Tensor, k: int = 10) -> torch.Tensor:
    """(k, k) counts: row = truth, column = prediction."""
    return torch.bincount(truth * k + pred, minlength=k * k).reshape(k, k)


def print_matrix(cm: torch.Tensor) -> None:
    print("| asked \\ read | " + " | ".join(map(str, range(cm.shape[1]))) + " |")
    print("| --- |" + " --- |" * cm.shape[1])
    for d, row in enumerate(cm.tolist()):
        print(f"| {d} | " + " | ".join(str(v) for v in row) + " |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 1.0])
    args = p.parse_args()
    clf = load_or_train_classifiers("digits-ita", "quick", 0)
    test = load_dataset("digits-ita", "test")
    idx = torch.arange(args.n)
    given, digit = test.batch(idx, ["image", "text"]), test.factor_batch(idx)["digit"]
    for run in args.runs:
        model = load_model(run).eval()
        for t in args.temperatures:
            out = model.generate(given, ["audio"], generator=torch.Generator().manual_seed(0), temperature=t)
            pred = clf.predict("audio", out["audio"])["digit"]
            print(f"\n### {run}, (T+I)->A at temperature {t:g}: digit read {float((pred == digit).float().mean()):.3f}\n")
            print_matrix(confusion(digit, pred))

    train = load_dataset("digits-ita", "train")
    real = train.batch(torch.arange(5000), ["audio"])["audio"]
    digits = train.factor_batch(torch.arange(5000))["digit"]
    print("\n### Averages of k real training recordings of one digit (4 groups per digit)\n")
    print("| k | statistic | digit read | digit 6 read as | digit 7 read as |\n| --- | --- | --- | --- | --- |")
    for k in (8, 32, 128):
        for name, stat in (("mean", lambda x: x.mean(0)), ("median", lambda x: x.median(0).values)):
            xs, ys = [], []
            for d in range(10):
                rows = (digits == d).nonzero().flatten()[:4 * k]
                for j in range(0, len(rows) - k + 1, k):
                    xs.append(stat(real[rows[j:j + k]]))
                    ys.append(d)
            y = torch.tensor(ys)
            pred = clf.predict("audio", torch.stack(xs))["digit"]
            print(f"| {k} | {name} | {float((pred == y).float().mean()):.3f} | {pred[y == 6].tolist()} | "
                  f"{pred[y == 7].tolist()} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

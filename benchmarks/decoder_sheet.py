"""One condition, several models side by side: the README's decoder sheet (issue 15).

    python benchmarks/decoder_sheet.py --given digit=7 quadrant=lower-left --n 16 \
        --run "mean decoder=runs/decoders/muni-gaussian" --run "residual flow=runs/decoders/muni-residual_flow" \
        --out docs/results/decoders/sheet-7-lower-left.jpg

Each model draws `--n` samples of every image modality for the same given labels (seed 0, its
default sampler options); a column block per model, a row per sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from muni.commands.sample import parse_value  # noqa: E402
from muni.registry import load_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, metavar="TITLE=RUN_DIR")
    p.add_argument("--given", nargs="+", required=True, metavar="NAME=VALUE")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    blocks = []
    for item in args.run:
        title, _, path = item.partition("=")
        model = load_model(path).eval()
        given = {}
        for g in args.given:
            name, _, value = g.partition("=")
            given[name] = parse_value(model.modalities[name], value).expand(args.n).clone()
        views = [m for m, spec in model.modalities.items() if spec.kind == "image"]
        out = model.generate(given, views, generator=torch.Generator().manual_seed(args.seed))
        blocks.append((title, views, out))
    cols = sum(len(v) for _, v, _ in blocks)
    height = 0.9 * args.n + 0.8
    fig = Figure(figsize=(0.9 * cols + 0.3 * (len(blocks) - 1), height))
    grid = fig.add_gridspec(args.n, cols + len(blocks) - 1, wspace=0.05, hspace=0.05, top=1 - 0.75 / height,
                            bottom=0.01, left=0.01, right=0.99,
                            width_ratios=sum(([1] * len(v) + [0.3] for _, v, _ in blocks), [])[:-1])
    c0 = 0
    for title, views, out in blocks:
        for j, v in enumerate(views):
            for i in range(args.n):
                ax = fig.add_subplot(grid[i, c0 + j])
                ax.imshow(out[v][i].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(f"{title}\n{v}" if j == len(views) // 2 else f"\n{v}", fontsize=8)
        c0 += len(views) + 1
    fig.suptitle("given " + " ".join(args.given), fontsize=9)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=56, bbox_inches="tight")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

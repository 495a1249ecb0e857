#!/usr/bin/env bash
# The reference rows behind docs/results/reference.md: oracle, independent and the sanity rows
# on both benchmarks, with the evaluation classifiers' accuracies; `prototype` (one fixed real
# tuple per class) is the row that diversity and coherent diversity must read as 0.
# Usage: bash benchmarks/reference.sh [OUT]   (MUNI_DATA_DIR must point at the data directory)
set -euo pipefail
out=${1:-runs/reference}
for d in polymnist-quadrant digits-ita; do
  muni eval classifiers "$d" --preset quick          # trains once, then cached
  for m in oracle independent shuffled noise blank prototype; do
    muni eval run --model "$m" --dataset "$d" --preset quick --n 500 --seed 0 --out "$out/$d/$m"
  done
  muni eval compare "$out/$d"/{oracle,independent,shuffled,noise,blank,prototype}
done

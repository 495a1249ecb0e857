#!/usr/bin/env bash
# PolyMNIST-QL: does the Digits-ITA fix candidate beta = 0.1 (docs/results/ita-probes.md) cost
# MUNI anything where the default was chosen? MUNI at the quick preset (3000 steps, seed SEED),
# default (beta 0.5) against beta 0.1, each scored on 500 conditions per task.
# Usage: bash benchmarks/pq_beta.sh [OUT] [SEED]   (about 16 min on 2 cores, plus 15-25 min for the
# evaluation classifiers on first use)
set -euo pipefail
OUT=${1:-runs/pq-beta}
SEED=${2:-0}
declare -A sets=([default]="model.beta=0.5" [beta0.1]="model.beta=0.1")
for name in default beta0.1; do
  run="$OUT/muni-$name"
  [ -f "$run/summary.json" ] || muni train --method muni --dataset polymnist-quadrant --preset quick \
    --seed "$SEED" --out "$run" --no-progress --set "${sets[$name]}"
  [ -f "$OUT/eval-$name/results.json" ] || muni eval run --model "$run" --dataset polymnist-quadrant \
    --n 500 --name "MUNI, ${sets[$name]}" --out "$OUT/eval-$name"
done
muni eval compare "$OUT/eval-default" "$OUT/eval-beta0.1" | tee "$OUT/compare.md"

#!/usr/bin/env bash
# Training on incomplete tuples (issue 20): PolyMNIST-QL with a share of the training tuples made
# incomplete at random (`data.incomplete`: each such tuple keeps a uniformly drawn non-empty
# proper subset of its five modalities; the test split stays complete). MUNI and MoPoE, the same
# budget for both (the quick preset's 3000 steps, seed SEED), each scored on 500 conditions per
# task; `muni eval compare` prints one table (OUT/compare.md).
# Usage: bash benchmarks/incomplete.sh [OUT] [SEED] [FRACTIONS...]   (default fractions 0.5 0.9 0)
# MUNI_EXTRA_SET adds overrides to every run (e.g. "train.num_threads=1" beside other work).
set -euo pipefail
OUT=${1:-runs/incomplete}
SEED=${2:-0}
shift $(( $# < 2 ? $# : 2 ))
FRACTIONS=("${@:-}")
[ -n "${FRACTIONS[0]}" ] || FRACTIONS=(0.5 0.9 0)
evals=()
for f in "${FRACTIONS[@]}"; do
  for method in muni mopoe; do
    name="$method-incomplete$f"
    run="$OUT/$name"
    # shellcheck disable=SC2086
    [ -f "$run/summary.json" ] || muni train --method "$method" --dataset polymnist-quadrant --preset quick \
      --seed "$SEED" --out "$run" --no-progress --set "data.incomplete=$f" ${MUNI_EXTRA_SET:-}
    [ -f "$OUT/eval-$name/results.json" ] || muni eval run --model "$run" --dataset polymnist-quadrant \
      --n 500 --name "$method, incomplete $f" --out "$OUT/eval-$name"
    evals+=("$OUT/eval-$name")
  done
done
muni eval compare "${evals[@]}" | tee "$OUT/compare.md"

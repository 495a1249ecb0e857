#!/usr/bin/env bash
# MUNI configurations side by side on one dataset: each NAME="OVERRIDES" trains MUNI at the quick
# preset (3000 steps, seed SEED) with those --set overrides and is scored on 500 conditions per
# task; `muni eval compare` prints the table (OUT/compare.md).
# Usage: bash benchmarks/muni_configs.sh DATASET OUT SEED NAME="KEY=VALUE ..." [NAME="..." ...]
# e.g.   bash benchmarks/muni_configs.sh digits-ita runs/ita-routes 0 default="" \
#          td-beta0.1="model.self_recon=target_detached model.beta=0.1"
# MUNI_EXTRA_SET adds overrides to every run (e.g. "train.num_threads=1" beside other work).
set -euo pipefail
DATASET=$1 OUT=$2 SEED=$3
shift 3
evals=()
for item in "$@"; do
  name=${item%%=*} sets=${item#*=}
  run="$OUT/muni-$name"
  # shellcheck disable=SC2086
  [ -f "$run/summary.json" ] || muni train --method muni --dataset "$DATASET" --preset quick --seed "$SEED" \
    --out "$run" --no-progress --set $sets ${MUNI_EXTRA_SET:-}
  [ -f "$OUT/eval-$name/results.json" ] || muni eval run --model "$run" --dataset "$DATASET" --n 500 \
    --name "MUNI, $name: ${sets:-defaults}" --out "$OUT/eval-$name"
  evals+=("$OUT/eval-$name")
done
muni eval compare "${evals[@]}" | tee "$OUT/compare.md"

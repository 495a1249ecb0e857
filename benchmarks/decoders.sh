#!/usr/bin/env bash
# MUNI's decoder families side by side (issue 15): the mean decoder ("gaussian"), the
# private-latent decoder ("private") and the mean decoder plus a residual flow ("residual_flow"),
# each trained at the quick preset on DATASET (3000 steps, seed SEED, image and audio decoders
# switched together) and scored on 500 conditions per task (coherence, Frechet distance,
# diversity and coherent diversity).
# Usage: bash benchmarks/decoders.sh [OUT] [SEED] [DATASET] [FAMILY ...]
# MUNI_EXTRA_SET adds --set overrides to every run (e.g. "train.num_threads=1" beside other work).
# Time on 2 cores, one family at a time: gaussian ~6 min, private ~7 min, residual_flow ~15 min of
# training, plus 2-4 min of evaluation each (and 15-25 min for the classifiers on first use).
set -euo pipefail
OUT=${1:-runs/decoders}
SEED=${2:-0}
DATASET=${3:-polymnist-quadrant}
shift $(( $# < 3 ? $# : 3 ))
FAMILIES=("$@")
[ ${#FAMILIES[@]} -gt 0 ] || FAMILIES=(gaussian private residual_flow)
runs=()
for fam in "${FAMILIES[@]}"; do
  run="$OUT/muni-$fam"
  [ -f "$run/summary.json" ] || muni train --method muni --dataset "$DATASET" --preset quick \
    --seed "$SEED" --out "$run" --no-progress \
    --set "model.codec.image_decoder=$fam" "model.codec.audio_decoder=$fam" ${MUNI_EXTRA_SET:-}
  [ -f "$OUT/eval-$fam/results.json" ] || muni eval run --model "$run" --dataset "$DATASET" \
    --n 500 --name "MUNI, decoder=$fam${MUNI_EXTRA_SET:+ ($MUNI_EXTRA_SET)}" --out "$OUT/eval-$fam"
  runs+=("$OUT/eval-$fam")
done
muni eval compare "${runs[@]}" | tee "$OUT/compare.md"

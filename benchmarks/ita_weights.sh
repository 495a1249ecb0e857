#!/usr/bin/env bash
# Digits-ITA: is MUNI held back by its kind weights? MUNI at the quick preset (3000 steps,
# seed 0, today's default) with the kind weights chosen on PolyMNIST-QL (audio 1.0, where the
# 2048-dim Laplace audio NLL is most of the loss) against audio 0.25, each scored on 500
# conditions per task. Usage: bash benchmarks/ita_weights.sh [OUT]   (~25 min on 2 cores)
set -euo pipefail
OUT=${1:-runs/ita-weights}
declare -A sets=([audio-1]="model.kind_weights.audio=1.0" [audio-0.25]="model.kind_weights.audio=0.25")
for name in audio-1 audio-0.25; do
  run="$OUT/muni-$name"
  [ -f "$run/summary.json" ] || muni train --method muni --dataset digits-ita --preset quick --seed 0 \
    --out "$run" --no-progress --set train.num_threads=2 "${sets[$name]}"
  [ -f "$OUT/eval-$name/results.json" ] || muni eval run --model "$run" --dataset digits-ita --n 500 \
    --name "MUNI, kind weight audio ${name#audio-}" --out "$OUT/eval-$name"
done
muni eval compare "$OUT/eval-audio-1" "$OUT/eval-audio-0.25" | tee "$OUT/compare.md"

#!/usr/bin/env bash
# Digits-ITA image likelihood: MUNI at the quick preset (3000 steps, seed 0) with the wide Laplace
# of the PolyMNIST setting against the Bernoulli likelihood the digits-ita preset uses, each scored
# on 500 conditions per task. Usage: bash benchmarks/ita_likelihood.sh [OUT]   (~13 min on 2 cores)
# Route 2 is pinned to target_detached, the default when these runs were measured (2026-11-23).
set -euo pipefail
OUT=${1:-runs/ita-likelihood}
for lik in laplace bernoulli; do
  run="$OUT/muni-$lik"
  [ -f "$run/summary.json" ] || muni train --method muni --dataset digits-ita --preset quick --seed 0 \
    --out "$run" --no-progress --set "model.codec.image_likelihood=$lik" model.self_recon=target_detached
  [ -f "$OUT/eval-$lik/results.json" ] || muni eval run --model "$run" --dataset digits-ita --n 500 \
    --name "MUNI, image likelihood $lik" --out "$OUT/eval-$lik"
done
muni eval compare "$OUT/eval-laplace" "$OUT/eval-bernoulli" | tee "$OUT/compare.md"

#!/usr/bin/env bash
# Digits-ITA: what MUNI's shared latent holds, and what changes it (docs/results/ita-probes.md).
# Each configuration trains at the quick preset (3000 steps, seed 0, checkpoints kept every 500
# steps), is probed at steps 500, 1000, 2000 and 3000 (benchmarks/latent_probes.py: linear
# probes of every subset posterior, rate, gradient shares) and scored on 500 conditions per task.
# Usage: bash benchmarks/ita_probes.sh [OUT] [THREADS]
#   (about 15 min per configuration on 2 cores with THREADS=2; the documented runs used 1 thread
#    beside other jobs)
set -euo pipefail
OUT=${1:-runs/ita-probes}
THREADS=${2:-2}
declare -A method=([muni]=muni [muni-beta0.1]=muni [muni-free16]=muni [mopoe]=mopoe)
declare -A sets=([muni]="" [muni-beta0.1]="model.beta=0.1" [muni-free16]="model.free_nats=16" [mopoe]="")
for name in muni muni-beta0.1 muni-free16 mopoe; do
  run="$OUT/$name"
  # shellcheck disable=SC2086
  [ -f "$run/summary.json" ] || muni train --method "${method[$name]}" --dataset digits-ita --preset quick \
    --seed 0 --out "$run" --no-progress --set ${sets[$name]} train.num_threads="$THREADS" train.keep_last=10
  [ -f "$OUT/probes-$name.json" ] || python "$(dirname "$0")/latent_probes.py" \
    "$run"/ckpt-{500,1000,2000,3000} --n-train 3000 --n-test 1000 --out "$OUT/probes-$name.json" \
    | tee "$OUT/probes-$name.md"
  [ -f "$OUT/eval-$name/results.json" ] || muni eval run --model "$run" --dataset digits-ita --n 500 \
    --name "$name" --out "$OUT/eval-$name"
done
muni eval compare "$OUT"/eval-{muni,muni-beta0.1,muni-free16,mopoe} | tee "$OUT/compare.md"

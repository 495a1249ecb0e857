#!/usr/bin/env bash
# MUNI on quick PolyMNIST-Quadrant-Labels: the runs behind docs/results/muni-quick.md.
# Each run trains the quick preset (3000 steps, batch 128) and is evaluated on the same 500
# conditions per task (evaluation seed 0). Usage: bash benchmarks/muni_quick.sh [OUT]
set -euo pipefail
out=${1:-runs/muni-quick}
# Route 2 was target_detached until 2026-11-23 (the previous default); the first three runs
# were measured with it, so they pin it.
declare -A runs=(
  [flow-decoder]="model.self_recon=target_detached model.codec.image_decoder=flow model.detach_kinds=image,audio,text,categorical"
  [gaussian-all-detached]="model.self_recon=target_detached model.detach_kinds=image,audio,text,categorical"
  [gaussian-attached]="model.self_recon=attached"
  [previous-default]="model.self_recon=target_detached"
  [default]=""
)
for name in flow-decoder gaussian-all-detached gaussian-attached previous-default default; do
  [ -f "$out/$name/summary.json" ] || muni train --out "$out/$name" --no-progress \
      --set train.num_threads=2 ${runs[$name]}
  [ "$name" = previous-default ] && continue
  muni eval run --model "$out/$name" --dataset polymnist-quadrant --n 500 --name "$name" --out "$out/eval-$name"
done
# the previous default, scored at two guidance weights of the prior sampler (a sampling option)
for w in 2 4; do
  muni eval run --model "$out/previous-default" --dataset polymnist-quadrant --n 500 --sample guidance=$w \
      --name "previous default, guidance $w" --out "$out/eval-previous-default-g$w"
done
for ref in oracle independent; do
  muni eval run --model $ref --dataset polymnist-quadrant --n 500 --out "$out/eval-$ref"
done
muni eval compare "$out"/eval-{flow-decoder,gaussian-all-detached,gaussian-attached,previous-default-g2,previous-default-g4,default,oracle,independent}/results.json

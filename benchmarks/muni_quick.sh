#!/usr/bin/env bash
# MUNI on quick PolyMNIST-Quadrant-Labels: the runs behind docs/results/muni-quick.md.
# Each run trains the quick preset (3000 steps, batch 128) and is evaluated on the same 500
# conditions per task (evaluation seed 0). Usage: bash benchmarks/muni_quick.sh [OUT]
set -euo pipefail
out=${1:-runs/muni-quick}
declare -A runs=(
  [flow-decoder]="model.codec.image_decoder=flow model.detach_kinds=image,audio,text,categorical"
  [gaussian-all-detached]="model.detach_kinds=image,audio,text,categorical"
  [gaussian-attached]="model.self_recon=attached"
  [default]=""
)
for name in flow-decoder gaussian-all-detached gaussian-attached default; do
  [ -f "$out/$name/summary.json" ] || muni train --out "$out/$name" --no-progress \
      --set train.num_threads=2 ${runs[$name]}
  [ "$name" = default ] && continue
  muni eval run --model "$out/$name" --dataset polymnist-quadrant --n 500 --name "$name" --out "$out/eval-$name"
done
# the default run, scored at two guidance weights of the prior sampler (a sampling option)
for w in 2 4; do
  muni eval run --model "$out/default" --dataset polymnist-quadrant --n 500 --sample guidance=$w \
      --name "default, guidance $w" --out "$out/eval-default-g$w"
done
for ref in oracle independent; do
  muni eval run --model $ref --dataset polymnist-quadrant --n 500 --out "$out/eval-$ref"
done
muni eval compare "$out"/eval-{flow-decoder,gaussian-all-detached,gaussian-attached,default-g2,default-g4,oracle,independent}/results.json

#!/usr/bin/env bash
# The GPU check of issue 19: training throughput per execution option (fp32, bf16 autocast,
# torch.compile) and a short paper-preset run, on CUDA when torch sees a GPU.
#
#   bash benchmarks/device_check.sh OUT_DIR
#
# Writes OUT_DIR/device_check.md (the machine, both throughput tables, the paper run's summary),
# OUT_DIR/train_speed_*.md and OUT_DIR/paper_log.csv: few files, as the device tool brings back
# at most 8. Settings (environment):
#   MUNI_DATA_DIR  raw data (default ./.device-data)     PYTHON         default python3
#   SPEED_STEPS    steps per timing window (default 50)  SPEED_OPTIONS  default "fp32 bf16 compile+bf16"
#   PAPER_DATASET  default digits-ita                    PAPER_MINUTES  default 3
#   PAPER_PRESET   default paper (quick, with SPEED_OPTIONS=fp32, smoke-tests the script on a CPU)
#
# It runs from the checkout without installing muni (PYTHONPATH=src), under the python that holds
# the machine's CUDA torch. Through the device tool, where ../shared does not travel, copy the
# raw data into the checkout first (.device-data is git-ignored) and carry it:
#   here:   mkdir -p .device-data && cp -r "$MUNI_DATA_DIR"/{mnist,fsdd,backgrounds} .device-data/
#   there:  bash benchmarks/device_check.sh "$OUT"          (run with carry: [".device-data"])
set -euo pipefail
OUT=${1:?usage: bash benchmarks/device_check.sh OUT_DIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MUNI_DATA_DIR=${MUNI_DATA_DIR:-$ROOT/.device-data}
export MUNI_CACHE_DIR=${MUNI_CACHE_DIR:-${TMPDIR:-/tmp}/muni-device-cache}
SPEED_STEPS=${SPEED_STEPS:-50}
SPEED_OPTIONS=${SPEED_OPTIONS:-fp32 bf16 compile+bf16}
PAPER_DATASET=${PAPER_DATASET:-digits-ita}
PAPER_PRESET=${PAPER_PRESET:-paper}
PAPER_MINUTES=${PAPER_MINUTES:-3}
RUN=${TMPDIR:-/tmp}/muni-device-paper-run
rm -rf "$RUN"

t0=$(date +%s)
{
  echo "# Device check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "Command: \`bash benchmarks/device_check.sh OUT\` (SPEED_STEPS=$SPEED_STEPS SPEED_OPTIONS=\"$SPEED_OPTIONS\" PAPER_DATASET=$PAPER_DATASET" \
       "PAPER_PRESET=$PAPER_PRESET PAPER_MINUTES=$PAPER_MINUTES), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
  echo
  echo '```'
  "$PY" -c "import torch, os; print('torch', torch.__version__, '| cuda', torch.version.cuda, '| GPU', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none', '| CPUs', os.cpu_count())"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
  echo '```'
  echo
} > "$OUT/device_check.md"

for ds in polymnist-quadrant digits-ita; do
  "$PY" benchmarks/train_speed.py --dataset "$ds" --methods muni mopoe --steps "$SPEED_STEPS" \
      --options $SPEED_OPTIONS --out "$OUT/train_speed_$ds.md"
  sed 's/^# /## /' "$OUT/train_speed_$ds.md" >> "$OUT/device_check.md"
  echo >> "$OUT/device_check.md"
done

"$PY" -m muni train --dataset "$PAPER_DATASET" --preset "$PAPER_PRESET" --minutes "$PAPER_MINUTES" \
    --set train.sample_every=0 --out "$RUN" --no-progress
cp "$RUN/log.csv" "$OUT/paper_log.csv"
{
  echo "## MUNI, $PAPER_DATASET/$PAPER_PRESET, $PAPER_MINUTES min"
  echo
  echo '```json'
  cat "$RUN/summary.json"
  echo
  echo '```'
  echo
  echo "Whole check: $(( $(date +%s) - t0 )) s."
} >> "$OUT/device_check.md"
echo "wrote $OUT/device_check.md"

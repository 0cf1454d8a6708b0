#!/usr/bin/env bash
# GPU check, one command, under five minutes on one GPU: a Llama-3-8B-shaped model (random weights,
# SmolLM2's tokenizer) saved and loaded sharded in bf16 with device_map=auto (accelerate), token learning,
# the preserved-key statistics and a 100-item edit of TOFU's forget10, each phase's time and peak memory
# printed and written to bench/results/gpu_check.{json,md} (--out to change).
#
#   bash scripts/gpu_check.sh                 # on a GPU machine, from the repo root
#   bash scripts/gpu_check.sh --cpu           # tiny shape on the CPU: checks the script itself runs
#   bash scripts/gpu_check.sh --out /tmp/g    # any further flag goes to python -m bench.gpu_scale
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=true TOKENIZERS_PARALLELISM=false
SHAPE=(--shape llama3-8b --items 100 --retain-items 100 --set edit.value_batch_size=16)
if [ "${1:-}" = "--cpu" ]; then
  shift
  SHAPE=(--shape tiny --items 6 --retain-items 6 --device cpu --set edit.v_steps=3 --set covariance.num_samples=32
         --set token.stage1_epochs=1 --set token.stage2_epochs=1 --set token.robust_epochs=0)  # bf16 on a CPU is slow
fi
WORK="$(mktemp -d "${TMPDIR:-/tmp}/unierase-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT  # the saved model (16 GB in bf16 at 8B) goes with the run
cd "$ROOT"
exec_time_start=$(date +%s)
"$PY" -m bench.gpu_scale "${SHAPE[@]}" --sharded-load --skip-cached --no-progress \
  --set model.dtype=bfloat16 --set model.device_map=auto --set edit.value_retries=0 \
  --work "$WORK" --out "$ROOT/bench/results/gpu_check" "$@"
echo "gpu check: $(( $(date +%s) - exec_time_start )) s in all"

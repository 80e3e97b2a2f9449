#!/usr/bin/env bash
# The measurements still missing after session 3, in one go on a four-GPU device machine (about 20 minutes):
#   1. all four GPUs: benchmarks/multi_gpu.py for the DDPM at 1 and 4 GPUs on phantoms (the 4 x 64 scaling row needs
#      more images per step than the 167 real ones);
#   2. GPU 1: the 256 px DDPM of scripts/reproduce_results.sh (ONLY=$RUNS) with CUDA graphs, sampled with
#      DPM-Solver++ 20 and DDPM-1000 and evaluated; meanwhile GPU 0 resumes a short run under CUDA graphs.
#
#   DATA=../shared/data OUT=reports/device bash benchmarks/device_session.sh
#
# RUNS (default ddpm-256; empty: none), S_DDPM (default 6000), DDPM256_FLAGS (default: --compile with
# reduce-overhead) and EVAL_FLAGS (default --equal_real_passes) go to reproduce_results.sh. Each part writes its JSON and log under $OUT and its exit status to
# $OUT/status; $OUT/DONE appears at the end. NVLink multicast stays off.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/device}
DATA=${DATA:-../shared/data}
PY=${PYTHON:-python3}
RUNS=${RUNS-ddpm-256}
mkdir -p "$OUT"
rm -f "$OUT/status" "$OUT/DONE"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

timeout 480 $PY benchmarks/multi_gpu.py --trainers ddpm --gpus 1,4 --dataset phantom:1024 --json "$OUT/multi_gpu_ddpm_4.json" \
  --output_dir "$OUT/multi_gpu_phantoms" --plot "$OUT/loss_phantoms" > "$OUT/multi_gpu_ddpm_4.log" 2>&1
echo "multi-gpu ddpm 1,4 exit $?" >> "$OUT/status"

(
  export CUDA_VISIBLE_DEVICES=0
  train=($PY scripts/train_ddpm.py --dataset phantom:256 --resolution 64 --masks disc --model_config base64
    --mixed_precision bf16 --compile --compile_mode reduce-overhead --train_batch_size 64 --checkpointing_steps 100
    --logger none --output_dir "$OUT/reduce_overhead")
  timeout 240 "${train[@]}" --max_train_steps 150 --validation_steps 150 > "$OUT/reduce_overhead.log" 2>&1 &&
    timeout 240 "${train[@]}" --max_train_steps 200 --validation_steps 200 --resume_from_checkpoint latest \
      >> "$OUT/reduce_overhead.log" 2>&1
  echo "reduce-overhead run and resume exit $?" >> "$OUT/status"
) &
resume=$!
(
  export CUDA_VISIBLE_DEVICES=1
  [ -n "$RUNS" ] || exit 0
  ONLY=$RUNS S_DDPM=${S_DDPM:-6000} EVAL_FLAGS=${EVAL_FLAGS---equal_real_passes} DDPM256_FLAGS=${DDPM256_FLAGS---compile --compile_mode reduce-overhead} \
    DATA=$DATA RESULTS=$OUT/results PYTHON=$PY bash scripts/reproduce_results.sh > "$OUT/results.log" 2>&1
  echo "results exit $?" >> "$OUT/status"
) &
results=$!
wait $resume $results
touch "$OUT/DONE"

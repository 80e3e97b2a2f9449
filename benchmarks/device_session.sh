#!/usr/bin/env bash
# The measurements still missing after session 3, as parts (PARTS, comma list, in this order; default resume,results):
#   multi    all GPUs: benchmarks/multi_gpu.py for the DDPM at 1 and 4 GPUs on phantoms (the 4 x 64 scaling row needs
#            more images per step than the 167 real ones); a four-GPU machine, about 6 minutes;
#   resume   GPU 0: a short 64 px run under CUDA graphs (--compile_mode reduce-overhead), then resumed; about 4 minutes;
#   results  GPU 0: the 256 px DDPM of scripts/reproduce_results.sh (ONLY=$RUNS) with CUDA graphs, sampled with
#            DPM-Solver++ 20 and DDPM-1000 and evaluated; one GPU, about 20 minutes.
#
#   DATA=../shared/data OUT=reports/device PARTS=multi bash benchmarks/device_session.sh          # four-GPU machine
#   DATA=../shared/data OUT=reports/device PARTS=resume,results bash benchmarks/device_session.sh # one GPU
#
# RUNS (default ddpm-256), S_DDPM (default 6000), DDPM256_FLAGS (default: --compile with reduce-overhead) and
# EVAL_FLAGS (default --equal_real_passes) go to reproduce_results.sh. Each part writes its JSON and log under $OUT
# and its exit status to $OUT/status; $OUT/DONE appears at the end. NVLink multicast stays off.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/device}
DATA=${DATA:-../shared/data}
PY=${PYTHON:-python3}
PARTS=${PARTS:-resume,results}  # multi needs a four-GPU machine
mkdir -p "$OUT"
rm -f "$OUT/DONE"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
part() { [[ ",$PARTS," == *",$1,"* ]]; }

if part multi; then
  timeout 480 $PY benchmarks/multi_gpu.py --trainers ddpm --gpus 1,4 --dataset phantom:1024 \
    --json "$OUT/multi_gpu_ddpm_4.json" --output_dir "$OUT/multi_gpu_phantoms" --plot "$OUT/loss_phantoms" \
    > "$OUT/multi_gpu_ddpm_4.log" 2>&1
  echo "multi-gpu ddpm 1,4 exit $?" >> "$OUT/status"
fi

if part resume; then
  train=($PY scripts/train_ddpm.py --dataset phantom:256 --resolution 64 --masks disc --model_config base64
    --mixed_precision bf16 --compile --compile_mode reduce-overhead --train_batch_size 64 --checkpointing_steps 100
    --logger none --output_dir "$OUT/reduce_overhead")
  CUDA_VISIBLE_DEVICES=0 timeout 240 "${train[@]}" --max_train_steps 150 --validation_steps 150 \
    > "$OUT/reduce_overhead.log" 2>&1 &&
    CUDA_VISIBLE_DEVICES=0 timeout 240 "${train[@]}" --max_train_steps 200 --validation_steps 200 \
      --resume_from_checkpoint latest >> "$OUT/reduce_overhead.log" 2>&1
  echo "reduce-overhead run and resume exit $?" >> "$OUT/status"
fi

if part results; then
  CUDA_VISIBLE_DEVICES=0 ONLY=${RUNS:-ddpm-256} S_DDPM=${S_DDPM:-6000} EVAL_FLAGS=${EVAL_FLAGS---equal_real_passes} \
    DDPM256_FLAGS=${DDPM256_FLAGS---compile --compile_mode reduce-overhead} DATA=$DATA RESULTS=$OUT/results \
    PYTHON=$PY bash scripts/reproduce_results.sh > "$OUT/results.log" 2>&1
  echo "results exit $?" >> "$OUT/status"
fi
touch "$OUT/DONE"

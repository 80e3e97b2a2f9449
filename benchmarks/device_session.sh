#!/usr/bin/env bash
# What one session on a four-GPU device machine measures, in one go (about 25 minutes):
#   phase 1, side by side, one job per GPU (or pair):
#     GPU 0:    benchmarks/train_ddpm_throughput.py -- the data-path rows, then the 64 px variants with a kernel
#               profile (BENCH_64_VARIANTS);
#     GPU 1:    the result runs of scripts/reproduce_results.sh (ONLY=$RUNS): training, sampling, evaluation;
#     GPUs 2-3: benchmarks/multi_gpu.py --gpus 1,2;
#   phase 2, all four GPUs: benchmarks/multi_gpu.py --gpus 1,4 (the one-GPU reference runs of phase 1 are reused).
#
#   DATA=../shared/data OUT=reports/device bash benchmarks/device_session.sh
#   RUNS=ddpm-256 S_DDPM=6000 DDPM256_FLAGS=--compile bash benchmarks/device_session.sh   # the 2026-11-27 plan
#
# RUNS (default ddpm-256; empty: no result runs) is passed to reproduce_results.sh as ONLY, with S_DDPM and
# DDPM256_FLAGS; MULTI_DATA (default $DATA/fundus-od) is the multi-GPU runs' dataset. Each part writes its JSON and
# log under $OUT, its exit status to $OUT/status; $OUT/DONE appears at the end. NVLink multicast stays off.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/device}
DATA=${DATA:-../shared/data}
PY=${PYTHON:-python3}
BENCH_64_VARIANTS=${BENCH_64_VARIANTS:-baseline,compiled,compiled_max_autotune}
MULTI_DATA=${MULTI_DATA:-$DATA/fundus-od}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
bench() { $PY benchmarks/train_ddpm_throughput.py "$@"; }
multi_gpu() { $PY benchmarks/multi_gpu.py --dataset "$MULTI_DATA" --output_dir "$OUT/multi_gpu" --plot "$OUT/loss" "$@"; }

(
  export CUDA_VISIBLE_DEVICES=0
  timeout 120 bench --sections data --json "$OUT/ddpm_data.json" > "$OUT/ddpm_data.log" 2>&1
  echo "ddpm data benchmark exit $?" >> "$OUT/status"
  timeout 560 bench --sizes 64 --sections train --variants "$BENCH_64_VARIANTS" --profile \
    --json "$OUT/ddpm_64.json" > "$OUT/ddpm_64.log" 2>&1
  echo "ddpm 64 px benchmark exit $?" >> "$OUT/status"
) &
benchmarks=$!
RUNS=${RUNS-ddpm-256}
(
  export CUDA_VISIBLE_DEVICES=1
  [ -n "$RUNS" ] || exit 0
  ONLY=$RUNS DATA=$DATA RESULTS=$OUT/results PYTHON=$PY bash scripts/reproduce_results.sh > "$OUT/results.log" 2>&1
  echo "results exit $?" >> "$OUT/status"
) &
results=$!
(
  export CUDA_VISIBLE_DEVICES=2,3
  timeout 600 multi_gpu --gpus 1,2 --json "$OUT/multi_gpu_2.json" > "$OUT/multi_gpu_2.log" 2>&1
  echo "multi-gpu 1,2 exit $?" >> "$OUT/status"
) &
pair=$!
wait $benchmarks $results $pair

timeout 560 multi_gpu --gpus 1,4 --json "$OUT/multi_gpu_4.json" > "$OUT/multi_gpu_4.log" 2>&1
echo "multi-gpu 1,4 exit $?" >> "$OUT/status"
touch "$OUT/DONE"

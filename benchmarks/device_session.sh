#!/usr/bin/env bash
# What one session on a two-GPU device machine measures, in one go (about 20 minutes):
#   GPU 0: benchmarks/train_ddpm_throughput.py, then benchmarks/train_dcgan_throughput.py (each alone on its GPU);
#   GPU 1: the paper DDPM and our 256 px DDPM of scripts/reproduce_results.sh (ONLY=ddpm-paper,ddpm-256);
#   then both GPUs: benchmarks/multi_gpu.py.
#
#   DATA=../shared/data OUT=reports/device bash benchmarks/device_session.sh
#   RUNS=ddpm-256 S_DDPM=10000 DDPM256_FLAGS=--compile GPUS=1,2,4 bash benchmarks/device_session.sh   # another plan
#
# RUNS (default ddpm-paper,ddpm-256; empty: no result runs) is passed to reproduce_results.sh as ONLY, with S_DDPM and
# DDPM256_FLAGS; GPUS (default 1,2) to multi_gpu.py. Each part writes its JSON and log under $OUT; $OUT/DONE appears
# at the end. NVLink multicast stays off.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-reports/device}
DATA=${DATA:-../shared/data}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

(
  export CUDA_VISIBLE_DEVICES=0
  timeout 560 $PY benchmarks/train_ddpm_throughput.py --json "$OUT/ddpm_throughput.json" > "$OUT/ddpm_throughput.log" 2>&1
  echo "ddpm benchmark exit $?" >> "$OUT/status"
  timeout 330 $PY benchmarks/train_dcgan_throughput.py --json "$OUT/dcgan_throughput.json" > "$OUT/dcgan_throughput.log" 2>&1
  echo "dcgan benchmark exit $?" >> "$OUT/status"
) &
benchmarks=$!
RUNS=${RUNS-ddpm-paper,ddpm-256}
(
  export CUDA_VISIBLE_DEVICES=1
  [ -n "$RUNS" ] || exit 0
  ONLY=$RUNS DATA=$DATA RESULTS=$OUT/results PYTHON=$PY bash scripts/reproduce_results.sh > "$OUT/results.log" 2>&1
  echo "results exit $?" >> "$OUT/status"
) &
results=$!
wait $benchmarks $results

timeout 540 $PY benchmarks/multi_gpu.py --gpus "${GPUS:-1,2}" --json "$OUT/multi_gpu.json" --plot "$OUT/loss" \
  --output_dir "$OUT/multi_gpu" > "$OUT/multi_gpu.log" 2>&1
echo "multi-gpu exit $?" >> "$OUT/status"
touch "$OUT/DONE"

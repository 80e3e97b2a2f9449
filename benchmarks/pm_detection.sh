#!/usr/bin/env bash
# PM detection at small N (issue 20 parts 3 and 4) on ../shared/data/palm-224: for each training-set size N and subset
# seed, a class-conditional DDPM trained on those N labelled real images only (a nested, label-stratified subset of a
# fixed training split: scripts/split_dataset.py --stratify label --subsets), a label-balanced synthetic set of N_SYN
# images sampled from it (half PM, half non-PM, classifier-free guidance GUIDANCE), and scripts/evaluate_pm.py: a PM
# classifier trained on the N real, the synthetic alone and both, accuracy and ROC AUC on the fixed held-out split
# (seed 0, 20 %, stratified by label: docs/splits/palm-224_test_ids.txt), the two-sample realism test and the copy
# check against the N images, which refuses a set copied more often than held-out images are flagged.
# GUIDANCE="2 1": each generator sampled and judged again at every further scale (sets <job>-w<scale>, pm_figure.py's
# "(guidance <scale>)" lines), a paired comparison on the same generators for a sampling and an evaluation each.
#
# Resolution: 128 px (RESOLUTION). palm-224's images are 224 px; 256 would be upsampled (no new detail for 1.3x the
# work of 224), and even 224 costs 3x the work of 128 per step, which the GPU budget of this experiment (22 minutes
# of one H100 for the 10 default generators at 128 px, measured below) cannot pay. The signs a PM classifier reads
# (peripapillary atrophy, tessellation, the disc's tilt) span tens of pixels at 128 px; a classifier at 64 px was
# 98.8 % accurate on held-out real PALM images (RESULTS.md row 6). RESOLUTION=224 runs natively where budget allows
# (224 is a multiple of 32).
#
# Jobs: n<N>-seed<S> for N in SIZES and S in SUBSET_SEEDS, and "all" (the whole training split, 320 images) when SIZES
# holds "all". PARALLEL jobs run at once (GPUS=0,1,..: job i on GPUS[i mod count]); each trains, generates, evaluates.
# Every generator trains STEPS steps whatever N, with a batch of min(16, N).
#
# GPU budget, measured (RESULTS.md session 24, one H100, the 10 default jobs at PARALLEL=10, nothing else on the GPU):
# the ten generators trained side by side at 2.0 steps/s each (the GPU at 100 %), 1,500 steps in 12.7-13.1 min;
# sampling 200 images took 31-56 s with the model's loading, up to ten at once (they ran out of memory: one sampler
# per GPU at a time since); evaluate_pm.py 2-4 min beside the others. The queue: 21.5 min from start to the last
# report (three device calls; the third resumed the three samplings that had run out of memory).
# A first round within one call: SUBSET_SEEDS=0 (4 jobs), or STEPS=800 (both unmeasured).
# Session 19 (H100): 4 jobs beside a compiled 256 px training trained at 3.1 steps/s each and cut that training from
# 8.3 to 1.3-2.3 steps/s: run the queue alone on the GPU.
#
# In stages, as benchmarks/utility_curves.sh (one device command lasts at most 10 minutes):
#   STAGE=train   copy the code and palm-224 to $WORK, write the split and subsets, start the detached queue, return
#   STAGE=wait    wait until the queue ends or WAIT_S seconds pass (default 540), show progress, pack
#   STAGE=pack    reports, the pm_figure.py table and figure, synthetic sample sheets, id lists and logs into $OUT
#   STAGE=stop    stop the queue and everything it started (its process group)
# (STAGE=queue and STAGE=job JOB=<name> are what train starts; a job skips the steps whose output exists, so a
# STAGE=train after a stop resumes.)
# The generators train with the ours preset, whose noise-schedule shift is interpolated since session 15: a WORK
# whose generators were trained before that mixes two schedules in one curve if resumed; start a new WORK.
#
#   DATA=.device_data STAGE=train bash benchmarks/pm_detection.sh     # DATA holds palm-224 (never committed)
#
# CPU smoke run (tiny recipe, 2 steps; a few minutes on a 2-core machine):
#   DATA=../shared/data SIZES=20 SUBSET_SEEDS=0 STEPS=2 N_SYN=8 SEEDS=1 CLS_STEPS=2 REALISM_STEPS=1 REALISM_FOLDS=2 \
#   RESOLUTION=32 RECIPE="--model_config tiny" GEN_FLAGS="--scheduler ddpm --num_inference_steps 2 --batch_size 8" \
#   PARALLEL=1 WORK=/tmp/pm OUT=/tmp/pm-out PYTHON=.venv/bin/python STAGE=train bash benchmarks/pm_detection.sh
#   ... WAIT_S=1200 STAGE=wait bash benchmarks/pm_detection.sh
set -uo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/pm}
WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
CODE=$WORK/code
export PYTHONPATH="$CODE${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-.device_data}
OUT=${OUT:-reports/pm}
PY=${PYTHON:-python3}
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
STAGE=${STAGE:?set STAGE to train, wait, pack or stop}
SIZES=${SIZES-"20 50 100 all"}
SUBSET_SEEDS=${SUBSET_SEEDS:-"0 1 2"}
RESOLUTION=${RESOLUTION:-128}
STEPS=${STEPS:-1500}
N_SYN=${N_SYN:-200}
GUIDANCE=${GUIDANCE:-2}  # classifier-free guidance; several ("2 1"): each generator sampled and judged once per scale
read -ra scales <<< "$GUIDANCE"
bad_guidance() { echo "GUIDANCE='$GUIDANCE': give one or more guidance scales, e.g. 2 or \"2 1\"" >&2; exit 2; }
[ ${#scales[@]} -gt 0 ] || bad_guidance
for scale in "${scales[@]}"; do [[ $scale =~ ^[0-9]+(\.[0-9]+)?$ ]] || bad_guidance; done
SEEDS=${SEEDS:-3}
CLS_STEPS=${CLS_STEPS:-400}
REALISM_STEPS=${REALISM_STEPS:-200}
REALISM_FOLDS=${REALISM_FOLDS:-5}
PARALLEL=${PARALLEL:-10}
GPUS=${GPUS:-}
RECIPE=${RECIPE:-"--model_config small256 --mixed_precision bf16"}
GEN_FLAGS=${GEN_FLAGS:-"--scheduler dpmsolver++ --num_inference_steps 20 --batch_size 100"}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT"
export OUT=$(cd "$OUT" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$WORK/driver.log"; }
finished() { [ -f "$1/arrow/dataset_info.json" ] || [ -f "$1/dataset_info.json" ]; }
sampled_at() {  # whether the set in folder $1 was sampled at guidance $2 (its generation_config.json)
  $PY -c "import json, sys; sys.exit(json.load(open(sys.argv[1]))['guidance_scale'] != float(sys.argv[2]))" \
    "$1/generation_config.json" "$2" 2>/dev/null
}
one_sampler_at_a_time() {  # "$@" while no other job samples on this job's GPU: ten PM generators sampling at batch 100
  # at once ran an 80 GB H100 out of memory (RESULTS.md session 24); a sampling takes under a minute
  if command -v flock > /dev/null; then
    flock "$WORK/sampler${CUDA_VISIBLE_DEVICES:+-$CUDA_VISIBLE_DEVICES}.lock" "$@"
  else
    log "flock not found: sampling without waiting for the other jobs (they may run out of GPU memory)"; "$@"
  fi
}

jobs_list() {
  for n in $SIZES; do
    if [ "$n" = all ]; then echo all; else for s in $SUBSET_SEEDS; do echo "n$n-seed$s"; done; fi
  done
}
train_set() { if [ "$1" = all ]; then echo "$WORK/split/train"; else echo "$WORK/subsets/$1"; fi; }

pack_results() {  # whatever exists, into $OUT now: a device command cut off later loses nothing packed before
  (
    cd "$WORK" || exit
    draw_table pm_figure pm_curves pm_table; drawn=$?
    # Nothing that holds a real photograph: reports (ids only), table, figure, synthetic sheets, id lists, logs.
    tar czf "$OUT/pm_reports.tgz" eval/*/report.json eval/*/report.md pm_table.* pm_curves.png subsets/subsets.json \
      split/test_ids.txt synthetic/*/contact_sheet.png synthetic/*/generation_config.json runs/*/logs/metrics.csv \
      ./*.log 2>/dev/null
    log "packed $(ls eval/*/report.json 2>/dev/null | wc -l) evaluations into $OUT/pm_reports.tgz"
    exit $drawn  # packed all the same: the reports are in the archive without the table
  )
}

case $STAGE in
train)
  if [ -f "$WORK/queue.pid" ] && kill -0 "$(cat "$WORK/queue.pid")" 2>/dev/null; then
    log "the queue is already running (pid $(cat "$WORK/queue.pid")); STAGE=stop first"; exit 1
  fi
  rm -rf "$CODE" && mkdir -p "$CODE/benchmarks" && cp -r fundus_diffusion scripts "$CODE/"
  cp benchmarks/pm_figure.py benchmarks/utility_figure.py "$CODE/benchmarks/"
  cp -r pipelines "$CODE/fundus_diffusion/pipelines" && cp -r model_cards "$CODE/fundus_diffusion/model_cards"
  [ -d "$WORK/palm-224" ] || cp -r "$DATA/palm-224" "$WORK/palm-224"
  cd "$CODE"
  make_split() {  # split_dataset.py into $WORK/$1 unless it exists
    [ -d "$WORK/$1" ] && return
    $PY scripts/split_dataset.py --images_only --stratify label --output_dir "$WORK/$1" "${@:2}" > "$WORK/split-$1.log" 2>&1 \
      || { cat "$WORK/split-$1.log"; exit 1; }
  }
  make_split split --dataset "$WORK/palm-224/PALM-Training400"
  numeric_sizes=$(tr ' ' '\n' <<< "$SIZES" | grep -v '^all$' | paste -sd, -)
  [ -n "$numeric_sizes" ] && make_split subsets --dataset "$WORK/split/train" --subsets "$numeric_sizes" \
    --subset_seeds "$(tr ' ' , <<< "$SUBSET_SEEDS")"
  source "$(dirname "$SCRIPT")/staged_queue.sh" && start_queue
  ;;
job)
  cd "$CODE"
  job=${JOB:?}
  source "$(dirname "$SCRIPT")/staged_queue.sh" && use_job_gpu "$job"
  real=$(train_set "$job")
  n=$($PY -c "import sys; from datasets import load_from_disk; print(len(load_from_disk(sys.argv[1])))" "$real")
  batch=$(( n < 16 ? n : 16 ))
  if [ ! -f "$WORK/runs/$job/model_index.json" ]; then
    log "$job: training on $n labelled images (batch $batch, $STEPS steps, $RESOLUTION px, GPU ${CUDA_VISIBLE_DEVICES:-default})"
    # shellcheck disable=SC2086
    $PY scripts/train_ddpm.py --dataset "$real" --masks none --class_conditional --class_dropout_prob 0.1 \
      --resolution "$RESOLUTION" $RECIPE --train_batch_size "$batch" --max_train_steps "$STEPS" \
      --checkpointing_steps 100000 --validation_steps 100000 --logger none --seed 0 --training_cache_dir "$WORK/cache" \
      --output_dir "$WORK/runs/$job" > "$WORK/train-$job.log" 2>&1 \
      || { log "$job: training failed: $(tail -n 2 "$WORK/train-$job.log")"; exit 1; }
  fi
  for scale in "${scales[@]}"; do  # the first scale's set is the job's; each further one is <job>-w<scale>
    set=$job; [ "$scale" = "${scales[0]}" ] || set=$job-w$scale
    if finished "$WORK/synthetic/$set" && ! sampled_at "$WORK/synthetic/$set" "$scale"; then
      log "$set: sampled at another guidance than $scale by an earlier GUIDANCE; keep GUIDANCE's first scale, or use a new WORK"
      exit 1
    fi
    if ! finished "$WORK/synthetic/$set"; then
      log "$set: generating $N_SYN images, half PM, half non-PM, guidance $scale"
      # shellcheck disable=SC2086
      one_sampler_at_a_time $PY scripts/generate.py --model "$WORK/runs/$job" \
        --labels "PM=$((N_SYN / 2)),non-PM=$((N_SYN - N_SYN / 2))" --guidance_scale "$scale" --seed 0 $GEN_FLAGS \
        --output_dir "$WORK/synthetic/$set" > "$WORK/gen-$set.log" 2>&1 \
        || { log "$set: generation failed: $(tail -n 2 "$WORK/gen-$set.log")"; exit 1; }
    fi
    if [ ! -f "$WORK/eval/$set/report.json" ]; then
      log "$set: evaluating ($SEEDS classifier seeds)"
      $PY scripts/evaluate_pm.py --real "$real" --holdout "$WORK/split/test" --synthetic "$WORK/synthetic/$set" \
        --seeds "$SEEDS" --steps "$CLS_STEPS" --realism_steps "$REALISM_STEPS" --realism_folds "$REALISM_FOLDS" \
        --output_dir "$WORK/eval/$set" > "$WORK/eval-$set.log" 2>&1 \
        || { log "$set: evaluation failed: $(tail -n 2 "$WORK/eval-$set.log")"; exit 1; }
      grep -q '"refused": null' "$WORK/eval/$set/report.json" || log "$set: REFUSED (copies): see eval/$set/report.md"
    fi
  done
  log "$job: done"
  ;;
*)  # queue, wait, pack, stop
  source "$(dirname "$SCRIPT")/staged_queue.sh" && shared_stage "$STAGE"
  ;;
esac

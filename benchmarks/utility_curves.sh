#!/usr/bin/env bash
# Learning curves and the cross-camera rows of issue 20 on one GPU: for each training-set size N and subset seed, the
# 256 px DDPM trained on the N real pairs only (a nested, stratified subset of the fixed training split of fundus-od:
# scripts/split_dataset.py --subsets), N_SYN pairs sampled from it with DPM-Solver++ 20, and evaluate.py with
# --real <the N pairs>, so its report holds the Dice of segmenters trained on real-N, synthetic alone and real-N +
# synthetic, on the fixed held-out split (seed 0, 20 %, stratified by id prefix, as the realism ablation's, but split by
# eye: the repeat photographs of EYE_GROUPS, default docs/splits/fundus-od_eye_groups.csv, kept on one side; the
# held-out ids are docs/splits/fundus-od_test_ids_by_eye.txt, 2 of 33 unlike the realism ablation's), and the copy
# check of the synthetic set against the N pairs. Per-source jobs (SOURCES) train on one source's training-split
# images and are judged on everything else (its held-out images and every image of the other source, none seen):
# the report's per-source Dice is the in-camera and the other-camera score side by side. That report's two-sample test
# pools both cameras' photographs; a second, image-only evaluation (eval-own-camera/<job>/) judges the job's samples
# against its own camera's photographs alone (its training images and its held-out ones).
#
# Jobs: n<N>-seed<S> for N in SIZES (N=all: one job "all" on the whole training split) and S in SUBSET_SEEDS, and
# source-<name> for name in SOURCES. Each job trains, generates and evaluates in turn; PARALLEL jobs share the GPU.
# Every generator trains STEPS_MAX steps whatever N (equal work), with a batch of min(the recipe's batch, N);
# PASSES_MAX (a positive integer; unset: no cap) stops a generator after that many passes over its N images (steps x
# batch / N, the times each image is seen on average) if that comes first: a small set trained for equal steps is seen
# many more times, and copies (RESULTS.md session 28: the DRISHTI-GS1 generator drew 13 of 100 samples as copies of
# its 62 photographs after 1,290 passes, the DRIONS-DB one none after 1,111 from 72). A capped short run spends more
# of itself in the preset's 500 warm-up steps and the EMA's slow start. A WORK resumed with another STEPS_MAX or
# PASSES_MAX keeps the generators it has: start a new WORK.
# GPUS=0,1,2,3 spreads the jobs over those GPUs (job i on GPUS[i mod count]; set PARALLEL to a multiple of the count).
# TWO_STEP=1 adds the two-step variant next to joint generation: the masks of the joint samples, then images drawn for
# them by the mask-to-image path (generate.py --masks_from, RePaint; TWO_STEP_FLAGS) of the same generator, judged as
# <job>-twostep. (The masks come from the joint model, not from a separate mask-only generator.)
#
# In stages, because one device command lasts at most 10 minutes and the jobs outlast it:
#   STAGE=train     copy the code and data to $WORK, write the split, subsets and per-source parts, start the job
#                   queue detached (setsid) and return at once
#   STAGE=wait      wait until the queue ends or WAIT_S seconds pass (default 540), show progress, pack
#   STAGE=pack      pack reports, the table and figure of benchmarks/utility_figure.py, sample sheets and logs into
#                   $OUT. wait ends by packing: a device command that runs past its limit returns nothing, so leave a
#                   minute of margin and pack often.
#   STAGE=stop      stop the queue and everything it started (its process group)
# (STAGE=queue and STAGE=job JOB=<name> are what train starts; a job skips the steps whose output exists, so
# STAGE=train after a stop resumes: it keeps the split, subsets and finished steps.)
# The generators train with the ours preset, whose noise-schedule shift is interpolated since session 15: a WORK
# whose generators were trained before that mixes two schedules in one curve if resumed; start a new WORK.
#
#   DATA=.device_data STAGE=train bash benchmarks/utility_curves.sh     # DATA holds fundus-od (never committed)
#
# CPU smoke run (tiny recipe, 2 steps; 2-9 minutes on a 2-core machine depending on its load; add TWO_STEP=1
# TWO_STEP_FLAGS="--scheduler ddpm --num_inference_steps 4 --resample_steps 2 --batch_size 8" for the two-step sets):
#   DATA=../shared/data SIZES="4 8" SUBSET_SEEDS=0 SOURCES=drishti STEPS_MAX=2 N_SYN=8 SEEDS=1 SEG_STEPS=3 PARALLEL=1 \
#   RECIPE="--resolution 32 --model_config tiny --train_batch_size 8" EVAL_FLAGS="--realism_steps 2 --realism_folds 2" \
#   WORK=/tmp/utility OUT=/tmp/utility-out PYTHON=.venv/bin/python STAGE=train bash benchmarks/utility_curves.sh
#   ... WAIT_S=3000 STAGE=wait bash benchmarks/utility_curves.sh
set -uo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/utility}
WORK=$(mkdir -p "$WORK" && cd "$WORK" && pwd)
CODE=$WORK/code  # the package as installed (pipelines/ and model_cards/ inside it), copied at STAGE=train
export PYTHONPATH="$CODE${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-.device_data}
OUT=${OUT:-reports/utility}
PY=${PYTHON:-python3}
EYE_GROUPS_DEFAULT=$(realpath docs/splits/fundus-od_eye_groups.csv)  # and the split by eye it gives:
BY_EYE_IDS=$(realpath docs/splits/fundus-od_test_ids_by_eye.txt)
EYE_GROUPS=$(realpath "${EYE_GROUPS:-$EYE_GROUPS_DEFAULT}")  # split_dataset.py --groups
[[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")  # jobs run in $CODE: keep a path valid
STAGE=${STAGE:?set STAGE to train, wait, pack or stop}
SIZES=${SIZES-"10 25 50 all"}  # empty: per-source jobs only
SUBSET_SEEDS=${SUBSET_SEEDS:-"0 1 2"}
SOURCES=${SOURCES-"drions drishti"}  # id prefixes of fundus-od (--stratify id_prefix); empty: no per-source jobs
STEPS_MAX=${STEPS_MAX:-6000}
PASSES_MAX=${PASSES_MAX:-}
[ -z "$PASSES_MAX" ] || [[ $PASSES_MAX =~ ^[1-9][0-9]*$ ]] \
  || { echo "PASSES_MAX=$PASSES_MAX: give a positive whole number of passes (e.g. 650), or leave it unset" >&2; exit 2; }
N_SYN=${N_SYN:-200}
SEEDS=${SEEDS:-3}
SEG_STEPS=${SEG_STEPS:-800}
PARALLEL=${PARALLEL:-3}
GPUS=${GPUS:-}  # empty: every job sees the default device(s)
# The realism ablation's 256 px recipe (benchmarks/realism_ablation.sh); RECIPE replaces it (see the smoke run above).
RECIPE=${RECIPE:-"--resolution 256 --model_config small256 --train_batch_size 16 --mixed_precision bf16 --compile --compile_mode reduce-overhead"}
GEN_FLAGS=${GEN_FLAGS:-"--scheduler dpmsolver++ --num_inference_steps 20 --batch_size 100"}
EVAL_FLAGS=${EVAL_FLAGS:-}  # more evaluate.py flags
TWO_STEP=${TWO_STEP:-0}
TWO_STEP_FLAGS=${TWO_STEP_FLAGS:-"--scheduler ddpm --num_inference_steps 250 --resample_steps 4 --batch_size 100"}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$OUT"
export OUT=$(cd "$OUT" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$WORK/driver.log"; }
finished() { [ -f "$1/arrow/dataset_info.json" ] || [ -f "$1/dataset_info.json" ]; }  # a saved dataset

jobs_list() {
  for n in $SIZES; do
    if [ "$n" = all ]; then echo all; else for s in $SUBSET_SEEDS; do echo "n$n-seed$s"; done; fi
  done
  for source in $SOURCES; do echo "source-$source"; done
}
train_set() {  # the real pairs a job trains on (generator and segmenters)
  case $1 in all) echo "$WORK/split/train" ;; source-*) echo "$WORK/by-source/${1#source-}/train" ;; *) echo "$WORK/subsets/$1" ;; esac
}
holdout_set() {  # what a job is judged on: the fixed held-out split, or everything its source's training did not see
  case $1 in source-*) echo "$WORK/by-source/${1#source-}/test" ;; *) echo "$WORK/split/test" ;; esac
}

pack_results() {  # into $OUT now, whatever exists: a device command cut off later loses nothing packed before
  (
    cd "$WORK" || exit
    draw_table utility_figure utility_curves utility_table; drawn=$?
    # Only what holds no real photograph comes back: report text and JSON, the table and figure, synthetic sample
    # sheets, the subsets' id lists, logs, losses.
    tar czf "$OUT/utility_reports.tgz" eval/*/report.json eval/*/report.md eval/*/dice_bars.png utility_table.* \
      eval-own-camera/*/report.json eval-own-camera/*/report.md \
      utility_curves.png subsets/subsets.json by-source/sources.json split/test_ids.txt synthetic/*/contact_sheet.png \
      synthetic/*/generation_config.json runs/*/logs/metrics.csv runs/*/training_args.json ./*.log 2>/dev/null
    log "packed $(ls eval/*/report.json 2>/dev/null | wc -l) evaluations into $OUT/utility_reports.tgz"
    exit $drawn  # packed all the same: the reports are in the archive without the table
  )
}

case $STAGE in
train)
  if [ -f "$WORK/queue.pid" ] && kill -0 "$(cat "$WORK/queue.pid")" 2>/dev/null; then
    log "the queue is already running (pid $(cat "$WORK/queue.pid")); STAGE=stop first"; exit 1
  fi
  rm -rf "$CODE" && mkdir -p "$CODE/benchmarks" && cp -r fundus_diffusion scripts "$CODE/"
  cp benchmarks/utility_figure.py "$CODE/benchmarks/"
  cp -r pipelines "$CODE/fundus_diffusion/pipelines" && cp -r model_cards "$CODE/fundus_diffusion/model_cards"
  [ -d "$WORK/fundus-od" ] || cp -r "$DATA/fundus-od" "$WORK/fundus-od"
  cd "$CODE"  # the copy: the working tree may change under a later call
  write_split() {  # split_dataset.py into $WORK/$1 unless it exists
    [ -d "$WORK/$1" ] && return
    $PY scripts/split_dataset.py --stratify id_prefix --output_dir "$WORK/$1" "${@:2}" > "$WORK/split-$1.log" 2>&1 \
      || { cat "$WORK/split-$1.log"; exit 1; }
  }
  write_split split --dataset "$WORK/fundus-od" --groups "$EYE_GROUPS"
  if [ "$EYE_GROUPS" = "$EYE_GROUPS_DEFAULT" ] \
    && ! diff -q <(grep -v '^#' "$WORK/split/test_ids.txt") <(grep -v '^#' "$BY_EYE_IDS") > /dev/null; then
    log "$WORK/split is not the split by eye of $BY_EYE_IDS (a WORK from before it, or other data): start a new WORK"
    exit 1
  fi
  numeric_sizes=$(tr ' ' '\n' <<< "$SIZES" | grep -v '^all$' | paste -sd, -)
  [ -n "$numeric_sizes" ] && write_split subsets --dataset "$WORK/split/train" --subsets "$numeric_sizes" \
    --subset_seeds "$(tr ' ' , <<< "$SUBSET_SEEDS")"
  [ -n "$SOURCES" ] && write_split by-source --dataset "$WORK/fundus-od" --by_source --test_ids "$WORK/split/test_ids.txt"
  # each source's held-out photographs alone (<source>/train), for the per-source jobs' own-camera realism judge
  [ -n "$SOURCES" ] && write_split heldout-by-source --dataset "$WORK/split/test" --by_source
  for job in $(jobs_list); do
    finished "$(train_set "$job")" || { log "no training set for $job: $(train_set "$job")"; exit 1; }
  done
  source "$(dirname "$SCRIPT")/staged_queue.sh" && start_queue
  ;;
job)
  cd "$CODE"
  job=${JOB:?}
  source "$(dirname "$SCRIPT")/staged_queue.sh" && use_job_gpu "$job"
  real=$(train_set "$job")
  n=$($PY -c "import sys; from datasets import load_from_disk; print(len(load_from_disk(sys.argv[1])))" "$real")
  recipe_batch=$(grep -o -- '--train_batch_size [0-9]*' <<< "$RECIPE" | grep -o '[0-9]*$')
  batch=$(( ${recipe_batch:-16} < n ? ${recipe_batch:-16} : n ))
  steps=$STEPS_MAX
  if [ -n "$PASSES_MAX" ] && (( (PASSES_MAX * n + batch - 1) / batch < steps )); then
    steps=$(( (PASSES_MAX * n + batch - 1) / batch ))  # PASSES_MAX passes over the n images, rounded up
  fi
  if [ ! -f "$WORK/runs/$job/model_index.json" ]; then
    log "$job: training on $n real pairs (batch $batch, $steps steps, GPU ${CUDA_VISIBLE_DEVICES:-default})"
    # shellcheck disable=SC2086
    $PY scripts/train_ddpm.py --dataset "$real" --masks disc $RECIPE --train_batch_size "$batch" \
      --max_train_steps "$steps" --checkpointing_steps 100000 --validation_steps 100000 --logger none --seed 0 \
      --training_cache_dir "$WORK/cache" --output_dir "$WORK/runs/$job" > "$WORK/train-$job.log" 2>&1 \
      || { log "$job: training failed: $(tail -n 2 "$WORK/train-$job.log")"; exit 1; }
  fi
  png=""; [ "$TWO_STEP" = 1 ] && png=--png  # the joint samples' masks as files, for --masks_from
  if ! finished "$WORK/synthetic/$job"; then
    log "$job: generating $N_SYN pairs"
    # shellcheck disable=SC2086
    $PY scripts/generate.py --model "$WORK/runs/$job" --num_samples "$N_SYN" --seed 0 $GEN_FLAGS $png \
      --output_dir "$WORK/synthetic/$job" > "$WORK/gen-$job.log" 2>&1 \
      || { log "$job: generation failed: $(tail -n 2 "$WORK/gen-$job.log")"; exit 1; }
  fi
  if [ "$TWO_STEP" = 1 ] && ! finished "$WORK/synthetic/$job-twostep"; then
    log "$job: images for the joint samples' masks (two-step)"
    # shellcheck disable=SC2086
    $PY scripts/generate.py --model "$WORK/runs/$job" --masks_from "$WORK/synthetic/$job/png" --seed 1 \
      $TWO_STEP_FLAGS --output_dir "$WORK/synthetic/$job-twostep" > "$WORK/gen-$job-twostep.log" 2>&1 \
      || { log "$job: two-step generation failed: $(tail -n 2 "$WORK/gen-$job-twostep.log")"; exit 1; }
  fi
  for set in $job $([ "$TWO_STEP" = 1 ] && echo "$job-twostep"); do
    [ -f "$WORK/eval/$set/report.json" ] && continue
    log "$set: evaluating ($SEEDS segmenter seeds)"
    # shellcheck disable=SC2086
    $PY scripts/evaluate.py --real "$real" --holdout "$(holdout_set "$job")" --synthetic "$WORK/synthetic/$set" \
      --masks disc --seeds "$SEEDS" --segmenter_steps "$SEG_STEPS" $EVAL_FLAGS --output_dir "$WORK/eval/$set" \
      > "$WORK/eval-$set.log" 2>&1 || { log "$set: evaluation failed: $(tail -n 2 "$WORK/eval-$set.log")"; exit 1; }
  done
  if [[ $job == source-* ]] && [ ! -f "$WORK/eval-own-camera/$job/report.json" ]; then
    # The report above judges the samples against every photograph it saw, both cameras; this one against the
    # photographs of the job's own camera only (its training images and its held-out ones), images only.
    log "$job: judging against its own camera's photographs"
    # shellcheck disable=SC2086
    $PY scripts/evaluate.py --real "$real" --holdout "$WORK/heldout-by-source/${job#source-}/train" \
      --synthetic "$WORK/synthetic/$job" --masks none $EVAL_FLAGS --output_dir "$WORK/eval-own-camera/$job" \
      > "$WORK/eval-own-camera-$job.log" 2>&1 \
      || { log "$job: own-camera evaluation failed: $(tail -n 2 "$WORK/eval-own-camera-$job.log")"; exit 1; }
  fi
  log "$job: done"
  ;;
*)  # queue, wait, pack, stop
  source "$(dirname "$SCRIPT")/staged_queue.sh" && shared_stage "$STAGE"
  ;;
esac

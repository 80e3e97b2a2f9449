#!/usr/bin/env bash
# The realism ablation (issue 18) on one GPU: 256 px DDPM variants trained side by side on the real training split of
# fundus-od, a snapshot of each every SNAPSHOT steps, each snapshot sampled with DPM-Solver++ 20 and judged with the
# native-resolution protocol (evaluate.py at the samples' own 256 px: segmenters trained at 256 px, the classifier two-sample test).
#
# In stages, because one device command lasts at most 10 minutes and the trainings outlast it:
#   STAGE=train     copy the code and data to $WORK (the first train of a WORK only: a later train with other
#                   VARIANTS adds trainings that run the same code, and evaluations running from it are left alone),
#                   start every variant in the background (setsid), return at once
#   STAGE=wait      wait until the trainings end, WAIT_S seconds pass or (UNTIL_STEP) every variant has that snapshot
#   STAGE=follow    keep up with the trainings for WAIT_S seconds (default 540): sample each new snapshot with each of
#                   SAMPLERS (default: SAMPLER; e.g. "dpmsolver++:20 ddpm:100 ddpm:100:linspace ddpm:100@3000:1.5",
#                   each as STAGE=generate reads SAMPLER; the quality curve then draws one curve per sampler; a
#                   generation starts only while FOLLOW_MARGIN_S, default 120, remain), start its evaluation
#                   detached, pack; ends early once the trainings have ended and every snapshot is sampled and judged.
#                   One device call after another can run just this (the first after STAGE=train); give WAIT_S the
#                   call's time left minus a minute
#   STAGE=generate  sample N_SYN pairs with SAMPLER in DTYPE from each snapshot at STEPS (default: every snapshot not
#                   yet sampled), GEN_PARALLEL at a time; trainings keep running, so snapshots are judged while
#                   later ones train. SAMPLER: scheduler:steps, then optionally :timestep spacing (generate.py's
#                   --timestep_spacing) and @step:weight, the guide (else AUTOGUIDANCE, the same step:weight, e.g.
#                   3000:2 with SNAPSHOT=1500): the same run's snapshot of that step as the weak model of generate.py's
#                   --autoguidance_model, at that --autoguidance_scale; set suffix -ag<step>w<weight>; only snapshots
#                   after that step, of runs that have it
#   STAGE=post_hoc_ema  for each finished variant trained with --post_hoc_ema: one model per EMA length in
#                   PHEMA_SIGMAS (one or more; default 0.05,0.10,0.20), run <variant>-phema<sigma_rel>, sampled by a later generate
#   STAGE=stop      stop the trainings
#   STAGE=evaluate  evaluate each synthetic set (EVAL_SETS: a glob of set names, default all) with SEEDS segmenter seeds
#                   (EVAL_SUFFIX, e.g. -r3 with EVAL_FLAGS="--realism_repeats 3": judged again as eval/<set>-r3);
#                   BACKGROUND=1 starts the evaluations detached and returns (a later evaluate or STAGE=pack waits;
#                   only where that later call surely follows in the same lease: a device machine goes back soon after
#                   a call ends, with whatever runs on it, as session 9's evaluations did)
#   STAGE=conditional  images from masks and masks from images (benchmarks/conditional_sampling.py, COND_FLAGS) on the
#                   held-out split with each snapshot named in COND_SETS (<variant>-<step>, comma-separated), in the
#                   background like BACKGROUND=1 evaluations; then evaluate.py judges the images drawn for the
#                   held-out masks (eval/<name>-mask_to_image: realism, agreement with the given masks)
#   STAGE=pack      wait up to WAIT_S (default 0) for running evaluations and conditional benchmarks, then pack
#                   reports, the quality-against-minutes curve, sample sheets, SAMPLES_BACK samples per set (and its
#                   flagged ones), logs and the compiled trainings' compile_cache.bin (if at most 16 MiB) into $OUT.
#                   Every stage but train and stop ends by packing what exists: a device command that runs past its
#                   limit returns nothing, so leave a minute of margin and pack often.
#
#   DATA=.device_data STAGE=train bash benchmarks/realism_ablation.sh     # DATA holds fundus-od (never committed)
#
# VARIANTS: name=flags pairs separated by ';' (flags added to the common recipe below; `--masks disc,cup` in a variant's
# flags replaces MASKS for it, and each synthetic set is evaluated on the masks it holds). The trainings share the GPU,
# so their steps per second are a third of a lone run's; snapshots at equal steps compare equal work.
set -uo pipefail
SCRIPT=$(realpath "$0")
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/realism}
CODE=$WORK/code  # the package as installed (pipelines/ and model_cards/ inside it), copied at STAGE=train
export PYTHONPATH="$CODE${PYTHONPATH:+:$PYTHONPATH}"
DATA=${DATA:-.device_data}
OUT=${OUT:-reports/realism}
PY=${PYTHON:-python3}
STAGE=${STAGE:?set STAGE to train, wait, follow, generate, post_hoc_ema, stop, evaluate, conditional or pack}
STEPS_MAX=${STEPS_MAX:-6000}
SNAPSHOT=${SNAPSHOT:-1500}
N_SYN=${N_SYN:-200}
SEEDS=${SEEDS:-3}
SEG_STEPS=${SEG_STEPS:-800}
MASKS=${MASKS:-disc}
SAMPLER=${SAMPLER:-dpmsolver++:20}  # sets sampled otherwise are named <variant>-<step>-<scheduler><steps>
export SAMPLERS=${SAMPLERS:-$SAMPLER}  # STAGE=follow's samplers (space-separated), and the quality curve's
SAMPLES_BACK=${SAMPLES_BACK:-56}  # pairs per set packed as a generic folder, PNG image and masks (realism_samples-*.tgz;
# 0: none): fundus-evaluate --synthetic <set> judges them elsewhere if the evaluations are lost, or with more seeds
GEN_PARALLEL=${GEN_PARALLEL:-3}  # generations at once: one of batch 100 at 256 px held 23 GB, and the fourth of four
# ran out of memory on an 80 GB H100 with no training running (session 23); lower it beside trainings or for
# autoguided sets (two models each)
COMPILE_CACHE=${COMPILE_CACHE:-}  # compile_cache.bin as an earlier session's pack returned it (carried in, e.g. in
# .device_cache/): compiled trainings start from a copy in $WORK (--compile_cache: with the same torch and GPU kind
# they need not compile again what matches) and the pack returns what they wrote, for a later machine
DTYPE=${DTYPE:-auto}  # generate.py --dtype (auto: fp16 on a GPU); sets sampled otherwise get a -<dtype> suffix
# The documented 256 px recipe (RESULTS.md row 4), with snapshots instead of checkpoints; RECIPE replaces it (a CPU
# smoke run: RECIPE="--resolution 32 --model_config tiny --train_batch_size 8" STEPS_MAX=4 SNAPSHOT=2 N_SYN=8 SEEDS=1
# SEG_STEPS=3 EVAL_FLAGS="--realism_steps 2 --realism_folds 2").
RECIPE=${RECIPE:-"--resolution 256 --model_config small256 --train_batch_size 16 --mixed_precision bf16 --compile --compile_mode reduce-overhead"}
EVAL_FLAGS=${EVAL_FLAGS:-}  # more evaluate.py flags, e.g. "--resolution 128" for the labelled low-resolution column
# Default: the ours preset with training seed 3, alone, the training of RESULTS.md session 23's plan (seed 3's DDPM 100
# set was told from photographs at 0.92 and 0.94 in two trainings, seed 1's at 0.71-0.82, and no EMA length moved it:
# do DDPM 250 or autoguidance, which met the bar in seed 1's training, carry to seed 3's?); the plan's other settings
# (STEPS_MAX, SNAPSHOT, STEPS, N_SYN, SAMPLES_BACK, SAMPLERS, SEEDS, EVAL_FLAGS) are given there with its commands.
# Tried once each on seed 3 at 4,000 steps (0.899 for the preset, session 23): --schedule_detail_resolution 1024 (0.921,
# session 27) and --origin_conditioning (0.870, session 29; then seeds 0 and 1 at 5,000 steps, session 33: 0.877 and
# 0.848, where the preset's scored 0.824 and 0.817 / 0.717: not adopted). On seed 0: --model_config small256_s2d (0.871
# at 5,000 steps, session 32; to 10,000, session 34: 0.874 and 0.855 at 5,000 and 7,500, synthetic-only Dice 0.65-0.67:
# not adopted). Built, not yet trained: --antialiased_masks (session 34 found the speckle on the masks' edges; its A/B
# against the preset is RESULTS.md session 34's plan).
# Earlier ablations and their VARIANTS: RESULTS.md, each session with its command (before session 15 the ours preset
# shifted its log-SNR by a constant: add --schedule_detail_resolution 64 to reproduce those). A variant's flags come
# after the recipe's and the common flags (--seed 0 among them), so they override them.
VARIANTS=${VARIANTS:-"seed3=--seed 3"}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for spec in $SAMPLERS ${AUTOGUIDANCE:+"@$AUTOGUIDANCE"}; do  # a guide (step:weight) names a snapshot the runs save
  [[ $spec == *@* ]] || continue
  guide=${spec#*@} step=${spec#*@}; step=${step%%:*}
  if ! [[ $guide =~ ^[0-9]+:[0-9]*\.?[0-9]+$ ]] || [ $((step % SNAPSHOT)) -ne 0 ] || [ "$step" -ge "$STEPS_MAX" ]; then
    echo "guide $guide (in ${spec}): give step:weight, e.g. 2500:1.5, with a step that the runs save as a snapshot" \
      "(a multiple of SNAPSHOT=$SNAPSHOT) before their last (STEPS_MAX=$STEPS_MAX)" >&2
    exit 2
  fi
done
[[ $GEN_PARALLEL =~ ^[1-9][0-9]*$ ]] || {
  echo "GEN_PARALLEL=$GEN_PARALLEL: give a whole number of at least 1" >&2
  exit 2
}
mkdir -p "$OUT" "$WORK"
export OUT=$(cd "$OUT" && pwd)
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$WORK/driver.log"; }
names() { tr ';' '\n' <<< "$VARIANTS" | cut -d= -f1; }
pack_results() {  # into $OUT now, whatever exists: a device command cut off later loses nothing packed before
  (
    cd "$CODE"
    # Full-size synthetic samples (8 per set, no masks drawn) to look at beside real photographs, the first
    # SAMPLES_BACK pairs of each set as a generic folder (for judging a set elsewhere if the machine is lost with its
    # evaluation), and, once it is evaluated, the samples its memorisation checks flagged (to look at beside their
    # nearest training photographs where the real data is).
    for set in "$WORK"/synthetic/*; do  # start the script (seconds of package loading) only when it has work
      name=$(basename "$set")
      finished "$set" && { [ ! -f "$set/fullsize.png" ] || { [ "$SAMPLES_BACK" -gt 0 ] && [ ! -f "$WORK/samples/$name/done" ]; } ||
        { [ -f "$WORK/eval/$name/flagged_ids.txt" ] && [ ! -f "$WORK/samples/$name/flagged/done" ]; }; } || continue
      $PY benchmarks/realism_pictures.py "$WORK/synthetic" --samples "$SAMPLES_BACK" --samples_dir "$WORK/samples" \
        --eval_dir "$WORK/eval" > /dev/null
      break
    done
    # Quality against training minutes, from the snapshots evaluated so far (benchmarks/quality_curve.py), drawn
    # again only when a report is newer than the last drawing (loading the package costs seconds of device time).
    if [ -n "$(find "$WORK/eval" -name report.json -newer "$WORK/quality_curve.stamp" 2>/dev/null | head -1)" ] ||
      { [ ! -f "$WORK/quality_curve.stamp" ] && ls "$WORK"/eval/*/report.json > /dev/null 2>&1; }; then
      touch "$WORK/quality_curve.stamp"  # before: a report written meanwhile is newer, and drawn next time
      $PY benchmarks/quality_curve.py "$WORK" --sampler_suffix="$(sampler_suffixes)" \
        --figure "$WORK/quality_curve.png" --json "$WORK/quality_curve.json" \
        > "$WORK/quality_curve.md" 2>> "$WORK/quality_curve.log" ||  # nothing to draw yet (only sets of other
        # samplers, e.g. STAGE=generate's AUTOGUIDANCE sets, are judged) is no failure
        tail -1 "$WORK/quality_curve.log" | grep -q "no evaluated snapshot" || log "quality_curve.py failed: see quality_curve.log"
    fi
    # Only what holds no real photograph comes back: report text and JSON, logs, losses (realism_reports.tgz), and
    # the pictures (realism_figures.tgz): synthetic sample sheets and the evaluation figures that are plots only
    # (nearest_pairs and the worst-pairs sheet show real photographs). Two archives, because the device returns files
    # of at most 16 MiB and eight sets' pictures already exceed that.
    cd "$WORK" && tar czf "$OUT/realism_reports.tgz" eval/*/report.json eval/*/report.md \
      conditional/*/conditional_sampling.json conditional/*.log synthetic/*/generation_config.json \
      runs/*/logs/metrics.csv runs/*/training_args.json ./*.log quality_curve.md quality_curve.json 2>/dev/null
    tar czf "$OUT/realism_figures.tgz" eval/*/dice_bars.png eval/*/disc_histograms.png eval/*/cup_to_disc.png eval/*/power_spectrum.png \
      synthetic/*/contact_sheet.png synthetic/*/fullsize.png quality_curve.png 2>/dev/null
    pack_compile_cache  # first: pack_samples leaves room for it
    pack_samples
    for archive in "$OUT"/realism_reports.tgz "$OUT"/realism_figures.tgz "$OUT"/realism_samples-*.tgz; do
      [ -f "$archive" ] || continue
      fix="pack fewer sets (EVAL_SETS) or move them off"; [[ $archive == *realism_samples-* ]] && fix="lower SAMPLES_BACK"
      [ "$(stat -c %s "$archive")" -le $((16 << 20)) ] || log "warning: $archive is over 16 MiB and will not come back from the device: $fix"
    done
    # inside STAGE=follow (PACK_LOG=changes), which packs every 15 s, logged only when the count changes
    packed="packed $(ls eval 2>/dev/null | wc -l) evaluations into $OUT/realism_reports.tgz and $OUT/realism_figures.tgz"
    [ "${PACK_LOG:-}" = changes ] && [ "$packed" = "$(cat "$WORK/packed.last" 2>/dev/null)" ] || log "$packed"
    echo "$packed" > "$WORK/packed.last"
  )
}
pack_compile_cache() {  # the compiled trainings' cache into $OUT for a later machine, where the device can return it:
  # files of at most 16 MiB (a small256 training's on an H200 held 105.7 MiB, session 25: it stays in WORK, where
  # later trainings on this machine still load it; said once)
  local cache=$WORK/compile_cache.bin
  [ -f "$cache" ] || return 0
  if [ "$(stat -c %s "$cache")" -le $((16 << 20)) ]; then
    cp -u "$cache" "$OUT/compile_cache.bin"
  elif [ ! -f "$WORK/compile_cache.kept" ]; then
    touch "$WORK/compile_cache.kept"
    log "note: $cache ($(du -h --apparent-size "$cache" | cut -f1)) is over the 16 MiB the device returns: not packed; later trainings in $WORK load it"
  fi
}
pack_samples() {  # the exported samples (benchmarks/realism_pictures.py) in archives of at most about 12 MiB
  # (the device returns files of at most 16 MiB, 8 in all: 6 of samples, 5 beside compile_cache.bin); packed again
  # only when a set or a set's flagged samples were added
  local done_sets marks group=() size=0 k=0 folder add
  done_sets=$(ls -d "$WORK"/samples/*/done 2>/dev/null)
  [ -n "$done_sets" ] || return 0
  marks=$(ls -d "$WORK"/samples/*/done "$WORK"/samples/*/flagged/done 2>/dev/null)
  [ "$marks" = "$(cat "$WORK/samples.packed" 2>/dev/null)" ] && ls "$OUT"/realism_samples-*.tgz > /dev/null 2>&1 && return 0
  rm -f "$OUT"/realism_samples-*.tgz
  archive() {  # through a temporary name: a command cut off mid-way leaves no truncated archive behind
    tar czf "$OUT/.realism_samples-$k.tgz" -C "$WORK/samples" "${group[@]}" && mv "$OUT/.realism_samples-$k.tgz" "$OUT/realism_samples-$k.tgz"
    k=$((k + 1)) group=() size=0
  }
  for folder in $done_sets; do
    folder=$(dirname "$folder"); add=$(du -sk "$folder" | cut -f1)
    [ ${#group[@]} -gt 0 ] && [ $((size + add)) -gt 12288 ] && archive
    group+=("$(basename "$folder")") size=$((size + add))
  done
  [ ${#group[@]} -eq 0 ] || archive
  echo "$marks" > "$WORK/samples.packed"
  local room=6; [ ! -f "$OUT/compile_cache.bin" ] || room=5
  [ $k -le $room ] || log "warning: $k sample archives: the device returns 8 files in all; lower SAMPLES_BACK"
}
set_masks() { $PY -c "import sys; from fundus_diffusion.data import load_fundus_dataset; from fundus_diffusion.data.schema \
import dataset_mask_names; print(','.join(dataset_mask_names(load_fundus_dataset(sys.argv[1]))))" "$1"; }
finished() { [ -f "$1/arrow/dataset_info.json" ] || [ -f "$1/dataset_info.json" ]; }  # a saved synthetic set
sampler_parts() {  # SAMPLER = scheduler:steps[:timestep spacing][@guide] -> "scheduler steps [spacing]"
  local rest=${SAMPLER%%@*}; rest=${rest#*:}
  echo "${SAMPLER%%:*} ${rest%%:*} $([[ $rest == *:* ]] && echo "${rest#*:}")"
}
sampler_suffix() {  # how a set's name says its sampler, precision and guide: none for DPM-Solver++ 20 at DTYPE=auto
  local scheduler steps spacing suffix=""
  read -r scheduler steps spacing <<< "$(sampler_parts)"
  [ "${SAMPLER%%@*}" = dpmsolver++:20 ] || suffix="-${scheduler//+/p}$steps${spacing:+-$spacing}"
  [ "$DTYPE" = auto ] || suffix="$suffix-$DTYPE"
  [ -z "$(guidance)" ] || suffix="$suffix-ag$(guide_step)w$(guide_weight)"
  echo "$suffix"
}
sampler_suffixes() { local sampler; for sampler in $SAMPLERS; do SAMPLER=$sampler sampler_suffix; done | paste -sd, -; }
unsampled_by_any() { local sampler; for sampler in $SAMPLERS; do SAMPLER=$sampler unsampled | sed "s|$| ($sampler)|"; done; }
unsampled() {  # the saved snapshots (within STEPS, when given) without a finished set of SAMPLER / DTYPE, one per line
  local suffix snap step set
  suffix=$(sampler_suffix)
  # the variants, and the post-hoc EMA lengths STAGE=post_hoc_ema wrote beside them
  for snap in "$WORK"/runs/*/snapshots/step-*; do
    [ -f "$snap/model_index.json" ] || continue  # absent, or still being written
    step=$((10#${snap##*step-}))
    [ -n "${STEPS:-}" ] && [[ ",$STEPS," != *",$step,"* ]] && continue
    if [ -n "$(guidance)" ]; then  # a guide from an earlier snapshot of the same run, which must exist
      [ "$step" -gt "$(guide_step)" ] && [ -f "$(guide_of "$snap")/model_index.json" ] || continue
    fi
    set=$WORK/synthetic/$(basename "$(dirname "$(dirname "$snap")")")-$step$suffix
    finished "$set" || [ -f "$set.failed" ] || echo "$snap"
  done
}
guidance() {  # the guide, step:weight: SAMPLER's @ part, else AUTOGUIDANCE, else nothing
  if [[ $SAMPLER == *@* ]]; then echo "${SAMPLER#*@}"; elif [ -n "${AUTOGUIDANCE:-}" ]; then echo "$AUTOGUIDANCE"; fi
}
guide_step() { guidance | cut -d: -f1; }
guide_weight() { guidance | cut -d: -f2; }
guide_of() { echo "$(dirname "$1")/step-$(printf %07d "$(guide_step)")"; }  # the guide's snapshot beside snapshot $1
JUDGING='scripts/evaluate.py|benchmarks/conditional_sampling.py'  # the evaluations and conditional benchmarks
# busy counts the bash -c wrappers too: an evaluation's first 15 s (reading its masks) come before evaluate.py runs
busy() { pgrep -f "$JUDGING" > /dev/null; }
running_outputs() {  # the output folders of those running, one line (for logs)
  pgrep -af "$JUDGING" | grep -o -- '--output_dir [^ ]*' | cut -d' ' -f2 |
    grep -v '\$' | sort -u | tr '\n' ' '  # not the bash -c wrappers' own text ("$WORK/eval/$2")
}
flags_of() { tr ';' '\n' <<< "$VARIANTS" | grep "^$1=" | cut -d= -f2-; }

case $STAGE in
train)
  if [ ! -d "$CODE" ]; then
    mkdir -p "$CODE" && cp -r fundus_diffusion scripts benchmarks "$CODE/"
    cp -r pipelines "$CODE/fundus_diffusion/pipelines" && cp -r model_cards "$CODE/fundus_diffusion/model_cards"
    cp -r "$DATA/fundus-od" "$WORK/fundus-od"
  fi
  # Compiled trainings keep torch.compile's portable cache in one file (written after their first step and at their
  # end, the last writer's whole; the pack returns it)
  [ -z "$COMPILE_CACHE" ] || [ -f "$WORK/compile_cache.bin" ] || cp "$COMPILE_CACHE" "$WORK/compile_cache.bin" ||
    log "COMPILE_CACHE=$COMPILE_CACHE could not be copied: the trainings compile afresh"
  cd "$CODE"  # the copy: the working tree may change under a later call
  [ -d "$WORK/split" ] || $PY scripts/split_dataset.py --dataset "$WORK/fundus-od" --stratify id_prefix \
    --output_dir "$WORK/split" > "$WORK/split.log" 2>&1 || { cat "$WORK/split.log"; exit 1; }
  for name in $(names); do
    cache=()
    [[ " $RECIPE $(flags_of "$name") " != *" --compile "* ]] || cache=(--compile_cache "$WORK/compile_cache.bin")
    # shellcheck disable=SC2046
    setsid $PY scripts/train_ddpm.py --dataset "$WORK/split/train" --masks "$MASKS" $RECIPE \
      --max_train_steps "$STEPS_MAX" --snapshot_steps "$SNAPSHOT" --checkpointing_steps 100000 \
      --validation_steps 100000 --logger none --seed 0 --training_cache_dir "$WORK/cache" \
      --output_dir "$WORK/runs/$name" "${cache[@]}" $(flags_of "$name") > "$WORK/train-$name.log" 2>&1 < /dev/null &
    log "started $name ($(flags_of "$name"))"
  done
  ;;
wait)
  deadline=$((SECONDS + ${WAIT_S:-540}))
  reached() {  # every variant has written the snapshot of step UNTIL_STEP
    [ -n "${UNTIL_STEP:-}" ] || return 1
    for name in $(names); do [ -f "$WORK/runs/$name/snapshots/step-$(printf %07d "$UNTIL_STEP")/model_index.json" ] || return 1; done
  }
  while pgrep -f scripts/train_ddpm.py > /dev/null && [ $SECONDS -lt $deadline ] && ! reached; do sleep 15; done
  for name in $(names); do log "$name: $(ls "$WORK/runs/$name/snapshots" 2>/dev/null | tr '\n' ' ')"; tail -c 300 "$WORK/train-$name.log"; echo; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv || true
  pack_results
  ;;
follow)
  export PACK_LOG=changes
  deadline=$((SECONDS + ${WAIT_S:-540}))
  while :; do
    for sampler in $SAMPLERS; do
      [ $((deadline - SECONDS)) -gt "${FOLLOW_MARGIN_S:-120}" ] && [ -n "$(SAMPLER=$sampler unsampled)" ] &&
        SAMPLER=$sampler STAGE=generate bash "$SCRIPT" > /dev/null
    done
    BACKGROUND=1 STAGE=evaluate bash "$SCRIPT" > /dev/null
    if ! pgrep -f "scripts/train_ddpm.py|$JUDGING" > /dev/null &&
      [ -z "$(unsampled_by_any)" ]; then
      log "follow: the trainings have ended and every snapshot is sampled and judged"
      break
    fi
    if [ $((deadline - SECONDS)) -le 30 ]; then  # the evaluations go on on a warm machine: the next call's follow or pack
      log "follow: time is up; still to sample: $(unsampled_by_any | tr '\n' ' '); still judging: $(running_outputs)"
      break
    fi
    sleep 15
  done
  pack_results
  ;;
generate)
  cd "$CODE"
  read -r scheduler sampler_steps spacing <<< "$(sampler_parts)"
  suffix=$(sampler_suffix)
  pids=() sets=()
  for snap in $(unsampled); do
    while [ "$(jobs -rp | wc -l)" -ge "$GEN_PARALLEL" ]; do sleep 2; done  # wait reads the finished ones' status later
    name=$(basename "$(dirname "$(dirname "$snap")")")
    step=$((10#${snap##*step-}))
    set=$WORK/synthetic/$name-$step$suffix
    guide=()
    if [ -n "$(guidance)" ]; then  # the weak model: the same run's snapshot of the step the guide names
      guide=(--autoguidance_model "$(guide_of "$snap")" --autoguidance_scale "$(guide_weight)")
    fi
    $PY scripts/generate.py --model "$snap" --num_samples "$N_SYN" --scheduler "$scheduler" \
      --num_inference_steps "$sampler_steps" ${spacing:+--timestep_spacing "$spacing"} --dtype "$DTYPE" --seed 0 --batch_size 100 \
      "${guide[@]}" --output_dir "$set" > "$WORK/gen-$name-$step$suffix.log" 2>&1 &
    pids+=($!) sets+=("$set")
  done
  for i in "${!pids[@]}"; do  # a failed set is not tried again (unsampled skips it): its log says why
    wait "${pids[$i]}" || { touch "${sets[$i]}.failed"; log "generating $(basename "${sets[$i]}") failed: gen-$(basename "${sets[$i]}").log"; }
  done
  log "generated: $(for set in "$WORK"/synthetic/*; do finished "$set" && basename "$set"; done | tr '\n' ' ')"
  pack_results
  ;;
post_hoc_ema)
  # Each finished variant trained with --post_hoc_ema yields one model per PHEMA_SIGMAS length, at its last step,
  # as the snapshot of a run named <variant>-phema<sigma_rel>: generate and evaluate treat it like a variant's.
  cd "$CODE"
  for name in $(names); do
    [[ " $(flags_of "$name") " == *" --post_hoc_ema "* ]] || continue
    [ -f "$WORK/runs/$name/model_index.json" ] || { log "$name has not finished: no post-hoc EMA"; continue; }
    $PY scripts/post_hoc_ema.py --run "$WORK/runs/$name" --sigma_rel "${PHEMA_SIGMAS:-0.05,0.10,0.20}" \
      --output_dir "$WORK/post_hoc_ema/$name" > "$WORK/post_hoc_ema-$name.log" 2>&1 \
      || { log "post-hoc EMA of $name failed: $(grep -v "FUNDUS_DEBUG=1" "$WORK/post_hoc_ema-$name.log" | tail -1)"; continue; }
    step=$(ls "$WORK/runs/$name/snapshots" | tail -1)
    for folder in "$WORK/post_hoc_ema/$name"/sigma_rel-*; do
      mkdir -p "$WORK/runs/$name-phema${folder##*sigma_rel-}/snapshots"
      mv "$folder" "$WORK/runs/$name-phema${folder##*sigma_rel-}/snapshots/$step"
    done
    log "post-hoc EMA of $name at $step: $(ls -d "$WORK/runs/$name"-phema* | xargs -n1 basename | tr '\n' ' ')"
  done
  ;;
stop)
  pkill -f scripts/train_ddpm.py; sleep 2
  log "stopped the trainings"
  ;;
evaluate)
  cd "$CODE"
  for set in "$WORK"/synthetic/${EVAL_SETS:-*}; do
    name=$(basename "$set") out=$(basename "$set")${EVAL_SUFFIX:-}
    finished "$set" || continue
    [ -f "$WORK/eval/$out/report.json" ] || [ -f "$WORK/eval-$out.started" ] && continue
    touch "$WORK/eval-$out.started"
    log "evaluating $name on the masks it holds ($SEEDS seeds${EVAL_SUFFIX:+, as $out: $EVAL_FLAGS})"
    # Reading the set's masks loads the package (about 15 s): in the background too, so the evaluations start at once.
    export PY WORK SEEDS SEG_STEPS EVAL_FLAGS && export -f set_masks
    # shellcheck disable=SC2016,SC2086
    setsid bash -c 'masks=$(set_masks "$1") && echo "masks: $masks" && $PY scripts/evaluate.py --real "$WORK/split/train" \
      --holdout "$WORK/split/test" --synthetic "$1" --masks "$masks" --seeds "$SEEDS" $EVAL_FLAGS \
      --segmenter_steps "$SEG_STEPS" --output_dir "$WORK/eval/$2"' _ "$set" "$out" > "$WORK/eval-$out.log" 2>&1 < /dev/null &
  done
  [ "${BACKGROUND:-0}" = 1 ] && pack_results || WAIT_S=${WAIT_S:-540} STAGE=pack bash "$SCRIPT"
  ;;
conditional)
  cd "$CODE"
  mkdir -p "$WORK/conditional"
  for name in $(tr ',' ' ' <<< "${COND_SETS:?name the snapshots, e.g. COND_SETS=disccup-6000}"); do
    snap=$WORK/runs/${name%-*}/snapshots/step-$(printf %07d "${name##*-}")
    [ -f "$snap/model_index.json" ] || { log "no snapshot $snap"; continue; }
    [ -f "$WORK/conditional/$name/conditional_sampling.json" ] && continue
    log "conditional sampling with $name (${COND_FLAGS:=--scheduler ddpm --num_inference_steps 100 --resample_steps 4})"
    # Then the images drawn for the held-out masks are judged like any synthetic set (their two-sample realism test
    # above all), as eval/<name>-mask_to_image.
    export PY WORK SEG_STEPS COND_FLAGS EVAL_FLAGS && export -f set_masks
    # shellcheck disable=SC2016,SC2086
    setsid bash -c '$PY benchmarks/conditional_sampling.py --model "$1" --real "$WORK/split/train" \
      --holdout "$WORK/split/test" --segmenter_steps "$SEG_STEPS" $COND_FLAGS --output_dir "$2" &&
      masks=$(set_masks "$2/mask_to_image") && $PY scripts/evaluate.py --real "$WORK/split/train" \
      --holdout "$WORK/split/test" --synthetic "$2/mask_to_image" --masks "$masks" --seeds 1 $EVAL_FLAGS \
      --segmenter_steps "$SEG_STEPS" --output_dir "$3"' _ "$snap" "$WORK/conditional/$name" \
      "$WORK/eval/$name-mask_to_image" \
      > "$WORK/conditional/$name.log" 2>&1 < /dev/null &
  done
  pack_results
  ;;
pack)
  deadline=$((SECONDS + ${WAIT_S:-0}))
  while busy && [ $SECONDS -lt $deadline ]; do sleep 10; done
  busy && log "still running: $(running_outputs)"
  pack_results
  ;;
*) echo "unknown STAGE=$STAGE"; exit 2 ;;
esac

#!/usr/bin/env bash
# The seven runs of RESULTS.md's sessions 1-4 table (judged at 128 px then), on one GPU, in one go (the recorded
# sessions: over 10 minutes per DDPM run on an H200, when the DDPM trainer still fed batches through a DataLoader;
# RESULTS.md has each run's seconds). Sessions 5 onwards ran the drivers of benchmarks/ (realism_ablation.sh,
# pm_detection.sh, utility_curves.sh, ...); each session of RESULTS.md gives its commands.
#
#   DATA=../shared/data bash scripts/reproduce_results.sh            # the recorded run
#   SMOKE=1 DATA=../shared/data bash scripts/reproduce_results.sh    # the same chain with tiny settings (CPU check)
#   ONLY=ddpm-paper,ddpm-256 DATA=../shared/data bash scripts/reproduce_results.sh   # some of the runs
#
# Trainings share the GPU (they run at the same time), so their wall minutes are upper bounds of what each would take
# alone. Trainings checkpoint every 500 steps and resume: after an interruption, run the script again (after a NaN
# stop, change the run's settings first: the resume restores the random state too). Outputs go to $RESULTS (default reports/results): models, synthetic sets, reports, logs, summary.json.
# The reports hold real photographs (nearest-neighbour figures) and the models are trained on real data: keep both
# out of git.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RESULTS=${RESULTS:-reports/results}
PY=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
ONLY=${ONLY:-}  # comma-separated training runs to do (default all), e.g. ONLY=ddpm-paper,ddpm-256
DDPM256_FLAGS=${DDPM256_FLAGS:-}  # more flags for the 256 px DDPM, e.g. "--compile" (not used in the recorded runs)
EVAL_FLAGS=${EVAL_FLAGS:-}  # more flags for every evaluate.py, e.g. "--equal_real_passes"
# Seven trainings share the host: with torch's default thread pools (one thread per core each) they starved each
# other on the CPU side in the first recorded run (GPU 23% busy); two threads each since.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

if [ "$SMOKE" = 1 ]; then
  R_DDPM=32; R_GAN=64; R_PAPER=16; UNET=tiny; PAPER_UNET=tiny; REALISM="--realism_steps 2 --realism_folds 2"
  S_DDPM=3; S_PAPER=3; S_SMALL=3; E_PAPER=1; E_BEST=1; NGF=4; NDF=4
  N_SYN=8; N_1000=4; STEPS_1000=10; SEG_STEPS=5; SEEDS=1; CLS_STEPS=5; N_PHANTOM=16; BATCH=4; BATCH_SMALL=4
  FAST_STEPS=4; PAPER_STEPS=4
else
  R_DDPM=256; R_GAN=360; R_PAPER=64; UNET=${UNET:-small256}; PAPER_UNET=paper; REALISM=
  S_DDPM=${S_DDPM:-2000}; S_PAPER=4000; S_SMALL=2000; E_PAPER=100; E_BEST=300; NGF=32; NDF=64
  N_SYN=200; N_1000=200; STEPS_1000=1000; SEG_STEPS=800; SEEDS=3; CLS_STEPS=600; N_PHANTOM=512; BATCH=16; BATCH_SMALL=64
  FAST_STEPS=20; PAPER_STEPS=300
fi

mkdir -p "$RESULTS/logs"
log() { echo "[$(date +%H:%M:%S)] $*"; }
timed() {  # timed NAME COMMAND...: run, log to logs/NAME.log, record wall seconds in logs/NAME.seconds
  local name=$1; shift
  [ -f "$RESULTS/logs/$name.seconds" ] && { log "skip $name (done in an earlier run)"; return 0; }
  local start=$SECONDS
  "$@" > "$RESULTS/logs/$name.log" 2>&1 || { echo "FAILED: $name (see $RESULTS/logs/$name.log)"; tail -20 "$RESULTS/logs/$name.log"; return 1; }
  echo $((SECONDS - start)) > "$RESULTS/logs/$name.seconds"
  log "done $name in $((SECONDS - start)) s"
}

SPLIT=$RESULTS/split
PALM_SPLIT=$RESULTS/palm-split
[ -d "$SPLIT" ] || timed split $PY scripts/split_dataset.py --dataset "$DATA/fundus-od" --stratify id_prefix --output_dir "$SPLIT"
[ -d "$PALM_SPLIT" ] || timed palm-split $PY scripts/split_dataset.py --dataset "$DATA/palm-224/PALM-Training400" \
  --images_only --stratify label --output_dir "$PALM_SPLIT"

wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
start() { wanted "$1" || return 0; timed "$@" & pids+=($!); }  # start NAME COMMAND...: a training, in the background
train_ddpm() { $PY scripts/train_ddpm.py --mixed_precision "$([ "$SMOKE" = 1 ] && echo no || echo bf16)" \
  --checkpointing_steps 500 --checkpoints_total_limit 1 --resume_from_checkpoint latest --validation_steps 100000 --logger none "$@"; }
train_dcgan() { $PY scripts/train_dcgan.py --mixed_precision "$([ "$SMOKE" = 1 ] && echo no || echo bf16)" \
  --checkpointing_steps 500 --checkpoints_total_limit 1 --resume_from_checkpoint latest --validation_steps 100000 --logger none --ngf $NGF --ndf $NDF "$@"; }

log "training (in parallel)"
pids=()
start ddpm-256 train_ddpm --dataset "$SPLIT/train" --resolution $R_DDPM --masks disc --model_config $UNET \
  --train_batch_size $BATCH --max_train_steps $S_DDPM --output_dir "$RESULTS/runs/ddpm-256" $DDPM256_FLAGS
start ddpm-paper train_ddpm --preset paper --dataset "$SPLIT/train" --resolution $R_PAPER --masks disc \
  --model_config $PAPER_UNET --max_train_steps $S_PAPER --output_dir "$RESULTS/runs/ddpm-paper"
start dcgan-paper train_dcgan --preset paper --dataset "$SPLIT/train" --resolution $R_GAN --masks disc \
  --num_epochs $E_PAPER --mixed_precision no --output_dir "$RESULTS/runs/dcgan-paper"
start dcgan-diffaug train_dcgan --preset paper --dataset "$SPLIT/train" --resolution $R_GAN --masks disc \
  --num_epochs $E_BEST --diffaugment color,translation,cutout --use_ema --ema_max_decay 0.999 \
  --output_dir "$RESULTS/runs/dcgan-diffaug"
start dcgan-diffaug-sn-hinge train_dcgan --preset paper --dataset "$SPLIT/train" --resolution $R_GAN --masks disc \
  --num_epochs $E_BEST --diffaugment color,translation,cutout --use_ema --ema_max_decay 0.999 --spectral_norm --loss hinge \
  --output_dir "$RESULTS/runs/dcgan-diffaug-sn-hinge"
start phantom-5ch train_ddpm --dataset "phantom:$N_PHANTOM" --resolution $R_PAPER --masks disc,atrophy \
  --model_config $PAPER_UNET --train_batch_size $BATCH_SMALL --max_train_steps $S_SMALL --output_dir "$RESULTS/runs/phantom-5ch"
start palm-cond train_ddpm --dataset "$PALM_SPLIT/train" --resolution $R_PAPER --masks none --class_dropout_prob 0.1 \
  --model_config $PAPER_UNET --train_batch_size $BATCH_SMALL --max_train_steps $S_SMALL --output_dir "$RESULTS/runs/palm-cond"
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

log "generating"
finished() { [ -f "$RESULTS/runs/$1/model_index.json" ]; }  # a run that saved its model (not one stopped early)
gen() { $PY scripts/generate.py --seed 0 --batch_size 64 "$@"; }
pids=()
for run in dcgan-paper dcgan-diffaug dcgan-diffaug-sn-hinge; do
  finished "$run" && { timed gen-$run gen --model "$RESULTS/runs/$run" --num_samples $N_SYN \
    --output_dir "$RESULTS/synthetic/$run" & pids+=($!); }
done
finished ddpm-paper && { timed gen-ddpm-paper gen --model "$RESULTS/runs/ddpm-paper" --num_samples $N_SYN --scheduler ddpm --num_inference_steps $PAPER_STEPS \
  --output_dir "$RESULTS/synthetic/ddpm-paper" & pids+=($!); }
if finished ddpm-256; then
  timed gen-ddpm-256-dpm20 gen --model "$RESULTS/runs/ddpm-256" --num_samples $N_SYN --scheduler dpmsolver++ \
    --num_inference_steps $FAST_STEPS --output_dir "$RESULTS/synthetic/ddpm-256-dpm20" & pids+=($!)
  timed gen-ddpm-256-ddpm1000 gen --model "$RESULTS/runs/ddpm-256" --num_samples $N_1000 --batch_size 100 --scheduler ddpm \
    --num_inference_steps $STEPS_1000 --output_dir "$RESULTS/synthetic/ddpm-256-ddpm1000" & pids+=($!)
fi
finished phantom-5ch && { timed gen-phantom-5ch gen --model "$RESULTS/runs/phantom-5ch" --num_samples $N_SYN \
  --scheduler dpmsolver++ --num_inference_steps $FAST_STEPS --output_dir "$RESULTS/synthetic/phantom-5ch" & pids+=($!); }
finished palm-cond && { timed gen-palm-cond gen --model "$RESULTS/runs/palm-cond" --labels PM=100,non-PM=100 \
  --guidance_scale 2 --scheduler dpmsolver++ --num_inference_steps $FAST_STEPS --output_dir "$RESULTS/synthetic/palm-cond" & pids+=($!); }
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

log "evaluating"
pids=()
# Each set is judged at its native resolution (evaluate.py's default); sessions 1-4 passed --resolution 128.
evaluate() { $PY scripts/evaluate.py $REALISM --seeds $SEEDS --segmenter_steps $SEG_STEPS --update_model_card --overwrite $EVAL_FLAGS "$@"; }  # a step without its .seconds file runs again
for syn in dcgan-paper dcgan-diffaug dcgan-diffaug-sn-hinge ddpm-paper ddpm-256-dpm20 ddpm-256-ddpm1000; do
  [ -d "$RESULTS/synthetic/$syn" ] && { timed eval-$syn evaluate --real "$SPLIT/train" --holdout "$SPLIT/test" --masks disc \
    --synthetic "$RESULTS/synthetic/$syn" --output_dir "$RESULTS/eval/$syn" & pids+=($!); }
done
[ -d "$RESULTS/synthetic/phantom-5ch" ] && { timed eval-phantom-5ch evaluate --real "phantom:$N_PHANTOM" --masks disc,atrophy \
  --synthetic "$RESULTS/synthetic/phantom-5ch" --output_dir "$RESULTS/eval/phantom-5ch" & pids+=($!); }
[ -d "$RESULTS/synthetic/palm-cond" ] && { timed judge-palm-cond $PY scripts/judge_pm_labels.py --real "$DATA/palm-224/PALM-Training400" \
  --images_only --synthetic "$RESULTS/synthetic/palm-cond" --steps $CLS_STEPS --overwrite --output_dir "$RESULTS/eval/palm-cond" & pids+=($!); }
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done

$PY -c "import sys; from fundus_diffusion.evaluation.summary import write_summary; print('summary:', write_summary(sys.argv[1]))" "$RESULTS"
log "finished (failures: $failed)"
exit $failed

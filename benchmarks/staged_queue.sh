# The stages the staged GPU drivers of benchmarks/ share (utility_curves.sh, pm_detection.sh): sourced by a driver
# that has defined WORK (its work folder, holding queue.pid, driver.log and eval/), SCRIPT (its own path), PARALLEL,
# GPUS, log, jobs_list and pack_results (which may call draw_table, with the driver's CODE and PY).
#   queue  run every job of jobs_list, PARALLEL at a time, each as `STAGE=job JOB=<job> bash $SCRIPT`
#   wait   wait until the queue ends or WAIT_S seconds pass (default 540), show progress, pack
#   pack   pack_results
#   stop   stop the queue and everything it started (its process group)
shared_stage() {
  case $1 in
  wait)
    [ -f "$WORK/queue.pid" ] || { log "no queue was started in $WORK: run STAGE=train first, or give its WORK"; exit 1; }
    local deadline=$((SECONDS + ${WAIT_S:-540}))
    running() { [ -f "$WORK/queue.pid" ] && kill -0 "$(cat "$WORK/queue.pid")" 2>/dev/null; }
    while running && [ $SECONDS -lt $deadline ]; do sleep 10; done
    running && log "queue still running"
    log "reports: $(ls "$WORK/eval" 2>/dev/null | tr '\n' ' ')"
    tail -n 20 "$WORK/driver.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null || true
    pack_results
    ;;
  queue)
    jobs_list | xargs -P "$PARALLEL" -I{} env STAGE=job JOB={} WORK="$WORK" bash "$SCRIPT"
    log "queue finished"
    ;;
  pack) pack_results ;;
  stop)
    [ -f "$WORK/queue.pid" ] && kill -- -"$(cat "$WORK/queue.pid")" 2>/dev/null && sleep 2
    log "stopped the queue"
    ;;
  *) echo "unknown STAGE=$1"; exit 2 ;;
  esac
}

draw_table() {  # in $WORK: benchmarks/$1.py over eval/ into $2.png and $3.{txt,json}; 1 when it fails (then no table)
  local script=$1 figure=$2.png table=$3
  rm -f "$figure" "$table".*  # a table from an earlier pack would pass for this one's
  ls eval/*/report.json > /dev/null 2>&1 || return 0
  $PY "$CODE/benchmarks/$script.py" eval --figure "$figure" --json "$table.json" > "$table.txt" 2> "$script.log" && return 0
  log "$script.py failed with $PY (give the PYTHON of the train stage): $(tail -n 3 "$script.log")"
  rm -f "$figure" "$table".*  # no empty table in the archive
  return 1
}

start_queue() {  # the queue stage, detached in its own process group (STAGE=stop kills the group)
  setsid env STAGE=queue WORK="$WORK" bash "$SCRIPT" > "$WORK/queue.log" 2>&1 < /dev/null &
  echo $! > "$WORK/queue.pid"
  log "started the queue (pid $!, $PARALLEL at a time): $(jobs_list | tr '\n' ' ')"
}

use_job_gpu() {  # job i of jobs_list runs on GPUS[i mod count] (CUDA_VISIBLE_DEVICES); GPUS empty: the default
  [ -n "$GPUS" ] || return 0
  local gpu_list index
  IFS=, read -ra gpu_list <<< "$GPUS"
  index=$(jobs_list | grep -nx -- "$1" | cut -d: -f1)
  export CUDA_VISIBLE_DEVICES=${gpu_list[$(( (index - 1) % ${#gpu_list[@]} ))]}
}

# The stages the staged GPU drivers of benchmarks/ share (utility_curves.sh, pm_detection.sh): sourced by a driver
# that has defined WORK (its work folder, holding queue.pid, driver.log and eval/), log and pack_results.
#   wait   wait until the queue ends or WAIT_S seconds pass (default 540), show progress, pack
#   pack   pack_results
#   stop   stop the queue and everything it started (its process group)
shared_stage() {
  case $1 in
  wait)
    local deadline=$((SECONDS + ${WAIT_S:-540}))
    running() { [ -f "$WORK/queue.pid" ] && kill -0 "$(cat "$WORK/queue.pid")" 2>/dev/null; }
    while running && [ $SECONDS -lt $deadline ]; do sleep 10; done
    running && log "queue still running"
    log "reports: $(ls "$WORK/eval" 2>/dev/null | tr '\n' ' ')"
    tail -n 20 "$WORK/driver.log"
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null || true
    pack_results
    ;;
  pack) pack_results ;;
  stop)
    [ -f "$WORK/queue.pid" ] && kill -- -"$(cat "$WORK/queue.pid")" 2>/dev/null && sleep 2
    log "stopped the queue"
    ;;
  *) echo "unknown STAGE=$1"; exit 2 ;;
  esac
}

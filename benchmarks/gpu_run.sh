#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, with .whl carried along
# (gathered and checked here first by benchmarks/gpu_wheels.sh):
#   bash benchmarks/gpu_run.sh [preflight|check|bench|all]
# preflight: installs every carried wheel group into /tmp/site-GROUP, checks the requirements of
#            what is really installed, and imports everything the later modes import; seconds.
#            check and bench run it first when it has not passed yet.
# check:     tools/gpu_check.py on the tiny checkpoint, float32 (TF32 off) with the graphs alone,
#            then bfloat16 with the compiled fused step: graphs equal their ungraphed step bit for
#            bit, single stream and batch agree up to near ties; prints the attention backend and
#            the memory after prepare. Minutes (the compile's time on the GPU box is unmeasured).
# bench:     ONE full-size 1.7B Base random checkpoint build, then frames per request capped:
#            serving_bench (one stream, frame split, sweep 1/4/8/16/32/64, peak memory), ours vs
#            the official qwen-tts vs faster-qwen3-tts, and first audio at the Wyoming socket
#            through the real server. Under 5 minutes.
# all:       preflight + check + bench, one device call (fits 10 minutes).
# Every step runs under `timeout`. Results and logs go to $OUT (or ./gpu-results), at most 8 files:
# preflight.log check.log bench.log server.log serving.json compare.json socket.json.
set -uo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out="${OUT:-gpu-results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="/tmp/site-ours:$PWD${PYTHONPATH:+:$PYTHONPATH}"
ckpt=/tmp/bench-checkpoints/1.7B-Base
preflight_done=/tmp/gpu-preflight-ok
failed=0

step() {  # step SECONDS LOG COMMAND...: one step under timeout, its output in $out/LOG; failures counted
    local limit=$1 log=$2
    shift 2
    echo "== $(date -u +%H:%M:%S) $* (limit ${limit}s)" | tee -a "$out/$log"
    if timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out/$log"; then
        return 0
    fi
    echo "== FAILED (exit ${PIPESTATUS[0]}): $*" | tee -a "$out/$log"
    failed=$((failed + 1))
    return 1
}

preflight() {
    local before=$failed
    step 30 preflight.log nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    for group in ours server official faster; do
        if [ ! -d ".whl/$group" ]; then
            echo "missing .whl/$group: run benchmarks/gpu_wheels.sh here first and carry .whl" | tee -a "$out/preflight.log"
            failed=$((failed + 1))
            return
        fi
        step 60 preflight.log python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "/tmp/site-$group" .whl/"$group"/*.whl
    done
    step 30 preflight.log python3 -c "import sys, torch; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
    # what is really installed meets every requirement, for each way a mode puts groups on the path
    step 30 preflight.log env PYTHONPATH="/tmp/site-server:$PYTHONPATH" \
        python3 benchmarks/wheel_requirements.py installed --ours /tmp/site-ours /tmp/site-server
    step 30 preflight.log env PYTHONPATH="/tmp/site-official:$PYTHONPATH" \
        python3 benchmarks/wheel_requirements.py installed /tmp/site-official
    step 30 preflight.log env PYTHONPATH="/tmp/site-faster:$PYTHONPATH" \
        python3 benchmarks/wheel_requirements.py installed /tmp/site-faster
    # everything the later modes import, before anything heavy runs
    step 60 preflight.log env PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 -c "
import soundfile, soxr, transformers, wyoming, zeroconf
import wyoming_qwen_tts.__main__, wyoming_qwen_tts.synthesis, wyoming_qwen_tts.engine.scheduler
import tools.gpu_check, benchmarks.make_checkpoint, benchmarks.serving_bench, benchmarks.bench_engine, benchmarks.socket_bench
print('ours and the server import')"
    step 90 preflight.log env PYTHONPATH="/tmp/site-official:$PYTHONPATH" python3 benchmarks/official_runner.py --help
    step 90 preflight.log env PYTHONPATH="/tmp/site-faster:$PYTHONPATH" python3 -c "
import faster_qwen3_tts, soundfile; print('faster_qwen3_tts', getattr(faster_qwen3_tts, '__version__', '?'), 'imports')"
    if [ "$failed" -eq "$before" ]; then touch "$preflight_done"; fi
}

check() {
    # The graphs alone first (no compile: fast, and it tells graph faults from compile faults), then
    # the compiled fused step as the server runs it; its compile time on this machine is unmeasured.
    step 120 check.log python3 tools/gpu_check.py --dtype float32 --compile false
    step 240 check.log python3 tools/gpu_check.py --dtype bfloat16 --compile auto
}

bench() {
    if [ ! -d "$ckpt" ]; then
        step 120 bench.log python3 benchmarks/make_checkpoint.py --config 1.7B-Base --out "$ckpt" || return
    fi
    step 100 bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --runner cuda-graphs --frames 40 --runs 3 --sweep 1,4,8,16,32,64 --json "$out/serving.json"
    step 100 bench.log python3 benchmarks/bench_engine.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --frames 40 --runs 2 --oracle-python python3 --oracle-site /tmp/site-official \
        --faster-python python3 --faster-site /tmp/site-faster --json "$out/compare.json"
    step 90 bench.log env PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 benchmarks/socket_bench.py \
        --checkpoint "$ckpt" --device cuda --frames 12 --runs 10 --concurrency 1,8,32 --max-batch 32 \
        --server-log "$out/server.log" --json "$out/socket.json"
}

case "$what" in
    preflight) preflight ;;
    check | bench)
        [ -f "$preflight_done" ] || preflight
        if [ -f "$preflight_done" ]; then "$what"; else echo "preflight failed: $what not run"; fi ;;
    all)
        preflight
        if [ -f "$preflight_done" ]; then check; bench; else echo "preflight failed: check and bench not run"; fi ;;
    *) echo "usage: $0 [preflight|check|bench|all]"; exit 2 ;;
esac
echo "== $what done: $failed failed steps; results in $out"
[ "$failed" -eq 0 ]

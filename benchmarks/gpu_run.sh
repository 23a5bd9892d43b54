#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, with .whl carried along
# (gathered and checked here first by benchmarks/gpu_wheels.sh):
#   bash benchmarks/gpu_run.sh [preflight|check|bench|all]
# preflight: installs every carried wheel group into /tmp/site-GROUP, checks the requirements of
#            what is really installed, and imports everything the later modes import; seconds.
#            check and bench run it first when it has not passed yet.
# check:     tools/gpu_check.py on the tiny checkpoint, float32 (TF32 off) with the graphs alone,
#            then bfloat16 with the compiled fused step (--compile true): graphs equal their ungraphed step bit for
#            bit, single stream and batch agree up to near ties; prints the attention backend and
#            the memory after prepare. The graphs' check takes a minute; the compiled one, minutes.
# bench:     ONE full-size 1.7B Base random checkpoint build, then frames per request capped:
#            serving_bench (one stream, frame split, sweep 1/4/8/16/32/64, peak memory), ours vs
#            the official qwen-tts vs faster-qwen3-tts, and first audio at the Wyoming socket
#            through the real server. Under 5 minutes.
# all:       preflight + check + bench, one device call, ended by a deadline (GPU_RUN_SECONDS, 540):
#            the graphs' check, then bench (serving figures, socket, codec thread, peers, int8), then the compiled
#            check (the slowest to start: the first run, 2026-11-29, found compiling takes minutes).
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

# The whole run ends by this deadline (GPU_RUN_SECONDS, default 540: a 600 s device command with
# room to copy the results back): each step's limit is cut to what is left, and a step with under
# 20 s left is skipped and counted as failed, so the last steps lose time, never the whole output.
deadline=$(( $(date +%s) + ${GPU_RUN_SECONDS:-540} ))

step() {  # step SECONDS LOG COMMAND...: one step under timeout, its output in $out/LOG; failures counted
    local limit=$1 log=$2 left
    shift 2
    left=$(( deadline - $(date +%s) - 5 ))
    if [ "$left" -lt 20 ]; then
        echo "== SKIPPED (out of time, ${left}s left): $*" | tee -a "$out/$log"
        failed=$((failed + 1))
        return 1
    fi
    [ "$limit" -le "$left" ] || limit=$left
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
import fastapi, uvicorn, multipart, emoji, markdown_it
import wyoming_qwen_tts.__main__, wyoming_qwen_tts.synthesis, wyoming_qwen_tts.engine.scheduler
import wyoming_qwen_tts.http_api, wyoming_qwen_tts.markdown_speech
import tools.gpu_check, benchmarks.make_checkpoint, benchmarks.serving_bench, benchmarks.bench_engine, benchmarks.socket_bench
print('ours and the server import')"
    step 90 preflight.log env PYTHONPATH="/tmp/site-official:$PYTHONPATH" python3 benchmarks/official_runner.py --help
    step 90 preflight.log env PYTHONPATH="/tmp/site-faster:$PYTHONPATH" python3 -c "
import faster_qwen3_tts, soundfile; print('faster_qwen3_tts', getattr(faster_qwen3_tts, '__version__', '?'), 'imports')"
    if [ "$failed" -eq "$before" ]; then touch "$preflight_done"; fi
}

check_graphs() {  # the graphs alone first: fast, and it tells graph faults from compile faults
    step 120 check.log python3 tools/gpu_check.py --dtype float32 --compile false
}

check_compiled() {  # the compiled fused step (--compile true): on 2026-11-29 it outlasted 150 s here
    step 300 check.log python3 tools/gpu_check.py --dtype bfloat16 --compile true
}

check() { check_graphs; check_compiled; }

checkpoint() {
    [ -d "$ckpt" ] || step 120 bench.log python3 benchmarks/make_checkpoint.py --config 1.7B-Base --out "$ckpt"
}

bench_serving() {  # one stream, the frame split, the sweep, peak memory: the engine's headline figures
    checkpoint || return
    step 240 bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --runner cuda-graphs --frames 40 --runs 3 --sweep 1,4,8,16,32,64 --json "$out/serving.json"
}

bench_socket() {  # first audio at the Wyoming socket, the server's default 8 rows (it logs its GPU memory)
    checkpoint || return
    step 150 bench.log env PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 benchmarks/socket_bench.py \
        --checkpoint "$ckpt" --device cuda --frames 12 --runs 10 --concurrency 1,8 --max-batch 8 \
        --server-log "$out/server.log" --json "$out/socket.json"
}

bench_peers() {  # ours vs the official qwen-tts vs faster-qwen3-tts, one stream each
    checkpoint || return
    step 120 bench.log python3 benchmarks/bench_engine.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --frames 40 --runs 2 --oracle-python python3 --oracle-site /tmp/site-official \
        --faster-python python3 --faster-site /tmp/site-faster --json "$out/compare.json"
}

bench_int8() {  # int8 weights on CUDA, graphs kept: one stream and a small sweep (figures in bench.log)
    checkpoint || return
    step 120 bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --runner cuda-graphs --quantize int8 --frames 40 --runs 2 --sweep 1,8
}

bench_codec_thread() {  # the batch scheduler with its codec thread (the former default), to compare with inline
    checkpoint || return
    step 90 bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --runner cuda-graphs --codec thread --frames 40 --runs 1 --sweep 1,8
}

bench() { bench_serving; bench_socket; bench_codec_thread; bench_peers; bench_int8; }

case "$what" in
    preflight) preflight ;;
    check | bench)
        [ -f "$preflight_done" ] || preflight
        if [ -f "$preflight_done" ]; then "$what"; else echo "preflight failed: $what not run"; fi ;;
    all)
        preflight
        # most telling first: the graphs' correctness, the engine's figures, then the rest as time allows
        if [ -f "$preflight_done" ]; then
            check_graphs; bench; check_compiled
        else
            echo "preflight failed: check and bench not run"
        fi ;;
    *) echo "usage: $0 [preflight|check|bench|all]"; exit 2 ;;
esac
echo "== $what done: $failed failed steps; results in $out"
[ "$failed" -eq 0 ]

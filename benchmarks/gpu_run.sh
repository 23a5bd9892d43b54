#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, with .whl carried along
# (gathered and checked here first by benchmarks/gpu_wheels.sh), as ONE device call:
#   GPU_RUN_COMMIT=<this checkout's short hash> bash benchmarks/gpu_run.sh all
#   (run's timeout_s 600, carry [".whl"]; the device copy's git HEAD may be stale, so the hash is
#   given literally and recorded in results.json)
# `all` runs these steps in this order, each under `timeout` with its limit (LIMIT, below), and the
# whole run ends by a deadline (GPU_RUN_SECONDS, default 540 s: a 600 s command with room to copy
# the results back): a step's limit is cut to what is left, a step with under 20 s left is skipped.
#   gpu        nvidia-smi, torch and CUDA versions
#   wheels     each carried wheel group into /tmp/site-GROUP (the groups in parallel)
#   requires   what got installed meets every requirement (benchmarks/wheel_requirements.py)
#   imports    what the later steps import: ours and the server, the official qwen-tts,
#              faster-qwen3-tts (in parallel); a group that fails drops only the steps needing it
#   checkpoint (in the background from the wheels on, beside requires, imports and check) the
#              full-size 1.7B Base random checkpoint, drawn on the GPU in bfloat16 (make_checkpoint.py
#              --device cuda)
#   kernels    (in the background beside check, waited for before serving) the Triton kernels
#              against their references on the GPU: alone (tests/test_kernels.py) and in the real
#              frame step, teacher-forced, float32 and bfloat16 (tests/test_triton_step.py)
#   check      tools/gpu_check.py on the tiny checkpoint, float32 (TF32 off), the graphs alone:
#              graphs = their ungraphed step bit for bit, batch vs single, the scheduler (codec
#              inline and thread), no synchronising call (set_sync_debug_mode("error")) building
#              prompts, in steady-state steps or in the step after a row joins, stream vs whole decode
#   serving    serving_bench, 1.7B bf16, ICL voice, 40 frames a request with EOS held off: one
#              stream (first audio, x real time, ms per frame), the frame split, the memory of the
#              server's default scheduler (8 rows), the sweep 1/8/32 (first audio p50/p95,
#              per-stream x real time), the peak memory
#   profile    benchmarks/gpu_profile.py: kernels and GPU time per replay of the step's graph at 1
#              and 32 rows, and whether codec kernels overlap the steps (codec inline, thread)
#   socket     first audio at the Wyoming socket through the real server (its default 8 rows), and
#              the GPU memory nvidia-smi sees the server hold
#   faster     bench_engine: ours vs faster-qwen3-tts 0.5.4 (chunk 1, then 12, its default)
#   official   bench_engine: ours vs the official qwen-tts 0.1.1 (no streaming)
# Each step merges its status and figures into $OUT/results.json as it ends, so a run cut short
# still returns everything finished before. Not in `all`, each by its name: compiled (gpu_check with
# the fused step compiled: minutes of compiling), int8 (the uncompiled int8 path converts every
# weight on each call on CUDA: off there until it has a real int8 kernel), codec-thread (the sweep
# with the codec thread). Other modes: preflight, check, bench (checkpoint, serving, profile, socket,
# faster, official), or one step's name; each runs the preflight first unless it passed already.
# Results in $OUT (or ./gpu-results), at most 8 files: results.json preflight.log kernels.log
# check.log bench.log server.log.
# GPU_RUN_DRY=1 (tests/test_gpu_tooling.py): nothing runs; every command a step would run is written
# to $work/dry-run.txt (arguments ended by \037, commands by \036), each python3 one checked there
# against its script's argument parser.
set -uo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."
what="${1:-all}"
out="${OUT:-gpu-results}"
work=${GPU_RUN_WORK:-/tmp/gpu-run}  # the steps' own JSON before it is merged, and the preflight's marks
ckpt=${GPU_RUN_CHECKPOINT:-/tmp/bench-checkpoints/1.7B-Base}
wheels=${GPU_RUN_WHEELS:-.whl}
mkdir -p "$out" "$work"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="/tmp/site-ours:$PWD${PYTHONPATH:+:$PYTHONPATH}"
GROUPS_=(ours server official faster)
if [ -n "${GPU_RUN_DRY:-}" ]; then  # record, never run (exported: the internal modes' shells see them too)
    # Steps run side by side (the checkpoint in the background, the wheel groups in parallel) and a
    # long command is more than one write: each record is appended under a lock, or two interleave.
    dry() {
        local line; line=$(printf '%s\037' "$@")
        { flock 9; printf '%s\036' "$line" >>"$work/dry-run.txt"; } 9>>"$work/dry-run.lock"
    }
    python3() { dry python3 "$@"; }
    nvidia-smi() { dry nvidia-smi "$@"; }
    env() ( while [[ "${1:-}" == *=* ]]; do export "${1?}"; shift; done; "$@" )
    timeout() { shift 2; "$@"; }  # timeout --kill-after=10 LIMIT COMMAND...
    export -f dry python3 nvidia-smi env timeout
fi

# Seconds each step may take. `all` runs ALL in order; their limits sum to 510 s, 30 s under the
# deadline (the checkpoint builds in the background from the wheels on, beside requires, imports and
# check, 125 s: not on the sum). Measured on the H200 (2026-11-29): the graphs' check ~50 s, the
# 1.7B checkpoint 28 s drawn on the CPU, the model loads in 4 s and captures the 32-row batch's
# graphs in 14 s, one stream makes 40 frames in ~1 s.
declare -A LIMIT=(
    [gpu]=10 [wheels]=30 [requires]=10 [imports]=30
    [check]=85 [serving]=85 [profile]=65 [socket]=60 [faster]=65 [official]=70
    [checkpoint]=60 [kernels]=80
    [compiled]=300 [int8]=120 [codec-thread]=90
)
ALL=(gpu wheels requires imports check serving profile socket faster official)

# -- internal modes: what one step runs (bash "$self" _NAME), in a shell of its own under timeout --

case "$what" in
    _gpu)
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || exit
        python3 -c "
import json, sys, torch
found = dict(python=sys.version.split()[0], torch=torch.__version__, cuda=torch.version.cuda,
             device=torch.cuda.get_device_name(0), memory_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
print(found); json.dump(found, open('$work/gpu.json', 'w'))"
        exit ;;
    _wheels)  # every carried group into /tmp/site-GROUP, in parallel
        status=0 pids=()
        for group in "${GROUPS_[@]}"; do
            if [ ! -d "$wheels/$group" ]; then
                echo "missing .whl/$group: run benchmarks/gpu_wheels.sh here first and carry .whl"
                status=1
                continue
            fi
            python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "/tmp/site-$group" "$wheels/$group"/*.whl &
            pids+=($!)
        done
        for pid in "${pids[@]}"; do wait "$pid" || status=1; done
        exit $status ;;
    _requires)  # what is really installed meets every requirement, for each way a step puts groups on the path
        status=0
        env PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 benchmarks/wheel_requirements.py installed \
            --ours /tmp/site-ours /tmp/site-server || status=1
        env PYTHONPATH="/tmp/site-official:$PYTHONPATH" python3 benchmarks/wheel_requirements.py installed \
            /tmp/site-official || status=1
        env PYTHONPATH="/tmp/site-faster:$PYTHONPATH" python3 benchmarks/wheel_requirements.py installed \
            /tmp/site-faster || status=1
        exit $status ;;
    _imports)  # each group's imports and our scripts' command lines, all in parallel; a mark in $work
               # for each group that works
        rm -f "$work"/ok-* "$work"/bad-*
        ours="/tmp/site-server:$PYTHONPATH"
        (env PYTHONPATH="$ours" python3 -c "
import soundfile, soxr, transformers, wyoming, zeroconf
import fastapi, uvicorn, multipart, emoji, markdown_it
import wyoming_qwen_tts.__main__, wyoming_qwen_tts.synthesis, wyoming_qwen_tts.engine.scheduler
import wyoming_qwen_tts.http_api, wyoming_qwen_tts.markdown_speech
import tools.gpu_check, benchmarks.make_checkpoint, benchmarks.serving_bench, benchmarks.bench_engine
import benchmarks.socket_bench, benchmarks.gpu_profile, benchmarks.kernel_count
print('ours and the server import')" || touch "$work/bad-ours") &
        for script in tools/gpu_check.py benchmarks/make_checkpoint.py benchmarks/serving_bench.py \
                benchmarks/gpu_profile.py benchmarks/socket_bench.py benchmarks/bench_engine.py; do
            (env PYTHONPATH="$ours" python3 "$script" --help >/dev/null \
                || { echo "$script --help failed"; touch "$work/bad-ours"; }) &
        done
        (env PYTHONPATH="/tmp/site-official:$PYTHONPATH" python3 benchmarks/official_runner.py --help >/dev/null \
            && echo "the official qwen-tts imports" && touch "$work/ok-official") &
        (env PYTHONPATH="/tmp/site-faster:$PYTHONPATH" python3 -c "
import faster_qwen3_tts, soundfile, torch, transformers
from faster_qwen3_tts import FasterQwen3TTS
from qwen_tts import Qwen3TTSModel  # its fork of the official code, which loads the model for it
Qwen3TTSModel.from_pretrained('tests/fixtures/tiny-base', device_map='cpu', dtype=torch.float32)
print('faster_qwen3_tts', faster_qwen3_tts.__version__, 'imports, and its qwen_tts loads a checkpoint under'
      ' transformers', transformers.__version__)" \
            && env PYTHONPATH="/tmp/site-faster:$PYTHONPATH" python3 benchmarks/faster_runner.py --help >/dev/null \
            && touch "$work/ok-faster") &
        wait
        [ -f "$work/bad-ours" ] || touch "$work/ok-ours"
        ls "$work"/ok-* 2>/dev/null
        [ -f "$work/ok-ours" ] && [ -f "$work/ok-official" ] && [ -f "$work/ok-faster" ]
        exit ;;
    _checkpoint)  # drawn on the GPU; on the CPU (28 s on the H200's host) if that fails
        python3 benchmarks/make_checkpoint.py --config 1.7B-Base --device cuda --out "$ckpt" \
            || python3 benchmarks/make_checkpoint.py --config 1.7B-Base --out "$ckpt"
        exit ;;
esac

# -- results.json: each step's status and figures, merged as the step ends ------------------------

RESULTS_PY='
import fcntl, json, os, sys
out, work, action, *rest = sys.argv[1:]
path = os.path.join(out, "results.json")
with open(os.path.join(work, "results.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # the background checkpoint step records too
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    steps = results.setdefault("steps", {})
    if action == "meta":
        mode, commit, deadline, *limits = rest
        results.update(mode=mode, commit=commit, deadline_s=int(deadline),
                       limits={k: int(v) for k, v in (item.split("=") for item in limits)})
    elif action == "step":
        name, status, seconds, limit = rest
        steps[name] = {"status": status, "seconds": int(seconds), "limit": int(limit)}
        try:
            with open(os.path.join(work, name + ".json")) as f:
                results[name] = json.load(f)
        except FileNotFoundError:
            pass
        except ValueError as err:
            results[name] = {"unreadable": str(err)}
    elif action == "summary":
        for name, step in steps.items():
            print("  %-12s %10s %4d s of %4d" % (name, step["status"], step["seconds"], step["limit"]))
        failed = [name for name, step in steps.items() if step["status"] != "ok"]
        results["failed_steps"] = failed
        print("failed steps:", " ".join(failed) or "none")

        def get(value, *keys):  # None where any key is missing
            for key in keys:
                if isinstance(value, dict):
                    value = value.get(key)
                elif isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value):
                    value = value[key]
                else:
                    return None
            return value

        def show(label, *figures):  # figures: (name, value, format)
            shown = [name + " " + format(value, spec) for name, value, spec in figures if value is not None]
            if shown:
                print("  " + label + ": " + ", ".join(shown))

        serving = results.get("serving", {})
        print("headline (results.json has the rest):")
        show("check", ("ok", get(results, "check", "ok"), ""), ("failures", get(results, "check", "failures"), "d"))
        show("one stream", ("first audio p50 ms", get(serving, "single_stream", "first_audio_ms_p50"), ".0f"),
             ("x real time", get(serving, "single_stream", "x_realtime"), ".2f"),
             ("ms per frame", get(serving, "single_stream", "ms_per_frame"), ".1f"))
        for level in serving.get("sweep") or []:
            show("%d streams" % level["streams"], ("first audio p50 ms", level.get("first_audio_ms_p50"), ".0f"),
                 ("p95 ms", level.get("first_audio_ms_p95"), ".0f"), ("slowest x real time", level.get("x_realtime_min"), ".2f"))
        show("memory GiB", ("8-row server peak", get(serving, "server_defaults_memory", "peak_allocated_gib"), ".2f"),
             ("reserved", get(serving, "server_defaults_memory", "peak_reserved_gib"), ".2f"),
             ("run peak", serving.get("peak_gpu_memory_gib"), ".2f"),
             ("server process (nvidia-smi) MiB", get(results, "socket", "gpu_memory", "server_process_mib"), "d"))
        for step in get(results, "profile", "step") or []:
            show("step at %d rows" % step["rows"], ("kernels per replay", step.get("kernels_per_replay"), ".0f"),
                 ("operators (CPU)", step.get("kernel_ops_per_step"), "d"),
                 ("replay ms", step.get("replay_ms"), ".2f"), ("ungraphed ms", step.get("ungraphed_step_ms"), ".1f"))
        for loop in get(results, "profile", "loop") or []:
            show("loop, codec " + loop.get("codec", "?"), ("decode share", loop.get("decode_share_of_batch_thread"), ".2f"),
                 ("codec overlapping steps", loop.get("codec_overlap_fraction"), ".2f"),
                 ("GPU busy ms", loop.get("gpu_busy_ms"), ".0f"), ("of span ms", loop.get("gpu_span_ms"), ".0f"))
        show("socket", ("first audio p50 ms", get(results, "socket", "sequential", "first_audio_ms_p50"), ".0f"),
             ("%s clients p95 ms" % get(results, "socket", "concurrent", -1, "clients"),
              get(results, "socket", "concurrent", -1, "first_audio_ms_p95"), ".0f"))
        for peers in ("faster", "official"):
            for row in get(results, peers, "rows") or []:
                show(row["engine"], ("first audio ms", row.get("first_audio_ms"), ".0f"),
                     ("x real time", row.get("speed_x_realtime"), ".2f"))
    with open(path + ".partial", "w") as f:
        json.dump(results, f, indent=1)
    os.replace(path + ".partial", path)
'
results() { command python3 -c "$RESULTS_PY" "$out" "$work" "$@"; }

deadline=$(( $(date +%s) + ${GPU_RUN_SECONDS:-540} ))

step() {  # step NAME LOG COMMAND...: COMMAND under timeout (LIMIT[NAME], cut to the deadline), its
          # output appended to $out/LOG; its status and $work/NAME.json then merged into results.json
    local name=$1 log=$2 limit=${LIMIT[$1]} left started rc status
    shift 2
    rm -f "$work/$name.json"
    left=$(( deadline - $(date +%s) - 5 ))
    if [ "$left" -lt 20 ]; then
        echo "== SKIPPED $name (out of time, ${left}s left): $*" | tee -a "$out/$log"
        results step "$name" skipped 0 "$limit"
        return 1
    fi
    [ "$limit" -le "$left" ] || limit=$left
    echo "== $(date -u +%H:%M:%S) $name: $* (limit ${limit}s)" | tee -a "$out/$log"
    started=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$out/$log"
    rc=${PIPESTATUS[0]}
    case $rc in 0) status=ok ;; 124 | 137) status=timed-out ;; *) status="exit-$rc" ;; esac
    results step "$name" "$status" $(( $(date +%s) - started )) "$limit"
    [ "$rc" -eq 0 ] || { echo "== FAILED $name ($status)" | tee -a "$out/$log"; return 1; }
}

preflight_ran=
preflight() {  # the checkpoint starts building in the background once the wheels are in (`all`, bench)
    preflight_ran=1
    step gpu preflight.log bash "$self" _gpu
    step wheels preflight.log bash "$self" _wheels
    [ -z "${1:-}" ] || start_checkpoint
    step requires preflight.log bash "$self" _requires
    step imports preflight.log bash "$self" _imports
}

ours_ready() {  # the preflight found ours and the server importable (in this call or an earlier one)
    [ -f "$work/ok-ours" ] || [ -n "$preflight_ran" ] || preflight "${1:-}"
    [ -f "$work/ok-ours" ] || { echo "preflight failed: our steps not run" | tee -a "$out/preflight.log"; return 1; }
}

checkpoint_pid=
checkpoint_tried=
start_checkpoint() {  # in the background; have_checkpoint waits for it
    [ -f "$ckpt/config.json" ] || [ -n "$checkpoint_tried" ] || {
        checkpoint_tried=1
        step checkpoint bench.log bash "$self" _checkpoint &
        checkpoint_pid=$!
    }
}

have_checkpoint() {  # have_checkpoint STEP: the 1.7B checkpoint, waited for, or built now if nobody
                    # tried; false, and STEP recorded as not run, if there is none
    if [ -n "$checkpoint_pid" ]; then
        wait "$checkpoint_pid"
        checkpoint_pid=
    fi
    if [ ! -f "$ckpt/config.json" ] && [ -z "$checkpoint_tried" ]; then
        checkpoint_tried=1
        step checkpoint bench.log bash "$self" _checkpoint
    fi
    [ -f "$ckpt/config.json" ] || not_run "$1" "no 1.7B checkpoint"
}

kernels_pid=
start_kernels() {  # in the background beside check: both are small on the GPU, and neither is timed
    step kernels kernels.log env PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 -m pytest -q -x \
        -p no:cacheprovider tests/test_kernels.py tests/test_triton_step.py -k "not compiles" &
    kernels_pid=$!
}

wait_kernels() {  # before anything is timed
    [ -z "$kernels_pid" ] || wait "$kernels_pid"
    kernels_pid=
}

not_run() {  # not_run STEP WHY: a step that cannot run, recorded as such (a failure)
    echo "== NOT RUN $1: $2" | tee -a "$out/bench.log"
    results step "$1" not-run 0 "${LIMIT[$1]}"
    return 1
}

check() {  # the graphs alone, float32 with TF32 off: fast, and it tells graph faults from compile faults
    step check check.log python3 tools/gpu_check.py --dtype float32 --compile false --json "$work/check.json"
}

compiled() {  # the compiled fused step (--compile true): on 2026-11-29 it outlasted 150 s on the tiny checkpoint
    step compiled check.log python3 tools/gpu_check.py --dtype bfloat16 --compile true --json "$work/compiled.json"
}

serving() {  # the engine's headline figures: one stream, the frame split, 8-row memory, the sweep, peak memory
    have_checkpoint serving || return
    step serving bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --runner cuda-graphs --frames 40 --runs 3 --sweep 1,8,32 --server-rows 8 --json "$work/serving.json"
}

profile() {  # kernels per replay at 1 and 32 rows; codec kernels against the steps, codec inline and thread
    have_checkpoint profile || return
    step profile bench.log python3 benchmarks/gpu_profile.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --rows 1,32 --kv-len 256 --replays 3 --timed 20 --streams 8 --frames 12 --codec inline,thread \
        --json "$work/profile.json"
}

socket() {  # first audio at the Wyoming socket, the server's default 8 rows (it logs its GPU memory)
    have_checkpoint socket || return
    step socket bench.log env PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 benchmarks/socket_bench.py \
        --checkpoint "$ckpt" --device cuda --frames 12 --runs 10 --concurrency 1,8 --max-batch 8 \
        --server-log "$out/server.log" --json "$work/socket.json"
}

faster() {  # ours vs faster-qwen3-tts, one stream each: its chunk 1 (first audio), then 12 (its default)
    have_checkpoint faster || return
    [ -f "$work/ok-faster" ] || { not_run faster "faster-qwen3-tts did not import"; return; }
    step faster bench.log env FASTER_RUNNER_MORE_CHUNKS=12 python3 benchmarks/bench_engine.py --checkpoint "$ckpt" \
        --device cuda --dtype bfloat16 --frames 40 --runs 2 --faster-python python3 --faster-site /tmp/site-faster \
        --faster-chunk 1 --json "$work/faster.json"
}

official() {  # ours vs the official qwen-tts, one stream each (it cannot stream: its first audio is its whole clip)
    have_checkpoint official || return
    [ -f "$work/ok-official" ] || { not_run official "the official qwen-tts did not import"; return; }
    step official bench.log python3 benchmarks/bench_engine.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --frames 40 --runs 2 --oracle-python python3 --oracle-site /tmp/site-official --json "$work/official.json"
}

int8() {  # int8 weights on CUDA: the uncompiled path converts every weight on each call; not in `all`
    have_checkpoint int8 || return
    step int8 bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 \
        --runner cuda-graphs --quantize int8 --frames 40 --runs 2 --sweep 1,8 --server-rows 0 --json "$work/int8.json"
}

codec_thread() {  # the batch scheduler with its codec thread, to compare with inline (serving's sweep)
    have_checkpoint codec-thread || return
    step codec-thread bench.log python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda \
        --dtype bfloat16 --runner cuda-graphs --codec thread --frames 40 --runs 1 --sweep 1,8,32 --server-rows 0 \
        --json "$work/codec-thread.json"
}

bench() { serving; profile; socket; faster; official; }

limits=()
for name in "${!LIMIT[@]}"; do limits+=("$name=${LIMIT[$name]}"); done
commit=${GPU_RUN_COMMIT:-}
[ -n "$commit" ] || commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown) (the git HEAD here: may be stale)"
results meta "$what" "$commit" "${GPU_RUN_SECONDS:-540}" "${limits[@]}"

case "$what" in
    all)  # ALL's order; the checkpoint builds from the wheels on, beside requires, imports and check;
          # the kernels' tests run beside check
        preflight with-checkpoint
        if ours_ready; then
            start_kernels; check; wait_kernels; serving; profile; socket; faster; official
        else
            for name in kernels check serving profile socket faster official; do not_run "$name" "ours did not import"; done
        fi ;;
    preflight) preflight ;;
    bench) ours_ready with-checkpoint && bench ;;
    check | compiled | serving | profile | socket | faster | official | int8)
        ours_ready && "$what" ;;
    codec-thread) ours_ready && codec_thread ;;
    kernels) ours_ready && { start_kernels; wait_kernels; } ;;
    *) echo "usage: $0 [all|preflight|kernels|check|bench|serving|profile|socket|faster|official|compiled|int8|codec-thread]"
       exit 2 ;;
esac
[ -z "$checkpoint_pid" ] || wait "$checkpoint_pid"
echo "== $what done; results in $out:"
results summary | tee -a "$out/preflight.log"
ls "$out"
command python3 -c "import json, sys; sys.exit(1 if json.load(open('$out/results.json'))['failed_steps'] else 0)"

#!/usr/bin/env bash
# Run ON the GPU machine (device tool), from the repository root, with .whl carried along:
#   bash benchmarks/gpu_run.sh [check|serve|compare|all]
# check:   tools/gpu_check.py (CUDA graphs and batching give the single-stream codes)
# serve:   benchmarks/serving_bench.py on a full-size 1.7B Base random checkpoint (sweep 1..64), and
#          benchmarks/socket_bench.py: first audio at the Wyoming socket through the real server
# compare: benchmarks/bench_engine.py: ours vs the official qwen-tts vs faster-qwen3-tts, same checkpoint
# Results go to $OUT (or ./gpu-results) as JSON and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
out="${OUT:-gpu-results}"
mkdir -p "$out"
install() {  # install carried wheels into their own directory
    local name="$1"
    [ -d ".whl/$name" ] || { echo "missing .whl/$name (run benchmarks/gpu_wheels.sh here first)"; exit 2; }
    python3 -m pip install -q --no-index --no-deps --no-compile --target "/tmp/site-$name" .whl/"$name"/*.whl
}
install ours
export PYTHONPATH="/tmp/site-ours:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
ckpt=/tmp/bench-checkpoints/1.7B-Base
if [ ! -d "$ckpt" ]; then
    python3 benchmarks/make_checkpoint.py --config 1.7B-Base --out "$ckpt" | tee "$out/build.log"
fi
if [ "$what" = check ] || [ "$what" = all ]; then
    python3 tools/gpu_check.py 2>&1 | tee "$out/gpu_check.log"
    python3 tools/gpu_check.py --checkpoint "$ckpt" --dtype float32 2>&1 | tee -a "$out/gpu_check.log"
fi
if [ "$what" = serve ] || [ "$what" = all ]; then
    python3 benchmarks/serving_bench.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 --runner cuda-graphs \
        --frames 50 --runs 10 --sweep 1,4,8,16,32,64 --json "$out/serving.json" 2>&1 | tee "$out/serving.log"
    install server
    PYTHONPATH="/tmp/site-server:$PYTHONPATH" python3 benchmarks/socket_bench.py --checkpoint "$ckpt" --device cuda \
        --runs 20 --concurrency 1,8,32 --max-batch 32 --json "$out/socket.json" 2>&1 | tee "$out/socket.log"
fi
if [ "$what" = compare ] || [ "$what" = all ]; then
    install official
    install faster
    python3 benchmarks/bench_engine.py --checkpoint "$ckpt" --device cuda --dtype bfloat16 --frames 50 --runs 5 \
        --oracle-python python3 --oracle-site /tmp/site-official --faster-python python3 --faster-site /tmp/site-faster \
        --json "$out/compare.json" 2>&1 | tee "$out/compare.log"
fi

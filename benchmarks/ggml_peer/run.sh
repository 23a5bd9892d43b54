#!/usr/bin/env bash
# Times the GGML peer as benchmarks/bench_engine.py times ours: same text, 30 frames, 2 threads,
# the ICL voice from the same synthetic reference and transcript (extracted once, untimed), one
# untimed warm-up after loading, then RUNS timed syntheses; prints the medians as one JSON line.
#   bash benchmarks/ggml_peer/run.sh [q8_0|f16] [STREAM 1|0] [RUNS] [WORK_DIR]
# STREAM=1 uses the port's streaming (its default 1.0 s chunks with 2 s of left context).
# THREADS (default 2) and FRAMES (default 30) from the environment, as bench_engine.py's --cpu-table sets them.
set -euo pipefail
quant=${1:-q8_0}; stream=${2:-1}; runs=${3:-3}; work=${4:-/tmp/ggml-peer}
threads=${THREADS:-2}; frames=${FRAMES:-30}
repo=$(dirname "$(realpath "$0")")/../..
python=${PYTHON:-python3}  # one that imports numpy and soundfile (our .venv's)
text=$(cd "$repo" && "$python" -c "from benchmarks.bench_engine import TEXT; print(TEXT)")
ref_text=$(cd "$repo" && "$python" -c "from benchmarks.bench_engine import REF_TEXT; print(REF_TEXT)")
(cd "$repo" && PYTHONPATH=. "$python" -c "
from pathlib import Path; from benchmarks.bench_engine import write_reference; write_reference(Path('$work/reference.wav'))")
"$work/peer_bench" "$work/models-$quant" "$text" "$threads" "$frames" "$stream" 1.0 1 "$runs" 42 "$work/reference.wav" "$ref_text" \
    2>/dev/null | QUANT=$quant STREAM=$stream THREADS=$threads "$python" -c '
import json, os, statistics, sys
runs = [json.loads(line) for line in sys.stdin if line.startswith("{")]
runs = [r for r in runs if not r["warmup"]]
firsts = [r["first_audio_ms"] for r in runs if r["first_audio_ms"] is not None]
print(json.dumps({"engine": "qwen3-tts.cpp (GGML) " + os.environ["QUANT"], "stream": os.environ["STREAM"] == "1",
                  "threads": int(os.environ["THREADS"]), "frames": statistics.median(r["frames"] for r in runs),
                  "total_s": round(statistics.median(r["wall_s"] for r in runs), 3),
                  "x_realtime": round(statistics.median(r["audio_s"] / r["wall_s"] for r in runs), 3),
                  "first_audio_ms": round(statistics.median(firsts)) if firsts else None, "runs": len(runs)}))'

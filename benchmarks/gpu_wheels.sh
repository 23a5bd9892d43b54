#!/usr/bin/env bash
# Run HERE (a machine whose pip reaches a package index), before using the GPU machine, which
# reaches none. Gathers, for CPython 3.12 on x86-64 Linux, every wheel the GPU machine lacks into
# .whl/ (git-ignored; the device tool carries it: `carry: [".whl"]`), one folder per group,
# each installed by gpu_run.sh into /tmp/site-GROUP:
#   .whl/ours      our engine's runtime deps missing there (soxr, soundfile and its cffi)
#   .whl/server    the Wyoming server's deps missing there
#   .whl/official  the official qwen-tts 0.1.1 and the transformers 4.57.3 stack it pins
#   .whl/faster    faster-qwen3-tts 0.5.4 (a peer using CUDA graphs; pinned: the version whose API
#                  benchmarks/faster_runner.py was checked against) and what it needs: qwen-tts-hf
#                  (its fork of the official code for transformers 5) and transformers 5.15.1, which
#                  shadows the machine's 5.17.0: under 5.17.0 qwen-tts-hf 0.1.1.post1 cannot load a
#                  model (its "default" RoPE initializer reads MimiConfig.rope_theta, which 5.17 no
#                  longer has); under 5.15.1 it loads tests/fixtures/tiny-base (checked 2026-12-03)
# Then checks, here, that every requirement of every gathered wheel (and of our pyproject) is met
# by the gathered wheels or by the GPU machine's own packages (benchmarks/gpu_machine_packages.txt),
# and exits non-zero naming each unmet one.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
rm -rf .whl
get() {
    local dir=".whl/$1"; shift
    mkdir -p "$dir"
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$dir" "$@"
}
# "ours" is on the path of every mode: soundfile and soxr come from it for the peers too.
get ours soxr soundfile cffi pycparser
get server wyoming sentence-stream py3langid audiotsm zeroconf ifaddr \
    fastapi starlette pydantic pydantic-core annotated-types typing-inspection uvicorn python-multipart emoji \
    opentelemetry-api
get official qwen-tts==0.1.1 transformers==4.57.3 "tokenizers>=0.22,<0.23" "huggingface_hub>=0.34,<1.0" \
    accelerate==1.12.0 librosa==0.11.0 audioread pooch decorator platformdirs sox
get faster faster-qwen3-tts==0.5.4 qwen-tts-hf==0.1.1.post1 transformers==5.15.1 "tokenizers>=0.22,<=0.23.0" \
    accelerate==1.12.0 librosa==0.11.0 audioread pooch decorator platformdirs sox
du -sh .whl/*
"$python" benchmarks/wheel_requirements.py wheels .whl

#!/usr/bin/env bash
# Run HERE (a machine with package-registry access), before using the GPU machine, which has none.
# Downloads, for Python 3.12 on x86-64 Linux, what the GPU image lacks, into .whl/ (git-ignored;
# the device tool carries it with `carry: [".whl", "bench-checkpoints"]` if wanted):
#   .whl/ours      our engine's runtime deps missing there (soxr, soundfile)
#   .whl/server    the Wyoming server's deps
#   .whl/official  the official qwen-tts 0.1.1 and the transformers 4.57.3 stack it pins
#   .whl/faster    faster-qwen3-tts (a peer using CUDA graphs) and what it needs
set -euo pipefail
cd "$(dirname "$0")/.."
get() {
    local dir=".whl/$1"; shift
    mkdir -p "$dir"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform any -d "$dir" "$@"
}
get ours soxr soundfile
get server wyoming sentence-stream py3langid audiotsm zeroconf ifaddr pyyaml regex
get official qwen-tts==0.1.1 transformers==4.57.3 "tokenizers>=0.22,<0.23" "huggingface_hub>=0.34,<1.0" \
    accelerate==1.12.0 librosa==0.11.0 audioread pooch soxr soundfile decorator platformdirs einops sox
get faster faster-qwen3-tts qwen-tts-hf librosa==0.11.0 audioread pooch soxr soundfile decorator platformdirs sox einops
du -sh .whl/*

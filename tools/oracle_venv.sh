#!/usr/bin/env bash
# Builds the separate virtual environment that runs the official qwen-tts 0.1.1 code, our
# correctness oracle. It is never a dependency of wyoming_qwen_tts: qwen-tts pins
# transformers 4.57.3 and pulls gradio, torchaudio, onnxruntime and sox, none of which its
# 12 Hz path needs, so it is installed with --no-deps beside only what that path imports.
#
#   tools/oracle_venv.sh [VENV_DIR]        (default: .oracle-venv)
#   VENV_DIR/bin/python tools/make_parity_fixtures.py
set -euo pipefail
venv="${1:-.oracle-venv}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# torch 2.13.0 first and pinned: an unpinned torch may resolve to a multi-GB CUDA build.
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q transformers==4.57.3 accelerate==1.12.0 librosa soundfile einops safetensors numpy
"$venv/bin/pip" install -q --no-deps qwen-tts==0.1.1
echo "oracle venv ready: $venv"

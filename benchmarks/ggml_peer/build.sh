#!/usr/bin/env bash
# Builds the GGML peer (Danmoreng/qwen3-tts.cpp, CPU) and converts a checkpoint for it:
#   bash benchmarks/ggml_peer/build.sh PORT_SRC GGML_SRC CHECKPOINT [WORK_DIR]
# PORT_SRC: the port's source at 16bb5af; GGML_SRC: upstream ggml-org/ggml at af97976c (the port's
# pinned submodule); CHECKPOINT: a checkpoint in the official layout (e.g. our random 0.6B Base).
# WORK_DIR (default /tmp/ggml-peer) gets the build, a venv for the port's converters, the GGUF
# files (models-f16/, models-q8_0/) and peer_bench, the timing harness beside this script.
# CPU_LEVEL=x86-64-v3 builds for AVX2 without AVX-512 (the emulated rows of the CPU table on an
# AVX-512 machine): ggml's own instruction-set options, and the port's -march=native (which ggml's
# C++ files inherit) replaced; check with `objdump -d .../libggml-cpu.so | grep -c zmm` (0).
# Models already converted in WORK_DIR (or linked there from another build) are kept.
set -euo pipefail
port=$(realpath "$1"); ggml=$(realpath "$2"); checkpoint=$(realpath "$3"); work=${4:-/tmp/ggml-peer}
here=$(dirname "$(realpath "$0")")
mkdir -p "$work"
rm -rf "$work/src" && cp -r "$port" "$work/src" && rm -rf "$work/src/ggml" && cp -r "$ggml" "$work/src/ggml"
cpu_flags=(-DGGML_NATIVE=ON)
if [ "${CPU_LEVEL:-native}" = x86-64-v3 ]; then
    sed -i 's/-march=native/-march=x86-64-v3/' "$work/src/CMakeLists.txt"
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
fi
cmake -S "$work/src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release "${cpu_flags[@]}" -DQWEN3_TTS_CUDA=OFF
make -C "$work/build" -j"$(nproc)" qwen3-tts-cli qwen3-tts-quantize
if [ ! -x "$work/venv/bin/python" ]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q gguf safetensors numpy tqdm torch
fi
for type in f16 q8_0; do
    mkdir -p "$work/models-$type"
    if [ -s "$work/models-$type/qwen-tokenizer-12hz-$type.gguf" ]; then continue; fi
    "$work/venv/bin/python" "$work/src/scripts/convert_tts_to_gguf.py" --input "$checkpoint" \
        --output "$work/models-$type/qwen-talker-$type.gguf" --type "$type"
    "$work/venv/bin/python" "$work/src/scripts/convert_tokenizer_to_gguf.py" --input "$checkpoint" \
        --output "$work/models-$type/qwen-tokenizer-12hz-$type.gguf" --type "$type"
done
b="$work/build"
g++ -O2 -std=c++17 "$here/peer_bench.cpp" -I"$work/src/src" -I"$work/src/ggml/include" \
    "$b/libqwen3_tts.a" "$b/libtts_transformer.a" "$b/libaudio_tokenizer_encoder.a" "$b/libspeech_tokenizer_encoder.a" \
    "$b/libaudio_tokenizer_decoder.a" "$b/libtext_tokenizer.a" \
    -L"$b/ggml/src" -lggml -lggml-base -lggml-cpu -Wl,-rpath,"$b/ggml/src" -lpthread -o "$work/peer_bench"
echo "built $work/peer_bench; models in $work/models-f16 and $work/models-q8_0"

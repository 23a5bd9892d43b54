"""Time faster-qwen3-tts (CUDA graphs, static cache; a peer project) on a checkpoint, for
benchmarks/bench_engine.py. Runs where faster-qwen3-tts is importable (carried as wheels to the
GPU machine, see benchmarks/gpu_run.sh) and prints one JSON line.

Version: faster-qwen3-tts 0.5.4 with qwen-tts-hf 0.1.1.post1 (its fork of the official code for
transformers 5, which the GPU machine has: 5.17.0), both pinned in benchmarks/gpu_wheels.sh. 0.5.4
was the newest release when this was checked (2026-12-03), against the source in its wheel: the
calls below are its API. FasterQwen3TTS.from_pretrained(model_name, device, dtype, ...,
local_files_only) loads a local directory through qwen_tts.Qwen3TTSModel.from_pretrained (the torch
backend, CUDA graphs captured on the first generation); generate_voice_clone_streaming(text,
language, ref_audio, ref_text, max_new_tokens, min_new_tokens, ..., chunk_size) yields
(audio chunk, sample rate, timing dict) every chunk_size frames, with EOS suppressed while fewer
than min_new_tokens frames are made; it caches the voice prompt per (ref_audio, ref_text), so after
the warm-up, as for ours (its voice cloned once), the reference is not encoded again in the timed
runs. Its streaming decode re-decodes the reference codes and all
frames so far for the first 25 frames, then a 25-frame window per chunk: small chunks cost it
decoding time, so a second chunk size can be timed in the same process (FASTER_RUNNER_MORE_CHUNKS).

Fixed length as for the other engines: min_new_tokens = frames holds EOS off, max_new_tokens =
frames + 1 stops right after. chunk_size is its streaming granularity in frames: --chunk-size
(bench_engine's --faster-chunk) fills "runs"; each size in the environment variable
FASTER_RUNNER_MORE_CHUNKS (comma-separated, e.g. 12, its default) is timed after it, the same
model and graphs, into "more_chunks" {size: {"runs": [...]}}.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
from peer_args import peer_parser  # beside this script

PINNED = "0.5.4"  # the version whose API this runner was checked against (gpu_wheels.sh gathers it)


def more_chunks() -> list[int]:
    return [int(size) for size in os.environ.get("FASTER_RUNNER_MORE_CHUNKS", "").split(",") if size.strip()]


def main() -> None:
    parser = peer_parser(device="cuda", dtype="bfloat16")
    parser.add_argument("--chunk-size", type=int, default=1)
    args = parser.parse_args()
    extra = more_chunks()

    import faster_qwen3_tts
    from faster_qwen3_tts import FasterQwen3TTS

    version = getattr(faster_qwen3_tts, "__version__", None)
    started = time.perf_counter()
    model = FasterQwen3TTS.from_pretrained(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype),
                                           local_files_only=True)
    load_s = time.perf_counter() - started

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run(chunk_size: int) -> dict:
        sync()
        t0 = time.perf_counter()
        first, samples = None, 0
        for audio, _rate, _timing in model.generate_voice_clone_streaming(
                text=args.text, language="English", ref_audio=args.ref_audio, ref_text=args.ref_text,
                max_new_tokens=args.frames + 1, min_new_tokens=args.frames, chunk_size=chunk_size):
            if first is None:
                sync()
                first = time.perf_counter() - t0
            samples += int(np.asarray(audio).reshape(-1).shape[0])
        sync()
        return {"first_audio_s": first, "total_s": time.perf_counter() - t0, "samples": samples}

    run(args.chunk_size)  # warm-up (captures its graphs)
    result = {"load_s": load_s, "version": version, "pinned": PINNED, "chunk_size": args.chunk_size,
              "runs": [run(args.chunk_size) for _ in range(args.runs)]}
    if extra:
        result["more_chunks"] = {}
        for size in extra:
            run(size)  # its own warm-up: the decode's shapes differ with the chunk size
            result["more_chunks"][str(size)] = {"runs": [run(size) for _ in range(args.runs)]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

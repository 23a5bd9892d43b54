"""Time faster-qwen3-tts (CUDA graphs, static cache; a peer project) on a checkpoint, for
benchmarks/bench_engine.py. Runs where faster-qwen3-tts is importable (carried as wheels to the
GPU machine, see benchmarks/gpu_run.sh) and prints one JSON line.

Fixed length as for the other engines: min_new_tokens = frames holds EOS off, max_new_tokens =
frames + 1 stops right after. chunk_size is its streaming granularity in frames.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
from peer_args import peer_parser  # beside this script


def main() -> None:
    parser = peer_parser(device="cuda", dtype="bfloat16")
    parser.add_argument("--chunk-size", type=int, default=1)
    args = parser.parse_args()

    from faster_qwen3_tts import FasterQwen3TTS

    started = time.perf_counter()
    model = FasterQwen3TTS.from_pretrained(args.checkpoint, device=args.device, dtype=getattr(torch, args.dtype),
                                           local_files_only=True)
    load_s = time.perf_counter() - started

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def run() -> dict:
        sync()
        t0 = time.perf_counter()
        first, samples = None, 0
        for audio, _rate, _timing in model.generate_voice_clone_streaming(
                text=args.text, language="English", ref_audio=args.ref_audio, ref_text=args.ref_text,
                max_new_tokens=args.frames + 1, min_new_tokens=args.frames, chunk_size=args.chunk_size):
            if first is None:
                sync()
                first = time.perf_counter() - t0
            samples += int(np.asarray(audio).reshape(-1).shape[0])
        sync()
        return {"first_audio_s": first, "total_s": time.perf_counter() - t0, "samples": samples}

    run()  # warm-up (captures its graphs)
    print(json.dumps({"load_s": load_s, "runs": [run() for _ in range(args.runs)]}))


if __name__ == "__main__":
    main()

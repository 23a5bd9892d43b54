"""CPU time of one codec decode, plain and through CodecSlots, batch 1 (BENCHMARKS.md, "Codec decode
in slots and CUDA graphs").

    python benchmarks/codec_slots_cpu.py --checkpoint /tmp/avx2-ckpt/0.6B-Base --label after

CPU time of the decoding thread (`time.thread_time`, 1 thread), fastest of `--runs`: on a machine
shared with other jobs, wall-clock times of the same decode vary 10x, the thread's own CPU time far
less. Without engine/codec_slots.py (an older checkout on PYTHONPATH) only the plain decode is timed.
"""

from __future__ import annotations

import argparse
import time

import torch

from wyoming_qwen_tts.engine import QwenTTS


def fastest_ms(fn, runs: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        start = time.thread_time()
        fn()
        times.append(time.thread_time() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    torch.set_num_threads(1)
    decoder = QwenTTS(args.checkpoint, device="cpu", dtype="bfloat16", quantize="int8").codec.decoder
    try:
        from wyoming_qwen_tts.engine.codec_slots import CodecSlots
    except ImportError:
        CodecSlots = None
    results = {}
    with torch.inference_mode():
        for frames in (1, 8):
            codes = torch.randint(0, 1024, (1, frames, 16), generator=torch.Generator().manual_seed(0))
            state = decoder.new_state(1)
            results[f"plain f{frames}"] = fastest_ms(lambda c=codes, s=state: decoder(c, s), args.runs)
            if CodecSlots is not None:
                slots = CodecSlots.for_device(decoder, 8)
                owned = [slots.acquire("stream")]
                results[f"slots f{frames}"] = fastest_ms(lambda c=codes, s=slots, o=owned: s.decode(o, c), args.runs)
    print(args.label, " ".join(f"{name}={ms:.1f}" for name, ms in results.items()), flush=True)


if __name__ == "__main__":
    main()

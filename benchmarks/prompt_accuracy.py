"""What int8 prompts (--int8-prompts auto: the CPU's integer matmul for prompts) cost in accuracy,
against float32 weights, the way the engine runs: an ICL voice's prompt prefilled in one call, then
float32's greedy codes fed back one frame per call, as decode steps take them (a few rows: the int8
weight kernel). Reported per variant: relative error of the talker's logits (first code of each
frame) over all frames and at the first frame (the one the prompt alone decides), and how often
their argmax agrees with float32's.

    python benchmarks/prompt_accuracy.py --model /tmp/0.6B-Base --frames 16

Run it under ONEDNN_MAX_CPU_ISA=AVX2 (with the other caps of BENCHMARKS.md) for the 7-bit weights
of a CPU without VNNI; uncapped on a CPU with VNNI for the int8 ones.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_engine import REF_TEXT, write_reference
from benchmarks.quant_accuracy import TEXT, greedy_codes, relative_error
from wyoming_qwen_tts.engine import QwenTTS, VoicePrompt
from wyoming_qwen_tts.engine.quantize import cpu_int8_matmul

VARIANTS = {  # name: (dtype, quantize, int8_prompts)
    "float32-dense": ("float32", "int8", "off"),  # int8 weights, prompts on dequantized weights (before)
    "float32-int8": ("float32", "int8", "auto"),  # int8 weights, int8 prompts (now)
    "bfloat16-dense": ("bfloat16", "int8", "off"),
    "bfloat16-int8": ("bfloat16", "int8", "auto"),
}


@torch.inference_mode()
def stepwise_logits(tts: QwenTTS, voice: VoicePrompt, codes: torch.Tensor) -> torch.Tensor:
    """The talker's float32 logits (F, V) for codes (F, G): the prompt in one call, then a frame per call."""
    talker = tts.model.talker
    dtype = talker.model.norm.weight.dtype
    frames = codes.shape[0]
    prefill = tts.prompts.build(TEXT, voice, "auto", device=tts.device)
    texts = torch.cat((prefill.trailing_text[0], prefill.tts_pad[0].expand(frames, -1)))[:frames]
    inputs = (talker.embed_frames(codes) + texts.to(dtype))[None]
    cache = talker.new_cache(1, prefill.embeds.shape[1] + frames, tts.device, dtype)
    hidden = [talker.prefill(prefill.embeds.to(dtype), cache, row=0)[0, -1:]]
    hidden += [talker.prefill(inputs[:, f:f + 1], cache, row=0)[0] for f in range(frames - 1)]
    return talker.codec_head(torch.cat(hidden)).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="names from VARIANTS, comma-separated")
    args = parser.parse_args()
    names = args.variants.split(",")
    reference = QwenTTS(args.model, device="cpu", dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "reference.wav"
        write_reference(ref)
        voice = reference.clone_voice(ref, REF_TEXT)
    codes = greedy_codes(reference, voice, args.frames)
    expected = stepwise_logits(reference, voice, codes)
    print(f"{args.model}, ICL voice, {args.frames} frames, CPU integer matmul: {cpu_int8_matmul()}")
    print("| variant | talker logits rel. error, all frames | first frame | argmax agreement |")
    print("|---|---:|---:|---:|")
    for name in names:
        dtype, weights, prompts = VARIANTS[name]
        variant = QwenTTS(args.model, device="cpu", dtype=dtype, quantize=weights, int8_prompts=prompts)
        logits = stepwise_logits(variant, voice, codes)
        agreement = float((logits.argmax(-1) == expected.argmax(-1)).float().mean())
        print(f"| {name} | {relative_error(logits, expected):.4f} | {relative_error(logits[:1], expected[:1]):.4f} "
              f"| {agreement:.3f} |", flush=True)
        del variant


if __name__ == "__main__":
    main()

"""The int8 schemes weighed for AVX2-only CPUs, whole model: logit error against float32 (the method
of quant_accuracy.py) and, with --time, a streamed frame run as bench_engine.py times it.

    python benchmarks/avx2_candidates.py --model /tmp/0.6B-Base --frames 16 [--time --threads 2]

Variants (the model float32 in all but the last):
  int8-bf16-inputs  --quantize int8: the CPU int8 kernel takes the activations rounded to bf16 (now)
  int8-f32-scalar   the same kernel fed float32 (its scalar path: the former --quantize int8 with float32)
  fbgemm-dynamic    fbgemm's dynamic int8 linear: activations quantized per call (per tensor, 7 bits
                    on CPUs without VNNI), int8 weights with one scale per output row
  bf16+int8         --dtype bfloat16 --quantize int8 (what `auto` runs on CPUs with native bf16)

Run it under the AVX2 caps of BENCHMARKS.md, "CPU: AVX2-only (emulated)", to time what such a CPU runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.quant_accuracy import compare  # noqa: E402
from wyoming_qwen_tts.engine import QwenTTS, VoicePrompt, quantize  # noqa: E402
from wyoming_qwen_tts.engine import engine as engine_module  # noqa: E402


class FbgemmLinear(nn.Module):
    """An Int8Linear's weights (int8 rows, float32 scales) run by fbgemm's dynamic int8 linear."""

    def __init__(self, layer: quantize.Int8Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = layer.in_features, layer.out_features
        weight = torch._make_per_channel_quantized_tensor(layer.weight, layer.scales.double(),
                                                          torch.zeros(layer.out_features, dtype=torch.long), 0)
        bias = None if layer.bias is None else layer.bias.float()
        self.packed = torch.ops.quantized.linear_prepack(weight, bias)
        self.register_buffer("weight", layer.weight[:1])  # callers read weight.device (a row, not a copy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        out = torch.ops.quantized.linear_dynamic(flat, self.packed, True)  # reduce_range, as torch.ao does
        return out.to(x.dtype).view(*x.shape[:-1], self.out_features)


def to_fbgemm(module: nn.Module) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, quantize.Int8Linear):
            setattr(module, name, FbgemmLinear(child))
        else:
            to_fbgemm(child)


VARIANTS = {  # name: (dtype, quantize, how the int8 linears run)
    "int8-bf16-inputs": ("float32", "int8", None),
    "int8-f32-scalar": ("float32", "int8", "scalar"),
    "fbgemm-dynamic": ("float32", "int8", "fbgemm"),
    "bf16+int8": ("bfloat16", "int8", None),
}


@contextmanager
def variant_patches(kind: str | None):
    if kind == "scalar":
        with mock.patch.object(quantize, "int8_kernel_wants_bf16", lambda dtype: False):
            yield
    elif kind == "fbgemm":
        original = engine_module.quantize_int8

        def quantize_then_fbgemm(module, dtype):
            original(module, dtype)
            to_fbgemm(module)
            return module

        with mock.patch.object(engine_module, "quantize_int8", quantize_then_fbgemm):
            yield
    else:
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--time", action="store_true", help="time a streamed run instead (bench_engine's)")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.time:
        from benchmarks.bench_engine import bench_ours, summarize, write_reference

        with tempfile.TemporaryDirectory() as tmp:
            ref = Path(tmp) / "reference.wav"
            write_reference(ref)
            for name in args.variants.split(","):
                dtype, weights, kind = VARIANTS[name]
                bench_args = argparse.Namespace(checkpoint=args.model, device="cpu", dtype=dtype, quantize=weights,
                                                frames=args.frames, runs=args.runs, max_chunk_frames=8)
                with variant_patches(kind):
                    row = summarize(name, bench_ours(bench_args, ref))
                print(f"| {name} | {row['first_audio_ms']:.0f} ms | {row['total_s']:.2f} s | "
                      f"{row['speed_x_realtime']:.3f}x |", flush=True)
        return
    reference = QwenTTS(args.model, device="cpu", dtype="float32")
    voice = VoicePrompt(kind="xvector", speaker_embedding=torch.ones(reference.model.cfg.talker.hidden_size))
    print(f"{args.model}, {args.frames} teacher-forced frames, against float32 weights")
    print("| variant | logits rel. error talker | code predictor | argmax agreement | audio SNR |")
    print("|---|---|---|---|---|")
    for name in args.variants.split(","):
        dtype, weights, kind = VARIANTS[name]
        with variant_patches(kind):
            variant = QwenTTS(args.model, device="cpu", dtype=dtype, quantize=weights)
            acc = compare(reference, variant, voice, args.frames)
        print(f"| {name} | {acc.talker_rel_error:.4f} | {acc.predictor_rel_error:.4f} | "
              f"{acc.argmax_agreement:.3f} | {acc.audio_snr_db:.1f} dB |", flush=True)
        del variant


if __name__ == "__main__":
    main()

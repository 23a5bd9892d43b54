"""Where the codec decoder's time goes, per module, for one chunk size (batch 1).

    python benchmarks/codec_profile.py --checkpoint /work/bench-checkpoints/0.6B-Base --frames 8 --threads 2

Each module's exclusive time (its own, less the timed modules inside it) from forward hooks,
summed per group in each of `--runs` decodes of a chunk continuing one stream, after a warm-up;
the fastest run per group is printed, in ms per chunk and per frame. `--trace` also prints the aten operators of one
decode (torch.profiler), which shows whether oneDNN reorders weights on each call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict

import torch

from wyoming_qwen_tts.engine import QwenTTS
from wyoming_qwen_tts.engine.codec import (
    CausalConv,
    CausalTransConv,
    CodecDecoder,
    ConvNeXtBlock,
    DecoderBlock,
    PreTransformer,
    ResidualUnit,
    SnakeBeta,
)

TIMED = (CausalConv, CausalTransConv, ConvNeXtBlock, PreTransformer, ResidualUnit, SnakeBeta)


def group_of(name: str, module: torch.nn.Module, decoder: CodecDecoder) -> str:
    """'pre_transformer', 'upsample ConvNeXt', 'block 1 ResidualUnit conv', ... for a module's name."""
    kind = type(module).__name__
    if name.startswith("pre_conv"):
        return "pre_conv"
    if name.startswith("pre_transformer"):
        return "pre_transformer"
    if name.startswith("upsample"):
        return f"upsample {kind}"
    parts = name.split(".")
    if parts[0] != "decoder":
        return kind
    index = int(parts[1])
    if isinstance(decoder.decoder[index], DecoderBlock):
        inner = "ResidualUnit conv" if kind in ("ResidualUnit", "CausalConv") else kind
        return f"block {index} {inner}"
    return "first conv" if index == 0 else f"final {kind}"


class ExclusiveTimer:
    """Forward hooks that add each timed module's own time (children's subtracted) to its group."""

    def __init__(self, decoder: CodecDecoder) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.stack: list[list[float]] = []
        self.handles = []
        for name, module in decoder.named_modules():
            if isinstance(module, TIMED):
                self._hook(module, group_of(name, module, decoder))

    def _hook(self, module: torch.nn.Module, group: str) -> None:
        def before(_module, _args):
            self.stack.append([time.perf_counter(), 0.0])

        def after(_module, _args, _out):
            start, children = self.stack.pop()
            spent = time.perf_counter() - start
            self.totals[group] += spent - children
            if self.stack:
                self.stack[-1][1] += spent

        self.handles.append(module.register_forward_pre_hook(before))
        self.handles.append(module.register_forward_hook(after))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def profile(decoder: CodecDecoder, frames: int, runs: int) -> tuple[dict[str, float], float, float]:
    """The fastest of `runs` ms per chunk of each group, and the fastest and median ms of the
    whole decode (without hooks). The fastest, as on a shared machine another process's burst
    stalls a whole run (the two OpenMP threads wait for each other) and says nothing of the code."""
    codes = torch.randint(0, 1024, (1, frames, decoder.cfg.num_quantizers), generator=torch.Generator().manual_seed(0))
    state = decoder.new_state()
    with torch.inference_mode():
        for _ in range(3):
            decoder(codes, state)
        plain = []
        for _ in range(runs):
            start = time.perf_counter()
            decoder(codes, state)
            plain.append(time.perf_counter() - start)
        timer = ExclusiveTimer(decoder)
        per_run: list[dict[str, float]] = []
        for _ in range(runs):
            timer.totals.clear()
            start = time.perf_counter()
            decoder(codes, state)
            hooked = time.perf_counter() - start
            per_run.append({**timer.totals, "rest (quantizer, glue, hooks)": hooked - sum(timer.totals.values())})
        timer.remove()
    groups = {name: 1000 * min(run[name] for run in per_run) for name in per_run[0]}
    return groups, 1000 * min(plain), 1000 * statistics.median(plain)


def trace(decoder: CodecDecoder, frames: int) -> None:
    codes = torch.zeros(1, frames, decoder.cfg.num_quantizers, dtype=torch.int64)
    state = decoder.new_state()
    with torch.inference_mode():
        decoder(codes, state)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            decoder(codes, state)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--frames", default="8,1", help="chunk sizes, comma-separated")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trace", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    decoder = QwenTTS(args.checkpoint, device="cpu", dtype="bfloat16", quantize="int8").codec.decoder
    for frames in (int(f) for f in args.frames.split(",")):
        groups, fastest, median = profile(decoder, frames, args.runs)
        print(f"\n{frames}-frame chunk, {args.runs} runs without hooks: fastest {fastest:.1f} ms "
              f"({fastest / frames:.1f} ms per frame), median {median:.1f} ms ({median / frames:.1f} ms per frame)")
        print("  fastest run of each group, with hooks:")
        for name, ms in sorted(groups.items(), key=lambda item: -item[1]):
            print(f"  {name:<32} {ms:8.2f} ms  {ms / frames:7.2f} ms/frame")
        if args.trace:
            trace(decoder, frames)


if __name__ == "__main__":
    main()

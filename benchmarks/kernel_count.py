"""Kernels per frame step: the frame step called eagerly against it compiled (engine/runners.py).

    python benchmarks/kernel_count.py --config 1.7B-Base --rows 8 --kv-len 256

A step at the published layer counts (1.7B: 28 talker layers, 5 code-predictor layers, 16 code
groups, the real vocabularies) with every width divided by --width-divisor, random weights, fp32,
on the CPU. Widths change how long a kernel runs, not how many there are.
  - eager: every operator the step dispatches (TorchDispatchMode), and those that are not views
    (a view launches nothing; each of the others is at least one kernel on a GPU). The engine's
    custom ops (qwen_tts::*, engine/kernels.py) reach the mode whole and count once: the mode is
    off while an op runs, so the aten ops of its CPU reference are not seen (on CUDA the op is one
    Triton kernel; the default draw, qwen_tts::choose, is its top-k/top-p ops and one kernel).
    q/k/v and gate/up are concatenated as the engine does at load (--separate-weights: not);
  - --device cuda --profile: the eager step's CUDA kernels as torch.profiler records them (the
    launches themselves, views and custom ops resolved);
  - fused: torch.compile(fullgraph=True) of the whole step, then the calls in Inductor's generated
    program (run_and_get_code): its fused kernels, plus the library calls (matmuls, attention,
    topk...) it makes. On CUDA the same graph becomes Triton kernels instead of C++ ones; fusion
    there differs a little in detail, not in kind.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from wyoming_qwen_tts.engine.checkpoint import parse_model_config  # noqa: E402
from wyoming_qwen_tts.engine.generate import DecodeBatch  # noqa: E402
from wyoming_qwen_tts.engine.layers import fuse_weights  # noqa: E402
from wyoming_qwen_tts.engine.runners import BucketedRunner, FrameStep, step_plan_of  # noqa: E402
from wyoming_qwen_tts.engine.sampling import SamplingConfig, SamplingParams  # noqa: E402
from wyoming_qwen_tts.engine.talker import Talker  # noqa: E402

WIDTHS = ("hidden_size", "intermediate_size", "head_dim", "text_hidden_size")


def scaled_config(name: str, divisor: int):
    raw = json.loads((REPO / "tools" / "published_configs" / f"{name}.json").read_text())
    for section in (raw["talker_config"], raw["talker_config"]["code_predictor_config"]):
        for key in WIDTHS:
            if key in section:
                section[key] = max(8, section[key] // divisor)
    raw["talker_config"]["text_vocab_size"] = 1024  # only prompts use the text embedding
    if "speaker_encoder_config" in raw:
        raw["speaker_encoder_config"]["enc_dim"] = raw["talker_config"]["hidden_size"]
    return parse_model_config(raw, name)


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        # A custom op (qwen_tts::...) arrives here whole, counted once: the mode is off while it runs.
        packet = func.overloadpacket
        self.ops[packet.__name__ if func.namespace == "aten" else f"{func.namespace}.{packet.__name__}"] += 1
        self.views += bool(func.is_view)
        return func(*args, **(kwargs or {}))


KERNEL_CALL = re.compile(r"^\s+(?:\w+(?:, \w+)* = )?((?:cpp_fused|triton)\w*|extern_kernels\.\w+|"
                         r"torch\.ops\.\w+\.\w+(?:\.\w+)?|aten\.\w+(?:\.\w+)?)\(")
NOT_KERNELS = ("empty_strided", "empty", "as_strided", "reinterpret_tensor", "alloc_from_pool")


def kernel_calls(code: str) -> Counter[str]:
    """The calls of the generated program's call(): fused kernels by kind, library calls by name."""
    calls: Counter[str] = Counter()
    body = code[code.index("def call(") :]
    for line in body.splitlines():
        match = KERNEL_CALL.match(line)
        if match and not match.group(1).endswith(NOT_KERNELS):
            name = match.group(1)
            calls["fused kernel" if name.startswith(("cpp_fused", "triton")) else name] += 1
    return calls


def profiled_kernels(step) -> int:
    """GPU kernels one call of step launches (after a warm-up call), as torch.profiler records them."""
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for event in prof.events() if event.device_type == torch.autograd.DeviceType.CUDA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="1.7B-Base")
    parser.add_argument("--width-divisor", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--kv-len", type=int, default=256)
    parser.add_argument("--sampling", choices=("default", "greedy"), default="default")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--separate-weights", action="store_true",
                        help="q/k/v and gate/up as in the checkpoint, not concatenated at load")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", action="store_true", help="also count the step's GPU kernels (torch.profiler)")
    parser.add_argument("--eager-only", action="store_true", help="skip the (slow) compile of the fused step")
    args = parser.parse_args()

    from torch._inductor.utils import run_and_get_code

    torch.manual_seed(0)
    cfg = scaled_config(args.config, args.width_divisor)
    talker = Talker(cfg).eval().to(args.device)
    if not args.separate_weights:
        fuse_weights(talker)  # as the engine loads a checkpoint
    sampling = (SamplingConfig(talker=SamplingParams(temperature=0.9, top_k=50, repetition_penalty=1.05),
                               predictor=SamplingParams(temperature=0.9, top_k=50))
                if args.sampling == "default" else SamplingConfig.greedy())
    batch = DecodeBatch(talker, max_rows=args.rows, max_len=args.kv_len, capacity=args.kv_len)  # steps read kv_len
    runner = BucketedRunner(batch, row_buckets=(args.rows,), len_buckets=(args.kv_len,))
    params = (runner.params[0].rows(args.rows), runner.params[1].rows(args.rows))
    batch._plan = step_plan_of(talker, sampling)  # the plan of a batch of such rows
    report = {"config": args.config, "layers": {"talker": cfg.talker.num_layers, "predictor": cfg.predictor.num_layers},
              "width_divisor": args.width_divisor, "rows": args.rows, "kv_len": args.kv_len,
              "sampling": args.sampling, "plan": [p._asdict() for p in batch._plan], "torch": torch.__version__}
    with torch.inference_mode():
        counter = OpCounter()
        with counter:
            FrameStep(compiled=False)(batch, args.rows, args.kv_len, params)
        total = sum(counter.ops.values())
        report["eager"] = {"aten_ops": total, "kernel_ops": total - counter.views,
                           "top": dict(counter.ops.most_common(12))}
        print(f"eager step: {total} aten ops, {total - counter.views} not views", flush=True)
        print(f"  most dispatched: {dict(counter.ops.most_common(16))}", flush=True)
        if args.profile:
            report["eager"]["gpu_kernels"] = profiled_kernels(lambda: FrameStep(compiled=False)(batch, args.rows, args.kv_len, params))
            print(f"eager step on the GPU: {report['eager']['gpu_kernels']} kernels (torch.profiler)", flush=True)
        if args.eager_only:
            if args.json:
                args.json.write_text(json.dumps(report, indent=2))
            return

        step = FrameStep(compiled=True, whole=True)
        started = time.perf_counter()
        _, codes = run_and_get_code(step, batch, args.rows, args.kv_len, params)
        report["compile_s"] = time.perf_counter() - started
        calls = Counter()
        for code in codes:
            calls.update(kernel_calls(code))
        report["fused"] = {"kernels": sum(calls.values()), "by_kind": dict(calls.most_common()),
                           "graphs": len(codes)}
        print(f"fused step: {sum(calls.values())} kernel calls in {len(codes)} graph(s), compiled in "
              f"{report['compile_s']:.0f} s: {dict(calls.most_common())}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

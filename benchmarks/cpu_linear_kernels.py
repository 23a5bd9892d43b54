"""Per-call time of the candidate CPU kernels for a decode step's linears (matrix-vector products).

    python benchmarks/cpu_linear_kernels.py [--threads 2] [--rows 1,8] [--repeats 5] [--json out.json]

A decode step multiplies a few rows of activations (1 per stream; 8 in a batch) by each weight
once, so its time is set by how fast a kernel streams the weight from memory. Each candidate is
timed over enough copies of the weight that they do not fit the CPU's cache (at least 128 MB in
the candidate's own format), the fastest of --repeats passes, in microseconds per call.

To see what an AVX2-only CPU would get on a CPU with AVX-512, cap every library's instruction set
(each reads its own variable; none reads another's):

    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \
        FBGEMM_ENABLE_INSTRUCTIONS=AVX2 python benchmarks/cpu_linear_kernels.py

Candidates (activations float32 unless said):
  fp32          F.linear on float32 weights (MKL sgemm/sgemv)
  int8pack      aten._weight_int8pack_mm, int8 weights, one scale per output row (--quantize int8)
  int8pack-bf16 the same with bfloat16 activations (what `auto` runs on CPUs with native bf16)
  fbgemm-dyn    torch.ao dynamic int8 linear (fbgemm): activations quantized per call to uint8,
                int8 weights with one scale per output row, int32 accumulation
  bf16-upcast   bfloat16 weights, converted to float32 at every call, then F.linear
  bf16-gemv     F.linear in bfloat16 (activations cast), the result cast back to float32
  int4pack      aten._weight_int4pack_mm_for_cpu, 4-bit weights, groups of 128 along the input
  int4pack-bf16 the same with bfloat16 activations
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

# (out, in) of the linears a decode step runs most: the MLP projections (gate/up, then down).
SHAPES = {"0.6B up 3072x1024": (3072, 1024), "0.6B down 1024x3072": (1024, 3072),
          "1.7B up 6144x2048": (6144, 2048), "1.7B down 2048x6144": (2048, 6144)}
MIN_BYTES = 128e6
INT4_GROUP = 128


def int4_pack(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit per group of `group` inputs, in the layout aten's CPU int4 kernel takes:
    (packed uint8 (out, in / 2), scales_and_zeros (in / group, out, 2) float32), weight ~=
    (q - 8) * scale + zero."""
    out_f, in_f = weight.shape
    w = weight.float().reshape(out_f, in_f // group, group)
    low, high = w.amin(dim=2), w.amax(dim=2)
    scales = ((high - low) / 15).clamp(min=1e-6)
    zeros = low + scales * 8
    q = torch.round((w - low[..., None]) / scales[..., None]).clamp(0, 15).to(torch.int32).reshape(out_f, in_f)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
    return packed, torch.stack((scales, zeros), dim=2).transpose(0, 1).contiguous()


def make(candidate: str, weight: torch.Tensor):
    """(callable taking float32 x, bytes of its weight)."""
    if candidate == "fp32":
        w = weight.clone()
        return (lambda x: F.linear(x, w)), w.numel() * 4
    if candidate in ("int8pack", "int8pack-bf16"):
        scales = weight.abs().amax(dim=1) / 127
        q = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        if candidate == "int8pack":
            return (lambda x: torch.ops.aten._weight_int8pack_mm(x, q, scales)), q.numel()
        s16 = scales.bfloat16()
        return (lambda x: torch.ops.aten._weight_int8pack_mm(x.bfloat16(), q, s16).float()), q.numel()
    if candidate == "fbgemm-dyn":
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        dense = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        dense.weight.data = weight.clone()
        dense.qconfig = per_channel_dynamic_qconfig
        layer = DynamicLinear.from_float(dense)
        return layer, weight.numel()
    if candidate == "bf16-upcast":
        w = weight.bfloat16()
        return (lambda x: F.linear(x, w.float())), w.numel() * 2
    if candidate == "bf16-gemv":
        w = weight.bfloat16()
        return (lambda x: F.linear(x.bfloat16(), w).float()), w.numel() * 2
    if candidate in ("int4pack", "int4pack-bf16"):
        packed, sz = int4_pack(weight)
        if candidate == "int4pack":
            return (lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, INT4_GROUP, sz)), packed.numel()
        sz16 = sz.bfloat16()
        return (lambda x: torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), packed, INT4_GROUP, sz16).float(),
                packed.numel())
    raise ValueError(candidate)


CANDIDATES = ("fp32", "int8pack", "int8pack-bf16", "fbgemm-dyn", "bf16-upcast", "bf16-gemv", "int4pack", "int4pack-bf16")


@torch.inference_mode()
def time_candidate(candidate: str, shape: tuple[int, int], rows: int, repeats: int) -> dict:
    torch.manual_seed(0)
    weight = torch.randn(shape) / shape[1] ** 0.5
    first, nbytes = make(candidate, weight)
    copies = max(2, int(MIN_BYTES // nbytes) + 1)
    calls = [first] + [make(candidate, weight)[0] for _ in range(copies - 1)]
    x = torch.randn(rows, shape[1])
    reference = F.linear(x, weight)
    error = float((first(x).float() - reference).norm() / reference.norm())
    for call in calls:  # warm-up: primitives, page faults
        call(x)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for call in calls:
            call(x)
        best = min(best, (time.perf_counter() - started) / copies)
    return {"candidate": candidate, "shape": list(shape), "rows": rows, "us": best * 1e6,
            "gb_per_s": nbytes / best / 1e9, "weight_bytes": nbytes, "copies": copies, "rel_error": error}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="1,8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--candidates", default=",".join(CANDIDATES))
    parser.add_argument("--shapes", default=",".join(SHAPES), help="names from SHAPES, comma-separated")
    parser.add_argument("--json", help="append one JSON line per measurement here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    env = {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                                          "FBGEMM_ENABLE_INSTRUCTIONS")}
    print(f"torch {torch.__version__}, ATen capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{args.threads} threads, env {env}", flush=True)
    for name in args.shapes.split(","):
        for rows in (int(r) for r in args.rows.split(",")):
            for candidate in args.candidates.split(","):
                r = time_candidate(candidate, SHAPES[name], rows, args.repeats)
                r.update(threads=args.threads, env=env, capability=torch.backends.cpu.get_cpu_capability())
                print(f"{name:22s} rows {rows}  {candidate:14s} {r['us']:9.1f} us  {r['gb_per_s']:5.1f} GB/s  "
                      f"err {r['rel_error']:.4f}", flush=True)
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as out:
                        out.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()

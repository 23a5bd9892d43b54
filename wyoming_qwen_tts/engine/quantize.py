"""Weight-only int8 for the talker and the code predictor.

Every frame reads all their weights once per step (the code predictor's 15 times), so on a CPU or
a small GPU their speed is the memory bandwidth: int8 weights halve what bf16 reads. Each output
row keeps one scale (absmax / 127); activations stay in the model's dtype.

The matmul is PyTorch's own: on CPU `aten._weight_int8pack_mm` (ATen's vectorised AVX512/AVX2 kernel,
fast with bfloat16 activations only: with float32 ones it runs a scalar loop, 7-9x slower, so a
float32 model hands it its activations rounded to bfloat16 and takes the result back in float32);
elsewhere the gpt-fast form `linear(x, w.to(x.dtype)) * scales`, which torch.compile fuses into
one kernel and which, like the former, never syncs with the host, so CUDA graphs capture it.
Embeddings (the text embedding alone holds 311M of the 1.7B model's weights) are stored the same
way and dequantized row by row as they are gathered.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZE_CHOICES = ("none", "int8", "auto")
# Prompts (prefill) run many rows through a linear at once: there oneDNN's dense bf16 matmul on a
# dequantized copy beats the int8 kernel, whose cost grows with the rows (BENCHMARKS.md, "CPU: bf16
# and int8 weights").
_INT8PACK_MOST_ROWS = 16
# The CPU int8 kernel reads inputs in vector blocks: other widths give wrong results or crash
# (seen with 40 on AVX512); every linear of the released models is a multiple of 128.
_INT8PACK_WIDTH_MULTIPLE = 32


# ATen's CPU kernels are compiled for these instruction sets and picked at start-up (the
# ATEN_CPU_CAPABILITY variable caps the choice): with them the int8 kernel is vectorised for
# bfloat16 activations; without (DEFAULT, or another architecture) it is a scalar loop either way.
_VECTOR_CAPABILITIES = ("AVX2", "AVX512")
# Read once: a call per linear would cost time per frame and break torch.compile's graph.
_ATEN_VECTORISED = torch.backends.cpu.get_cpu_capability() in _VECTOR_CAPABILITIES


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags, as Linux lists them in /proc/cpuinfo (empty elsewhere). Tests
    replace it to ask what `auto` picks on another CPU."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return frozenset(next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def cpu_has_fast_bf16(flags: Iterable[str] | None = None) -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX): there bf16 weights, which
    halve what every decode step reads, are faster than float32; elsewhere they are emulated and slower."""
    flags = cpu_flags() if flags is None else frozenset(flags)
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_avx2(flags: Iterable[str] | None = None) -> bool:
    """Whether ATen's vectorised int8 kernel runs here (AVX2, which every AVX-512 CPU also has)."""
    return "avx2" in (cpu_flags() if flags is None else frozenset(flags))


def int8_kernel_wants_bf16(x_dtype: torch.dtype) -> bool:
    """Whether float32 activations go to the CPU int8 kernel rounded to bfloat16: where ATen runs
    its AVX2/AVX512 kernels, whose bf16 path is 7-9x faster than their float32 one (BENCHMARKS.md,
    "CPU: AVX2-only (emulated)")."""
    return x_dtype == torch.float32 and _ATEN_VECTORISED


def resolve_quantize(quantize: str | None, device: torch.device | None = None,
                     dtype: torch.dtype | None = None) -> str:
    """none or int8. auto: int8 on a CPU, where memory bandwidth bounds every frame and int8 reads
    a half (bf16) or a quarter (float32) of the bytes: with bfloat16 activations (native bf16;
    BENCHMARKS.md, "CPU: bf16 and int8 weights"), and with float32 ones on a CPU with AVX2 but no
    native bf16, where the int8 kernel takes its inputs in bf16 ("CPU: AVX2-only (emulated)").
    none elsewhere: on a GPU the weights fit and a step is bound by launches, not bytes; on a
    CPU without AVX2 the int8 kernel is a scalar loop."""
    value = "none" if quantize in (None, "") else str(quantize).strip().lower()
    if value not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, not {quantize!r}")
    if value == "auto":
        if device is None or device.type != "cpu":
            return "none"
        if dtype == torch.bfloat16:
            return "int8"
        flags = cpu_flags()
        avx2_only = dtype == torch.float32 and cpu_has_avx2(flags) and not cpu_has_fast_bf16(flags)
        return "int8" if avx2_only else "none"
    return value


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (int8 values, float32 scales) with weight ~= values * scales[:, None]."""
    wide = weight.detach().float()
    scales = wide.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    values = torch.round(wide / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return values, scales


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights and one scale per output feature."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        values, scales = int8_rows(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.int8pack_fits = linear.in_features % _INT8PACK_WIDTH_MULTIPLE == 0
        self.register_buffer("weight", values.contiguous())
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))
        # The scales the CPU kernel takes when float32 activations reach it in bf16 (not saved).
        self.register_buffer("bf16_scales", scales.to(torch.bfloat16), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        scales = self.scales.to(x.dtype)
        if x.device.type == "cpu" and self.int8pack_fits and flat.shape[0] <= _INT8PACK_MOST_ROWS:
            if int8_kernel_wants_bf16(x.dtype):
                out = torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight,
                                                         self.bf16_scales).to(x.dtype)
            else:
                out = torch.ops.aten._weight_int8pack_mm(flat, self.weight, scales)
        else:
            out = F.linear(flat, self.weight.to(x.dtype)) * scales
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """nn.Embedding with int8 rows and one scale per row."""

    def __init__(self, embedding: nn.Embedding, dtype: torch.dtype) -> None:
        super().__init__()
        values, scales = int8_rows(embedding.weight)
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        self.dtype = dtype
        self.register_buffer("weight", values.contiguous())
        self.register_buffer("scales", scales.to(dtype))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).to(self.dtype) * F.embedding(ids, self.scales[:, None])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def quantize_int8(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Replace, in place, every nn.Linear and nn.Embedding under module by its int8 form; returns module.
    Parameters are released as they are replaced, so peak memory grows by one layer, not a model."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child, dtype))
        elif isinstance(child, nn.Embedding):
            setattr(module, name, Int8Embedding(child, dtype))
        else:
            quantize_int8(child, dtype)
    return module


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors once)."""
    seen: dict[int, int] = {}
    for tensor in (*module.parameters(), *module.buffers()):
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())

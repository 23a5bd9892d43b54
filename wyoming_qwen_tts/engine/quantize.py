"""Weight-only int8 for the talker and the code predictor.

Every frame reads all their weights once per step (the code predictor's 15 times), so on a CPU or
a small GPU their speed is the memory bandwidth: int8 weights halve what bf16 reads. Each output
row keeps one scale (absmax / 127); activations stay in the model's dtype.

The matmul is PyTorch's own: on CPU `aten._weight_int8pack_mm` (ATen's vectorised AVX512/AVX2 kernel,
fast with bfloat16 activations only: with float32 ones it runs a scalar loop, 7-9x slower, so a
float32 model hands it its activations rounded to bfloat16 and takes the result back in float32);
elsewhere the gpt-fast form `linear(x, w.to(x.dtype)) * scales`, which torch.compile fuses into
one kernel and which, like the former, never syncs with the host, so CUDA graphs capture it.
Prompts (many rows at once) on a CPU take oneDNN's integer matmul (`torch._int_mm`): each row's
activations quantized to int8 with a scale of its own, int8 weights, int32 sums; a row whose
activations would quantize poorly is computed as a decode step computes it.
Embeddings (the text embedding alone holds 311M of the 1.7B model's weights) are stored the same
way and dequantized row by row as they are gathered.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

QUANTIZE_CHOICES = ("none", "int8", "auto")
INT8_PROMPT_CHOICES = ("auto", "off")
# Prompts (prefill) run many rows through a linear at once: there oneDNN's dense bf16 matmul on a
# dequantized copy beats the int8 kernel, whose cost grows with the rows (BENCHMARKS.md, "CPU: bf16
# and int8 weights").
_INT8PACK_MOST_ROWS = 16
# A prompt row goes to the integer matmul when its largest activation is at most this many times its
# root mean square: the row's quantization error is about peak / rms / (127 * sqrt(12)), 0.027 here,
# three times the int8 weights' own error for Gaussian rows (peak ~4 rms) and a bound on the worst row
# taken. A row dominated by a few channels (the massive activations of some tokens in trained models)
# is above it and takes the decode step's kernel instead, at about the dense matmul's cost per row.
PROMPT_ROW_PEAK = 12.0
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


@functools.cache
def cpu_int8_matmul() -> str:
    """How this CPU's integer matmul (oneDNN, behind torch._int_mm) multiplies int8 by int8:
    "exact", "saturating" (AVX2 without VNNI adds pairs of u8 x s8 products in int16, which
    overflows unless the weights stay within +-64: prompts then use a 7-bit copy of the weights), or
    "none" (no AVX2: a reference loop, slower than the dense matmul). Found by one small product of
    extreme values, so that a capped instruction set (ONEDNN_MAX_CPU_ISA) is seen as it runs."""
    if not (_ATEN_VECTORISED and cpu_has_avx2()):
        return "none"
    rows, width, columns = 32, 256, 64
    extremes = torch.full((rows, width), 127, dtype=torch.int8)
    weights = torch.full((columns, width), 127, dtype=torch.int8)
    weights[1::2] = -127
    try:
        got = torch._int_mm(extremes, weights.t())
    except RuntimeError:
        return "none"
    exact = extremes.long() @ weights.long().t()
    return "exact" if torch.equal(got.long(), exact) else "saturating"


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


def int8_rows(weight: torch.Tensor, largest: int = 127) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: (int8 values within +-largest, float32 scales) with
    weight ~= values * scales[:, None]."""
    wide = weight.detach().float()
    scales = wide.abs().amax(dim=1).clamp(min=1e-12) / float(largest)
    values = torch.round(wide / scales[:, None]).clamp(-largest, largest).to(torch.int8)
    return values, scales


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row of x (M, K) as int8 with a scale of its own: (values (M, K), scales (M, 1) float32,
    whether the row quantizes poorly (M,): peak above PROMPT_ROW_PEAK times its rms)."""
    wide = x.float()
    peak = wide.abs().amax(dim=1, keepdim=True)
    rms = wide.square().mean(dim=1, keepdim=True).sqrt()
    scales = peak.clamp(min=1e-12) / 127.0
    values = torch.round(wide / scales).to(torch.int8)
    return values, scales, (peak > PROMPT_ROW_PEAK * rms)[:, 0]


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights and one scale per output feature. int8_prompts: whether calls of
    many rows on a CPU take the integer matmul (with a 7-bit copy of the weights where it saturates)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, int8_prompts: bool = False) -> None:
        super().__init__()
        values, scales = int8_rows(linear.weight)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.int8pack_fits = linear.in_features % _INT8PACK_WIDTH_MULTIPLE == 0
        self.register_buffer("weight", values.contiguous())
        self.register_buffer("scales", scales.to(dtype))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(dtype))
        # The scales the CPU kernel takes when float32 activations reach it in bf16 (not saved).
        self.register_buffer("bf16_scales", scales.to(torch.bfloat16), persistent=False)
        self.prompt_matmul = (int8_prompts and self.int8pack_fits and linear.weight.device.type == "cpu"
                              and cpu_int8_matmul() in ("exact", "saturating"))
        # Prompts' float32 scales, and their own 7-bit weights where the matmul saturates (one more
        # byte per weight); where it is exact they use `weight` itself. Neither is saved.
        prompt_weight, prompt_scales = None, scales if self.prompt_matmul else None
        if self.prompt_matmul and cpu_int8_matmul() == "saturating":
            prompt_weight, prompt_scales = int8_rows(linear.weight, largest=64)
        self.register_buffer("prompt_weight", prompt_weight, persistent=False)
        self.register_buffer("prompt_scales", prompt_scales, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if x.device.type == "cpu" and self.int8pack_fits and flat.shape[0] <= _INT8PACK_MOST_ROWS:
            out = self._rows_kernel(flat)
        elif self.prompt_matmul and x.device.type == "cpu" and not torch.compiler.is_compiling():
            out = self._integer_matmul(flat)
        else:
            out = F.linear(flat, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.view(*x.shape[:-1], self.out_features)

    def _rows_kernel(self, flat: torch.Tensor) -> torch.Tensor:
        """A few rows (decode steps) through ATen's int8 weight kernel."""
        if int8_kernel_wants_bf16(flat.dtype):
            return torch.ops.aten._weight_int8pack_mm(flat.to(torch.bfloat16), self.weight,
                                                      self.bf16_scales).to(flat.dtype)
        return torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales.to(flat.dtype))

    def _integer_matmul(self, flat: torch.Tensor) -> torch.Tensor:
        """Many rows (prompts) as int8 x int8 -> int32; rows that quantize poorly as decode rows
        are (each row's result depends on that row alone, whatever shares the call)."""
        values, row_scales, poor = quantize_rows(flat)
        weight = self.weight if self.prompt_weight is None else self.prompt_weight
        sums = torch._int_mm(values, weight.t())  # (M, N) int32
        out = sums.float().mul_(row_scales).mul_(self.prompt_scales).to(flat.dtype)
        poor_rows = poor.nonzero()[:, 0]
        for start in range(0, poor_rows.numel(), _INT8PACK_MOST_ROWS):
            rows = poor_rows[start:start + _INT8PACK_MOST_ROWS]
            out[rows] = self._rows_kernel(flat[rows])
        return out

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


def quantize_int8(module: nn.Module, dtype: torch.dtype, int8_prompts: Callable[[str], bool] | bool = False,
                  prefix: str = "") -> nn.Module:
    """Replace, in place, every nn.Linear and nn.Embedding under module by its int8 form; returns module.
    int8_prompts: for which linears (by their name under module) prompts take the CPU's integer
    matmul (Int8Linear). Parameters are released as they are replaced, so peak memory grows by one
    layer, not a model."""
    for name, child in list(module.named_children()):
        path = f"{prefix}{name}"
        if isinstance(child, nn.Linear):
            prompts = int8_prompts(path) if callable(int8_prompts) else int8_prompts
            setattr(module, name, Int8Linear(child, dtype, int8_prompts=prompts))
        elif isinstance(child, nn.Embedding):
            setattr(module, name, Int8Embedding(child, dtype))
        else:
            quantize_int8(child, dtype, int8_prompts, prefix=f"{path}.")
    return module


def weight_bytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (shared tensors once)."""
    seen: dict[int, int] = {}
    for tensor in (*module.parameters(), *module.buffers()):
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())

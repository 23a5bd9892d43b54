"""Weight-only int8 for the talker and the code predictor.

Every frame reads all their weights once per step (the code predictor's 15 times), so on a CPU or
a small GPU their speed is the memory bandwidth: int8 weights halve what bf16 reads. Each output
row keeps one scale (absmax / 127); activations stay in the model's dtype.

The matmul is PyTorch's own: on CPU `aten._weight_int8pack_mm` (ATen's vectorised AVX512/AVX2 kernel, fast with
bfloat16 activations); elsewhere the gpt-fast form `linear(x, w.to(x.dtype)) * scales`, which
torch.compile fuses into one kernel and which, like the former, never syncs with the host, so CUDA
graphs capture it. Embeddings (the text embedding alone holds 311M of the 1.7B model's weights)
are stored the same way and dequantized row by row as they are gathered.
"""

from __future__ import annotations

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


def resolve_quantize(quantize: str | None, device: torch.device | None = None,
                     dtype: torch.dtype | None = None) -> str:
    """none or int8. auto: int8 on a CPU that runs the model in bfloat16 (native bf16), where memory
    bandwidth bounds every frame and int8 reads half the bytes (BENCHMARKS.md, "CPU: bf16 and int8
    weights"); none elsewhere: with float32 activations the CPU int8 kernel is slower than
    float32, and on a GPU the weights fit and a step is bound by launches, not bytes."""
    value = "none" if quantize in (None, "") else str(quantize).strip().lower()
    if value not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, not {quantize!r}")
    if value == "auto":
        on_bf16_cpu = device is not None and device.type == "cpu" and dtype == torch.bfloat16
        return "int8" if on_bf16_cpu else "none"
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        scales = self.scales.to(x.dtype)
        if x.device.type == "cpu" and self.int8pack_fits and flat.shape[0] <= _INT8PACK_MOST_ROWS:
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

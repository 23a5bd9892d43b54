"""Transformer building blocks shared by the talker, the code predictor and the codec decoder.

Parameter names follow the released checkpoints so that state dicts load without renaming.
Attention reads and writes a caller-owned static KV cache (gpt-fast style): no per-step
allocation and no cache objects hidden inside modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import kernels
from .kernels import apply_rope


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (..., T, head_dim) for integer positions, computed in float32.

    The talker's M-RoPE uses the same position for its temporal, height and width sections
    (speech has no image grid), which makes it exactly this 1-D RoPE.
    """
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


# The code predictor's positions are 0..16 in every frame: their cos/sin are computed once.
ROPE_TABLE_LEN = 64
_rope_tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _capturing(x: torch.Tensor) -> bool:
    """Whether a CUDA graph is being captured: a table first made then would hold nothing until a replay."""
    return x.is_cuda and torch.cuda.is_current_stream_capturing()


def rope_table(head_dim: int, theta: float, dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """positions (ROPE_TABLE_LEN,) int64 and their cos/sin (ROPE_TABLE_LEN, head_dim), made once."""
    key = (head_dim, theta, dtype, device)
    if key not in _rope_tables:
        positions = torch.arange(ROPE_TABLE_LEN, device=device)
        _rope_tables[key] = (positions, *rope_cos_sin(positions, head_dim, theta, dtype))
    return _rope_tables[key]


class Attention(nn.Module):
    """Grouped-query attention with optional per-head RMSNorm on q and k (Qwen3 style)."""

    def __init__(self, hidden: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 qk_norm_eps: float | None, bias: bool = False) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.q_proj = nn.Linear(hidden, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden, bias=bias)
        if qk_norm_eps is not None:
            self.q_norm = RMSNorm(head_dim, qk_norm_eps)
            self.k_norm = RMSNorm(head_dim, qk_norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def fuse_weights(self) -> None:
        """q/k/v in one (H + 2 KV) * D x hidden weight: one matmul reads them all."""
        if hasattr(self, "qkv_proj"):
            return
        self.qkv_proj = _concatenated(self.q_proj, self.k_proj, self.v_proj)
        del self.q_proj, self.k_proj, self.v_proj

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, (H + 2 KV) * D)."""
        if hasattr(self, "qkv_proj"):
            return self.qkv_proj(x)
        return torch.cat((self.q_proj(x), self.k_proj(x), self.v_proj(x)), dim=-1)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q (B, H, T, D), k and v (B, KV, T, D), RoPE applied."""
        batch, steps, _ = x.shape
        q = self.q_proj(x).view(batch, steps, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, steps, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, steps, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # broadcast over heads
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal and mask is None,
            enable_gqa=self.num_heads != self.num_kv_heads,
        )
        batch, _, steps, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(batch, steps, self.num_heads * self.head_dim))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, at: "int | RowPositions") -> torch.Tensor:
        """Write this step's keys and values into the static cache and attend causally.

        at=start (int): every row writes [start, start+T). at=RowPositions: positions (R,) (one
        new position per row, T == 1, each row at its own place, as in a continuous batch) or (R, T).
        cos/sin: (T, D) or (R, T, D). Needs q/k norms (Qwen3)."""
        batch, steps, _ = x.shape
        if not isinstance(at, RowPositions):
            at = RowPositions(torch.arange(at, at + steps, device=x.device)[None], at + steps)
        positions = at.positions[:, None] if at.positions.dim() == 1 else at.positions
        positions = positions.expand(batch, steps)  # (B, T)
        q = kernels.qk_rope_cache(self.qkv(x), self.q_norm.weight, self.k_norm.weight, self.q_norm.eps,
                                  cos if cos.dim() == 3 else cos[None], sin if sin.dim() == 3 else sin[None],
                                  k_cache, v_cache, positions, self.num_heads)  # (B, T, H, D)
        return self.o_proj(kernels.cache_attention(q, k_cache, v_cache, positions, at.kv_len))


@dataclass
class RowPositions:
    """Where each row of a decode step writes (positions (R,) on the device, or (R, T) / (1, T) for
    several) and how many cache positions attention reads (kv_len > every position; larger is only
    slower)."""

    positions: torch.Tensor
    kv_len: int


def causal_mask(query_positions: torch.Tensor, key_positions: torch.Tensor,
                window: int | None = None) -> torch.Tensor:
    """Boolean (..., queries, keys) mask for positions (..., queries) and (..., keys): a query sees
    keys at or before its position, and with a window only the last `window` of them (itself
    included), as transformers' sliding window."""
    query_pos, key_pos = query_positions[..., :, None], key_positions[..., None, :]
    visible = key_pos <= query_pos
    if window is not None:
        visible &= key_pos > query_pos - window
    return visible


class GatedMLP(nn.Module):
    def __init__(self, hidden: int, intermediate: int) -> None:
        super().__init__()
        self.intermediate = intermediate
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def fuse_weights(self) -> None:
        """gate and up in one 2I x hidden weight: one matmul reads both."""
        if hasattr(self, "gate_up_proj"):
            return
        self.gate_up_proj = _concatenated(self.gate_proj, self.up_proj)
        del self.gate_proj, self.up_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "gate_up_proj"):
            gate_up = self.gate_up_proj(x)  # (..., 2I)
            gate, up = gate_up[..., : self.intermediate], gate_up[..., self.intermediate :]
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(kernels.silu_mul(gate, up))


def _concatenated(*linears: nn.Linear) -> nn.Linear:
    """One nn.Linear whose output is the linears' outputs side by side (same input, no bias)."""
    weight = torch.cat([linear.weight.detach() for linear in linears], dim=0)
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    fused.weight = nn.Parameter(weight, requires_grad=linears[0].weight.requires_grad)
    return fused


class DecoderLayer(nn.Module):
    """Pre-norm Qwen3 decoder layer (talker and code predictor)."""

    def __init__(self, hidden: int, intermediate: int, num_heads: int, num_kv_heads: int, head_dim: int,
                 eps: float) -> None:
        super().__init__()
        self.self_attn = Attention(hidden, num_heads, num_kv_heads, head_dim, qk_norm_eps=eps)
        self.mlp = GatedMLP(hidden, intermediate)
        self.input_layernorm = RMSNorm(hidden, eps)
        self.post_attention_layernorm = RMSNorm(hidden, eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, at: "int | RowPositions") -> torch.Tensor:
        attended = self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, at)
        norm = self.post_attention_layernorm
        x, normed = kernels.add_rms_norm(x, attended, norm.weight, norm.eps)
        return x + self.mlp(normed)


def fuse_weights(module: nn.Module) -> nn.Module:
    """Concatenate q/k/v and gate/up of every decoder layer under module (after its checkpoint,
    whose official names name them apart, is loaded; before int8, whose per-row scales are the
    same either way). A step then makes 4 matmuls per layer instead of 7, with fewer, longer reads."""
    for layer in module.modules():
        if isinstance(layer, DecoderLayer):
            layer.self_attn.fuse_weights()
            layer.mlp.fuse_weights()
    return module


def decoder_stack(cfg) -> nn.ModuleList:
    """The DecoderLayers of a TransformerConfig (talker, code predictor)."""
    return nn.ModuleList(
        DecoderLayer(cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                     cfg.rms_norm_eps)
        for _ in range(cfg.num_layers)
    )


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x


class KVCache:
    """Static keys/values for a stack of layers, (layers, rows, kv_heads, max_len, head_dim) each,
    and how many positions each row holds (kept on the host: no device sync to read it)."""

    def __init__(self, layers: int, rows: int, kv_heads: int, max_len: int, head_dim: int,
                 device: torch.device, dtype: torch.dtype) -> None:
        shape = (layers, rows, kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * rows

    @property
    def capacity(self) -> int:
        return self.keys.shape[3]

    def grow(self, capacity: int, rows: int) -> None:
        """Room for `capacity` positions per row, rows 0..rows-1 keeping what they hold (lengths
        too). New tensors: whatever captured the old ones (a CUDA graph) must not run again. Keys
        are moved before values are made, so at most the old pair and one new half live at once;
        if the values do not fit, the keys go back to the old size (keys and values must match)."""
        old = self.capacity
        if capacity < old:
            raise ValueError(f"a cache of {old} positions cannot grow to {capacity}")
        self.keys = widened(self.keys, 3, capacity, rows, row_dim=1)
        try:
            self.values = widened(self.values, 3, capacity, rows, row_dim=1)
        except BaseException:
            self.keys = self.keys[:, :, :, :old].contiguous()
            raise

    def move_row(self, source: int, target: int) -> None:
        """Copy one row's keys/values over another (to keep a batch's live rows contiguous)."""
        self.keys[:, target] = self.keys[:, source]
        self.values[:, target] = self.values[:, source]
        self.lengths[target] = self.lengths[source]


def widened(tensor: torch.Tensor, dim: int, size: int, rows: int, row_dim: int = 0) -> torch.Tensor:
    """A zeroed copy of `tensor`, `size` long along `dim`, holding what rows 0..rows-1 (along
    row_dim) held. Zeros, not empty memory: attention still multiplies masked positions' values by
    their zero weights, and 0 x NaN is NaN."""
    shape = list(tensor.shape)
    shape[dim] = size
    with torch.inference_mode(tensor.is_inference()):  # the same kind: a compiled step's guards check it
        grown = torch.zeros(shape, device=tensor.device, dtype=tensor.dtype)
    kept = [slice(None)] * tensor.dim()
    kept[row_dim], kept[dim] = slice(0, rows), slice(0, tensor.shape[dim])
    grown[tuple(kept)] = tensor[tuple(kept)]
    return grown


def _check_room(cache: KVCache, end: int) -> None:
    if end > cache.capacity:
        raise ValueError(f"sequence of {end} positions exceeds the cache of {cache.capacity}")


def run_layers(layers: nn.ModuleList, x: torch.Tensor, cache: KVCache, theta: float, head_dim: int,
               row: int | None = None) -> torch.Tensor:
    """Run a decoder stack over x (B, T, H) appended to rows 0..B-1 of the cache (which must hold
    the same number of positions), or to rows row..row+B-1 (one prompt, or prompts padded together)."""
    first = 0 if row is None else row
    rows = range(first, first + x.shape[0])
    start = cache.lengths[rows[0]]
    if any(cache.lengths[r] != start for r in rows):
        raise ValueError("rows of a block step must hold the same number of positions")
    _check_room(cache, start + x.shape[1])
    x = block_step(layers, x, cache, slice(rows.start, rows.stop), start, theta, head_dim)
    for r in rows:
        cache.lengths[r] = start + x.shape[1]
    return x


def block_step(layers: nn.ModuleList, x: torch.Tensor, cache: KVCache, rows: slice, start: int, theta: float,
               head_dim: int) -> torch.Tensor:
    """x (B, T, H) at positions [start, start+T) of cache rows `rows`; the caller keeps cache.lengths
    (so a compiled step can run it: no host state is read or written)."""
    steps = x.shape[1]
    end = start + steps
    # A capture reads the table its warm-up step made (it never makes one): the warm-up's tensors,
    # so the kernels the warm-up compiled (Triton specializes on a pointer's alignment:
    # table[start:end] is 8-byte aligned at odd starts, a fresh arange 16-byte aligned).
    if end <= ROPE_TABLE_LEN and not torch.compiler.is_compiling() and (
            not _capturing(x) or (head_dim, theta, x.dtype, x.device) in _rope_tables):
        table, cos, sin = rope_table(head_dim, theta, x.dtype, x.device)
        positions, cos, sin = table[start:end], cos[start:end], sin[start:end]
    else:
        positions = torch.arange(start, end, device=x.device)
        cos, sin = rope_cos_sin(positions, head_dim, theta, x.dtype)
    at = RowPositions(positions[None], end)
    for index, layer in enumerate(layers):
        x = layer(x, cos, sin, cache.keys[index, rows], cache.values[index, rows], at)
    return x


def decode_rows(layers: nn.ModuleList, x: torch.Tensor, cache: KVCache, theta: float, head_dim: int,
                at: RowPositions) -> torch.Tensor:
    """One new position for each of rows 0..R-1, x (R, 1, H), each at its own position.

    Pure in its shapes (the caller keeps cache.lengths), so it can be captured in a CUDA graph."""
    count = x.shape[0]
    cos, sin = rope_cos_sin(at.positions[:, None], head_dim, theta, x.dtype)
    for index, layer in enumerate(layers):
        x = layer(x, cos, sin, cache.keys[index, :count], cache.values[index, :count], at)
    return x

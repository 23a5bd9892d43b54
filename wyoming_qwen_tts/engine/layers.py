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


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


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


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


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
        """Write this step's keys into the static cache and attend causally.

        at=start (int): every row writes [start, start+T). at=RowPositions: one new position
        per row (T == 1), each row at its own place, as in a continuous batch."""
        q, k, v = self.project(x, cos, sin)
        if isinstance(at, RowPositions):
            rows = torch.arange(x.shape[0], device=x.device)
            k_cache[rows, :, at.positions] = k[:, :, 0]
            v_cache[rows, :, at.positions] = v[:, :, 0]
            keys, values = k_cache[:, :, : at.kv_len], v_cache[:, :, : at.kv_len]
            visible = causal_mask(at.positions[:, None], torch.arange(at.kv_len, device=x.device))  # (R, 1, kv_len)
            return self.attend(q, keys, values, visible[:, None], causal=False)
        start = at
        end = start + x.shape[1]
        k_cache[:, :, start:end] = k
        v_cache[:, :, start:end] = v
        keys, values = k_cache[:, :, :end], v_cache[:, :, :end]
        steps = x.shape[1]
        if steps == 1 or start == 0:
            return self.attend(q, keys, values, None, causal=steps > 1)
        positions = torch.arange(end, device=x.device)
        mask = causal_mask(positions[start:], positions)
        return self.attend(q, keys, values, mask, causal=False)


@dataclass
class RowPositions:
    """Where each row of a decode step writes (positions (R,) on the device) and how many cache
    positions attention reads (kv_len > every position; larger is only slower)."""

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
        self.gate_proj = nn.Linear(hidden, intermediate, bias=False)
        self.up_proj = nn.Linear(hidden, intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


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
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, at)
        return x + self.mlp(self.post_attention_layernorm(x))


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

    def move_row(self, source: int, target: int) -> None:
        """Copy one row's keys/values over another (to keep a batch's live rows contiguous)."""
        self.keys[:, target] = self.keys[:, source]
        self.values[:, target] = self.values[:, source]
        self.lengths[target] = self.lengths[source]


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
    positions = torch.arange(start, start + x.shape[1], device=x.device)
    cos, sin = rope_cos_sin(positions, head_dim, theta, x.dtype)
    for index, layer in enumerate(layers):
        x = layer(x, cos, sin, cache.keys[index, rows], cache.values[index, rows], start)
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

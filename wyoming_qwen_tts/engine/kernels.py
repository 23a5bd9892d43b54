"""The hot ops of a frame step as `torch.library` custom ops (namespace qwen_tts).

Each op has a plain PyTorch reference, which is the CPU path and the oracle of the Triton kernels'
tests, and on CUDA (when triton imports) a Triton kernel (engine/triton_kernels.py, imported only
there). One op is one dispatcher call: a frame step dispatches a few ops per layer instead of ~70
small ones (BENCHMARKS.md, "Kernels per frame step"), and on a GPU each op is one launch.

The references compute exactly what the engine computed before these ops existed, in the same
order (RMSNorm's float32 upcast, RoPE's rounding to the model dtype after each product, the
draws' counter-based noise), so seeded codes are unchanged on the CPU.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils._python_dispatch import _get_current_dispatch_mode

MASK32 = 0xFFFFFFFF


@functools.cache
def _triton_ready() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _on_triton(*tensors: Tensor) -> bool:
    return tensors[0].is_cuda and _triton_ready()


def _direct(x: Tensor) -> bool:
    """Eager on the CPU, no dispatch mode watching: call the reference itself. The op would run
    the same reference, after 10-40 us of custom-op dispatch per call (~650 calls a frame, more
    than it saves on the CPU); compiled graphs, CUDA and the op counter get the op."""
    return not x.is_cuda and not torch.compiler.is_compiling() and _get_current_dispatch_mode() is None


def _op(op, reference):
    """The public entry of a custom op: the op, or on the CPU in eager its reference directly."""

    @functools.wraps(reference)
    def call(*args):
        return reference(*args) if _direct(args[0]) else op(*args)

    call.op = op
    return call


def _triton():
    from . import triton_kernels

    return triton_kernels


# --- RMSNorm -----------------------------------------------------------------------------------

def rms_norm_reference(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Qwen3's RMSNorm: normalised in float32, rounded to x's dtype, then scaled by the weight."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


@torch.library.custom_op("qwen_tts::rms_norm", mutates_args=())
def _rms_norm_op(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    if _on_triton(x):
        return _triton().rms_norm(x, weight, eps)
    return rms_norm_reference(x, weight, eps)


@_rms_norm_op.register_fake
def _(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return x.new_empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype))


rms_norm = _op(_rms_norm_op, rms_norm_reference)


def add_rms_norm_reference(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x + residual, RMSNorm of it): a pre-norm layer's residual add and its next norm."""
    total = x + residual
    return total, rms_norm_reference(total, weight, eps)


@torch.library.custom_op("qwen_tts::add_rms_norm", mutates_args=())
def _add_rms_norm_op(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    if _on_triton(x):
        return _triton().add_rms_norm(x, residual, weight, eps)
    return add_rms_norm_reference(x, residual, weight, eps)


@_add_rms_norm_op.register_fake
def _(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    total = torch.empty_like(x, dtype=torch.promote_types(x.dtype, residual.dtype))
    return total, total.new_empty(total.shape, dtype=torch.promote_types(total.dtype, weight.dtype))


add_rms_norm = _op(_add_rms_norm_op, add_rms_norm_reference)


# --- q/k norm + RoPE + the KV-cache write ------------------------------------------------------

def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    return x * cos + _rotate_half(x) * sin


def qk_rope_cache_reference(qkv: Tensor, q_weight: Tensor, k_weight: Tensor, eps: float, cos: Tensor, sin: Tensor,
                            k_cache: Tensor, v_cache: Tensor, positions: Tensor, num_heads: int) -> Tensor:
    """qkv (B, T, (H + 2 KV) * D) -> q (B, T, H, D) normed and rotated; k (normed, rotated) and v
    written into the caches (B, KV, L, D) at positions (B, T). cos/sin (B or 1, T, D)."""
    batch, steps, _ = qkv.shape
    head_dim = cos.shape[-1]
    kv_heads = k_cache.shape[1]
    q, k, v = qkv.view(batch, steps, -1, head_dim).split((num_heads, kv_heads, kv_heads), dim=2)
    q, k = rms_norm_reference(q, q_weight, eps), rms_norm_reference(k, k_weight, eps)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads
    rows = torch.arange(batch, device=qkv.device)[:, None]
    k_cache[rows, :, positions] = apply_rope(k, cos, sin)
    v_cache[rows, :, positions] = v
    return apply_rope(q, cos, sin)


@torch.library.custom_op("qwen_tts::qk_rope_cache", mutates_args=("k_cache", "v_cache"))
def _qk_rope_cache_op(qkv: Tensor, q_weight: Tensor, k_weight: Tensor, eps: float, cos: Tensor, sin: Tensor,
                  k_cache: Tensor, v_cache: Tensor, positions: Tensor, num_heads: int) -> Tensor:
    if _on_triton(qkv):
        return _triton().qk_rope_cache(qkv, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, positions, num_heads)
    return qk_rope_cache_reference(qkv, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, positions, num_heads)


@_qk_rope_cache_op.register_fake
def _(qkv, q_weight, k_weight, eps, cos, sin, k_cache, v_cache, positions, num_heads):
    head_dim = cos.shape[-1]
    dtype = torch.promote_types(torch.promote_types(qkv.dtype, q_weight.dtype), cos.dtype)
    return qkv.new_empty((qkv.shape[0], qkv.shape[1], num_heads, head_dim), dtype=dtype)


qk_rope_cache = _op(_qk_rope_cache_op, qk_rope_cache_reference)


# --- attention over the static cache ----------------------------------------------------------

def cache_attention_reference(q: Tensor, k_cache: Tensor, v_cache: Tensor, positions: Tensor, kv_len: int) -> Tensor:
    """q (B, T, H, D) against the first kv_len positions of the caches (B, KV, L, D): the query at
    positions[b, t] sees the keys at or before it. Returns (B, T, H * D)."""
    batch, steps, heads, head_dim = q.shape
    keys, values = k_cache[:, :, :kv_len], v_cache[:, :, :kv_len]
    visible = torch.arange(kv_len, device=q.device) <= positions[..., None]  # (B, T, kv_len)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=visible[:, None],
                                         enable_gqa=heads != k_cache.shape[1])
    return out.transpose(1, 2).reshape(batch, steps, heads * head_dim)


@torch.library.custom_op("qwen_tts::cache_attention", mutates_args=())
def _cache_attention_op(q: Tensor, k_cache: Tensor, v_cache: Tensor, positions: Tensor, kv_len: int) -> Tensor:
    if _on_triton(q):
        return _triton().cache_attention(q, k_cache, v_cache, positions, kv_len)
    return cache_attention_reference(q, k_cache, v_cache, positions, kv_len)


@_cache_attention_op.register_fake
def _(q, k_cache, v_cache, positions, kv_len):
    return q.new_empty((q.shape[0], q.shape[1], q.shape[2] * q.shape[3]))


cache_attention = _op(_cache_attention_op, cache_attention_reference)


# --- SiLU x mul ------------------------------------------------------------------------------

def silu_mul_reference(gate: Tensor, up: Tensor) -> Tensor:
    return F.silu(gate) * up


@torch.library.custom_op("qwen_tts::silu_mul", mutates_args=())
def _silu_mul_op(gate: Tensor, up: Tensor) -> Tensor:
    if _on_triton(gate):
        return _triton().silu_mul(gate, up)
    return silu_mul_reference(gate, up)


@_silu_mul_op.register_fake
def _(gate, up):
    return gate.new_empty(gate.shape, dtype=torch.promote_types(gate.dtype, up.dtype))


silu_mul = _op(_silu_mul_op, silu_mul_reference)


# --- the draws: counter-based noise ------------------------------------------------------------

def _mul32(x: Tensor, constant: int) -> Tensor:
    """(x * constant) mod 2**32 for 0 <= x < 2**32 without leaving int64's range."""
    low = x * (constant & 0xFFFF)
    high = ((x * (constant >> 16)) & 0xFFFF) << 16
    return (low + high) & MASK32


def hash32(x: Tensor) -> Tensor:
    """A 32-bit integer hash with good avalanche (lowbias32), on int64 tensors."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def draw_keys_reference(seeds: Tensor, draw_index: Tensor) -> Tensor:
    """One key per row for one draw: a function of the row's seed and how many draws it made."""
    return hash32(hash32(seeds) ^ hash32(draw_index + 0x9E3779B9))


@torch.library.custom_op("qwen_tts::draw_keys", mutates_args=())
def _draw_keys_op(seeds: Tensor, draw_index: Tensor) -> Tensor:
    """One key per row for one draw: a function of the row's seed and how many draws it made."""
    if _on_triton(seeds):
        return _triton().draw_keys(seeds, draw_index)
    return draw_keys_reference(seeds, draw_index)


@_draw_keys_op.register_fake
def _(seeds, draw_index):
    return torch.empty_like(torch.broadcast_tensors(seeds, draw_index)[0], dtype=torch.int64)


draw_keys = _op(_draw_keys_op, draw_keys_reference)


def gumbel_noise(keys: Tensor, vocab: int) -> Tensor:
    """(R, vocab) Gumbel(0, 1) noise, a pure function of the (R,) keys."""
    codes = torch.arange(vocab, device=keys.device, dtype=torch.int64)
    cells = hash32(keys[:, None] + _mul32(codes, 0x61C88647)[None, :])
    uniform = ((cells.float() + 0.5) / 4294967296.0).clamp(1e-7, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def gumbel_argmax_reference(scores: Tensor, keys: Tensor, do_sample: Tensor) -> Tensor:
    """argmax over (R, V) of scores + Gumbel noise (keys (R,)) * do_sample (R, 1): a draw from the
    softmax of the scores where do_sample is 1, their argmax where it is 0."""
    return (scores + gumbel_noise(keys, scores.shape[-1]) * do_sample).argmax(dim=-1)


@torch.library.custom_op("qwen_tts::gumbel_argmax", mutates_args=())
def _gumbel_argmax_op(scores: Tensor, keys: Tensor, do_sample: Tensor) -> Tensor:
    if _on_triton(scores):
        return _triton().gumbel_argmax(scores, keys, do_sample)
    return gumbel_argmax_reference(scores, keys, do_sample)


@_gumbel_argmax_op.register_fake
def _(scores, keys, do_sample):
    return scores.new_empty(scores.shape[:-1], dtype=torch.int64)


gumbel_argmax = _op(_gumbel_argmax_op, gumbel_argmax_reference)

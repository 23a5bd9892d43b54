"""Triton kernels of the custom ops in engine/kernels.py (CUDA; imported only when triton is).

Each kernel follows its reference's arithmetic: float32 inside, rounded to the tensor dtype where
the reference rounds. Tested against the references on CPU tensors with TRITON_INTERPRET=1
(tests/test_kernels.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


def _rows(x: Tensor) -> Tensor:
    """x as (rows, last) with a unit last stride (a view when it can be)."""
    x = x if x.stride(-1) == 1 else x.contiguous()
    return x.reshape(-1, x.shape[-1])


# --- RMSNorm -----------------------------------------------------------------------------------

@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, sum_ptr, out_ptr, x_stride, res_stride, n, eps,
                     HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    if HAS_RES:
        res = tl.load(res_ptr + row * res_stride + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + res.to(tl.float32)).to(x.dtype)  # the sum rounded once, as torch's
        tl.store(sum_ptr + row * n + cols, x, mask=mask)
    x32 = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x32 * x32, axis=0) / n + eps)
    normed = (x32 * rstd).to(x.dtype)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0)
    out = w.to(tl.float32) * normed.to(tl.float32)
    tl.store(out_ptr + row * n + cols, out.to(out_ptr.dtype.element_ty), mask=mask)


def _rms_norm(x: Tensor, residual: Tensor | None, weight: Tensor, eps: float) -> tuple[Tensor | None, Tensor]:
    rows = _rows(x)
    res = _rows(residual) if residual is not None else rows
    total = torch.empty(x.shape, device=x.device, dtype=x.dtype) if residual is not None else None
    out = torch.empty(x.shape, device=x.device, dtype=torch.promote_types(x.dtype, weight.dtype))
    n = x.shape[-1]
    _rms_norm_kernel[(rows.shape[0],)](rows, res, weight, total if total is not None else out, out,
                                       rows.stride(0), res.stride(0), n, eps, HAS_RES=residual is not None,
                                       BLOCK=triton.next_power_of_2(n))
    return total, out


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    return _rms_norm(x, None, weight, eps)[1]


def add_rms_norm(x: Tensor, residual: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    return _rms_norm(x, residual, weight, eps)


# --- q/k norm + RoPE + the KV-cache write ------------------------------------------------------

@triton.jit
def _qk_rope_cache_kernel(qkv_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, pos_ptr, q_ptr, k_ptr, v_ptr,
                          steps, qkv_stride_b, qkv_stride_t, cos_stride_b, cos_stride_t, pos_stride_b, pos_stride_t,
                          cache_stride_b, cache_stride_h, cache_stride_l, eps,
                          NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Program (b * T + t, head): a q head, or a k head (which also copies its v head)."""
    token = tl.program_id(0)
    head = tl.program_id(1)
    b = token // steps
    t = token % steps
    HALF: tl.constexpr = HEAD_DIM // 2
    lo = tl.arange(0, HALF)
    row = qkv_ptr + b * qkv_stride_b + t * qkv_stride_t
    is_q = head < NUM_HEADS
    x_lo = tl.load(row + head * HEAD_DIM + lo)
    x_hi = tl.load(row + head * HEAD_DIM + HALF + lo)
    w_lo = tl.where(is_q, tl.load(qw_ptr + lo), tl.load(kw_ptr + lo)).to(tl.float32)
    w_hi = tl.where(is_q, tl.load(qw_ptr + HALF + lo), tl.load(kw_ptr + HALF + lo)).to(tl.float32)
    lo32, hi32 = x_lo.to(tl.float32), x_hi.to(tl.float32)
    rstd = tl.rsqrt((tl.sum(lo32 * lo32, axis=0) + tl.sum(hi32 * hi32, axis=0)) / HEAD_DIM + eps)
    dtype = x_lo.dtype
    # As the reference: normed in float32, rounded, scaled by the weight, rounded; RoPE's two
    # products and their sum each rounded to the dtype.
    n_lo = (w_lo * (lo32 * rstd).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    n_hi = (w_hi * (hi32 * rstd).to(dtype).to(tl.float32)).to(dtype).to(tl.float32)
    trig = b * cos_stride_b + t * cos_stride_t
    c_lo = tl.load(cos_ptr + trig + lo).to(tl.float32)
    c_hi = tl.load(cos_ptr + trig + HALF + lo).to(tl.float32)
    s_lo = tl.load(sin_ptr + trig + lo).to(tl.float32)
    s_hi = tl.load(sin_ptr + trig + HALF + lo).to(tl.float32)
    out_lo = ((n_lo * c_lo).to(dtype).to(tl.float32) + (-n_hi * s_lo).to(dtype).to(tl.float32)).to(dtype)
    out_hi = ((n_hi * c_hi).to(dtype).to(tl.float32) + (n_lo * s_hi).to(dtype).to(tl.float32)).to(dtype)
    if is_q:
        q_row = q_ptr + (token * NUM_HEADS + head) * HEAD_DIM
        tl.store(q_row + lo, out_lo)
        tl.store(q_row + HALF + lo, out_hi)
    else:
        kv_head = head - NUM_HEADS
        pos = tl.load(pos_ptr + b * pos_stride_b + t * pos_stride_t)
        at = b * cache_stride_b + kv_head * cache_stride_h + pos * cache_stride_l
        tl.store(k_ptr + at + lo, out_lo.to(k_ptr.dtype.element_ty))
        tl.store(k_ptr + at + HALF + lo, out_hi.to(k_ptr.dtype.element_ty))
        v_from = row + (NUM_HEADS + KV_HEADS + kv_head) * HEAD_DIM
        tl.store(v_ptr + at + lo, tl.load(v_from + lo).to(v_ptr.dtype.element_ty))
        tl.store(v_ptr + at + HALF + lo, tl.load(v_from + HALF + lo).to(v_ptr.dtype.element_ty))


def qk_rope_cache(qkv: Tensor, q_weight: Tensor, k_weight: Tensor, eps: float, cos: Tensor, sin: Tensor,
                  k_cache: Tensor, v_cache: Tensor, positions: Tensor, num_heads: int) -> Tensor:
    batch, steps, _ = qkv.shape
    head_dim = cos.shape[-1]
    kv_heads = k_cache.shape[1]
    if qkv.stride(-1) != 1:
        qkv = qkv.contiguous()
    cos, sin = cos.expand(batch, steps, head_dim), sin.expand(batch, steps, head_dim)
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    q = torch.empty((batch, steps, num_heads, head_dim), device=qkv.device, dtype=qkv.dtype)
    _qk_rope_cache_kernel[(batch * steps, num_heads + kv_heads)](
        qkv, q_weight, k_weight, cos, sin, positions, q, k_cache, v_cache, steps,
        qkv.stride(0), qkv.stride(1), cos.stride(0), cos.stride(1), positions.stride(0), positions.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), eps,
        NUM_HEADS=num_heads, KV_HEADS=kv_heads, HEAD_DIM=head_dim)
    return q


# --- attention over the static cache ----------------------------------------------------------

@triton.jit
def _cache_attention_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, out_ptr, steps, kv_len, scale,
                            pos_stride_b, pos_stride_t, cache_stride_b, cache_stride_h, cache_stride_l,
                            NUM_HEADS: tl.constexpr, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                            BLOCK_N: tl.constexpr):
    """Program (b * T + t, head): one query against its row's keys 0..position, online softmax in
    float32; the kv head is head // GROUP (GQA reads the shared keys, no repeat)."""
    token = tl.program_id(0)
    head = tl.program_id(1)
    b = token // steps
    t = token % steps
    dims = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + (token * NUM_HEADS + head) * HEAD_DIM + dims).to(tl.float32) * scale
    seen = tl.minimum(tl.load(pos_ptr + b * pos_stride_b + t * pos_stride_t) + 1, kv_len)
    base = b * cache_stride_b + (head // GROUP) * cache_stride_h
    best = tl.full((), float("-inf"), tl.float32)
    total = tl.zeros((), tl.float32)
    acc = tl.zeros((HEAD_DIM,), tl.float32)
    for start in range(0, seen, BLOCK_N):
        keys_at = start + tl.arange(0, BLOCK_N)
        visible = keys_at < seen
        offsets = base + keys_at[:, None] * cache_stride_l + dims[None, :]
        k = tl.load(k_ptr + offsets, mask=visible[:, None], other=0.0).to(tl.float32)
        scores = tl.where(visible, tl.sum(k * q[None, :], axis=1), float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=0))
        rescale = tl.exp(best - new_best)
        p = tl.exp(scores - new_best)
        v = tl.load(v_ptr + offsets, mask=visible[:, None], other=0.0).to(tl.float32)
        acc = acc * rescale + tl.sum(p[:, None] * v, axis=0)
        total = total * rescale + tl.sum(p, axis=0)
        best = new_best
    out = acc / total
    tl.store(out_ptr + (token * NUM_HEADS + head) * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty))


def cache_attention(q: Tensor, k_cache: Tensor, v_cache: Tensor, positions: Tensor, kv_len: int) -> Tensor:
    batch, steps, heads, head_dim = q.shape
    q = q.contiguous()
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    out = torch.empty((batch, steps, heads * head_dim), device=q.device, dtype=q.dtype)
    _cache_attention_kernel[(batch * steps, heads)](
        q, k_cache, v_cache, positions, out, steps, kv_len, head_dim ** -0.5,
        positions.stride(0), positions.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        NUM_HEADS=heads, GROUP=heads // k_cache.shape[1], HEAD_DIM=head_dim, BLOCK_N=64)
    return out


# --- SiLU x mul ------------------------------------------------------------------------------

@triton.jit
def _silu_mul_kernel(gate_ptr, up_ptr, out_ptr, gate_stride, up_stride, n, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n
    gate = tl.load(gate_ptr + row * gate_stride + cols, mask=mask, other=0.0)
    up = tl.load(up_ptr + row * up_stride + cols, mask=mask, other=0.0).to(tl.float32)
    g32 = gate.to(tl.float32)
    silu = (g32 / (1.0 + tl.exp(-g32))).to(gate.dtype).to(tl.float32)  # F.silu rounds to the dtype
    tl.store(out_ptr + row * n + cols, (silu * up).to(out_ptr.dtype.element_ty), mask=mask)


def silu_mul(gate: Tensor, up: Tensor) -> Tensor:
    gates, ups = _rows(gate), _rows(up)
    n = gate.shape[-1]
    out = torch.empty(gate.shape, device=gate.device, dtype=torch.promote_types(gate.dtype, up.dtype))
    block = min(1024, triton.next_power_of_2(n))
    _silu_mul_kernel[(gates.shape[0], triton.cdiv(n, block))](gates, ups, out, gates.stride(0), ups.stride(0), n,
                                                             BLOCK=block)
    return out


# --- the draws -------------------------------------------------------------------------------

@triton.jit
def _hash32(x):
    """lowbias32 on uint32 (wrapping multiplies), as kernels.hash32 on int64."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _draw_keys_kernel(seeds_ptr, index_ptr, out_ptr, rows, BLOCK: tl.constexpr):
    at = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = at < rows
    seeds = (tl.load(seeds_ptr + at, mask=mask, other=0) & 0xFFFFFFFF).to(tl.uint32)
    index = ((tl.load(index_ptr + at, mask=mask, other=0) + 0x9E3779B9) & 0xFFFFFFFF).to(tl.uint32)
    keys = _hash32(_hash32(seeds) ^ _hash32(index))
    tl.store(out_ptr + at, keys.to(tl.int64), mask=mask)


def draw_keys(seeds: Tensor, draw_index: Tensor) -> Tensor:
    seeds, draw_index = (t.contiguous() for t in torch.broadcast_tensors(seeds, draw_index))
    out = torch.empty(seeds.shape, device=seeds.device, dtype=torch.int64)
    count = seeds.numel()
    _draw_keys_kernel[(triton.cdiv(count, 128),)](seeds, draw_index, out, count, BLOCK=128)
    return out


@triton.jit
def _gumbel_argmax_kernel(scores_ptr, keys_ptr, sample_ptr, out_ptr, vocab, scores_stride, sample_stride,
                          BLOCK: tl.constexpr):
    """Program (row,): argmax of scores + Gumbel noise * do_sample over the vocabulary, the noise
    hashed from (key, code) as kernels.gumbel_noise; the first of equal maxima, as torch.argmax."""
    row = tl.program_id(0)
    key = tl.load(keys_ptr + row).to(tl.uint32)
    do_sample = tl.load(sample_ptr + row * sample_stride)
    best = tl.full((), float("-inf"), tl.float32)
    best_at = tl.zeros((), tl.int64)
    for start in range(0, vocab, BLOCK):
        codes = start + tl.arange(0, BLOCK)
        mask = codes < vocab
        cells = _hash32(key + codes.to(tl.uint32) * 0x61C88647)
        uniform = (cells.to(tl.float32) + 0.5) / 4294967296.0
        uniform = tl.minimum(tl.maximum(uniform, 1e-7), 1.0 - 1e-7)
        noise = -tl.log(-tl.log(uniform))
        score = tl.load(scores_ptr + row * scores_stride + codes, mask=mask, other=float("-inf")).to(tl.float32)
        value = tl.where(mask, score + noise * do_sample, float("-inf"))
        block_best = tl.max(value, axis=0)
        block_at = tl.min(tl.where(value == block_best, codes, vocab), axis=0).to(tl.int64)
        better = block_best > best
        best_at = tl.where(better, block_at, best_at)
        best = tl.where(better, block_best, best)
    tl.store(out_ptr + row, best_at)


def gumbel_argmax(scores: Tensor, keys: Tensor, do_sample: Tensor) -> Tensor:
    rows = _rows(scores)
    keys = keys.contiguous()
    sample = do_sample.expand(rows.shape[0], 1).float()
    out = torch.empty(rows.shape[0], device=scores.device, dtype=torch.int64)
    _gumbel_argmax_kernel[(rows.shape[0],)](rows, keys, sample, out, rows.shape[1], rows.stride(0), sample.stride(0),
                                            BLOCK=1024)
    return out.view(scores.shape[:-1])

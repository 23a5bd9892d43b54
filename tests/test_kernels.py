"""The custom ops of engine/kernels.py: their references compute what the engine computed before
them, they dispatch as one op each, and each Triton kernel matches its reference (on CPU tensors
with TRITON_INTERPRET=1, small shapes; on a GPU the same tests run on CUDA tensors).

Tolerances: float32 1e-5 relative (the kernels sum in another order and use their own exp/log/
rsqrt); half precision two rounding steps of the dtype (bfloat16 2**-6 relative, 2e-2 absolute;
float16 2**-9, 2e-3): a sum that lands on the other side of a rounding boundary moves one step,
and a product of it one more."""

from __future__ import annotations

import copy
import importlib
import os

import pytest
import torch
import torch.nn.functional as F

from wyoming_qwen_tts.engine import kernels
from wyoming_qwen_tts.engine.layers import DecoderLayer, GatedMLP, KVCache, fuse_weights, rope_cos_sin
from wyoming_qwen_tts.engine.quantize import quantize_int8

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter emulates bfloat16 badly (its float32 -> bfloat16 casts truncate, its sums can
# overflow), so without a GPU the half-precision cases run in float16, which numpy does natively:
# the same kernels and the same rounding steps, with 3 more mantissa bits.
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.bfloat16: dict(rtol=2**-6, atol=2e-2),
       torch.float16: dict(rtol=2**-9, atol=2e-3)}


@pytest.fixture(scope="module")
def tk():
    """engine/triton_kernels.py; interpreted on CPU tensors when no GPU is here (conftest.py sets
    TRITON_INTERPRET=1 before triton is imported)."""
    pytest.importorskip("triton")
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU, and TRITON_INTERPRET is not 1")
    return importlib.import_module("wyoming_qwen_tts.engine.triton_kernels")


def _randn(*shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen).to(device=DEVICE, dtype=dtype)


# --- references: the engine's arithmetic before the ops --------------------------------------

def test_rms_norm_reference_is_the_former_rmsnorm_bitwise():
    x, weight = _randn(3, 5, 64, dtype=torch.bfloat16), _randn(64, dtype=torch.bfloat16, seed=1)
    x32 = x.float()
    former = weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
    assert torch.equal(kernels.rms_norm(x, weight, 1e-6), former)


def test_fused_weights_give_the_separate_projections_results():
    torch.manual_seed(0)
    layer = DecoderLayer(64, 96, num_heads=4, num_kv_heads=2, head_dim=16, eps=1e-6).eval()
    x = torch.randn(2, 3, 64)
    cos, sin = rope_cos_sin(torch.arange(3), 16, 10000.0, x.dtype)
    caches = [KVCache(1, 2, 2, 8, 16, torch.device("cpu"), x.dtype) for _ in range(2)]
    with torch.inference_mode():
        separate = layer(x, cos, sin, caches[0].keys[0], caches[0].values[0], 0)
        fuse_weights(layer)
        assert not hasattr(layer.self_attn, "q_proj") and layer.self_attn.qkv_proj.weight.shape == (128, 64)
        fused = layer(x, cos, sin, caches[1].keys[0], caches[1].values[0], 0)
    torch.testing.assert_close(fused, separate, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(caches[1].keys, caches[0].keys, rtol=1e-6, atol=1e-6)


def test_int8_of_fused_weights_is_int8_of_each_weight():
    """Per-row scales: quantizing the concatenation quantizes each of its parts alike."""
    torch.manual_seed(0)
    separate = GatedMLP(64, 96)
    fused = copy.deepcopy(separate)
    fused.fuse_weights()
    quantize_int8(separate, torch.float32)
    quantize_int8(fused, torch.float32)
    parts = (separate.gate_proj, separate.up_proj)
    assert torch.equal(fused.gate_up_proj.weight, torch.cat([p.weight for p in parts]))
    assert torch.equal(fused.gate_up_proj.scales, torch.cat([p.scales for p in parts]))
    x = torch.randn(2, 64)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), separate(x), rtol=1e-6, atol=1e-6)


def test_attention_sees_each_rows_positions_only():
    """Row 0 at position 2 ignores what row 1 wrote at 5; GQA reads shared kv heads."""
    q = _randn(2, 1, 4, 16)
    k_cache, v_cache = _randn(2, 2, 8, 16, seed=1), _randn(2, 2, 8, 16, seed=2)
    positions = torch.tensor([[2], [5]], device=DEVICE)
    out = kernels.cache_attention(q, k_cache, v_cache, positions, 8)
    keys = k_cache[0, :, :3].repeat_interleave(2, dim=0)
    values = v_cache[0, :, :3].repeat_interleave(2, dim=0)
    want = F.softmax(q[0, 0, :, None] @ keys.transpose(1, 2) / 4.0, dim=-1) @ values  # (H, 1, D)
    torch.testing.assert_close(out[0, 0], want.reshape(-1), rtol=1e-5, atol=1e-5)


def test_a_step_dispatches_each_custom_op_once():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Names(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.append(f"{func.namespace}.{func.overloadpacket.__name__}")
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    layer = fuse_weights(DecoderLayer(64, 96, num_heads=4, num_kv_heads=2, head_dim=16, eps=1e-6).eval())
    cache = KVCache(1, 2, 2, 8, 16, torch.device("cpu"), torch.float32)
    cos, sin = rope_cos_sin(torch.arange(3), 16, 10000.0, torch.float32)
    with torch.inference_mode(), Names() as seen:
        layer(torch.randn(2, 3, 64), cos, sin, cache.keys[0], cache.values[0], 0)
    ops = [name for name in seen.names if name.startswith("qwen_tts.")]
    assert ops == ["qwen_tts.rms_norm", "qwen_tts.qk_rope_cache", "qwen_tts.cache_attention",
                   "qwen_tts.add_rms_norm", "qwen_tts.silu_mul"]
    assert "aten.pow" not in seen.names  # the op's inside is not dispatched to the mode


def test_cpu_eager_calls_the_reference_and_the_op_computes_the_same():
    """On the CPU, with no dispatch mode watching, the entry calls the reference itself (the op's
    dispatch costs more than it saves there); the op, as compiled graphs call it, gives the same bits."""
    x, weight = torch.randn(2, 3, 64), torch.randn(64)
    residual = torch.randn(2, 3, 64)
    assert torch.equal(kernels.rms_norm(x, weight, 1e-6), kernels.rms_norm.op(x, weight, 1e-6))
    for got, want in zip(kernels.add_rms_norm(x, residual, weight, 1e-6),
                         kernels.add_rms_norm.op(x, residual, weight, 1e-6)):
        assert torch.equal(got, want)
    keys = kernels.draw_keys(torch.arange(4), torch.full((4,), 3))
    assert torch.equal(keys, kernels.draw_keys.op(torch.arange(4), torch.full((4,), 3)))
    scores = torch.randn(4, 300)
    assert torch.equal(kernels.gumbel_argmax(scores, keys, torch.ones(4, 1)),
                       kernels.gumbel_argmax.op(scores, keys, torch.ones(4, 1)))


# --- Triton kernels against their references --------------------------------------------------

DTYPES = [torch.float32, HALF]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 64), (3, 2, 48), (5, 1, 100)])
def test_triton_rms_norm(tk, dtype, shape):
    x, weight = _randn(*shape, dtype=dtype), _randn(shape[-1], dtype=dtype, seed=1)
    residual = _randn(*shape, dtype=dtype, seed=2)
    torch.testing.assert_close(tk.rms_norm(x, weight, 1e-6), kernels.rms_norm_reference(x, weight, 1e-6), **TOL[dtype])
    total, normed = tk.add_rms_norm(x, residual, weight, 1e-6)
    want_total, want_normed = kernels.add_rms_norm_reference(x, residual, weight, 1e-6)
    assert torch.equal(total, want_total)
    torch.testing.assert_close(normed, want_normed, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads, kv_heads, steps, per_row", [(4, 2, 1, True), (2, 2, 2, False), (8, 1, 3, False)])
def test_triton_qk_rope_cache(tk, dtype, heads, kv_heads, steps, per_row):
    batch, head_dim, length = 3, 16, 12
    qkv = _randn(batch, steps, (heads + 2 * kv_heads) * head_dim, dtype=dtype)
    q_weight, k_weight = _randn(head_dim, dtype=dtype, seed=1), _randn(head_dim, dtype=dtype, seed=2)
    if per_row:  # decode: one position per row, tables gathered per row
        positions = torch.tensor([[7], [0], [11]], device=DEVICE)
        cos, sin = rope_cos_sin(positions, head_dim, 10000.0, dtype)
    else:  # block step: the same positions in every row
        positions = torch.arange(4, 4 + steps, device=DEVICE)[None].expand(batch, steps)
        cos, sin = (t[None] for t in rope_cos_sin(positions[0], head_dim, 10000.0, dtype))
    caches = [(torch.zeros(batch, kv_heads, length, head_dim, device=DEVICE, dtype=dtype),
               torch.zeros(batch, kv_heads, length, head_dim, device=DEVICE, dtype=dtype)) for _ in range(2)]
    got = tk.qk_rope_cache(qkv, q_weight, k_weight, 1e-6, cos, sin, *caches[0], positions, heads)
    want = kernels.qk_rope_cache_reference(qkv, q_weight, k_weight, 1e-6, cos, sin, *caches[1], positions, heads)
    # In bfloat16 RoPE's sum of two rounded products can cancel: a step of the norm's rounding
    # then shows as a few steps of the (smaller) result.
    tol = TOL[dtype] if dtype == torch.float32 else dict(rtol=TOL[dtype]["rtol"], atol=5 * TOL[dtype]["atol"])
    torch.testing.assert_close(got, want, **tol)
    torch.testing.assert_close(caches[0][0], caches[1][0], **tol)
    assert torch.equal(caches[0][1], caches[1][1])  # v is copied as it is


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("heads, kv_heads, steps, positions", [
    (4, 2, 1, [[3], [0], [70]]),  # GQA, per-row lengths, one row past a 64-key block
    (2, 2, 2, [[4, 5], [4, 5], [4, 5]]),  # a block step: two queries, causal between them
    (8, 1, 1, [[9], [9], [1]]),
])
def test_triton_cache_attention(tk, dtype, heads, kv_heads, steps, positions):
    batch, head_dim, length = 3, 16, 80
    q = _randn(batch, steps, heads, head_dim, dtype=dtype)
    k_cache = _randn(batch, kv_heads, length, head_dim, dtype=dtype, seed=1)
    v_cache = _randn(batch, kv_heads, length, head_dim, dtype=dtype, seed=2)
    positions = torch.tensor(positions, device=DEVICE)
    kv_len = int(positions.max()) + 2  # longer than any row needs: the rest is masked
    got = tk.cache_attention(q, k_cache, v_cache, positions, kv_len)
    want = kernels.cache_attention_reference(q, k_cache, v_cache, positions, kv_len)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_silu_mul_on_halves_of_one_projection(tk, dtype):
    gate_up = _randn(2, 3, 2 * 1500, dtype=dtype)  # more than one 1024-wide block per row
    gate, up = gate_up[..., :1500], gate_up[..., 1500:]
    torch.testing.assert_close(tk.silu_mul(gate, up), kernels.silu_mul_reference(gate, up), **TOL[dtype])


def test_triton_draw_keys_are_the_references_bitwise(tk):
    seeds = torch.tensor([0, 1, 2**32 - 1, 12345678901, -5], device=DEVICE)
    index = torch.tensor([0, 17, 3, 2**31, 16 * 400 + 15], device=DEVICE)
    assert torch.equal(tk.draw_keys(seeds, index), kernels.draw_keys_reference(seeds, index))


@pytest.mark.parametrize("vocab", [2048, 3072, 100])
def test_triton_gumbel_argmax_draws_the_references_codes(tk, vocab):
    rows = 6
    scores = _randn(rows, vocab) * 3
    scores[1, vocab // 2:] = float("-inf")  # filtered codes never come out
    keys = kernels.draw_keys_reference(torch.arange(rows, device=DEVICE) + 100, torch.full((rows,), 5, device=DEVICE))
    do_sample = torch.tensor([[1.0], [1.0], [0.0], [1.0], [0.0], [1.0]], device=DEVICE)
    got = tk.gumbel_argmax(scores, keys, do_sample)
    assert torch.equal(got, kernels.gumbel_argmax_reference(scores, keys, do_sample))
    assert got[1] < vocab // 2


def test_triton_gumbel_argmax_takes_the_first_of_equal_maxima(tk):
    scores = torch.zeros(1, 3000, device=DEVICE)
    scores[0, [5, 1500, 2900]] = 10.0
    assert tk.gumbel_argmax(scores, torch.zeros(1, dtype=torch.int64, device=DEVICE),
                            torch.zeros(1, 1, device=DEVICE)).item() == 5

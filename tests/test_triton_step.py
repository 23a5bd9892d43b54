"""The real frame step (generate.frame_step, through DecodeBatch.step) with every custom op on its
Triton kernel gives what the same step gives on the references: the tiny checkpoint, a batch of
rows admitted with prompts of different lengths (so each row decodes at its own position), a few
frames (each runs the code predictor's 15 block steps), greedy and seeded sampling rows. Without a
GPU the kernels run interpreted (TRITON_INTERPRET=1, set by conftest.py) on CPU tensors; on a GPU
the same test runs on CUDA tensors, where the references are the other path.

What tests/test_kernels.py cannot see is checked here: the real layers' layouts (fused qkv and
gate/up projections read as views, GQA, cache slices of the (layers, rows, kv, L, D) caches,
per-row positions read from a column of the packed step integers, the predictor's positions and
cos/sin from its shared table, expanded over rows), the draws' keys and rows, and the model dtype.

How the two paths are compared (teacher forcing, one step at a time):
- Both batches hold the same state before each step: the reference batch's hidden states, seen
  codes and both caches are copied into the Triton batch. Each step is then compared on its own,
  so the tolerance is that of one step, not of errors compounding over frames.
- Every draw (the talker's code 0 and the predictor's 15) is recorded: its logits (after the
  penalty and the bans), its noise keys and the code chosen. The Triton step is fed the
  reference's codes (the draw returns the reference's code after recording its own), so both
  paths see the same inputs at every draw of the step, and its logits, the talker's next hidden
  states and the caches it wrote are compared with the reference's within a tolerance.
- Codes are compared exactly where exactness is sound: the keys bit for bit (integer hashing),
  and each code the Triton path chose must be the reference's unless the reference's decision was
  a near-tie within the tolerance (the two codes' noisy scores, or a code and the top-k boundary,
  closer than the logits may differ). Requiring equal codes outright would fail on near-ties
  whenever the kernels sum in another order (and differently on AVX2 and AVX-512 CI machines, or
  on a GPU); letting the Triton codes drive the next steps instead would make one flip change
  every later input, and nothing after it could be compared.
- Every Triton kernel must have run (a test that silently ran the references would pass), and the
  reference path must not have run any.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
from collections import Counter
from dataclasses import dataclass

import pytest
import torch

from wyoming_qwen_tts.engine import SamplingConfig, generate, kernels, predictor, sampling
from wyoming_qwen_tts.engine.generate import DecodeBatch, Row
from wyoming_qwen_tts.engine.sampling import DrawPlan, RowParams, SamplingParams

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# As tests/test_kernels.py: the interpreter emulates bfloat16 badly, float16 it does natively.
HALF = torch.bfloat16 if DEVICE == "cuda" else torch.float16
# One step of the model, the same inputs: float32 differs by the kernels' order of summation and
# their own exp/rsqrt; half precision by a step of rounding here and there, carried through the
# layers. Measured on CPU, interpreted: float32 at most 1.3e-6 (logits), 1.2e-6 (caches); float16
# 4.4e-3 (logits), 3e-3 (caches): ~10x headroom. bfloat16 (GPU only, not measured yet): float16's x 8,
# its 3 fewer mantissa bits. A wrong stride, position or head is off by far more (order 1).
TOL = {torch.float32: {"rtol": 2e-5, "atol": 2e-5}, torch.float16: {"rtol": 1e-2, "atol": 2e-2},
       torch.bfloat16: {"rtol": 8e-2, "atol": 1.6e-1}}
KERNELS = ("rms_norm", "add_rms_norm", "qk_rope_cache", "cache_attention", "silu_mul", "draw_keys", "gumbel_argmax")
_CHOOSE = sampling.choose_planned


@pytest.fixture(scope="module")
def tk():
    pytest.importorskip("triton")
    if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("no GPU, and TRITON_INTERPRET is not 1")
    return importlib.import_module("wyoming_qwen_tts.engine.triton_kernels")


@pytest.fixture(scope="module")
def voice(base_tts, ref_wav):
    return base_tts.clone_voice(ref_wav, x_vector_only=True)


@dataclass
class Draw:
    logits: torch.Tensor  # (R, V) float32, as the draw got them
    keys: torch.Tensor  # (R,) int64
    code: torch.Tensor  # (R,) int64: what this path chose
    rows: RowParams
    plan: DrawPlan


class Draws:
    """sampling.choose_planned, recording each draw; with `forced` (the reference's draws of the
    same step) it returns the reference's code, so the rest of the step gets the same inputs."""

    def __init__(self, forced: list[Draw] | None = None) -> None:
        self.draws: list[Draw] = []
        self.forced = forced

    def __call__(self, logits, rows, keys, plan):
        code = _CHOOSE(logits, rows, keys, plan)
        self.draws.append(Draw(logits.clone(), keys.clone(), code.clone(),
                               RowParams(*(field.clone() for field in rows.fields())), plan))
        if self.forced is None:
            return code
        return self.forced[len(self.draws) - 1].code.clone()


@contextlib.contextmanager
def _path(monkeypatch, tk, on_triton: bool, draws: Draws, calls: Counter):
    """The custom ops on their Triton kernels (on_triton) or on their references; draws recorded."""
    with monkeypatch.context() as patch:
        patch.setattr(generate, "choose_planned", draws)
        patch.setattr(predictor, "choose_planned", draws)
        patch.setattr(kernels, "_on_triton", lambda *tensors: on_triton)
        if on_triton:
            patch.setattr(kernels, "_direct", lambda x: False)  # on the CPU too: through the op
        for name in KERNELS:
            counted = _counted(getattr(tk, name), name if on_triton else f"{name} (reference path)", calls)
            patch.setattr(tk, name, counted)
        yield


def _counted(kernel, name: str, calls: Counter):
    def call(*args):
        calls[name] += 1
        return kernel(*args)
    return call


def _state(batch: DecodeBatch) -> dict[str, torch.Tensor]:
    count = len(batch.rows)
    return {"hidden": batch.hidden[:count], "seen": batch.seen[:count],
            "talker keys": batch.cache.keys[:, :count], "talker values": batch.cache.values[:, :count],
            "predictor keys": batch.predictor_cache.keys[:, :count],
            "predictor values": batch.predictor_cache.values[:, :count]}


def _near_tie(draw: Draw, row: int, other: int, tol: dict) -> bool:
    """Whether the draw's choice between its code and `other` in row `row` could go either way
    with logits off by the tolerance: the two noisy scores that closely tied, or one of the codes
    that close to the top-k boundary (where it may be kept on one path, filtered on the other)."""
    logits = draw.logits[row].double()
    finite = logits[logits.isfinite()]
    inv_t = float(draw.rows.inv_temperature[row]) if draw.plan.sample else 1.0
    # Either path's logits may be off by the tolerance; the noise by a few of its own ulps on a GPU.
    slack = 2 * inv_t * (tol["atol"] + tol["rtol"] * float(finite.abs().max())) + 1e-4
    scaled = logits * inv_t
    value = scaled
    if draw.plan.sample:
        noise = kernels.gumbel_noise(draw.keys[row:row + 1].cpu(), logits.shape[0])[0].double()
        value = scaled + noise.to(scaled.device) * float(draw.rows.do_sample[row])
    chosen = int(draw.code[row])
    if abs(float(value[chosen] - value[other])) <= slack:
        return True
    if draw.plan.sample and draw.plan.top_k:
        k = min(int(draw.rows.top_k[row]), draw.plan.top_k)
        kth = float(scaled.topk(k).values[-1])
        return any(abs(float(scaled[code]) - kth) <= slack for code in (chosen, other))
    return False


def _compare_step(frame: int, want: list[Draw], got: list[Draw], tol: dict) -> None:
    assert len(got) == len(want) == 16, f"frame {frame}: {len(got)} draws on the Triton path, {len(want)} on the other"
    for index, (ref, tri) in enumerate(zip(want, got)):
        where = f"frame {frame}, draw {index} ({'talker' if index == 0 else 'code predictor'})"
        assert torch.equal(tri.keys, ref.keys), f"{where}: noise keys differ"
        torch.testing.assert_close(tri.logits, ref.logits, **tol, msg=lambda m, w=where: f"{w}: logits: {m}")
        for row in range(ref.code.shape[0]):
            code = int(tri.code[row])
            assert code == int(ref.code[row]) or _near_tie(ref, row, code, tol), \
                f"{where}, row {row}: the Triton path chose {code}, the reference {int(ref.code[row])} (no near-tie)"


def _rows(prompts, seeds, samplings, frames):
    return [Row(prefill, config, seed=seed, max_frames=frames, min_frames=frames)
            for prefill, seed, config in zip(prompts, seeds, samplings)]


SAMPLED = SamplingConfig()  # the checkpoints' defaults: temperature 0.9, top-k 50, penalty 1.05 on the talker
PICKY = SamplingConfig(talker=SamplingParams(temperature=0.7, top_k=20, repetition_penalty=1.2),
                       predictor=SamplingParams(temperature=1.1, top_k=30))
CASES = {
    # A greedy row among sampling rows of their own settings: every kernel, the draws included.
    "float32-greedy-and-sampling-rows": (torch.float32, (SamplingConfig.greedy(), SAMPLED, PICKY), 3),
    # All greedy (the argmax plan, no noise kernel) in half precision.
    "half-greedy": (HALF, (SamplingConfig.greedy(),) * 2, 2),
}
# Prompts of 9, 20 and 17 positions (the text in the prompt or fed a token a frame): short, as the
# interpreter takes ~40 ms a launch, more with more rows and positions.
PROMPTS = [("Hi.", None), ("Hello world, this is a test.", "prefill"), ("Turn on the lights.", "prefill")]


@pytest.mark.parametrize("case", list(CASES))
def test_the_frame_step_on_triton_kernels_matches_the_references(base_tts, voice, tk, monkeypatch, case):
    dtype, samplings, frames = CASES[case]
    tol = TOL[dtype]
    talker = copy.deepcopy(base_tts.model.talker).to(device=DEVICE, dtype=dtype)
    prompts = [base_tts.prompts.build(text, voice, "auto", mode, device=torch.device("cpu"))
               for text, mode in PROMPTS[: len(samplings)]]
    assert len({p.embeds.shape[1] for p in prompts}) == len(prompts), "the rows should start at different positions"
    seeds = [100 + index for index in range(len(samplings))]
    reference, triton = (DecodeBatch(talker, max_rows=4, max_len=128) for _ in range(2))
    calls: Counter = Counter()
    # The prompts prefilled together (padded to the longest: the block step, T > 1), on each path.
    with _path(monkeypatch, tk, False, Draws(), calls):
        reference.admit_many(_rows(prompts, seeds, samplings, frames))
    with _path(monkeypatch, tk, True, Draws(), calls):
        triton.admit_many(_rows(prompts, seeds, samplings, frames))
    for name, tensor in _state(reference).items():
        torch.testing.assert_close(_state(triton)[name], tensor, **tol, msg=lambda m, w=name: f"prefill, {w}: {m}")

    for frame in range(frames):
        with torch.inference_mode():
            for name, tensor in _state(triton).items():
                tensor.copy_(_state(reference)[name])
        want = Draws()
        with _path(monkeypatch, tk, False, want, calls):
            want_frames, _ = reference.step()
        got = Draws(forced=want.draws)
        with _path(monkeypatch, tk, True, got, calls):
            got_frames, _ = triton.step()

        _compare_step(frame, want.draws, got.draws, tol)
        assert [f.tolist() for _, f in got_frames] == [f.tolist() for _, f in want_frames]
        for name, tensor in _state(reference).items():
            torch.testing.assert_close(_state(triton)[name], tensor, **tol,
                                       msg=lambda m, w=f"frame {frame}, {name}": f"{w}: {m}")

    expected = {name for name in KERNELS if name != "gumbel_argmax" or any(s.talker.do_sample for s in samplings)}
    assert set(calls) == expected, f"kernels run: {dict(calls)}"


class _Launches:
    """A Triton kernel whose launches are recorded by what Triton compiles a kernel for: its
    constexprs, each tensor's dtype and whether its address is 16-byte aligned, each integer's being
    1 or a multiple of 16 (BaseBackend.get_*_specialization)."""

    def __init__(self, kernel, name: str, seen: list) -> None:
        self.kernel, self.name, self.seen = kernel, name, seen

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            def specialized(arg):
                if isinstance(arg, torch.Tensor):
                    return str(arg.dtype), arg.data_ptr() % 16 == 0
                if isinstance(arg, int) and not isinstance(arg, bool):
                    return "int", arg == 1, arg % 16 == 0
                return type(arg).__name__
            self.seen.append((self.name, tuple(map(specialized, args)), tuple(sorted(constexprs.items()))))
            return self.kernel[grid](*args, **constexprs)
        return launch


def test_a_captured_code_predictor_step_launches_the_kernels_its_warm_up_compiled(base_tts, tk, monkeypatch):
    """CudaGraphRunner runs each bucket's step eagerly, then captures it. A launch whose arguments
    specialize otherwise than the warm-up's (a position tensor at another alignment, say) makes
    Triton compile and load a kernel inside the capture, which a capture need not survive. The code
    predictor's block steps are the part of a step that knows it is being captured (its RoPE table)."""
    from wyoming_qwen_tts.engine import layers

    code_predictor = copy.deepcopy(base_tts.model.talker.code_predictor).to(DEVICE)
    cfg = code_predictor.cfg
    cache = code_predictor.new_cache(2, torch.device(DEVICE), torch.float32)
    x = torch.randn(2, 2, cfg.hidden_size, generator=torch.Generator().manual_seed(0)).to(DEVICE)
    launched = {False: [], True: []}
    for capturing in (False, True):
        with _path(monkeypatch, tk, True, Draws(), Counter()), monkeypatch.context() as patch, torch.inference_mode():
            patch.setattr(layers, "_capturing", lambda tensor, capturing=capturing: capturing)
            for name in ("_qk_rope_cache_kernel", "_cache_attention_kernel", "_rms_norm_kernel", "_silu_mul_kernel"):
                patch.setattr(tk, name, _Launches(getattr(tk, name), name, launched[capturing]))
            for start, steps in ((0, 2), (2, 1), (3, 1)):  # the first two codes, then one a step
                layers.block_step(code_predictor.model.layers, x[:, :steps], cache, slice(0, 2), start, cfg.rope_theta,
                                  cfg.head_dim)
    assert len(launched[True]) == len(launched[False])
    for warm, captured in zip(launched[False], launched[True]):
        assert captured == warm, f"a captured launch the warm-up did not compile:\n{captured}\nwarm-up:\n{warm}"


# Each kernel compiled as a GPU would compile it (Triton's own compiler down to a cubin for sm_90,
# the H200's), at the real models' sizes (Qwen3-TTS 1.7B: talker hidden 2048, the predictor's 1024,
# 16 heads over 8 kv heads of 128) in each model dtype. The interpreter above does not compile
# anything: a kernel it runs can still be refused by the compiler (types, loop bounds, shapes).
COMPILE = r"""
import sys
import triton
try:  # triton's compiler API, not a public one: another triton may move it
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError:
    sys.exit(77)

if "nvidia" not in triton.backends.backends:
    sys.exit(77)
from wyoming_qwen_tts.engine import triton_kernels as tk

target = GPUTarget("cuda", 90, 32)
for dtype in ("bf16", "fp16", "fp32"):
    d = dtype
    for name, pointers, constants in [
        ("_rms_norm_kernel", dict(x_ptr=d, res_ptr=d, w_ptr=d, sum_ptr=d, out_ptr=d), dict(HAS_RES=True, BLOCK=2048)),
        ("_rms_norm_kernel", dict(x_ptr=d, res_ptr=d, w_ptr=d, sum_ptr=d, out_ptr=d), dict(HAS_RES=False, BLOCK=1024)),
        ("_qk_rope_cache_kernel", dict(qkv_ptr=d, qw_ptr=d, kw_ptr=d, cos_ptr=d, sin_ptr=d, pos_ptr="i64", q_ptr=d,
                                       k_ptr=d, v_ptr=d), dict(NUM_HEADS=16, KV_HEADS=8, HEAD_DIM=128)),
        ("_cache_attention_kernel", dict(q_ptr=d, k_ptr=d, v_ptr=d, pos_ptr="i64", out_ptr=d),
         dict(NUM_HEADS=16, GROUP=2, HEAD_DIM=128, BLOCK_N=64)),
        ("_silu_mul_kernel", dict(gate_ptr=d, up_ptr=d, out_ptr=d), dict(BLOCK=1024)),
        ("_draw_keys_kernel", dict(seeds_ptr="i64", index_ptr="i64", out_ptr="i64"), dict(BLOCK=128)),
        ("_gumbel_argmax_kernel", dict(scores_ptr="fp32", keys_ptr="i64", sample_ptr="fp32", out_ptr="i64"),
         dict(BLOCK=1024)),
    ]:
        kernel = getattr(tk, name)
        names = kernel.arg_names
        signature = {arg: "constexpr" if arg in constants else "*" + pointers[arg] if arg in pointers
                     else "fp32" if arg in ("eps", "scale") else "i32" for arg in names}
        source = ASTSource(fn=kernel, signature=signature,
                           constexprs={(names.index(arg),): value for arg, value in constants.items()}, attrs={})
        try:
            assert triton.compile(source, target=target).asm["cubin"]
        except Exception as err:
            print(f"{name} ({dtype}, {constants}): {type(err).__name__}: {err}")
            sys.exit(1)
"""


def test_every_kernel_compiles_for_the_gpu(tmp_path):
    """In a fresh interpreter: with TRITON_INTERPRET=1 (set for this one) triton.jit makes
    interpreted functions, which do not compile."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton")
    repo = str(Path(__file__).parent.parent)
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, (repo, os.environ.get("PYTHONPATH"))))}
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run([sys.executable, "-c", COMPILE], env=env, cwd=repo, capture_output=True, text=True,
                         timeout=300, check=False)
    if out.returncode == 77:
        pytest.skip("this triton has no NVIDIA backend, or its compiler API moved")
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]

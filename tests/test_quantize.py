"""Weight-only int8 (--quantize int8) and the dtype that `auto` picks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.quant_accuracy import compare
from wyoming_qwen_tts.engine import QwenTTS, VoicePrompt, engine, quantize
from wyoming_qwen_tts.engine.checkpoint import parse_codec_config, parse_model_config
from wyoming_qwen_tts.engine.codec import SpeechCodec
from wyoming_qwen_tts.engine.quantize import Int8Embedding, Int8Linear, quantize_int8, resolve_quantize, weight_bytes
from wyoming_qwen_tts.engine.talker import Qwen3TTSModel

from .conftest import FIXTURES

PUBLISHED = FIXTURES.parents[1] / "tools" / "published_configs"


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach().float(), reference.detach().float()
    return float((value - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def int8_tts():
    return QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32", quantize="int8")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 8, 40])  # 1 and 8 take the int8 kernel on CPU, 40 the dequantized matmul
@pytest.mark.parametrize("width", [128, 40])  # 40 is no multiple of the int8 kernel's block: dequantized matmul
def test_int8_linear_is_close_to_the_dense_one(dtype, rows, width):
    torch.manual_seed(0)
    dense = nn.Linear(width, 96, bias=True).to(dtype)
    quantized = Int8Linear(dense, dtype)
    x = torch.randn(2, rows, width, dtype=dtype)
    out = quantized(x)
    assert out.shape == (2, rows, 96) and out.dtype == dtype
    assert quantized.weight.dtype == torch.int8
    assert relative_error(out, dense(x)) < 0.012


def test_int8_embedding_is_close_to_the_dense_one():
    torch.manual_seed(0)
    dense = nn.Embedding(300, 64)
    quantized = Int8Embedding(dense, torch.bfloat16)
    ids = torch.tensor([[0, 7, 299], [5, 5, 1]])
    out = quantized(ids)
    assert out.shape == (2, 3, 64) and out.dtype == torch.bfloat16
    assert relative_error(out, dense(ids)) < 0.012


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])  # float32: the bf16 kernel inputs too
def test_int8_layers_compile_in_one_graph(dtype):
    """torch.compile (fullgraph: no graph break) gives what eager gives, on both CPU paths."""
    torch.manual_seed(0)
    model = quantize_int8(nn.Sequential(nn.Linear(64, 128), nn.SiLU(), nn.Linear(128, 64, bias=False)), dtype)
    compiled = torch.compile(model, fullgraph=True)
    with torch.inference_mode():
        for rows in (1, 40):
            x = torch.randn(rows, 64, dtype=dtype)
            assert relative_error(compiled(x), model(x)) < 0.02


def test_int8_model_holds_int8_talker_and_predictor(base_tts, int8_tts):
    talker = int8_tts.model.talker
    dense = [name for name, module in talker.named_modules() if isinstance(module, (nn.Linear, nn.Embedding))]
    assert dense == []
    assert isinstance(talker.codec_head, Int8Linear)
    assert isinstance(talker.code_predictor.lm_head[0], Int8Linear)
    assert isinstance(talker.model.text_embedding, Int8Embedding)
    assert all(p.dtype == torch.float32 for p in int8_tts.model.speaker_encoder.parameters())
    assert weight_bytes(talker) < 0.3 * weight_bytes(base_tts.model.talker)


def test_int8_synthesizes_the_asked_frames(int8_tts):
    voice = VoicePrompt(kind="xvector", speaker_embedding=torch.randn(int8_tts.model.cfg.talker.hidden_size))
    samples, codes = int8_tts.synthesize("Hello there.", voice, seed=3, max_frames=6, min_frames=6)
    assert codes.shape == (6, 16)
    assert samples.shape == (6 * 1920,) and bool(torch.isfinite(torch.from_numpy(samples)).all())


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_int8_logits_stay_close_to_float32(base_tts, dtype):
    """Teacher-forced on float32's greedy codes: logits of the talker and the code predictor.
    Measured on this fixture: relative error 0.0096 / 0.017 (float32 model, the int8 kernel fed bf16
    where ATen runs AVX2/AVX512 kernels; 0.009 / 0.017 fed float32), 0.011 / 0.020
    (bfloat16); argmax agreement 0.98 / 0.97."""
    variant = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype=dtype, quantize="int8")
    voice = VoicePrompt(kind="xvector", speaker_embedding=torch.ones(base_tts.model.cfg.talker.hidden_size))
    accuracy = compare(base_tts, variant, voice, frames=16)
    assert accuracy.talker_rel_error < 0.03
    assert accuracy.predictor_rel_error < 0.05
    assert accuracy.argmax_agreement > 0.9


def test_1_7B_base_int8_weights_fit_in_2_6_GB():
    """Counted on the meta device with the released shapes: what QwenTTS holds with --quantize int8."""
    config = parse_model_config(json.loads((PUBLISHED / "1.7B-Base.json").read_text()))
    codec_config = parse_codec_config(json.loads((PUBLISHED / "speech_tokenizer.json").read_text()))
    with torch.device("meta"):
        model = Qwen3TTSModel(config).to(torch.bfloat16)
        model.speaker_encoder.float()
        bf16_bytes = weight_bytes(model)
        quantize_int8(model.talker, torch.bfloat16)
        codec = SpeechCodec(codec_config, with_encoder=True)
    model_bytes = weight_bytes(model)
    assert bf16_bytes > 3.8e9  # the count sees the whole model
    assert model_bytes <= 2.6e9  # talker, code predictor and speaker encoder: 1.97 GB
    # With the float32 speech codec (0.68 GB, of which the encoder, used to clone voices, 0.22 GB),
    # the whole is 2.65 GB (2.47 GiB):
    assert model_bytes + weight_bytes(codec) < 2.7e9


def test_quantize_values(monkeypatch):
    monkeypatch.setattr(quantize, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert resolve_quantize("INT8") == "int8"
    assert resolve_quantize(None) == "none"
    assert resolve_quantize("auto", torch.device("cpu"), torch.bfloat16) == "int8"
    assert resolve_quantize("auto", torch.device("cpu"), torch.float32) == "none"  # float32 asked for on a bf16 CPU
    assert resolve_quantize("auto", torch.device("cuda"), torch.bfloat16) == "none"
    assert resolve_quantize("none", torch.device("cpu"), torch.bfloat16) == "none"
    with pytest.raises(ValueError, match="none, int8"):
        resolve_quantize("int4")


# (CPU flags, what --dtype auto then --quantize auto pick there)
CPUS = {
    "AVX512-BF16 (Zen 4, this EPYC)": ({"avx", "avx2", "fma", "avx512f", "avx512_bf16"}, torch.bfloat16, "int8"),
    "AMX (Sapphire Rapids)": ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, torch.bfloat16, "int8"),
    "AVX2 only (N100, Ryzen 5000)": ({"sse4_2", "avx", "avx2", "fma", "f16c"}, torch.float32, "int8"),
    "AVX-512 without bf16 (Ice Lake)": ({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, torch.float32, "int8"),
    "no AVX2 (old x86, or not Linux)": ({"sse4_2", "avx"}, torch.float32, "none"),
    "no flags read": (set(), torch.float32, "none"),
}


@pytest.mark.parametrize("cpu", list(CPUS))
def test_auto_picks_by_the_cpu_flags(monkeypatch, cpu):
    """What `auto` runs on each kind of CPU, decided from its flags alone (quantize.cpu_flags is the
    one place they are read): on a CPU with AVX2 but no native bf16 the model stays float32 and the
    weights go int8 (the int8 kernel takes bf16 inputs there: BENCHMARKS.md, "CPU: AVX2-only")."""
    flags, dtype, weights = CPUS[cpu]
    monkeypatch.setattr(quantize, "cpu_flags", lambda: frozenset(flags))
    cpu_device = torch.device("cpu")
    assert engine.resolve_dtype("auto", cpu_device) == dtype
    assert resolve_quantize("auto", cpu_device, engine.resolve_dtype("auto", cpu_device)) == weights
    # explicit choices are kept whatever the CPU
    assert engine.resolve_dtype("bfloat16", cpu_device) == torch.bfloat16
    assert resolve_quantize("none", cpu_device, dtype) == "none"
    assert resolve_quantize("int8", cpu_device, dtype) == "int8"
    assert engine.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_quantize("auto", torch.device("cuda"), torch.bfloat16) == "none"


@pytest.mark.parametrize("fast_bf16, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_dtype_follows_the_cpu(monkeypatch, fast_bf16, expected):
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert engine.resolve_dtype("auto", torch.device("cpu")) == expected
    assert engine.resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert engine.resolve_dtype("float32", torch.device("cpu")) == torch.float32


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="Linux reports CPU flags in /proc/cpuinfo")
def test_fast_bf16_is_read_from_the_cpu_flags():
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
        flags = cpuinfo.read()
    assert engine.cpu_has_fast_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    assert quantize.cpu_has_avx2() == (" avx2" in flags)


@pytest.mark.parametrize("rows", [1, 8])
def test_int8_kernel_with_bf16_inputs_is_close_to_float32(monkeypatch, rows):
    """float32 activations reach the CPU int8 kernel rounded to bf16 (its vectorised path) where
    ATen runs AVX2/AVX512 kernels; the scalar float32 path elsewhere. Both stay near the dense layer."""
    torch.manual_seed(0)
    dense = nn.Linear(256, 384, bias=True)
    quantized = Int8Linear(dense, torch.float32)
    x = torch.randn(rows, 256)
    with torch.inference_mode():
        fast = quantized(x)
        monkeypatch.setattr(quantize, "int8_kernel_wants_bf16", lambda dtype: False)
        scalar = quantized(x)
        expected = dense(x)
    assert fast.dtype == scalar.dtype == torch.float32
    assert relative_error(fast, expected) < 0.012
    assert relative_error(scalar, expected) < 0.012
    assert relative_error(fast, scalar) < 0.006  # bf16 rounding of inputs, scales and outputs


def test_compile_is_off_by_default_and_on_when_asked(monkeypatch):
    """auto is off on CUDA as on CPU: on the H200 the compile of a frame step outlasted minutes of
    start-up (BENCHMARKS.md), while the CUDA graphs alone need no compile."""
    monkeypatch.setattr(engine.shutil, "which", lambda name: "/usr/bin/" + name)  # a C compiler is there
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert engine.resolve_compile("auto", device) is False
        assert engine.resolve_compile("true", device) is True
        assert engine.resolve_compile(" False ", device) is False
        assert engine.resolve_compile(True, device) is True
    with pytest.raises(ValueError, match="true, false or auto"):
        engine.resolve_compile("sometimes", torch.device("cpu"))


def prompt_linear(width=256, out=384, dtype=torch.float32):
    torch.manual_seed(0)
    dense = nn.Linear(width, out, bias=True).to(dtype)
    return dense, Int8Linear(dense, dtype, int8_prompts=True)


needs_integer_matmul = pytest.mark.skipif(quantize.cpu_int8_matmul() == "none",
                                          reason="this CPU has no vectorised integer matmul (no AVX2)")


@needs_integer_matmul
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prompt_rows_take_the_integer_matmul_close_to_the_dense_layer(monkeypatch, dtype):
    dense, quantized = prompt_linear(dtype=dtype)
    assert quantized.prompt_matmul
    calls = []
    monkeypatch.setattr(torch, "_int_mm", lambda *args: calls.append(args) or torch.ops.aten._int_mm(*args))
    x = torch.randn(3, 20, 256, dtype=dtype)  # 60 rows: a prompt
    with torch.inference_mode():
        out, expected = quantized(x), dense(x)
        few = quantized(x[:1, :8])  # a decode step's rows keep the int8 weight kernel
    assert len(calls) == 1 and calls[0][0].dtype == torch.int8 and out.dtype == dtype
    assert relative_error(out, expected) < 0.015
    assert relative_error(few, expected[:1, :8]) < 0.015


@needs_integer_matmul
def test_each_prompt_row_gets_the_same_result_whatever_shares_the_call():
    """Rows are quantized one by one and the sums are exact integers: a row's result does not
    depend on the rows beside it (nor on whether a poorly quantizable row is among them)."""
    _, quantized = prompt_linear()
    x = torch.randn(40, 256)
    x[7, 3] = 500.0  # a massive activation: this row takes the decode kernel
    with torch.inference_mode():
        together = quantized(x)
        alone = torch.cat([quantized(torch.cat((x[i:i + 1], torch.randn(19, 256))))[:1] for i in range(40)])
    assert torch.equal(together, alone)


@needs_integer_matmul
def test_rows_that_quantize_poorly_are_computed_as_decode_rows():
    dense, quantized = prompt_linear()
    x = torch.randn(40, 256)
    outliers = [2, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 30]  # 18: two chunks
    x[outliers, 5] = 300.0  # one channel ~20 times the others' rms x sqrt(width): per-row int8 would lose them
    with torch.inference_mode():
        out, expected = quantized(x), dense(x)
        as_decode = torch.cat([quantized(x[i:i + 1]) for i in outliers])
    assert torch.equal(out[outliers], as_decode)
    assert relative_error(out, expected) < 0.015
    _, _, poor = quantize.quantize_rows(x)
    assert poor.nonzero()[:, 0].tolist() == outliers


def test_int8_prompts_are_off_when_asked_and_never_on_the_predictor():
    auto = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32", quantize="int8")
    off = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32", quantize="int8", int8_prompts="off")
    dense = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32", quantize="none")
    has_matmul = quantize.cpu_int8_matmul() != "none"
    assert auto.int8_prompts is has_matmul and off.int8_prompts is False and dense.int8_prompts is False

    def prompt_linears(tts):
        return sorted(name for name, module in tts.model.talker.named_modules()
                      if isinstance(module, Int8Linear) and module.prompt_matmul)

    names = prompt_linears(auto)
    assert (len(names) > 0) is has_matmul and prompt_linears(off) == []
    assert all(name.startswith(("model.layers.", "text_projection.")) for name in names)
    with pytest.raises(ValueError, match="int8_prompts"):
        engine.resolve_int8_prompts("sometimes", "int8", torch.device("cpu"))


@pytest.mark.skipif(not quantize.cpu_has_avx2(), reason="needs an x86 CPU with AVX2")
def test_a_saturating_integer_matmul_is_found_and_prompts_stay_exact_with_7_bit_weights(tmp_path):
    """Capped at AVX2 without VNNI, oneDNN adds pairs of u8 x s8 products in int16, which overflows
    for int8 weights: the probe must see it, and the prompts' 7-bit weights must not overflow."""
    script = tmp_path / "capped.py"
    script.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from wyoming_qwen_tts.engine import quantize\n"
        "assert quantize.cpu_int8_matmul() == 'saturating', quantize.cpu_int8_matmul()\n"
        "a = torch.full((32, 512), 127, dtype=torch.int8)\n"
        "w = torch.full((64, 512), 64, dtype=torch.int8)\n"
        "w[1::2] = -64\n"
        "assert torch.equal(torch._int_mm(a, w.t()).long(), a.long() @ w.long().t())\n"
        "torch.manual_seed(0)\n"
        "dense = nn.Linear(512, 256)\n"
        "layer = quantize.Int8Linear(dense, torch.float32, int8_prompts=True)\n"
        "assert layer.prompt_weight.abs().max() <= 64 and layer.prompt_weight.abs().max() >= 63\n"
        "x = torch.randn(40, 512)\n"
        "with torch.inference_mode():\n"
        "    error = float((layer(x) - dense(x)).norm() / dense(x).norm())\n"
        "assert error < 0.02, error\n"
        "print('ok', error)\n")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
           "PYTHONPATH": str(FIXTURES.parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


@pytest.mark.parametrize(("option", "value"), [("--quantize", "int8"), ("--quantize", "none"),
                                               ("--compile", "true"), ("--int8-prompts", "off")])
def test_server_takes_engine_options_from_option_and_environment(monkeypatch, tmp_path, option, value):
    from wyoming_qwen_tts.__main__ import build_parser, check_config

    name = option[2:].replace("-", "_")

    def setting(*words):
        return getattr(check_config(build_parser().parse_args([*base, *words]))[2], name)

    base = ["--model", str(FIXTURES / "tiny-base"), "--data-dir", str(tmp_path)]
    assert setting() == "auto"
    assert setting(option, value) == value
    monkeypatch.setenv(f"QWEN_TTS_{name.upper()}", value)
    assert setting() == value
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, option, "maybe"])

"""Weight-only int8 (--quantize int8) and the dtype that `auto` picks."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.quant_accuracy import compare
from wyoming_qwen_tts.engine import QwenTTS, VoicePrompt, engine, quantize
from wyoming_qwen_tts.engine.checkpoint import parse_codec_config, parse_model_config
from wyoming_qwen_tts.engine.codec import SpeechCodec
from wyoming_qwen_tts.engine.quantize import (Int8Embedding, Int8Linear, quantize_int8, resolve_quantize,
                                              weight_bytes)
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


def test_server_takes_quantize_from_option_and_environment(monkeypatch, tmp_path):
    from wyoming_qwen_tts.__main__ import build_parser, check_config

    base = ["--model", str(FIXTURES / "tiny-base"), "--data-dir", str(tmp_path)]
    assert check_config(build_parser().parse_args(base))[2].quantize == "auto"
    assert check_config(build_parser().parse_args([*base, "--quantize", "int8"]))[2].quantize == "int8"
    assert check_config(build_parser().parse_args([*base, "--quantize", "none"]))[2].quantize == "none"
    monkeypatch.setenv("QWEN_TTS_QUANTIZE", "int8")
    assert check_config(build_parser().parse_args(base))[2].quantize == "int8"


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


def test_server_takes_compile_from_option_and_environment(monkeypatch, tmp_path):
    from wyoming_qwen_tts.__main__ import build_parser, check_config

    base = ["--model", str(FIXTURES / "tiny-base"), "--data-dir", str(tmp_path)]
    assert check_config(build_parser().parse_args(base))[2].compile == "auto"
    assert check_config(build_parser().parse_args([*base, "--compile", "true"]))[2].compile == "true"
    monkeypatch.setenv("QWEN_TTS_COMPILE", "false")
    assert check_config(build_parser().parse_args(base))[2].compile == "false"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--compile", "maybe"])

"""The offline CLI contract: python -m wyoming_qwen_tts.synth ... (used by checks outside the repo)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from .conftest import FIXTURES, PARITY


def run_synth(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "wyoming_qwen_tts.synth", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr
    return result


@pytest.mark.parametrize("case_name, voice_args", [
    ("base_icl_en_stream", ["--ref-audio", FIXTURES / "ref_16k_stereo.wav", "--ref-text", "The quick brown fox."]),
    ("base_xvec_en_stream", ["--ref-audio", FIXTURES / "ref_16k_stereo.wav", "--x-vector-only"]),
    ("design_en_prefill", ["--instruct", "A deep male voice with a calm, authoritative presence."]),
    # no --text-mode: a speaker's default (prefilled text) is generate_custom_voice's default too
    ("custom_serena_instruct_en_prefill", ["--speaker", "Serena", "--instruct", "Speak slowly, in a warm and clear voice."]),
])
def test_cli_writes_wav_and_official_greedy_codes(tmp_path, case_name, voice_args):
    case = json.loads((PARITY / "manifest.json").read_text())["cases"][case_name]
    expected = np.load(PARITY / f"{case_name}.npz")
    out, codes_path = tmp_path / "out.wav", tmp_path / "codes.npy"
    run_synth("--model", FIXTURES / case["checkpoint"], "--text", case["text"], "--out", out,
              "--language", case["language"], *voice_args, "--greedy", "--max-new-tokens", case["max_new_tokens"],
              "--device", "cpu", "--dtype", "float32", "--codes", codes_path)
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    codes = np.load(codes_path)
    assert codes.dtype.kind == "i" and codes.shape[1] == 16
    np.testing.assert_array_equal(codes, expected["codes"])
    audio, _ = sf.read(out, dtype="float32")
    assert audio.shape == expected["wav"].shape
    np.testing.assert_allclose(audio, expected["wav"], atol=1 / 32768 + 1e-4)


def test_cli_language_codes_and_case(tmp_path):
    out = tmp_path / "a.wav"
    run_synth("--model", FIXTURES / "tiny-design", "--text", "Hi.", "--out", out, "--instruct", "A calm voice.",
              "--language", "EN", "--seed", 1, "--max-new-tokens", 6, "--device", "cpu")
    assert sf.info(out).frames % 1920 == 0


@pytest.mark.parametrize("args, message", [
    (["--ref-audio", "x.wav"], "needs --ref-text"),
    (["--instruct", "a", "--x-vector-only"], "excludes"),
    (["--language", "klingon", "--instruct", "a"], "unknown language"),
    (["--speaker", "serena", "--ref-audio", "x.wav"], "--speaker (CustomVoice) excludes"),
    (["--speaker", "serena", "--voice-prompt", "v.safetensors"], "--voice-prompt excludes"),
    (["--speaker", "serena"], "CustomVoice checkpoint"),
    ([], "give --ref-audio"),
])
def test_cli_rejects_bad_combinations(tmp_path, args, message):
    result = run_synth("--model", FIXTURES / "tiny-base", "--text", "Hi.", "--out", tmp_path / "o.wav", *args,
                       "--device", "cpu", check=False)
    assert result.returncode == 2
    assert message in result.stderr


def test_cli_reports_a_missing_model_cleanly(tmp_path):
    result = run_synth("--model", tmp_path / "nope", "--text", "Hi.", "--out", tmp_path / "o.wav", "--instruct", "a",
                       check=False)
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr


def test_cli_quantize_int8_writes_speech(tmp_path):
    out, codes_path = tmp_path / "q.wav", tmp_path / "q.npy"
    result = run_synth("--model", FIXTURES / "tiny-base", "--text", "Hello there.", "--out", out,
                       "--ref-audio", FIXTURES / "ref_16k_stereo.wav", "--x-vector-only", "--greedy",
                       "--max-new-tokens", "6", "--device", "cpu", "--quantize", "int8", "--codes", codes_path)
    assert np.load(codes_path).shape == (5, 16)
    assert sf.info(out).frames == 5 * 1920, result.stderr
    refused = run_synth("--model", FIXTURES / "tiny-base", "--text", "Hi.", "--out", out, "--x-vector-only",
                        "--ref-audio", FIXTURES / "ref_16k_stereo.wav", "--quantize", "int4", check=False)
    assert refused.returncode == 2 and "--quantize" in refused.stderr


def test_cli_takes_compile_and_refuses_a_bad_value(tmp_path):
    out = tmp_path / "c.wav"
    result = run_synth("--model", FIXTURES / "tiny-base", "--text", "Hi.", "--out", out, "--x-vector-only",
                       "--ref-audio", FIXTURES / "ref_16k_stereo.wav", "--greedy", "--max-new-tokens", "4",
                       "--device", "cpu", "--compile", "false")
    assert sf.info(out).frames == 3 * 1920, result.stderr
    refused = run_synth("--model", FIXTURES / "tiny-base", "--text", "Hi.", "--out", out, "--x-vector-only",
                        "--ref-audio", FIXTURES / "ref_16k_stereo.wav", "--compile", "sometimes", check=False)
    assert refused.returncode == 2 and "--compile" in refused.stderr

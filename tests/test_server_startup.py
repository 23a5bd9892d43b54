"""Starting the server: configuration errors stop it with a clear message, frozen voices are cached."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from .server_harness import (FIXTURES, REPO, TINY_MODELS, ServerProcess, cloned_voice_file, free_port, run_cli,
                             server_env)

REF = FIXTURES / "ref_16k_stereo.wav"


def write_voices(tmp_path, text: str):
    path = tmp_path / "voices.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("yaml_text, voice, field, problem", [
    ("voices:\n  alice:\n    reference: missing.wav\n", "alice", "reference", "does not exist"),
    ("voices:\n  alice:\n    reference: not-audio.wav\n", "alice", "reference", "not a readable audio file"),
    ("voices:\n  bob:\n    design: A calm voice.\n    speed: 9\n", "bob", "speed", "0.25 to 4.0"),
    ("voices:\n  bob:\n    design: A calm voice.\n    language: klingon\n", "bob", "language", "unknown language"),
    ("voices:\n  bob:\n    design: A calm voice.\n    mode: sometimes\n", "bob", "mode", "'frozen' or 'live'"),
    ("voices:\n  bob:\n    design: A calm voice.\n    pitch: 2\n", "bob", "pitch", "unknown field"),
    ("voices:\n  bob:\n    description: Nothing to speak with\n", "bob", "reference", "exactly one of"),
])
def test_bad_voices_file_names_file_voice_and_field(tmp_path, yaml_text, voice, field, problem):
    (tmp_path / "not-audio.wav").write_text("this is not audio")
    voices = write_voices(tmp_path, yaml_text)
    result = run_cli(*TINY_MODELS, "--voices", str(voices), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2
    message = result.stderr
    assert str(voices) in message and f"voice {voice!r}" in message and f"field {field!r}" in message
    assert problem in message and "Traceback" not in message
    assert not (tmp_path / "data").exists()  # stopped before preparing anything


@pytest.mark.parametrize("args, problem", [
    (["--voices", "{dir}/nowhere.yaml"], "does not exist"),
    (["--default-voice", "nobody"], "default voice 'nobody' is not in the built-in voices"),
    (["--uri", "http://127.0.0.1:1"], "use tcp://HOST:PORT or unix://PATH"),
    (["--uri", "tcp://127.0.0.1"], "give a host and a port"),
    (["--design-model", "none"], "the built-in voices are designed"),
    (["--zeroconf", "a.b"], "zeroconf name 'a.b'"),
    (["--device", "gpu"], "--device gpu"),
    (["--device", "cuda:1"], "CUDA_VISIBLE_DEVICES=1"),
    (["--http", "localhost:http"], "--http localhost:http: give [HOST:]PORT"),
    (["--http", "10201", "--http-token", " "], "--http-token is empty"),
])
def test_bad_options_stop_the_server_before_loading(tmp_path, args, problem):
    args = [arg.replace("{dir}", str(tmp_path)) for arg in args]
    result = run_cli(*TINY_MODELS, "--data-dir", str(tmp_path / "data"), *args)
    assert result.returncode == 2 and problem in result.stderr and "Traceback" not in result.stderr


def test_environment_variables_configure_the_server(tmp_path):
    voices = write_voices(tmp_path, "voices:\n  carol:\n    design: A calm voice.\n    mode: live\n")
    env = server_env(QWEN_TTS_VOICES=str(voices), QWEN_TTS_DESIGN_MODEL="none")
    result = run_cli(*TINY_MODELS[:2], "--device", "cpu", env=env)
    assert result.returncode == 2
    assert f"{voices}: voice 'carol': field 'design'" in result.stderr and "--design-model is none" in result.stderr
    bad_flag = run_cli("--version", env=server_env(QWEN_TTS_DEBUG="maybe"))
    assert bad_flag.returncode == 2 and "QWEN_TTS_DEBUG='maybe'" in bad_flag.stderr


def test_unusable_reference_audio_is_a_startup_error_naming_voice_and_file(tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(24000, dtype=np.float32), 24000)
    voices = write_voices(tmp_path, "voices:\n  quiet:\n    reference: silent.wav\n    transcript: Nothing.\n")
    result = run_cli(*TINY_MODELS, "--voices", str(voices), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "voice 'quiet'" in result.stderr and str(silent) in result.stderr and "silent" in result.stderr


def test_version_flag_and_console_script():
    result = run_cli("--version")
    from wyoming_qwen_tts import __version__

    assert result.returncode == 0 and result.stdout.strip() == __version__


@pytest.mark.parametrize("debug", [True, False])
def test_debug_raises_only_this_packages_loggers(debug):
    code = ("import logging; from wyoming_qwen_tts.__main__ import configure_logging; "
            f"configure_logging({debug}, '%(name)s %(levelname)s %(message)s'); "
            "logging.getLogger('markdown_it.rules_block').debug('parser line'); "
            "logging.getLogger('asyncio').debug('library debug'); "
            "logging.getLogger('asyncio').info('library info'); "
            "logging.getLogger('wyoming_qwen_tts.markdown_speech').debug('our debug'); "
            "logging.getLogger('wyoming_qwen_tts').info('our info')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    expected = ["asyncio INFO library info"] + (["wyoming_qwen_tts.markdown_speech DEBUG our debug"] if debug else [])
    assert result.stderr.splitlines() == expected + ["wyoming_qwen_tts INFO our info"]


def test_protocol_modules_do_not_import_torch():
    code = ("import sys, wyoming_qwen_tts.__main__, wyoming_qwen_tts.handler, wyoming_qwen_tts.protocol, "
            "wyoming_qwen_tts.voices, wyoming_qwen_tts.request_text, wyoming_qwen_tts.audio, wyoming_qwen_tts.discovery, "
            "wyoming_qwen_tts.synthesis, wyoming_qwen_tts.healthcheck, wyoming_qwen_tts.http_api, "
            "wyoming_qwen_tts.voice_store, wyoming_qwen_tts.audio_formats; print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


FROZEN_YAML = "voices:\n  narrator:\n    design: A deep male voice with a calm, authoritative presence.\n    seed: 7\n"


def test_frozen_voice_is_rendered_once_and_reused_after_a_restart(tmp_path):
    voices = write_voices(tmp_path, FROZEN_YAML)
    data = tmp_path / "data"
    args = [*TINY_MODELS, "--voices", str(voices), "--data-dir", str(data)]

    first = ServerProcess(args, tmp_path / "first.log")
    try:
        first.wait_ready()
    finally:
        assert first.stop() == 0
    assert "Voice narrator: rendering with the design model" in first.log
    cached = sorted(path for path in (data / "voices").rglob("*") if path.is_file())
    assert [path.suffix for path in cached] == [".txt", ".wav", ".safetensors"]
    (transcript,) = [path for path in cached if path.suffix == ".txt"]
    assert transcript.read_text().startswith("Hello, it's nice to meet you.")
    stamps = {path: path.stat().st_mtime_ns for path in cached}

    second = ServerProcess(args, tmp_path / "second.log")
    try:
        second.wait_ready()
    finally:
        assert second.stop() == 0
    log = second.log
    assert "rendering" not in log and "Loading" in log
    assert "Voice narrator: using the frozen voice cached" in log
    assert "not loading the design model" in log and "(--design-model)" not in log
    assert {path: path.stat().st_mtime_ns for path in cached} == stamps



@pytest.mark.parametrize("model, problem", [
    ("{dir}/no-such-model", "neither an existing directory nor a hub id"),
    (str(FIXTURES / "tiny-design"), "is a voice_design checkpoint; it must be a base one"),
])
def test_an_unusable_model_is_a_startup_error(tmp_path, model, problem):
    result = run_cli("--model", model.replace("{dir}", str(tmp_path)), "--design-model", str(FIXTURES / "tiny-design"),
                     "--device", "cpu", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1 and problem in result.stderr and "Traceback" not in result.stderr


def damaged_weights(tmp_path):
    checkpoint = tmp_path / "damaged"
    shutil.copytree(FIXTURES / "tiny-base", checkpoint)
    (checkpoint / "model.safetensors").write_bytes((FIXTURES / "tiny-base" / "model.safetensors").read_bytes()[:1000])
    return checkpoint


def test_a_missing_design_model_is_a_startup_error_naming_the_option(tmp_path):
    result = run_cli("--model", str(FIXTURES / "tiny-base"), "--design-model", str(tmp_path / "no-design"),
                     "--device", "cpu", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: --design-model: model '{tmp_path / 'no-design'}' is neither" in result.stderr


def test_damaged_weights_are_a_startup_error_not_a_traceback(tmp_path):
    voices = write_voices(tmp_path, f"voices:\n  alice:\n    reference: {REF}\n")
    result = run_cli("--model", str(damaged_weights(tmp_path)), "--design-model", "none", "--voices", str(voices),
                     "--device", "cpu", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"error: --model {tmp_path / 'damaged'} cannot be loaded: SafetensorError" in result.stderr


def test_a_voices_file_that_is_a_folder_is_reported(tmp_path):
    result = run_cli(*TINY_MODELS, "--voices", str(tmp_path), "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 2 and f"voices file {tmp_path} cannot be read" in result.stderr


def test_a_damaged_cached_voice_is_made_again(tmp_path):
    voices = cloned_voice_file(tmp_path)
    args = [*TINY_MODELS, "--voices", str(voices), "--data-dir", str(tmp_path / "data")]
    first = ServerProcess(args, tmp_path / "first.log")
    try:
        first.wait_ready()
    finally:
        assert first.stop() == 0
    (prompt,) = (tmp_path / "data" / "voices" / "prompts").glob("*.safetensors")
    prompt.write_bytes(b"not a voice prompt")
    second = ServerProcess(args, tmp_path / "second.log")
    try:
        second.wait_ready()
    finally:
        assert second.stop() == 0
    assert "Voice alice: ignoring unreadable cached prompt" in second.log and "Voice alice: cloned from" in second.log


class FixedLanguages:
    def languages(self, voice_name: str) -> list[str]:
        return ["english", "german"]


@pytest.mark.parametrize("streaming", [True, False])
def test_info_offers_streaming_unless_turned_off(streaming):
    from wyoming_qwen_tts import __version__
    from wyoming_qwen_tts.__main__ import build_info, build_parser
    from wyoming_qwen_tts.voices import builtin_catalog

    args = build_parser().parse_args([] if streaming else ["--no-streaming"])
    (program,) = build_info(builtin_catalog(), FixedLanguages().languages, streaming=not args.no_streaming).tts
    assert program.supports_synthesize_streaming is streaming
    assert program.name == "qwen-tts" and program.version == __version__ and program.installed
    assert program.attribution.name == "Qwen" and program.attribution.url == "https://github.com/QwenLM/Qwen3-TTS"
    assert [voice.languages for voice in program.voices] == [["en", "de"]] * 4


def test_healthcheck_fails_when_nothing_answers():
    from wyoming_qwen_tts.healthcheck import main

    assert main(["--uri", f"tcp://127.0.0.1:{free_port()}", "--timeout", "5"]) == 1


def test_healthcheck_reaches_a_server_bound_to_every_address(monkeypatch):
    from wyoming_qwen_tts.healthcheck import local_uri

    monkeypatch.setenv("QWEN_TTS_URI", "tcp://0.0.0.0:10333")
    assert local_uri() == "tcp://127.0.0.1:10333"
    monkeypatch.setenv("QWEN_TTS_URI", "tcp://192.168.1.20:10200")
    assert local_uri() == "tcp://192.168.1.20:10200"

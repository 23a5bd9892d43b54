"""What the engine accepts, what it refuses, and how clearly."""

import numpy as np
import pytest
import soundfile as sf
import torch

from wyoming_qwen_tts.engine import ReferenceAudioError, SamplingConfig, VoicePrompt, normalize_language


def test_reference_as_array_equals_reference_as_file(base_tts, ref_wav):
    data, rate = sf.read(ref_wav, dtype="float32")
    from_file = base_tts.clone_voice(ref_wav, x_vector_only=True)
    from_array = base_tts.clone_voice((data, rate), x_vector_only=True)
    np.testing.assert_allclose(from_file.speaker_embedding, from_array.speaker_embedding, atol=1e-6)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_any_common_sample_rate_is_resampled(base_tts, rate):
    t = np.arange(int(1.2 * rate)) / rate
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 180 * t), 0.2 * np.sin(2 * np.pi * 240 * t)], axis=1)
    voice = base_tts.clone_voice((stereo.astype(np.float32), rate), "Hello there.")
    assert voice.ref_codes.shape == (int(np.ceil(1.2 * 24000 / 1920)), 16)
    assert voice.speaker_embedding.shape == (64,)


def test_bad_reference_audio_names_the_file_and_the_problem(base_tts, tmp_path):
    with pytest.raises(ReferenceAudioError, match="does not exist"):
        base_tts.clone_voice(tmp_path / "missing.wav", x_vector_only=True)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio" * 10)
    with pytest.raises(ReferenceAudioError, match="junk.wav.*not a readable audio file"):
        base_tts.clone_voice(junk, x_vector_only=True)
    short = tmp_path / "short.wav"
    sf.write(short, np.full(100, 0.1, dtype=np.float32), 16000)
    with pytest.raises(ReferenceAudioError, match="too short"):
        base_tts.clone_voice(short, x_vector_only=True)
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ReferenceAudioError, match="silent"):
        base_tts.clone_voice(silent, x_vector_only=True)
    with pytest.raises(ReferenceAudioError, match="NaN"):
        base_tts.clone_voice((np.full(16000, np.nan, dtype=np.float32), 16000), x_vector_only=True)


def test_voice_kinds_must_fit_the_checkpoint(base_tts, design_tts, ref_wav):
    with pytest.raises(ValueError, match="VoiceDesign"):
        base_tts.design_voice("A deep voice.")
    with pytest.raises(ValueError, match="Base"):
        design_tts.clone_voice(ref_wav, x_vector_only=True)
    with pytest.raises(ValueError, match="cannot be spoken"):
        next(base_tts.stream("Hello.", VoicePrompt.design("A deep voice.")))


def test_empty_text_and_transcript_are_refused(base_tts, ref_wav):
    voice = base_tts.clone_voice(ref_wav, x_vector_only=True)
    with pytest.raises(ValueError, match="empty"):
        base_tts.stream("", voice)
    with pytest.raises(ValueError, match="ref_text is empty"):
        base_tts.clone_voice(ref_wav, "   ")


@pytest.mark.parametrize("given, expected", [
    ("English", "english"), ("en", "english"), ("EN", "english"), ("en-US", "english"), ("zh_CN", "chinese"),
    ("Auto", "auto"), (None, "auto"), ("", "auto"), ("ja", "japanese"), ("Portuguese", "portuguese"),
])
def test_language_names_and_codes(given, expected):
    assert normalize_language(given) == expected


def test_unknown_language_is_refused():
    with pytest.raises(ValueError, match="unknown language 'klingon'"):
        normalize_language("klingon")


def test_language_code_and_name_give_the_same_speech(base_tts, ref_wav):
    voice = base_tts.clone_voice(ref_wav, x_vector_only=True)
    by_name = base_tts.synthesize("Hello world.", voice, language="English", sampling=SamplingConfig.greedy(),
                                  max_frames=6)[1]
    by_code = base_tts.synthesize("Hello world.", voice, language="en", sampling=SamplingConfig.greedy(),
                                  max_frames=6)[1]
    np.testing.assert_array_equal(by_name, by_code)


@pytest.mark.parametrize("kind", ["icl", "xvector", "design"])
def test_voice_prompt_round_trips_through_safetensors(base_tts, design_tts, ref_wav, tmp_path, kind):
    if kind == "design":
        tts, voice = design_tts, design_tts.design_voice("A bright, quick voice.")
    else:
        tts = base_tts
        voice = tts.clone_voice(ref_wav, "The quick brown fox." if kind == "icl" else None, x_vector_only=kind == "xvector")
    path = tmp_path / "voice.safetensors"
    voice.save(path)
    header_size = int.from_bytes(path.read_bytes()[:8], "little")
    assert path.read_bytes()[8:9] == b"{" and header_size < path.stat().st_size  # safetensors, not a pickle
    loaded = VoicePrompt.load(path)
    assert loaded.kind == voice.kind and loaded.ref_text == voice.ref_text and loaded.instruct == voice.instruct
    greedy = SamplingConfig.greedy()
    np.testing.assert_array_equal(tts.synthesize("Hello.", voice, sampling=greedy, max_frames=5)[1],
                                  tts.synthesize("Hello.", loaded, sampling=greedy, max_frames=5)[1])


def test_loading_something_else_as_a_voice_prompt_fails_clearly(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="not a readable voice prompt|not a voice prompt"):
        VoicePrompt.load(path)


def test_side_streams_are_one_per_purpose_and_device_for_the_process(monkeypatch):
    """torch.cuda.Stream() hands out PyTorch's pool of 32 streams in turn: a side stream made per
    model load (again after each idle unload) would in time be the stream CUDA graphs are captured
    on. One per purpose and device for the process, whoever asks (stand-in streams here)."""
    from wyoming_qwen_tts.engine import devices

    made = []
    monkeypatch.setattr(devices, "_SIDE_STREAMS", {})
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: made.append(device) or object())
    cuda = torch.device("cuda")
    prompts = devices.side_stream("prompts", cuda)
    assert devices.side_stream("prompts", "cuda") is prompts
    assert devices.side_stream("codec", cuda) is not prompts
    assert devices.side_stream("codec", cuda) is devices.side_stream("codec", cuda)
    assert made == [cuda, cuda]


def test_only_the_first_gpu_is_taken_and_another_is_pointed_to_cuda_visible_devices(monkeypatch):
    """Streams, events and graph captures use each thread's current GPU (the first): cuda:1 would
    capture nothing and run its steps twice, so it is refused with the way to pick that GPU."""
    from wyoming_qwen_tts.engine.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES=1"):
        resolve_device("cuda:1")

"""Our engine against the official qwen-tts 0.1.1 outputs recorded by tools/make_parity_fixtures.py.

Same tiny checkpoints, same inputs, greedy decoding: codes must be identical, embeddings and
waveforms allclose. The official `max_new_tokens=N` completes at most N-1 frames.
"""

import numpy as np
import pytest
import torch

from wyoming_qwen_tts.engine import SamplingConfig, VoicePrompt
from wyoming_qwen_tts.engine.audio_io import read_audio

from .conftest import FIXTURES, PARITY

WAVE_TOLERANCE = 1e-4


def _load(name):
    return np.load(PARITY / f"{name}.npz")


def _synthesize(tts, voice, case):
    return tts.synthesize(
        case["text"], voice, language=case["language"], sampling=SamplingConfig.greedy(),
        max_frames=case["max_new_tokens"] - 1,
        text_mode="prefill" if case["non_streaming_mode"] else "per_frame",
    )


def _cases(prefix):
    import json

    cases = json.loads((PARITY / "manifest.json").read_text())["cases"]
    return sorted(name for name in cases if name.startswith(prefix))


@pytest.mark.parametrize("name", _cases("base_"))
def test_clone_matches_official(base_tts, parity_cases, name):
    case, expected = parity_cases[name], _load(name)
    voice = base_tts.clone_voice(FIXTURES / case["ref_audio"], case["ref_text"], x_vector_only=case["x_vector_only"])

    np.testing.assert_allclose(voice.speaker_embedding.numpy(), expected["speaker_embedding"], atol=1e-5, rtol=1e-5)
    if case["x_vector_only"]:
        assert voice.kind == "xvector" and voice.ref_codes is None
    else:
        assert voice.kind == "icl"
        np.testing.assert_array_equal(voice.ref_codes.numpy(), expected["ref_code"])
        ref_ids = base_tts.prompts.tokenize(f"<|im_start|>assistant\n{case['ref_text']}<|im_end|>\n")[0].numpy()
        np.testing.assert_array_equal(ref_ids, expected["ref_ids"])

    input_ids = base_tts.prompts.tokenize(f"<|im_start|>assistant\n{case['text']}<|im_end|>\n<|im_start|>assistant\n")
    np.testing.assert_array_equal(input_ids[0].numpy(), expected["input_ids"])

    wav, codes = _synthesize(base_tts, voice, case)
    np.testing.assert_array_equal(codes, expected["codes"])
    assert wav.shape == expected["wav"].shape
    np.testing.assert_allclose(wav, expected["wav"], atol=WAVE_TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", _cases("design_"))
def test_design_matches_official(design_tts, parity_cases, name):
    case, expected = parity_cases[name], _load(name)
    voice = design_tts.design_voice(case["instruct"])
    instruct_ids = design_tts.prompts.tokenize(f"<|im_start|>user\n{case['instruct']}<|im_end|>\n")
    np.testing.assert_array_equal(instruct_ids[0].numpy(), expected["instruct_ids"])
    wav, codes = _synthesize(design_tts, voice, case)
    np.testing.assert_array_equal(codes, expected["codes"])
    np.testing.assert_allclose(wav, expected["wav"], atol=WAVE_TOLERANCE, rtol=0)


CUSTOM_CHECKPOINTS = {"tiny-custom": "custom_tts", "tiny-custom-0b6": "custom_0b6_tts"}


@pytest.mark.parametrize("name", _cases("custom_"))
def test_custom_voice_matches_official(request, parity_cases, name):
    """generate_custom_voice: built-in speaker row, dialect language ids, the instruction (dropped
    by a 0.6B model), in both text modes. A 0.6B speaker's instruction is refused by custom_voice;
    one in a prompt made another way (a saved one) is left out, as the official code leaves it out."""
    case, expected = parity_cases[name], _load(name)
    tts = request.getfixturevalue(CUSTOM_CHECKPOINTS[case["checkpoint"]])
    if case["instruct"] and not case["instruct_used"]:
        with pytest.raises(ValueError, match="0.6B CustomVoice checkpoint takes no instructions"):
            tts.custom_voice(case["speaker"], case["instruct"])
        np.testing.assert_array_equal(_synthesize(tts, tts.custom_voice(case["speaker"]), case)[1], expected["codes"])
        voice = VoicePrompt.custom_speaker(case["speaker"].lower(), case["instruct"])
    else:
        voice = tts.custom_voice(case["speaker"], case["instruct"])
    assert voice.kind == "speaker" and voice.speaker == case["speaker"].lower()

    input_ids = tts.prompts.tokenize(f"<|im_start|>assistant\n{case['text']}<|im_end|>\n<|im_start|>assistant\n")
    np.testing.assert_array_equal(input_ids[0].numpy(), expected["input_ids"])
    assert ("instruct_ids" in expected) == case["instruct_used"]
    if case["instruct_used"]:
        instruct_ids = tts.prompts.tokenize(f"<|im_start|>user\n{case['instruct']}<|im_end|>\n")
        np.testing.assert_array_equal(instruct_ids[0].numpy(), expected["instruct_ids"])

    wav, codes = _synthesize(tts, voice, case)
    np.testing.assert_array_equal(codes, expected["codes"])
    assert wav.shape == expected["wav"].shape
    np.testing.assert_allclose(wav, expected["wav"], atol=WAVE_TOLERANCE, rtol=0)


def test_custom_fixtures_catch_wrong_prompts(custom_tts, parity_cases, monkeypatch):
    """The custom cases would fail a prompt that drops the instruction, keeps it on 0.6B, takes
    another speaker's row, or ignores a speaker's dialect."""
    def codes_of(name, voice):
        return _synthesize(custom_tts, voice, parity_cases[name])[1]

    def recorded(name):
        return _load(name)["codes"]

    instructed = "custom_serena_instruct_en_prefill"
    assert not np.array_equal(codes_of(instructed, custom_tts.custom_voice("serena")), recorded(instructed))
    assert np.array_equal(recorded("custom_0b6_serena_instruct_en_prefill"), recorded("custom_serena_en_prefill"))
    assert not np.array_equal(recorded("custom_0b6_serena_instruct_en_prefill"), recorded(instructed))

    talker = custom_tts.checkpoint.config.talker
    plain = "custom_serena_en_prefill"
    with monkeypatch.context() as patch:
        patch.setitem(talker.speaker_ids, "serena", talker.speaker_ids["ryan"])
        assert not np.array_equal(codes_of(plain, custom_tts.custom_voice("serena")), recorded(plain))
    for name in ("custom_dylan_auto_prefill", "custom_dylan_zh_stream"):
        with monkeypatch.context() as patch:
            patch.setitem(talker.speaker_dialects, "dylan", False)
            assert not np.array_equal(codes_of(name, custom_tts.custom_voice("dylan")), recorded(name))
    assert not np.array_equal(recorded("custom_dylan_auto_prefill"), recorded("custom_dylan_en_prefill"))


def test_custom_voice_speakers_and_errors(custom_tts, base_tts, design_tts):
    assert custom_tts.speakers == ["aiden", "dylan", "eric", "ryan", "serena"]
    voice = custom_tts.custom_voice("SeReNa", "   ")
    assert (voice.kind, voice.speaker, voice.instruct) == ("speaker", "serena", None)
    assert custom_tts.custom_voice("Eric", "Calm.").instruct == "Calm."
    with pytest.raises(ValueError, match="aiden, dylan, eric, ryan, serena"):
        custom_tts.custom_voice("vivian")
    for other in (base_tts, design_tts):
        with pytest.raises(ValueError, match="CustomVoice checkpoint"):
            other.custom_voice("serena")
    with pytest.raises(ValueError, match="speaker voice cannot be spoken by a voice_design"):
        design_tts.synthesize("Hi.", voice)


def test_a_0b6_speaker_refuses_instructions_instead_of_ignoring_them(custom_0b6_tts):
    """The 0.6B CustomVoice has no use for a style instruction: one is an error, not silence."""
    with pytest.raises(ValueError) as caught:
        custom_0b6_tts.custom_voice("Serena", "Calm.")
    assert str(caught.value) == ("the 0.6B CustomVoice checkpoint takes no instructions (speaker 'Serena'): "
                                 "give none, or use a 1.7B CustomVoice checkpoint")
    for none in (None, "", "   "):
        voice = custom_0b6_tts.custom_voice("Serena", none)
        assert (voice.kind, voice.speaker, voice.instruct) == ("speaker", "serena", None)


def test_fixtures_cover_eos_and_the_frame_cap(parity_cases):
    """Some official runs stop on EOS mid-utterance, others run to max_new_tokens - 1 frames."""
    frames = [c["frames"] for n, c in parity_cases.items() if n.startswith(("base_", "design_"))]
    caps = [c["max_new_tokens"] - 1 for n, c in parity_cases.items() if n.startswith(("base_", "design_"))]
    assert any(f < cap for f, cap in zip(frames, caps))
    assert any(f == cap for f, cap in zip(frames, caps))


def test_whole_decode_matches_official(base_tts):
    expected = _load("codec_decode")
    assert expected["codes"].shape[0] > base_tts.codec.cfg.decoder.sliding_window
    wav = base_tts.decode(expected["codes"])
    assert wav.shape == (expected["codes"].shape[0] * 1920,)
    np.testing.assert_allclose(wav, expected["wav"], atol=WAVE_TOLERANCE, rtol=0)


def test_icl_decode_with_reference_prefix_matches_official(base_tts):
    expected = _load("base_icl_en_prefill")
    ref_frames = expected["ref_code"].shape[0]
    wav = base_tts.decode(expected["codes"], prefix=expected["ref_code"])
    np.testing.assert_allclose(wav, expected["wav_with_reference"][ref_frames * 1920:], atol=WAVE_TOLERANCE, rtol=0)


def test_reference_codes_of_a_long_recording(base_tts):
    """12 s: past the 10 s the Mimi config's sliding window would cover, which the official
    (transformers 4.57.3) encoder does not apply."""
    samples, rate = read_audio(PARITY / "long_reference_24k.flac")
    assert rate == 24000 and samples.size / rate > 10
    codes = base_tts.codec.encode(torch.from_numpy(samples)).numpy()
    np.testing.assert_array_equal(codes, _load("encoder_long")["codes"])

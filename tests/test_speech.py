"""The speech layer both transports share (speech.py): whose voice, which language, which text, the
stall rule; and the options a request carries down to the engine's row unchanged."""

import asyncio
from contextlib import aclosing

import pytest
import torch

from wyoming_qwen_tts.engine.generate import DecodeBatch
from wyoming_qwen_tts.engine.options import (MAX_SEED, OptionError, SamplingOverrides, SpeechOptions,
                                             next_seeds)
from wyoming_qwen_tts.speech import (LanguageAsk, Limits, SentenceStalled, SpeechError, SpeechService, TextLimit,
                                     VoiceLookup)
from wyoming_qwen_tts.voice_kinds.frozen import FrozenSpec
from wyoming_qwen_tts.voices import VoiceCatalog

from .standin import CATALOG, DETECTOR, StandInSpeaker, StandInVoice

GERMAN_TEXT = "Guten Morgen, wie geht es dir heute? Das Wetter ist schön und die Sonne scheint."
ENGLISH_TEXT = "Good morning, how are you today? The weather is lovely and the sun is shining."


def service(limits: Limits = Limits(), speaker=None) -> SpeechService:
    return SpeechService(CATALOG, speaker or StandInSpeaker(), DETECTOR, limits)


def voice(language: str = "auto", languages=("english", "german", "french")) -> StandInVoice:
    return StandInVoice(FrozenSpec(name="v", description="V", design="x", language=language), tuple(languages))


# -- which language ------------------------------------------------------------------------------------


def test_a_hint_yields_to_the_voices_own_language_and_is_taken_when_the_voice_speaks_it():
    speech = service()
    assert speech.language(voice("german"), "english", ENGLISH_TEXT, LanguageAsk.HINT) == "german"
    assert speech.language(voice(), "french", ENGLISH_TEXT, LanguageAsk.HINT) == "french"


def test_a_hint_the_voice_cannot_speak_is_ignored_and_the_sentence_detected():
    speech = service()
    assert speech.language(voice(), "japanese", GERMAN_TEXT, LanguageAsk.HINT) == "german"
    assert speech.language(voice(), None, ENGLISH_TEXT, LanguageAsk.HINT) == "english"


def test_an_explicit_language_wins_over_the_voices_own_and_must_be_speakable():
    speech = service()
    assert speech.language(voice("german"), "english", GERMAN_TEXT, LanguageAsk.EXPLICIT) == "english"
    with pytest.raises(SpeechError) as failed:
        speech.language(voice(), "japanese", ENGLISH_TEXT, LanguageAsk.EXPLICIT)
    assert failed.value.code == "unsupported-language" and "japanese" in failed.value.message


def test_without_a_language_both_rules_take_the_voices_own_then_detect():
    speech = service()
    for ask in LanguageAsk:
        assert speech.language(voice("french"), "auto", ENGLISH_TEXT, ask) == "french"
        assert speech.language(voice(), "auto", GERMAN_TEXT, ask) == "german"


# -- which voice ---------------------------------------------------------------------------------------


def test_an_unknown_voice_gets_the_default_for_wyoming_and_an_error_for_http():
    speech = service()
    found, known = speech.voice("nobody", VoiceLookup.DEFAULT_IF_UNKNOWN)
    assert (found.spec.name, known) == (CATALOG.default, False)
    with pytest.raises(SpeechError) as failed:
        speech.voice("nobody", VoiceLookup.STRICT)
    assert failed.value.code == "unknown-voice" and "nobody" in failed.value.message and "ann" in failed.value.message
    for lookup in VoiceLookup:
        found, known = speech.voice("fritz", lookup)
        assert (found.spec.name, known) == ("fritz", True)
        found, known = speech.voice(None, lookup)
        assert (found.spec.name, known) == (CATALOG.default, True)


def test_a_voice_in_the_catalog_that_the_speaker_lost_is_an_error_not_a_crash():
    speaker = StandInSpeaker(VoiceCatalog({"ann": CATALOG.voices["ann"]}, default="ann"))
    with pytest.raises(SpeechError, match="fritz"):
        service(speaker=speaker).voice("fritz", VoiceLookup.DEFAULT_IF_UNKNOWN)


# -- which text ----------------------------------------------------------------------------------------


def test_a_long_text_is_spoken_up_to_the_limit_for_wyoming_and_refused_for_http():
    speech = service(Limits(max_text_chars=40))
    text = "This is the first sentence. " * 5
    sentences, truncated = speech.sentences(text, TextLimit.SPEAK_THE_START)
    assert truncated and sentences and sum(map(len, sentences)) <= 40
    with pytest.raises(SpeechError) as failed:
        speech.sentences(text, TextLimit.REFUSE)
    assert failed.value.code == "text-too-long" and "40" in failed.value.message


@pytest.mark.parametrize("text", ["", "   ", "!!! ... ???"])
def test_nothing_to_speak_is_refused_for_http_and_silence_for_wyoming(text):
    speech = service()
    assert speech.sentences(text, TextLimit.SPEAK_THE_START) == ([], False)
    with pytest.raises(SpeechError):
        speech.sentences(text, TextLimit.REFUSE)


def test_markdown_follows_the_limits_on_every_rule():
    reply = "**Sure.** See [the log](https://example.com/log)."
    for limit in TextLimit:
        assert service().sentences(reply, limit)[0] == ["Sure.", "See the log."]
        assert "[the log]" in " ".join(service(Limits(markdown=False)).sentences(reply, limit)[0])


# -- the audio -------------------------------------------------------------------------------------------


def test_speak_hands_the_options_to_the_speaker_and_ends_a_stalled_sentence():
    class Recording(StandInSpeaker):
        options = None

        async def speak(self, voice, text, language, options):
            Recording.options = options
            async with aclosing(super().speak(voice, text, language, options)) as audio:
                async for pcm in audio:
                    yield pcm

    async def main():
        speech = service(Limits(stall_seconds=0.3), Recording())
        ann, _ = speech.voice("ann", VoiceLookup.STRICT)
        options = SpeechOptions(seed=3, speed=1.5)
        async with aclosing(speech.speak(ann, "Hello.", "english", options)) as audio:
            chunks = [pcm async for pcm in audio]
        assert len(chunks) == 2 and Recording.options is options
        with pytest.raises(SentenceStalled) as stalled:
            async with aclosing(speech.speak(ann, "This runs forever.", "english", options)) as audio:
                async for _ in audio:
                    pass
        assert stalled.value.code == "timeout" and stalled.value.audio_seconds > 0

    asyncio.run(main())


# -- the options ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options", [
    dict(seed=-1), dict(seed=MAX_SEED + 1), dict(seed=True), dict(max_frames=0), dict(speed=0.1), dict(speed=5),
])
def test_options_out_of_range_are_refused_with_their_name(options):
    with pytest.raises(OptionError, match=next(iter(options))):
        SpeechOptions(**options)


@pytest.mark.parametrize("sampling", [
    dict(temperature=0), dict(temperature=3), dict(top_k=-1), dict(top_k=1.5), dict(top_p=0), dict(top_p=1.2),
    dict(repetition_penalty=0.5), dict(repetition_penalty=True),
])
def test_sampling_overrides_out_of_range_are_refused_with_their_name(sampling):
    with pytest.raises(OptionError, match=next(iter(sampling))):
        SamplingOverrides(**sampling)


def test_variation_seeds_wrap_within_the_seed_range():
    assert next_seeds(7, 3) == [7, 8, 9]
    assert next_seeds(MAX_SEED, 2) == [MAX_SEED, 0]


def test_options_reach_the_engines_row_unchanged_and_set_its_sampling(base_tts, icl_voice, monkeypatch):
    admitted = []
    admit = DecodeBatch.admit

    def recording_admit(self, row):
        admitted.append(row)
        return admit(self, row)

    monkeypatch.setattr(DecodeBatch, "admit", recording_admit)
    options = SpeechOptions(seed=11, max_frames=3, sampling=SamplingOverrides(temperature=0.5, top_k=7))
    _, codes = base_tts.synthesize("Hello there.", icl_voice, options=options)
    row = admitted[-1]
    assert row.options is options and row.seed == 11 and row.max_frames == 3 and codes.shape[0] <= 3
    assert (row.sampling.talker.temperature, row.sampling.talker.top_k) == (0.5, 7)
    assert row.sampling.predictor == base_tts.default_sampling.predictor
    assert row.sampling.talker.top_p == base_tts.default_sampling.talker.top_p


def test_the_same_options_give_the_same_codes_and_a_seed_in_options_equals_the_seed_argument(base_tts, icl_voice):
    options = SpeechOptions(seed=5, max_frames=6)
    first = base_tts.synthesize("Hello there.", icl_voice, options=options)[1]
    again = base_tts.synthesize("Hello there.", icl_voice, options=options)[1]
    by_argument = base_tts.synthesize("Hello there.", icl_voice, seed=5, max_frames=6)[1]
    assert torch.equal(torch.as_tensor(first), torch.as_tensor(again))
    assert torch.equal(torch.as_tensor(first), torch.as_tensor(by_argument))
    with pytest.raises(ValueError, match="not both"):
        base_tts.synthesize("Hello there.", icl_voice, options=options, seed=5)

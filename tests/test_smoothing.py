"""Smooth playback when the engine is slower than real time (speech.Playback, --smooth): a sentence's
audio is held back until it can play to its end without a gap. The timeline is simulated, chunk by
chunk, so the figures do not depend on how busy the machine is; one test goes through the service."""

import asyncio
from contextlib import aclosing

import pytest

from wyoming_qwen_tts.engine.options import SpeechOptions
from wyoming_qwen_tts.speech import Playback, Smoothing, SpeechService, VoiceLookup

from .standin import CATALOG, DETECTOR, StandInSpeaker

CHUNK_SECONDS = 0.08 * 8  # the engine's steady chunks: 8 frames of 80 ms
RATE = 24000


def pcm(seconds: float) -> bytes:
    return b"\x00\x00" * round(seconds * RATE)


class PacedSpeaker(StandInSpeaker):
    """Makes `speed` seconds of audio a second, and says so; knows the sentence's length."""

    def __init__(self, speed: float | None, expected: float) -> None:
        super().__init__()
        self.pace, self.expected = speed, expected

    def speed(self, voice):
        return self.pace

    def expected_seconds(self, voice, text):
        return self.expected


def played(seconds: float, speed: float | None, smoothing: Smoothing, estimate: float = 1.0,
           played_faster: float = 1.0) -> tuple[float, float]:
    """(first audio, longest gap once playing) of a sentence of `seconds` made at `speed` x real
    time and played as it is passed on; the length estimate is `estimate` times the truth."""
    speaker = PacedSpeaker(speed, seconds * estimate * played_faster)
    playback = Playback(speaker, speaker.voice("ann"), "text", played_faster, smoothing.margin())
    pace = speed / played_faster if speed else 1.0
    chunks, made = [], 0.0
    while made < seconds - 1e-9:
        chunk = min(CHUNK_SECONDS, seconds - made)
        made += chunk
        chunks.append((made / pace, chunk))  # when the chunk is made, how long it plays
    released = []
    for at, chunk in chunks:
        released += [(at, len(ready) / 2 / RATE) for ready in playback.add(pcm(chunk))]
    released += [(chunks[-1][0], len(ready) / 2 / RATE) for ready in playback.finish()]
    assert abs(sum(length for _, length in released) - seconds) < 1e-3  # nothing lost
    plays_until, gaps = None, [0.0]
    for at, length in released:
        if plays_until is not None and at > plays_until:
            gaps.append(at - plays_until)
        plays_until = max(at, plays_until or at) + length
    return released[0][0], max(gaps)


@pytest.mark.parametrize("speed", [0.3, 0.5, 0.9])
def test_slower_than_real_time_a_smoothed_sentence_plays_without_a_gap(speed):
    first_audio, gap = played(6.0, speed, Smoothing.AUTO)
    assert gap <= 0.1
    unsmoothed_first, unsmoothed_gap = played(6.0, speed, Smoothing.OFF)
    assert unsmoothed_gap > max(gap, 0.05) and first_audio > unsmoothed_first
    # held no longer than needed: the estimate (6 s * (1 - speed)) with its margin, and a chunk
    assert first_audio <= (6.0 * (1 - speed) * Smoothing.AUTO.margin() + CHUNK_SECONDS) / speed


def test_at_or_above_real_time_or_before_the_speed_is_known_nothing_is_held():
    for speed in (1.0, 3.5, None):
        first_audio, _ = played(6.0, speed, Smoothing.AUTO)
        assert first_audio == pytest.approx(CHUNK_SECONDS / (speed or 1.0))


def test_on_holds_more_and_survives_a_length_estimate_a_fifth_short():
    auto_first, auto_gap = played(6.0, 0.3, Smoothing.AUTO, estimate=0.8)
    on_first, on_gap = played(6.0, 0.3, Smoothing.ON, estimate=0.8)
    assert on_first > auto_first and on_gap <= 0.1


def test_a_faster_voice_needs_more_held_as_it_plays_faster_than_it_is_made():
    normal_first, _ = played(6.0, 0.8, Smoothing.AUTO)
    fast_first, fast_gap = played(6.0, 0.8, Smoothing.AUTO, played_faster=2.0)
    assert fast_gap <= 0.1 and fast_first > normal_first


def test_the_service_holds_a_slow_sentence_and_passes_it_all_on():
    async def chunks_seen(smoothing: Smoothing) -> list[int]:
        # the stand-in makes two 20 ms chunks; at 0.1x real time, a 40 ms sentence is held whole
        speech = SpeechService(CATALOG, PacedSpeaker(0.1, 0.04), DETECTOR, smoothing=smoothing)
        ann, _ = speech.voice("ann", VoiceLookup.STRICT)
        async with aclosing(speech.speak(ann, "Hello.", "english", SpeechOptions())) as audio:
            return [len(chunk) async for chunk in audio]

    held, passed = asyncio.run(chunks_seen(Smoothing.AUTO)), asyncio.run(chunks_seen(Smoothing.OFF))
    assert sum(held) == sum(passed) == 2 * 960 and len(passed) == 2


def test_the_synthesizer_measures_its_streams_speed_and_its_seconds_per_token(base_tts, icl_voice, ref_wav):
    from wyoming_qwen_tts.synthesis import SECONDS_PER_TOKEN, ReadyVoice, Synthesizer
    from wyoming_qwen_tts.voice_kinds.clone import CloneSpec

    spec = CloneSpec(name="ann", description="Ann", reference=ref_wav, language="english")
    synthesizer = Synthesizer({"ann": ReadyVoice(spec, icl_voice, base_tts)}, max_batch=2)
    voice = synthesizer.voice("ann")
    text = "Good morning, the kitchen lights are on."
    tokens = len(base_tts.prompts.tokenize(text)[0])

    async def speak() -> float:
        async with aclosing(synthesizer.speak(voice, text, "english", SpeechOptions(seed=1, max_frames=20))) as audio:
            return sum(len(chunk) for chunk in [pcm async for pcm in audio]) / 2 / RATE

    try:
        assert synthesizer.speed(voice) is None
        assert synthesizer.expected_seconds(voice, text) == pytest.approx(tokens * SECONDS_PER_TOKEN)
        seconds = asyncio.run(speak())
        assert synthesizer.speed(voice) > 0
        expected = synthesizer.expected_seconds(voice, text)
        assert expected != pytest.approx(tokens * SECONDS_PER_TOKEN)  # moved toward what was said
        assert min(seconds, tokens * SECONDS_PER_TOKEN) <= expected <= max(seconds, tokens * SECONDS_PER_TOKEN)
    finally:
        synthesizer.close()

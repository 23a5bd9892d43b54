"""The HTTP API's stall rule, in-process with a stand-in synthesizer: a sentence whose engine
makes no audio for anyone for the stall timeout ends the request (504) instead of holding it for
ever; a slow but steady one is never cut. (The real server's HTTP API: tests/test_http_api.py.)"""

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import httpx2 as httpx

from wyoming_qwen_tts.engine.options import SpeechOptions
from wyoming_qwen_tts.http_api import HttpService, create_app
from wyoming_qwen_tts.speech import Limits, SpeechService
from wyoming_qwen_tts.request_text import LanguageDetector
from wyoming_qwen_tts.voice_kinds.frozen import FrozenSpec
from wyoming_qwen_tts.voices import VoiceCatalog

CHUNK = b"\x01\x00" * 2400  # 0.1 s of 24 kHz 16-bit PCM
STALL_SECONDS = 0.5


@dataclass
class StallingSynthesizer:
    """'stuck' yields one chunk and then nothing, ever; 'slowly' yields 6 chunks 0.3 s apart
    (longer than the stall timeout in all, never that long without audio)."""

    voices: dict = field(default_factory=dict)

    def voice(self, name: str):
        return self.voices.get(name)

    def last_progress(self, voice) -> float | None:
        return None  # the engine made no audio for anyone else either

    def speed(self, voice) -> float | None:
        return None

    def expected_seconds(self, voice, text: str) -> float:
        return 1.0

    async def speak(self, voice, text: str, language: str, options: SpeechOptions):
        if "stuck" in text:
            yield CHUNK
            await asyncio.Event().wait()
        for _ in range(6):
            await asyncio.sleep(0.3)
            yield CHUNK


def make_service() -> HttpService:
    spec = FrozenSpec(name="ann", description="Ann", design="x")
    synthesizer = StallingSynthesizer()
    synthesizer.voices["ann"] = SimpleNamespace(spec=spec, languages=["english"], model_languages=["english"],
                                                speed_with=lambda options: options.speed)
    catalog = VoiceCatalog({"ann": spec}, default="ann")
    library = SimpleNamespace(catalog=catalog)
    limits = Limits(stall_seconds=STALL_SECONDS, markdown=False)
    return HttpService(SpeechService(catalog, synthesizer, LanguageDetector(), limits), library, synthesizer)


async def post_speech(text: str) -> tuple[httpx.Response, float]:
    return await asyncio.wait_for(_post_speech(text), timeout=30)  # a request held for ever fails here


async def _post_speech(text: str) -> tuple[httpx.Response, float]:
    transport = httpx.ASGITransport(app=create_app(make_service()))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        started = time.monotonic()
        response = await client.post("/v1/audio/speech", json={"input": text, "voice": "ann", "language": "English",
                                                               "response_format": "wav", "stream_format": None})
        return response, time.monotonic() - started


def test_a_stuck_engine_ends_the_request_with_504_after_the_stall_timeout():
    response, took = asyncio.run(post_speech("This one gets stuck."))
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert "stalled" in error["message"] and "0.10 s of audio" in error["message"]
    assert STALL_SECONDS <= took < STALL_SECONDS + 5


def test_a_slow_but_steady_sentence_is_never_cut():
    response, took = asyncio.run(post_speech("This one speaks slowly."))
    assert response.status_code == 200, response.text
    assert took > 2 * STALL_SECONDS  # 1.8 s in all, never 0.5 s without audio
    assert len(response.content) >= 6 * len(CHUNK)

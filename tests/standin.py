"""The event handler in-process, served on loopback, with a stand-in speaker instead of the models."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from functools import partial

from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Info
from wyoming.server import AsyncTcpServer

from wyoming_qwen_tts.engine.options import SpeechOptions
from wyoming_qwen_tts.handler import TtsEventHandler
from wyoming_qwen_tts.speech import Limits, SpeechService
from wyoming_qwen_tts.request_text import AUTO, LanguageDetector
from wyoming_qwen_tts.voice_kinds.base import VoiceSpec
from wyoming_qwen_tts.voice_kinds.frozen import FrozenSpec
from wyoming_qwen_tts.voices import VoiceCatalog

from .server_harness import free_port, read_until

CATALOG = VoiceCatalog({
    "ann": FrozenSpec(name="ann", description="Ann", design="x"),
    "fritz": FrozenSpec(name="fritz", description="Fritz", design="y", language="german"),
}, default="ann")
CHUNK = b"\x01\x00" * 480  # 20 ms
BIG_CHUNK = b"\x03\x00" * 24000  # 1 s
DETECTOR = LanguageDetector()  # shared: its model takes a second to load


SLOW_CHUNKS, SLOW_GAP_SECONDS = 10, 0.3  # a 'slowly' sentence: 3 s in all, never 0.3 s without audio
QUEUED_SECONDS = 2.0  # a 'queued' sentence waits this long for its first audio


@dataclass
class StandInVoice:
    """A voice of the stand-in speaker: its spec, speaking the stand-in's three languages."""

    spec: VoiceSpec
    model_languages: tuple[str, ...] = ("english", "german", "french")

    @property
    def languages(self) -> list[str]:
        return [self.spec.language] if self.spec.language != AUTO else list(self.model_languages)

    def speed_with(self, options: SpeechOptions) -> float:
        return self.spec.speed * options.speed


class StandInSpeaker:
    """Records what it is asked to say. Two chunks of audio per sentence, unless the sentence says:
    'fail' raises before any audio, 'crash' raises after the first chunk, 'forever' never ends
    after its first chunk, 'endless' yields a second of audio after another, without end,
    'slowly' yields SLOW_CHUNKS chunks SLOW_GAP_SECONDS apart, 'queued' waits QUEUED_SECONDS
    before its two chunks (as if behind other requests: the engine's progress for them is
    reported while others_progressing is set)."""

    def __init__(self, catalog: VoiceCatalog = CATALOG) -> None:
        self.catalog = catalog
        self.said: list[tuple[str, str, str]] = []
        self.cancelled = asyncio.Event()
        self.endless_chunks = 0  # seconds of audio an 'endless' sentence was asked for
        self.others_progressing = False
        self._progress_at: float | None = None

    def languages(self, voice_name: str) -> list[str]:
        return StandInVoice(self.catalog.voices[voice_name]).languages

    def voice(self, name: str) -> StandInVoice | None:
        spec = self.catalog.voices.get(name)
        return StandInVoice(spec) if spec is not None else None

    def last_progress(self, voice: StandInVoice) -> float | None:
        return self._progress_at

    def speed(self, voice: StandInVoice) -> float | None:
        return None  # never measured: no sentence is held back (smoothing: tests/test_smoothing.py)

    def expected_seconds(self, voice: StandInVoice, text: str) -> float:
        return 0.1

    async def _wait_in_queue(self) -> None:
        waited = 0.0
        while waited < QUEUED_SECONDS:
            if self.others_progressing:
                self._progress_at = time.monotonic()
            await asyncio.sleep(0.2)
            waited += 0.2

    async def speak(self, voice: StandInVoice, text: str, language: str, options: SpeechOptions):
        self.said.append((voice.spec.name, text, language))
        if "fail" in text:
            raise ValueError("the model refused")
        try:
            if "slowly" in text:
                for _ in range(SLOW_CHUNKS):
                    await asyncio.sleep(SLOW_GAP_SECONDS)
                    yield CHUNK
                return
            if "queued" in text:
                await self._wait_in_queue()
            if "endless" in text:
                while True:
                    self.endless_chunks += 1
                    yield BIG_CHUNK
                    await asyncio.sleep(0)
            yield CHUNK
            if "crash" in text:
                raise RuntimeError("out of memory")
            if "forever" in text:
                await asyncio.Event().wait()
            yield CHUNK
        except (GeneratorExit, asyncio.CancelledError):
            self.cancelled.set()  # closed before its end: the generation was cancelled
            raise


async def serving(speaker, limits: Limits | None = None, catalog: VoiceCatalog = CATALOG) -> AsyncTcpServer:
    service = SpeechService(catalog=catalog, speaker=speaker, detector=DETECTOR, limits=limits or Limits())
    server = AsyncTcpServer("127.0.0.1", free_port())
    await server.start(partial(TtsEventHandler, service=service, describe=Info))
    return server


async def exchange(server: AsyncTcpServer, *events: Event, last: str = "audio-stop"):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        for event in events:
            await client.write_event(event)
        return await read_until(client, last, timeout=10)


def run(scenario, limits: Limits | None = None):
    """scenario(server, speaker) against a fresh in-process server."""
    async def main():
        speaker = StandInSpeaker()
        server = await serving(speaker, limits)
        try:
            return await scenario(server, speaker)
        finally:
            await server.stop()

    return asyncio.run(main())

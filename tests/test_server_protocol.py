"""The event handler in-process with a stand-in speaker: every path ends with the closing events."""

import asyncio
from functools import partial

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncTcpServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wyoming_qwen_tts.handler import TtsEventHandler, TtsService
from wyoming_qwen_tts.text import LanguageDetector
from wyoming_qwen_tts.voices import VoiceCatalog, VoiceSpec

from .server_harness import free_port, read_until

CATALOG = VoiceCatalog({
    "ann": VoiceSpec(name="ann", description="Ann", design="x"),
    "fritz": VoiceSpec(name="fritz", description="Fritz", design="y", language="german"),
}, default="ann")


class StandInSpeaker:
    """Records what it is asked to say; 'fail' in a sentence raises, 'forever' never ends."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []
        self.cancelled = asyncio.Event()

    def languages(self, voice_name: str) -> list[str]:
        return ["english", "german", "french"]

    async def speak(self, voice_name: str, text: str, language: str = "auto"):
        self.said.append((voice_name, text, language))
        if "fail" in text:
            raise ValueError("the model refused")
        yield b"\x01\x00" * 480
        if "forever" in text:
            try:
                await asyncio.Event().wait()
            finally:
                self.cancelled.set()
        yield b"\x02\x00" * 480


async def serving(speaker: StandInSpeaker):
    detector = LanguageDetector()
    service = TtsService(info=Info(), catalog=CATALOG, speaker=speaker, detector=detector)
    server = AsyncTcpServer("127.0.0.1", free_port())
    await server.start(partial(TtsEventHandler, service=service))
    return server


async def exchange(server, *events: Event, last: str = "audio-stop"):
    async with AsyncTcpClient("127.0.0.1", server.port) as client:
        for event in events:
            await client.write_event(event)
        return await read_until(client, last, timeout=10)


def run(scenario):
    async def main():
        speaker = StandInSpeaker()
        server = await serving(speaker)
        try:
            return await scenario(server, speaker)
        finally:
            await server.stop()

    return asyncio.run(main())


def test_a_failing_sentence_reports_an_error_and_the_rest_is_still_spoken():
    async def scenario(server, speaker):
        return await exchange(server, Synthesize(text="This will fail. This works.").event())

    answer = run(scenario)
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"]
    assert answer.types.count("audio-chunk") == 2


@pytest.mark.parametrize("event, last, expected", [
    (Event("synthesize", {"text": None}), "audio-stop", ["error", "audio-start", "audio-stop"]),
    (Event("synthesize", {}), "audio-stop", ["error", "audio-start", "audio-stop"]),
    (SynthesizeStop().event(), "synthesize-stopped", ["audio-start", "audio-stop", "synthesize-stopped"]),
])
def test_malformed_or_out_of_order_requests_still_get_closing_events(event, last, expected):
    async def scenario(server, speaker):
        return await exchange(server, event, last=last)

    assert run(scenario).types == expected


def test_a_voice_that_is_not_an_object_is_reported_and_the_default_voice_speaks():
    async def scenario(server, speaker):
        answer = await exchange(server, Event("synthesize", {"text": "Hello there.", "voice": "ann"}))
        return answer, speaker.said

    answer, said = run(scenario)
    assert answer.closing_types() == ["error", "audio-start", "audio-stop"]
    assert said == [("ann", "Hello there.", "english")]


def test_language_is_the_voices_then_the_requests_then_detected():
    async def scenario(server, speaker):
        await exchange(server, Synthesize(text="Good morning to you all.", voice=SynthesizeVoice(name="fritz")).event())
        await exchange(server, Event("synthesize", {"text": "Good morning to you all.",
                                                    "voice": {"name": "ann", "language": "fr"}}))
        await exchange(server, Synthesize(text="Good morning to you all.").event())
        await exchange(server, Synthesize(text="OK.").event())
        return speaker.said

    assert [language for _, _, language in run(scenario)] == ["german", "french", "english", "auto"]


def test_a_new_stream_start_closes_the_open_stream():
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="First stream").event())
            await client.write_event(SynthesizeStart(voice=SynthesizeVoice(name="fritz")).event())
            await client.write_event(SynthesizeChunk(text="Second stream.").event())
            await client.write_event(SynthesizeStop().event())
            first = await read_until(client, "synthesize-stopped", timeout=10)
            second = await read_until(client, "synthesize-stopped", timeout=10)
        return first, second, speaker.said

    first, second, said = run(scenario)
    assert first.closing_types() == second.closing_types() == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert [(voice, text) for voice, text, _ in said] == [("ann", "First stream"), ("fritz", "Second stream.")]


def test_disconnecting_cancels_the_generation_and_the_server_keeps_serving():
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Synthesize(text="Talk forever.").event())
            await read_until(client, "audio-chunk", timeout=10)
        await asyncio.wait_for(speaker.cancelled.wait(), 10)
        return await exchange(server, Synthesize(text="Still here.").event())

    answer = run(scenario)
    assert answer.closing_types() == ["audio-start", "audio-stop"]


def test_an_unreadable_event_drops_only_that_connection():
    async def scenario(server, speaker):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b'["not", "an", "event"]\n')
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(SynthesizeChunk(text="stray chunk").event())
            await client.write_event(Describe().event())
            return await read_until(client, "info", timeout=10)

    assert run(scenario).types == ["info"]

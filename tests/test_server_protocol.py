"""The event handler in-process with a stand-in speaker: every path ends with the closing events."""

import asyncio

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from .server_harness import read_until
from .standin import exchange, run


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
        said = await asyncio.wait_for(reader.read(), 10)  # everything until the server closes
        writer.close()
        assert said.startswith(b'{"type": "error"') and b"bad-event" in said
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(SynthesizeChunk(text="stray chunk").event())
            await client.write_event(Describe().event())
            return await read_until(client, "info", timeout=10)

    assert run(scenario).types == ["info"]

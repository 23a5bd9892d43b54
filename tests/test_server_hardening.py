"""Bad input, faults and limits against the event handler in-process (stand-in speaker): every
request still ends with its closing events, the connection and the server keep working."""

import asyncio
import json
import socket
import time

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

from wyoming_qwen_tts.speech import Limits
from wyoming_qwen_tts.protocol import MAX_DATA_BYTES

from .server_harness import Answer, read_until
from .standin import CHUNK, QUEUED_SECONDS, SLOW_CHUNKS, exchange, run

CLOSED = ["audio-start", "audio-stop"]


async def raw_exchange(port: int, raw: bytes, timeout: float = 10) -> list[Event]:
    """Send raw bytes, then read events until the server closes the connection."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        client._writer.write(raw)
        await client._writer.drain()
        events = []
        while (event := await asyncio.wait_for(client.read_event(), timeout)) is not None:
            events.append(event)
        return events


async def still_serving(port: int) -> Answer:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text="Still here.").event())
        return await read_until(client, "audio-stop", timeout=10)


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw, problem", [
    (b"{this is not json}\n", "header is not JSON"),
    (bytes(range(256)) * 4 + b"\n", "header is not JSON"),
    (b"\x00\x01\x02 binary junk without a newline" * 3000, "header line longer than"),
    (b'{"type": "synthesize", "data_length": "lots"}\n', "'data_length' must be a non-negative integer"),
    (b'{"type": "synthesize", "data_length": 99999999999}\n', "'data_length' of 99999999999 bytes"),
    (b'{"type": "synthesize", "payload_length": 99999999999}\n', "'payload_length' of 99999999999 bytes"),
    (b'{"type": 3}\n', "header 'type' must be a non-empty string"),
])
def test_unreadable_bytes_get_an_error_then_the_connection_closes_and_the_server_serves_on(raw, problem):
    async def scenario(server, speaker):
        started = time.monotonic()
        events = await raw_exchange(server.port, raw)
        took = time.monotonic() - started
        return events, took, await still_serving(server.port)

    events, took, after = run(scenario)
    assert [event.type for event in events] == ["error"]
    assert problem in events[0].data["text"] and events[0].data["code"] == "bad-event"
    assert took < 5  # refused at once: an absurd length is not waited for
    assert after.closing_types() == CLOSED


def test_an_unreadable_event_inside_a_stream_still_ends_the_stream():
    async def scenario(server, speaker):
        start = json.dumps({"type": "synthesize-start", "data": {}}).encode() + b"\n"
        chunk = json.dumps({"type": "synthesize-chunk", "data": {"text": "Spoken first. And"}}).encode() + b"\n"
        return await raw_exchange(server.port, start + chunk + b"garbage\n"), speaker.said

    events, said = run(scenario)
    types = [event.type for event in events if event.type != "audio-chunk"]
    assert types == ["audio-start", "error", "audio-stop", "synthesize-stopped"]
    assert [text for _, text, _ in said] == ["Spoken first.", "And"]  # what arrived is still spoken


@pytest.mark.parametrize("data, problem", [
    ({"text": None}, "'text' must be a string, not NoneType"),
    ({"text": 42}, "'text' must be a string, not int"),
    ({"text": ["Hello."]}, "'text' must be a string, not list"),
    ({}, "'text' must be a string"),
    ({"text": "Hi.", "voice": "ann"}, "'voice' must be an object, not str"),
    ({"text": "Hi.", "voice": ["ann"]}, "'voice' must be an object, not list"),
    ({"text": "Hi.", "voice": {"name": 7}}, "voice 'name' must be a string, not int"),
])
def test_wrong_field_types_are_reported_and_the_request_still_closes(data, problem):
    async def scenario(server, speaker):
        return await exchange(server, Event("synthesize", data))

    answer = run(scenario)
    errors = [event.data["text"] for _, event in answer.events if event.type == "error"]
    assert len(errors) == 1 and problem in errors[0]
    assert [kind for kind in answer.closing_types() if kind != "error"] == CLOSED


def test_odd_languages_and_text_formats_are_ignored_not_fatal():
    async def scenario(server, speaker):
        answers = [await exchange(server, Event("synthesize", {"text": "Hello there.", **extra}))
                   for extra in ({"voice": {"language": 12}}, {"voice": {"language": "x" * 10000}},
                                 {"text_format": "markdown"}, {"text_format": {"a": 1}})]
        return answers, speaker.said

    answers, said = run(scenario)
    assert all(answer.closing_types() == CLOSED for answer in answers)
    assert [text for _, text, _ in said] == ["Hello there."] * 4


def test_unknown_event_types_are_ignored():
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Event("transcribe", {"language": "en"}))
            await client.write_event(Event("audio-chunk", {"rate": 16000}, payload=b"\x00" * 4096))
            await client.write_event(Event("x" * 1000, {"anything": [1, 2, 3]}))
            await client.write_event(Describe().event())
            info = await read_until(client, "info", timeout=10)
            await client.write_event(Synthesize(text="Hello.").event())
            return info, await read_until(client, "audio-stop", timeout=10)

    info, answer = run(scenario)
    assert info.types == ["info"] and answer.closing_types() == CLOSED


def test_a_hundred_thousand_characters_speak_the_first_max_chars_and_say_so():
    async def scenario(server, speaker):
        text = "The quick brown fox jumps over the lazy dog. " * 2223  # 100,035 characters
        started = time.monotonic()
        answer = await exchange(server, Synthesize(text=text).event())
        return answer, time.monotonic() - started, speaker.said

    answer, took, said = run(scenario)
    assert answer.closing_types()[:2] == ["error", "audio-start"] and answer.closing_types()[-1] == "audio-stop"
    error = answer.events[0][1]
    assert error.data["code"] == "text-too-long" and "5000" in error.data["text"]
    spoken = [text for _, text, _ in said]
    assert sum(map(len, spoken)) <= 5000 and len(spoken) == 5000 // 45 + 1
    assert took < 10


def test_a_stream_past_the_limit_is_reported_once_and_still_closes():
    async def scenario(server, speaker):
        chunks = [SynthesizeChunk(text="One more sentence to say. ").event() for _ in range(10)]
        answer = await exchange(server, SynthesizeStart().event(), *chunks, SynthesizeStop().event(),
                                last="synthesize-stopped")
        return answer, speaker.said

    answer, said = run(scenario, Limits(max_text_chars=100))
    assert answer.closing_types() == ["audio-start", "error", "audio-stop", "synthesize-stopped"]
    assert [text for _, text, _ in said] == ["One more sentence to say."] * 3 + ["One more sentence to"]


@pytest.mark.parametrize("text, spoken", [
    ("Great news! 🎉🎉 The door is locked. 🔒", ["Great news! The door is locked."]),
    ("😀😀😀", []),
    ("Bell\x07 and\x00 null\x1b[2J. Tab\there.", ["Bell and null [2J.", "Tab here."]),
    ("Hello 你好, Привет, مرحبا, こんにちは.", ["Hello 你好, Привет, مرحبا, こんにちは."]),
    ("Broken \ud800 surrogate.", ["Broken surrogate."]),
])
def test_emoji_control_characters_and_mixed_scripts(text, spoken):
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            # ensure_ascii: the JSON escape is the only way to send a lone surrogate
            data = json.dumps({"text": text}).encode()
            header = json.dumps({"type": "synthesize", "data_length": len(data)}).encode()
            client._writer.write(header + b"\n" + data)
            answer = await read_until(client, "audio-stop", timeout=10)
        return answer, speaker.said

    answer, said = run(scenario)
    assert answer.closing_types() == CLOSED
    assert [sentence for _, sentence, _ in said] == spoken


def test_ssml_is_spoken_without_its_tags():
    async def scenario(server, speaker):
        ssml = '<speak>Turn left<break time="500ms"/> at the <emphasis>second</emphasis> light.</speak>'
        await exchange(server, Event("synthesize", {"text": ssml, "text_format": "ssml"}))
        await exchange(server, Synthesize(text="<speak>Sniffed &amp; spoken.</speak>").event())
        await exchange(server, SynthesizeStart(text_format="ssml").event(), SynthesizeChunk(text="<p>In a ").event(),
                       SynthesizeChunk(text="stream</p>.").event(), SynthesizeStop().event(), last="synthesize-stopped")
        return [text for _, text, _ in speaker.said]

    assert run(scenario) == ["Turn left at the second light.", "Sniffed & spoken.", "In a stream ."]


def test_chunks_without_a_start_are_ignored_and_the_connection_goes_on():
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(SynthesizeChunk(text="Nobody started me.").event())
            await client.write_event(SynthesizeChunk(text=None).event())
            await client.write_event(Synthesize(text="Hello.").event())
            return await read_until(client, "audio-stop", timeout=10), speaker.said

    answer, said = run(scenario)
    assert answer.closing_types() == CLOSED and [text for _, text, _ in said] == ["Hello."]


def test_many_requests_at_once_are_all_answered_in_order():
    """More requests than may wait: reading pauses until there is room, nothing is lost."""
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            for number in range(20):
                await client.write_event(Synthesize(text=f"Request {number}.").event())
            answers = [await read_until(client, "audio-stop", timeout=10) for _ in range(20)]
        return answers, speaker.said

    answers, said = run(scenario, Limits(queued_requests=2))
    assert all(answer.closing_types() == CLOSED for answer in answers)
    assert [text for _, text, _ in said] == [f"Request {number}." for number in range(20)]


# -- idle connections ---------------------------------------------------------------------------------------


IDLE = Limits(idle_seconds=0.5)


@pytest.mark.parametrize("raw", [b"", b'{"type": "synthes'])
def test_a_connection_that_sends_no_complete_event_is_closed_when_idle(raw):
    async def scenario(server, speaker):
        started = time.monotonic()
        events = await raw_exchange(server.port, raw)
        return events, time.monotonic() - started

    events, took = run(scenario, IDLE)
    assert [(event.type, event.data["code"]) for event in events] == [("error", "idle-timeout")]
    assert 0.4 < took < 5


def test_an_idle_open_stream_is_ended_with_its_closing_events():
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(SynthesizeStart().event())
            await client.write_event(SynthesizeChunk(text="Half a sentence").event())
            answer = await read_until(client, "synthesize-stopped", timeout=10)
            return answer, await asyncio.wait_for(client.read_event(), 10), speaker.said

    answer, after, said = run(scenario, IDLE)
    assert answer.closing_types() == ["error", "audio-start", "audio-stop", "synthesize-stopped"]
    assert answer.events[0][1].data["code"] == "idle-timeout"
    assert after is None and [text for _, text, _ in said] == ["Half a sentence"]


def test_a_connection_is_not_idle_while_its_answer_is_spoken():
    async def scenario(server, speaker):
        return await exchange(server, Synthesize(text="Talk forever.").event())

    answer = run(scenario, Limits(idle_seconds=0.3, stall_seconds=1.5))
    # Cut as stalled (1.5 s), not closed as idle (0.3 s) while it was speaking.
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"]
    assert answer.events[2][1].data["code"] == "timeout"


# -- faults ---------------------------------------------------------------------------------------------------


def test_a_sentence_that_stalls_keeps_its_audio_and_ends_the_request():
    async def scenario(server, speaker):
        started = time.monotonic()
        answer = await exchange(server, Synthesize(text="Talk forever. This is never said.").event())
        return answer, time.monotonic() - started, speaker

    answer, took, speaker = run(scenario, Limits(stall_seconds=0.5))
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"]
    assert answer.pcm == CHUNK  # the audio made before the limit
    assert answer.events[2][1].data["code"] == "timeout"
    assert [text for _, text, _ in speaker.said] == ["Talk forever."]
    assert speaker.cancelled.is_set() and 0.5 <= took < 5


def test_a_stream_that_stalls_skips_the_rest_and_closes_after_its_stop():
    async def scenario(server, speaker):
        return await exchange(server, SynthesizeStart().event(), SynthesizeChunk(text="Talk forever. Then ").event(),
                              SynthesizeChunk(text="more. And more.").event(), SynthesizeStop().event(),
                              last="synthesize-stopped"), speaker.said

    answer, said = run(scenario, Limits(stall_seconds=0.5))
    assert answer.closing_types() == ["audio-start", "error", "audio-stop", "synthesize-stopped"]
    assert [text for _, text, _ in said] == ["Talk forever."]


def test_a_slow_but_steady_sentence_is_never_cut():
    async def scenario(server, speaker):
        started = time.monotonic()
        answer = await exchange(server, Synthesize(text="Speak slowly. Then this.").event())
        return answer, time.monotonic() - started

    answer, took = run(scenario, Limits(stall_seconds=1.0))
    assert took > 2 * 1.0  # much longer than the stall timeout in all, never that long without audio
    assert answer.closing_types() == CLOSED and answer.pcm == CHUNK * (SLOW_CHUNKS + 2)


def test_waiting_behind_other_requests_is_no_stall_while_the_engine_works_for_them():
    async def scenario(server, speaker):
        speaker.others_progressing = True
        return await exchange(server, Synthesize(text="I am queued.").event())

    answer = run(scenario, Limits(stall_seconds=QUEUED_SECONDS / 2))
    assert answer.closing_types() == CLOSED and answer.pcm == CHUNK * 2


def test_waiting_while_the_engine_makes_no_progress_at_all_is_a_stall():
    async def scenario(server, speaker):
        return await exchange(server, Synthesize(text="I am queued.").event())

    answer = run(scenario, Limits(stall_seconds=QUEUED_SECONDS / 2))
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"] and answer.pcm == b""
    assert answer.events[1][1].data == {"text": f"no new audio for {QUEUED_SECONDS / 2:g} s (stalled): the rest "
                                                "was not spoken", "code": "timeout"}


def test_a_request_failing_mid_sentence_does_not_disturb_the_others():
    async def scenario(server, speaker):
        requests = ["Good morning.", "This will crash.", "Good evening.", "Good night."]
        answers = await asyncio.gather(*(exchange(server, Synthesize(text=text).event()) for text in requests))
        return answers, await still_serving(server.port)

    (morning, crashed, evening, night), after = run(scenario)
    for answer in (morning, evening, night, after):
        assert answer.closing_types() == CLOSED and answer.pcm == CHUNK * 2
    assert crashed.closing_types() == ["audio-start", "error", "audio-stop"] and crashed.pcm == CHUNK
    error = crashed.events[2][1].data
    assert error == {"text": "synthesis failed: out of memory", "code": "RuntimeError"}


def test_language_detection_failing_still_ends_the_request(monkeypatch):
    from wyoming_qwen_tts.request_text import LanguageDetector

    def broken(self, text, allowed=None):
        raise RuntimeError("detector broke")

    monkeypatch.setattr(LanguageDetector, "detect", broken)

    async def scenario(server, speaker):
        first = await exchange(server, Synthesize(text="Hello there. Good day.").event())
        return first, await exchange(server, Synthesize(text="Bonjour.", voice=SynthesizeVoice(name="fritz")).event())

    first, german = run(scenario)
    assert first.closing_types() == ["audio-start", "error", "error", "audio-stop"]
    assert "detector broke" in first.events[1][1].data["text"]
    assert german.closing_types() == CLOSED  # a voice with its own language needs no detection


def test_a_bug_while_answering_still_sends_the_closing_events(monkeypatch):
    from wyoming_qwen_tts.answering import Answerer

    async def buggy_speak(self, response, sentence):
        raise AttributeError("a bug")

    monkeypatch.setattr(Answerer, "_speak", buggy_speak)

    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Synthesize(text="Hello. Again.").event())
            answer = await read_until(client, "audio-stop", timeout=10)
            await client.write_event(Describe().event())
            return answer, await read_until(client, "info", timeout=10)

    answer, info = run(scenario)
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"] and info.types == ["info"]
    assert answer.events[1][1].data == {"text": "internal error: a bug", "code": "AttributeError"}


def test_a_client_that_stops_reading_is_dropped_and_its_generation_cancelled():
    async def scenario(server, speaker):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b'{"type": "synthesize", "data": {"text": "Speak endless audio."}}\n')
        await writer.drain()
        started = time.monotonic()
        await asyncio.wait_for(speaker.cancelled.wait(), 20)  # never read: the server gives up
        took = time.monotonic() - started
        after = await still_serving(server.port)
        writer.close()
        return took, after, speaker

    took, after, speaker = run(scenario, Limits(write_seconds=1.0))
    assert after.closing_types() == CLOSED
    assert 1.0 <= took < 10
    # Audio is taken from the speaker only as the socket accepts it (here a few MB of kernel buffers).
    assert speaker.endless_chunks < 200


def test_a_request_in_flight_at_shutdown_gets_an_error_and_its_closing_events():
    async def scenario(server, speaker):
        async with AsyncTcpClient("127.0.0.1", server.port) as client:
            await client.write_event(Synthesize(text="Talk forever.").event())
            answer = await read_until(client, "audio-chunk", timeout=10)
            await server.stop()
            await read_until(client, "audio-stop", answer, timeout=10)
            return answer, speaker.cancelled.is_set()

    answer, cancelled = run(scenario)
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"] and cancelled
    assert answer.events[2][1].data["code"] == "shutdown"


def test_data_at_the_size_limit_is_still_a_request():
    async def scenario(server, speaker):
        text = "Hi. " + " " * (MAX_DATA_BYTES - 100)
        return await exchange(server, Synthesize(text=text).event()), speaker.said

    answer, said = run(scenario)
    assert answer.closing_types() == ["error", "audio-start", "audio-stop"]
    assert answer.events[0][1].data["code"] == "text-too-long" and [text for _, text, _ in said] == ["Hi."]

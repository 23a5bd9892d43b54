"""Fuzzing (hypothesis, bounded for CI): random bytes into the event reader and the server, random
event sequences into the handler. Nothing but an event, the end or a refusal comes out of the
reader; every request-shaped sequence gets its closing events; the server keeps serving."""

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wyoming.client import AsyncTcpClient
from wyoming.info import Describe

from wyoming_qwen_tts.speech import Limits
from wyoming_qwen_tts.protocol import BadFrame, read_event

from .server_harness import read_until
from .standin import CATALOG, StandInSpeaker, serving

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Limits(idle_seconds=0.5, stall_seconds=5, write_seconds=5)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=10)
# Any code point, lone surrogates included (JSON escapes carry them).
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=80)
texts = any_text | st.sampled_from(["Hello there.", "Fail me.", "", "...", "<speak>Hi &amp; bye</speak>"])
voices = st.none() | st.fixed_dictionaries({}, optional={
    "name": st.sampled_from(["ann", "fritz", "nobody"]) | json_values,
    "language": st.sampled_from(["en", "de", "klingon"]) | json_values})


def event(kind: str, **data) -> dict:
    return {"type": kind, "data": {name: value for name, value in data.items() if value is not None}}


events = st.one_of(
    st.just(event("describe")),
    st.builds(lambda text, voice, fmt: event("synthesize", text=text, voice=voice, text_format=fmt),
              texts | json_values, voices, st.none() | st.sampled_from(["ssml", "text", "rtf"])),
    st.builds(lambda voice, fmt: event("synthesize-start", voice=voice, text_format=fmt),
              voices, st.none() | st.sampled_from(["ssml", "text"])),
    st.builds(lambda text: event("synthesize-chunk", text=text), texts | json_values),
    st.just(event("synthesize-stop")),
    st.builds(lambda kind, data: {"type": kind, "data": data}, st.text(min_size=1, max_size=12),
              st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
)


class FuzzSpeaker(StandInSpeaker):
    """A chunk of audio per sentence; sentences with 'fail' (any case) or of 13 characters raise."""

    async def speak(self, voice, text: str, language: str, options):
        if "fail" in text.lower() or len(text) == 13:
            raise RuntimeError("fuzzed failure")
        yield b"\x00\x01" * 240


def encode(message: dict) -> bytes:
    """A Wyoming event with its data after the header, ASCII-escaped (so lone surrogates travel)."""
    data = json.dumps(message["data"]).encode()
    header = json.dumps({"type": message["type"], "data_length": len(data)}).encode()
    return header + b"\n" + data


def expected_answers(messages: list[dict]) -> tuple[list[str], int, bool]:
    """The responses the handler owes, in order ('whole' or 'stream'; a stream is owed from its
    start), the infos, and whether a stream is left open (the test then sends its stop)."""
    answers, infos, stream_open = [], 0, False
    for message in messages:
        kind = message["type"]
        if kind == "describe":
            infos += 1
        elif kind == "synthesize" and not stream_open:
            answers.append("whole")
        elif kind == "synthesize-start":
            answers.append("stream")
            stream_open = True
        elif kind == "synthesize-stop":
            if not stream_open:
                answers.append("stream")  # an empty stream answers a stop without a start
            stream_open = False
    return answers, infos, stream_open


def check_grammar(types: list[str], answers: list[str]) -> None:
    """Each answer: error* audio-start (audio-chunk | error)* audio-stop [synthesize-stopped]."""
    position = 0

    def take(kind: str) -> None:
        nonlocal position
        assert position < len(types) and types[position] == kind, (kind, position, types)
        position += 1

    for answer in answers:
        while position < len(types) and types[position] == "error":
            position += 1
        take("audio-start")
        while position < len(types) and types[position] in ("audio-chunk", "error"):
            position += 1
        take("audio-stop")
        if answer == "stream":
            take("synthesize-stopped")
    assert position == len(types), types[position:]


async def converse(port: int, messages: list[dict], stop_stream: bool, answers: list[str], infos: int):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        client._writer.write(b"".join(encode(message) for message in messages))
        if stop_stream:
            client._writer.write(encode(event("synthesize-stop")))
        await client._writer.drain()
        received = []
        last = {"whole": "audio-stop", "stream": "synthesize-stopped"}

        def complete() -> bool:
            stops = [kind for kind in received if kind in ("audio-stop", "synthesize-stopped")]
            return (received.count("info") == infos and received.count("audio-stop") == len(answers)
                    and (not answers or stops[-1] == last[answers[-1]]))

        while not complete():
            message = await asyncio.wait_for(client.read_event(), 10)
            assert message is not None, f"closed early: {received}"
            received.append(message.type)
        return received


async def describe_answered(port: int) -> None:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        await read_until(client, "info", timeout=10)


@FUZZ
@given(st.lists(events, max_size=12))
def test_every_request_in_a_random_event_sequence_gets_its_closing_events(messages):
    answers, infos, stream_open = expected_answers(messages)

    async def main():
        server = await serving(FuzzSpeaker(), LIMITS, CATALOG)
        try:
            received = await converse(server.port, messages, stream_open, answers, infos)
            await describe_answered(server.port)
            return received
        finally:
            await server.stop()

    received = asyncio.run(main())
    assert received.count("info") == infos
    check_grammar([kind for kind in received if kind != "info"], answers)


async def read_all(raw: bytes) -> list:
    reader = asyncio.StreamReader(limit=64 * 1024)
    reader.feed_data(raw)
    reader.feed_eof()
    read = []
    while True:
        try:
            event = await read_event(reader)
        except BadFrame:
            return read + ["refused"]
        if event is None:
            return read
        read.append(event)


header_lines = st.builds(
    lambda header, tail: json.dumps(header).encode() + b"\n" + tail,
    st.dictionaries(st.sampled_from(["type", "data", "data_length", "payload_length", "version"]), json_values),
    st.binary(max_size=200))


@FUZZ
@given(st.binary(max_size=3000) | header_lines)
def test_the_reader_turns_any_bytes_into_events_the_end_or_a_refusal(raw):
    read = asyncio.run(asyncio.wait_for(read_all(raw), 10))
    assert all(item == "refused" or isinstance(item.type, str) for item in read)


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=3000) | header_lines)
def test_random_bytes_never_take_the_server_down(raw):
    async def main():
        server = await serving(FuzzSpeaker(), LIMITS, CATALOG)
        try:
            async with AsyncTcpClient("127.0.0.1", server.port) as client:
                client._writer.write(raw)
                await client._writer.drain()
                while await asyncio.wait_for(client.read_event(), 10) is not None:
                    pass  # whatever it answers, until it closes (unreadable, or idle after 0.5 s)
            await describe_answered(server.port)
        finally:
            await server.stop()

    asyncio.run(main())

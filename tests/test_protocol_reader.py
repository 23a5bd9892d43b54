"""The bounded event reader: every malformed or oversized event is refused before it is buffered."""

import asyncio
import json

import pytest
from wyoming.event import Event, async_write_event

from wyoming_qwen_tts.protocol import MAX_DATA_BYTES, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, BadFrame, read_event


class BufferWriter:
    """Enough of a StreamWriter for wyoming's async_write_event."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    async def drain(self) -> None:
        pass


def read(raw: bytes, eof: bool = True):
    """read_event on a stream holding raw (then closed, unless eof=False: then more may come)."""
    async def main():
        reader = asyncio.StreamReader(limit=MAX_HEADER_BYTES)
        reader.feed_data(raw)
        if eof:
            reader.feed_eof()
        return await asyncio.wait_for(read_event(reader), 5)

    return asyncio.run(main())


def encoded(event: Event) -> bytes:
    writer = BufferWriter()
    asyncio.run(async_write_event(event, writer))
    return bytes(writer.data)


def header(**fields) -> bytes:
    return json.dumps(fields).encode() + b"\n"


def test_an_event_written_by_wyoming_reads_back_whole():
    event = Event("synthesize", {"text": "Grüße, 世界 😀", "voice": {"name": "ann"}}, payload=b"\x00\x01" * 10)
    assert read(encoded(event)) == event


def test_data_in_the_header_and_after_it_are_merged():
    data = b'{"text": "Hi."}'
    raw = header(type="synthesize", data={"voice": {"name": "ann"}}, data_length=len(data)) + data
    assert read(raw) == Event("synthesize", {"voice": {"name": "ann"}, "text": "Hi."})


@pytest.mark.parametrize("raw, problem", [
    (b"{not json\n", "header is not JSON"),
    (b"\xff\xfe\n", "header is not JSON"),
    (b"[" * 50000 + b"\n", "header is not JSON"),  # nested deeper than the JSON parser recurses
    (b'["synthesize"]\n', "header must be a JSON object, not list"),
    (b'{"data": {}}\n', "header 'type' must be a non-empty string, not NoneType"),
    (b'{"type": 7}\n', "header 'type' must be a non-empty string, not int"),
    (b'{"type": ""}\n', "header 'type' must be a non-empty string"),
    (b'{"type": "synthesize", "data": "text"}\n', "header 'data' must be a JSON object, not str"),
    (b'{"type": "synthesize", "data_length": "12"}\n', "'data_length' must be a non-negative integer, not str"),
    (b'{"type": "synthesize", "data_length": 1.5}\n', "'data_length' must be a non-negative integer, not float"),
    (b'{"type": "synthesize", "data_length": true}\n', "'data_length' must be a non-negative integer, not bool"),
    (b'{"type": "synthesize", "data_length": -1}\n', "'data_length' must be a non-negative integer, not int"),
    (b'{"type": "synthesize", "payload_length": [1]}\n', "'payload_length' must be a non-negative integer"),
    (b'{"type": "synthesize", "data_length": 2}\n[]', "data must be a JSON object, not list"),
    (b'{"type": "synthesize", "data_length": 3}\n{"a', "data is not JSON"),
])
def test_malformed_events_are_refused_with_what_is_wrong(raw, problem):
    with pytest.raises(BadFrame, match=problem.replace("[", r"\[")):
        read(raw)


@pytest.mark.parametrize("field, limit", [("data_length", MAX_DATA_BYTES), ("payload_length", MAX_PAYLOAD_BYTES)])
def test_absurd_lengths_are_refused_before_anything_is_read(field, limit):
    # No data follows and the stream stays open: a reader that believed the header would wait for it.
    with pytest.raises(BadFrame, match=f"'{field}' of {10**12} bytes, more than the {limit} allowed"):
        read(header(type="synthesize", **{field: 10**12}), eof=False)


def test_lengths_at_the_limit_are_read():
    text = "x" * (MAX_DATA_BYTES - len('{"text": ""}'))
    data = json.dumps({"text": text}).encode()
    assert len(data) == MAX_DATA_BYTES
    event = read(header(type="synthesize", data_length=len(data), payload_length=MAX_PAYLOAD_BYTES) + data
                 + b"\x00" * MAX_PAYLOAD_BYTES)
    assert event.data["text"] == text and len(event.payload) == MAX_PAYLOAD_BYTES


def test_a_header_line_longer_than_the_limit_is_refused():
    with pytest.raises(BadFrame, match=f"header line longer than {MAX_HEADER_BYTES} bytes"):
        read(b'{"type": "' + b"x" * MAX_HEADER_BYTES + b'"}\n', eof=False)


@pytest.mark.parametrize("raw", [
    b"",
    b'{"type": "describe"',  # closed inside the header line
    header(type="synthesize", data_length=10) + b'{"te',  # inside the data
    header(type="audio-chunk", payload_length=100) + b"\x00" * 10,  # inside the payload
])
def test_a_client_closing_between_or_inside_events_is_the_end(raw):
    assert read(raw) is None

"""Reading Wyoming events with limits: what a client may make the server buffer is bounded.

A Wyoming event is a JSON header line, then `data_length` bytes of JSON data and `payload_length`
bytes of payload. wyoming's own reader believes the lengths (a header claiming 10 GB makes it
buffer whatever arrives) and reports a broken header as the end of the connection. This one
checks the header before reading anything more and says what was wrong.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from wyoming.event import Event

# asyncio's StreamReader (what asyncio.start_server hands wyoming) refuses longer lines anyway.
MAX_HEADER_BYTES = 64 * 1024
# Room for a 100,000-character text (and a text in any script) in one synthesize event.
MAX_DATA_BYTES = 1024 * 1024
# A text-to-speech request has no payload; events that carry one are read and ignored.
MAX_PAYLOAD_BYTES = 1024 * 1024


class BadFrame(ValueError):
    """Bytes that are not a Wyoming event within the limits: the connection cannot go on."""


@dataclass(frozen=True)
class FrameLimits:
    header_bytes: int = MAX_HEADER_BYTES
    data_bytes: int = MAX_DATA_BYTES
    payload_bytes: int = MAX_PAYLOAD_BYTES


async def read_event(reader: asyncio.StreamReader, limits: FrameLimits = FrameLimits()) -> Event | None:
    """The next event; None when the client closed the connection (between or inside events).

    Raises BadFrame for anything else that is not an event within the limits."""
    line = await _read_header_line(reader, limits.header_bytes)
    if line is None:
        return None
    header = _parse_header(line)
    data_length = _length(header, "data_length", limits.data_bytes)
    payload_length = _length(header, "payload_length", limits.payload_bytes)
    inline = header.get("data")
    data = {} if inline is None else dict(_json_object(inline, "header 'data'"))
    try:
        if data_length:
            data.update(_json_object(_loads(await reader.readexactly(data_length), "data"), "data"))
        payload = await reader.readexactly(payload_length) if payload_length else None
    except asyncio.IncompleteReadError:
        return None  # closed mid-event
    return Event(type=header["type"], data=data, payload=payload)


async def _read_header_line(reader: asyncio.StreamReader, limit: int) -> bytes | None:
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError:
        return None  # closed, with or without part of a line
    except asyncio.LimitOverrunError:
        raise BadFrame(f"header line longer than {limit} bytes") from None
    if len(line) > limit:
        raise BadFrame(f"header line of {len(line)} bytes, more than {limit}")
    return line


def _parse_header(line: bytes) -> dict[str, Any]:
    header = _json_object(_loads(line, "header"), "header")
    kind = header.get("type")
    if not isinstance(kind, str) or not kind:
        raise BadFrame(f"header 'type' must be a non-empty string, not {_describe(kind)}")
    return header


def _length(header: dict[str, Any], field: str, limit: int) -> int:
    value = header.get(field)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadFrame(f"header {field!r} must be a non-negative integer, not {_describe(value)}")
    if value > limit:
        raise BadFrame(f"header {field!r} of {value} bytes, more than the {limit} allowed")
    return value


def _loads(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # not UTF-8, not JSON, or nested too deeply
        raise BadFrame(f"{what} is not JSON: {shorten(str(err))}") from None


def _json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadFrame(f"{what} must be a JSON object, not {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {shorten(repr(value))}"


def shorten(text: str, limit: int = 60) -> str:
    """Client-given text for a message or a log line, cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

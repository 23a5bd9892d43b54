"""Wyoming events of one connection: describe, synthesize, and streaming synthesis.

Home Assistant has no read timeout and ignores `error` events, so every request is answered with
audio-start ... audio-stop (plus synthesize-stopped for a stream), whatever happens; a failure adds
an `error` event before the closing events.

Events are read as they come (reading.py) while a per-connection task answers the requests in
order (answering.py), writing each sentence's audio as it is generated (writing.py), so that a
stream's text keeps arriving while its first sentence is spoken, describe is answered at once, and
a client that goes away is noticed at once: its generation is cancelled. This module turns events
into requests.

What one connection can cost is bounded (speech.Limits): the bytes of an event, the text of a
request, the requests waiting, how long a sentence may go without new audio (a stall; a slow but
steady one is never cut), how long a write may wait for a client that does not read, how long a
connection may sit idle. What is spoken, by which voice and in which language is the speech
layer's (speech.SpeechService), with Wyoming's rules: an unknown voice name gets the default voice,
a client's language is a hint, a text too long is spoken up to the limit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import aclosing
from typing import Any

from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from .answering import Answerer, Response
from .protocol import shorten
from .reading import Activity, ReadingStopped, read_events
from .speech import SpeechService, TextLimit
from .request_text import normalize_language
from .writing import EventWriter

_LOGGER = logging.getLogger(__name__)
LOGGED_CHARS = 80  # of a client's voice name, language or event type in a log line


class BadRequest(ValueError):
    pass


class TtsEventHandler(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, service: SpeechService,
                 describe: Callable[[], Info]) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.limits = service.limits
        self._describe = describe  # the info event's content for the voices as they are now
        self._peer = _peer_name(writer)
        self._activity = Activity()
        self._events = EventWriter(writer, self.limits.write_seconds, self._activity, self._peer)
        self._answerer = Answerer(service, self._events, self._activity, self._peer)
        self._stream: Response | None = None
        self._stream_text = service.new_text()

    async def run(self) -> None:
        try:
            await self._read_events()
        except ConnectionError:
            _LOGGER.debug("Client %s went away", self._peer)
        except Exception:  # noqa: BLE001 - a bug in handling one event: drop this connection, keep serving
            _LOGGER.exception("Closing the connection from %s after an unexpected failure", self._peer)
        finally:
            await self.disconnect()
            self.writer.close()

    async def disconnect(self) -> None:
        await self._answerer.cancel()

    async def stop(self) -> None:
        """Server shutdown: a request in flight ends with an error and its closing events."""
        self._answerer.stopping = True
        await self.disconnect()
        await super().stop()

    async def write_event(self, event: Event) -> None:
        await self._events.write(event)

    async def _read_events(self) -> None:
        """Events until the client closes; one that stops being read still gets its answers, then is closed."""
        try:
            async with aclosing(read_events(self.reader, self.limits.frames, self.limits.idle_seconds,
                                            self._activity, self._peer)) as events:
                async for event in events:
                    await self.handle_event(event)
        except ReadingStopped as stopped:
            await self._finish_and_close(stopped.problem, stopped.code)

    async def _finish_and_close(self, problem: str, code: str) -> None:
        """What was asked for is still answered (an open stream ends with the problem), then the
        connection closes."""
        if self._stream is not None:
            self._stream.report(problem, code)
            await self._on_stream_stop()
        else:
            await self._answerer.enqueue(Error(text=problem, code=code))
        await self._answerer.finish()

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self._describe().event())
        elif Synthesize.is_type(event.type):
            await self._on_synthesize(event)
        elif SynthesizeStart.is_type(event.type):
            await self._on_stream_start(event)
        elif SynthesizeChunk.is_type(event.type):
            self._on_stream_chunk(event)
        elif SynthesizeStop.is_type(event.type):
            await self._on_stream_stop()
        else:
            _LOGGER.debug("Ignoring event %s", shorten(event.type, LOGGED_CHARS))
        return True

    async def _on_synthesize(self, event: Event) -> None:
        if self._stream is not None:
            # Home Assistant repeats the whole text inside a stream for older servers: already spoken.
            _LOGGER.debug("Ignoring the full-text synthesize inside a stream")
            return
        response = await self._open_response(event, streaming=False)
        try:
            sentences, truncated = self.service.sentences(_text_of(event), TextLimit.SPEAK_THE_START,
                                                          _markup_of(event))
            if truncated:
                self._report_truncated(response)
            response.say(sentences)
        except BadRequest as err:
            response.report(f"synthesize: {err}")
        response.end()

    async def _on_stream_start(self, event: Event) -> None:
        if self._stream is not None:
            _LOGGER.warning("synthesize-start inside an open stream: ending the open stream first")
            await self._on_stream_stop()
        self._stream = await self._open_response(event, streaming=True)
        self._stream_text = self.service.new_text(_markup_of(event))

    def _on_stream_chunk(self, event: Event) -> None:
        if self._stream is None:
            _LOGGER.warning("Ignoring synthesize-chunk outside a stream (no synthesize-start)")
            return
        try:
            was_truncated = self._stream_text.truncated
            sentences = self._stream_text.add(_text_of(event))
            if self._stream_text.truncated and not was_truncated:
                self._report_truncated(self._stream)
            self._stream.say(sentences)
        except BadRequest as err:
            self._stream.report(f"synthesize-chunk: {err}")

    async def _on_stream_stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            # Nothing was started, but the client waits for synthesize-stopped: give it an empty stream.
            _LOGGER.warning("synthesize-stop without synthesize-start: answering with an empty stream")
            stream = await self._open_response(None, streaming=True)
        else:
            stream.say(self._stream_text.finish())
        stream.end()

    def _report_truncated(self, response: Response) -> None:
        """Logged when the error is sent, in its place among the answers."""
        max_chars = self.limits.max_text_chars
        response.report(f"text longer than {max_chars} characters: only the first {max_chars} are spoken",
                        code="text-too-long")

    async def _open_response(self, event: Event | None, streaming: bool) -> Response:
        """A queued response for the voice and language the event asks for: the voice is looked up
        when its first sentence is spoken (the models may still be loading now)."""
        problems = []
        name = language = None
        try:
            name, language = _voice_of(event) if event is not None else (None, None)
        except BadRequest as err:
            problems.append((f"{event.type}: {err}", "bad-request"))
        response = Response(name, language, streaming)
        await self._answerer.enqueue(response)
        for problem, code in problems:
            response.report(problem, code)
        return response


def _text_of(event: Event) -> str:
    text = event.data.get("text")
    if not isinstance(text, str):
        raise BadRequest(f"'text' must be a string, not {type(text).__name__}")
    return text


def _markup_of(event: Event) -> bool | None:
    """True for SSML, False for plain text, None when the event does not say (SSML if it looks like it)."""
    text_format = event.data.get("text_format")
    if text_format is None:
        return None
    if text_format in ("ssml", "text"):
        return text_format == "ssml"
    _LOGGER.warning("Unknown text_format %s: reading the text as plain text or SSML by its look",
                    shorten(repr(text_format), LOGGED_CHARS))
    return None


def _voice_of(event: Event) -> tuple[str | None, str | None]:
    """(voice name, language name) the event asks for; None where it does not say."""
    voice = event.data.get("voice")
    if voice is None:
        return None, None
    if not isinstance(voice, dict):
        raise BadRequest(f"'voice' must be an object, not {type(voice).__name__}")
    name = voice.get("name")
    if name is not None and not isinstance(name, str):
        raise BadRequest(f"voice 'name' must be a string, not {type(name).__name__}")
    language = voice.get("language")
    if language is None:
        return name, None
    try:
        return name, normalize_language(str(language))
    except ValueError:
        _LOGGER.warning("Ignoring unknown language %s in the request", shorten(repr(language), LOGGED_CHARS))
        return name, None


def _peer_name(writer: asyncio.StreamWriter) -> str:
    peer: Any = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer or "a local client")


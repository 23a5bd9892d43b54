"""Wyoming events of one connection: describe, synthesize, and streaming synthesis.

Home Assistant has no read timeout and ignores `error` events, so every request is answered with
audio-start ... audio-stop (plus synthesize-stopped for a stream), whatever happens; a failure adds
an `error` event before the closing events.

Events are read as they come while a per-connection task speaks the requests in order, so that a
stream's text keeps arriving while its first sentence is spoken, describe is answered at once, and
a client that goes away is noticed at once: its generation is cancelled.

What one connection can cost is bounded (Limits): the bytes of an event, the text of a request,
the requests waiting, the wall-clock time of a sentence, how long a write may wait for a client
that does not read, how long a connection may sit idle.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event, async_write_event
from wyoming.info import Describe, Info
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .audio import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH, pcm16_seconds
from .protocol import BadFrame, FrameLimits, read_event, shorten
from .text import AUTO, LanguageDetector, RequestText, normalize_language
from .voices import VoiceCatalog, VoiceSpec

_LOGGER = logging.getLogger(__name__)
_END = object()  # a response's last item
_CLOSE = object()  # the last item of a connection's queue: answer nothing more
# While a connection is speaking it is not idle; check again this often.
_BUSY_CHECK_SECONDS = 1.0
# On shutdown, a request in flight gets this long to write its error and closing events.
_SHUTDOWN_WRITE_SECONDS = 2.0
LOGGED_CHARS = 80  # of a client's voice name, language or event type in a log line


class Speaker(Protocol):
    """What the handler needs from synthesis.Synthesizer."""

    def languages(self, voice_name: str) -> list[str]: ...

    def speak(self, voice_name: str, text: str, language: str = AUTO): ...


@dataclass(frozen=True)
class Limits:
    """What one connection may ask of the server."""

    max_text_chars: int = 5000  # per request; the rest is not spoken (and reported)
    sentence_seconds: float = 60.0  # wall-clock time waiting for one sentence's audio; then the request ends
    idle_seconds: float = 60.0  # no event received and nothing being spoken: the connection is closed
    write_seconds: float = 30.0  # a client that takes longer to accept one event is dropped
    queued_requests: int = 8  # more waiting than this: the connection is not read until one is answered
    frames: FrameLimits = field(default_factory=FrameLimits)


@dataclass
class TtsService:
    """What every connection shares. catalog and info are replaced when voices are created or deleted."""

    info: Info
    catalog: VoiceCatalog
    speaker: Speaker
    detector: LanguageDetector
    limits: Limits = field(default_factory=Limits)


class BadRequest(ValueError):
    pass


class ClientTooSlow(ConnectionError):
    """The client stopped reading: it is dropped."""


class SentenceTimeout(Exception):
    def __init__(self, audio_seconds: float) -> None:
        super().__init__(f"no more audio within the time limit after {audio_seconds:.2f} s")
        self.audio_seconds = audio_seconds


class Response:
    """One request's answer in the making: sentences (and error notes) as they become known, then its end."""

    def __init__(self, voice: VoiceSpec, language: str | None, streaming: bool) -> None:
        self.voice = voice
        self.language = language  # asked for by the client (a language name), else None
        self.streaming = streaming
        self._items: asyncio.Queue = asyncio.Queue()

    def say(self, sentences: list[str]) -> None:
        for sentence in sentences:
            self._items.put_nowait(sentence)

    def report(self, problem: str, code: str = "bad-request") -> None:
        self._items.put_nowait(Error(text=problem, code=code))

    def end(self) -> None:
        self._items.put_nowait(_END)

    async def next(self) -> str | Error | object:
        return await self._items.get()


class TtsEventHandler(AsyncEventHandler):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, service: TtsService) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.limits = service.limits
        self._peer = _peer_name(writer)
        # Responses in arrival order, an Error to report on its own, or _CLOSE.
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=self.limits.queued_requests)
        self._stream: Response | None = None
        self._stream_text = RequestText(self.limits.max_text_chars)
        self._speaking = False
        self._stopping = False
        self._last_activity = time.monotonic()
        self._answering = asyncio.create_task(self._answer_requests(), name="wyoming tts answers")

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
        self._answering.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._answering

    async def stop(self) -> None:
        """Server shutdown: a request in flight ends with an error and its closing events."""
        self._stopping = True
        await self.disconnect()
        await super().stop()

    async def write_event(self, event: Event) -> None:
        timer = asyncio.timeout(self.limits.write_seconds)
        try:
            async with timer:
                await async_write_event(event, self.writer)
        except TimeoutError:
            if not timer.expired():
                raise
            _LOGGER.warning("Dropping the connection from %s: it accepted nothing for %.0f s (not reading)",
                            self._peer, self.limits.write_seconds)
            self.writer.transport.abort()
            raise ClientTooSlow(f"not reading for {self.limits.write_seconds} s") from None
        self._last_activity = time.monotonic()

    # -- reading -----------------------------------------------------------------------------------------

    async def _read_events(self) -> None:
        """Events until the client closes, sends something unreadable, or sits idle too long.

        One read is kept pending across idle checks: cancelling it could lose half an event."""
        reading: asyncio.Future | None = None
        try:
            while True:
                reading = reading or asyncio.ensure_future(read_event(self.reader, self.limits.frames))
                done, _ = await asyncio.wait({reading}, timeout=self._seconds_until_idle())
                if not done:
                    if self._idle_for() >= self.limits.idle_seconds:
                        _LOGGER.info("Closing the connection from %s: idle for %.0f s", self._peer,
                                     self.limits.idle_seconds)
                        await self._finish_and_close(f"no event for {self.limits.idle_seconds:g} s", "idle-timeout")
                        return
                    continue
                finished, reading = reading, None
                try:
                    event = finished.result()
                except BadFrame as err:
                    _LOGGER.warning("Dropping the connection from %s: unreadable event: %s", self._peer, err)
                    await self._finish_and_close(f"unreadable event: {err}", "bad-event")
                    return
                if event is None:
                    return
                self._last_activity = time.monotonic()
                await self.handle_event(event)
        finally:
            if reading is not None:
                reading.cancel()

    def _idle_for(self) -> float:
        return 0.0 if self._speaking else time.monotonic() - self._last_activity

    def _seconds_until_idle(self) -> float:
        if self._speaking:
            return min(_BUSY_CHECK_SECONDS, self.limits.idle_seconds)
        return max(0.01, self.limits.idle_seconds - self._idle_for())

    async def _finish_and_close(self, problem: str, code: str) -> None:
        """Stop reading: what was asked for is still answered (an open stream ends with the problem),
        then the connection closes."""
        if self._stream is not None:
            self._stream.report(problem, code)
            await self._on_stream_stop()
        else:
            await self._enqueue(Error(text=problem, code=code))
        await self._enqueue(_CLOSE)
        with suppress(asyncio.CancelledError, Exception):
            await self._answering

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self.service.info.event())  # the voices as they are now
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

    # -- requests ----------------------------------------------------------------------------------------

    async def _on_synthesize(self, event: Event) -> None:
        if self._stream is not None:
            # Home Assistant repeats the whole text inside a stream for older servers: already spoken.
            _LOGGER.debug("Ignoring the full-text synthesize inside a stream")
            return
        response = await self._open_response(event, streaming=False)
        try:
            text = RequestText(self.limits.max_text_chars, _markup_of(event))
            sentences = text.add(_text_of(event)) + text.finish()
            self._report_if_truncated(response, text)
            response.say(sentences)
        except BadRequest as err:
            response.report(f"synthesize: {err}")
        response.end()

    async def _on_stream_start(self, event: Event) -> None:
        if self._stream is not None:
            _LOGGER.warning("synthesize-start inside an open stream: ending the open stream first")
            await self._on_stream_stop()
        self._stream = await self._open_response(event, streaming=True)
        self._stream_text = RequestText(self.limits.max_text_chars, _markup_of(event))

    def _on_stream_chunk(self, event: Event) -> None:
        if self._stream is None:
            _LOGGER.warning("Ignoring synthesize-chunk outside a stream (no synthesize-start)")
            return
        try:
            was_truncated = self._stream_text.truncated
            sentences = self._stream_text.add(_text_of(event))
            if not was_truncated:
                self._report_if_truncated(self._stream, self._stream_text)
            self._stream.say(sentences)
        except BadRequest as err:
            self._stream.report(f"synthesize-chunk: {err}")

    async def _on_stream_stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            # Nothing was started, but the client waits for synthesize-stopped: give it an empty stream.
            _LOGGER.warning("synthesize-stop without synthesize-start: answering with an empty stream")
            stream = await self._new_response(self.service.catalog.voices[self.service.catalog.default], None, True)
        else:
            stream.say(self._stream_text.finish())
        stream.end()

    def _report_if_truncated(self, response: Response, text: RequestText) -> None:
        if text.truncated:  # logged when the error is sent, in its place among the answers
            response.report(f"text longer than {text.max_chars} characters: only the first {text.max_chars} "
                            "are spoken", code="text-too-long")

    async def _open_response(self, event: Event, streaming: bool) -> Response:
        """A queued response with the voice and language the event asks for (default voice if unknown)."""
        catalog = self.service.catalog
        problem = None
        try:
            name, language = _voice_of(event)
        except BadRequest as err:
            name, language, problem = None, None, f"{event.type}: {err}"
        voice, known = catalog.resolve(name)
        if not known:
            _LOGGER.warning("Unknown voice %s: using the default voice %s", shorten(repr(name), LOGGED_CHARS),
                            voice.name)
        response = await self._new_response(voice, language, streaming)
        if problem:
            response.report(problem)
        return response

    async def _new_response(self, voice: VoiceSpec, language: str | None, streaming: bool) -> Response:
        response = Response(voice, language, streaming)
        await self._enqueue(response)
        return response

    async def _enqueue(self, item: Response | Error | object) -> None:
        """Queue something to answer; waits (and so stops reading) while too many are queued."""
        putting = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({putting, self._answering}, return_when=asyncio.FIRST_COMPLETED)
        if not putting.done():  # nobody answers any more: the connection is lost
            putting.cancel()
            raise ConnectionError("the connection stopped answering")

    # -- answers -----------------------------------------------------------------------------------------

    async def _answer_requests(self) -> None:
        try:
            while (item := await self._queue.get()) is not _CLOSE:
                if isinstance(item, Error):
                    await self.write_event(item.event())
                else:
                    await self._answer(item)
        except ConnectionError:
            _LOGGER.debug("Client %s went away while being answered", self._peer)
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing is the only answer left; waiting would hang the client
            _LOGGER.exception("Closing the connection from %s after an unexpected failure", self._peer)
            self.writer.close()

    async def _answer(self, response: Response) -> None:
        """Speak a response's sentences as they come, then its closing events, whatever fails."""
        audio_started = False
        skip_reason: str | None = None
        skipped = 0
        try:
            while (item := await response.next()) is not _END:
                if isinstance(item, Error):
                    _LOGGER.warning("Request from %s: %s", self._peer, item.text)
                    await self.write_event(item.event())
                elif skip_reason is not None:
                    skipped += 1
                else:
                    if not audio_started:
                        await self._write_audio_start()
                        audio_started = True
                    skip_reason = await self._speak(response, item)
        except (ConnectionError, asyncio.CancelledError):
            if self._stopping:
                await self._end_on_shutdown(response, audio_started)
            raise
        except Exception as err:  # noqa: BLE001 - a bug; the client must still get its closing events
            _LOGGER.exception("Answering a request from %s failed", self._peer)
            await self.write_event(Error(text=f"internal error: {err}", code=type(err).__name__).event())
        if skipped:
            _LOGGER.warning("Skipped the last %d sentences of a request from %s: %s", skipped, self._peer, skip_reason)
        await self._write_closing(response, audio_started)

    async def _write_audio_start(self) -> None:
        await self.write_event(AudioStart(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS).event())

    async def _write_closing(self, response: Response, audio_started: bool) -> None:
        if not audio_started:
            await self._write_audio_start()
        await self.write_event(AudioStop().event())
        if response.streaming:
            await self.write_event(SynthesizeStopped().event())

    async def _end_on_shutdown(self, response: Response, audio_started: bool) -> None:
        with suppress(Exception):
            async with asyncio.timeout(_SHUTDOWN_WRITE_SECONDS):
                await self.write_event(Error(text="the server is stopping", code="shutdown").event())
                await self._write_closing(response, audio_started)

    async def _speak(self, response: Response, sentence: str) -> str | None:
        """Speak one sentence; returns why the rest of the request is not to be spoken, or None."""
        voice = response.voice
        self._speaking = True
        try:
            language = self._language_for(response, sentence)
            _LOGGER.debug("Speaking with %s (%s): %r", voice.name, language, sentence[:80])
            await self._stream_audio(voice.name, sentence, language)
        except ConnectionError:
            raise
        except SentenceTimeout as err:
            limit = self.limits.sentence_seconds
            _LOGGER.warning("Sentence cut at the %g s limit after %.2f s of audio (voice %s): %r; ending the request",
                            limit, err.audio_seconds, voice.name, sentence[:80])
            await self.write_event(Error(text=f"synthesis took longer than {limit:g} s: the rest was not spoken",
                                         code="timeout").event())
            return f"a sentence took longer than {limit:g} s"
        except Exception as err:  # noqa: BLE001 - this sentence failed; the answer still ends properly
            _LOGGER.error("Synthesis failed for %r with voice %s: %s", sentence[:80], voice.name, err,
                          exc_info=not isinstance(err, ValueError))
            await self.write_event(Error(text=f"synthesis failed: {err}", code=type(err).__name__).event())
        finally:
            self._speaking = False
            self._last_activity = time.monotonic()
        return None

    async def _stream_audio(self, voice_name: str, sentence: str, language: str) -> None:
        """The sentence's audio to the client as it is generated. Only the time spent waiting for
        audio counts against the sentence's limit, not the time the client takes to read it."""
        time_left = self.limits.sentence_seconds
        audio_seconds = 0.0
        async with aclosing(self.service.speaker.speak(voice_name, sentence, language)) as pcm_stream:
            while True:
                waiting_since = time.monotonic()
                timer = asyncio.timeout(time_left)
                try:
                    async with timer:
                        pcm = await anext(pcm_stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if timer.expired():
                        raise SentenceTimeout(audio_seconds) from None
                    raise
                time_left -= time.monotonic() - waiting_since
                audio_seconds += pcm16_seconds(pcm, SAMPLE_RATE)
                await self.write_event(AudioChunk(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS,
                                                  audio=pcm).event())

    def _language_for(self, response: Response, sentence: str) -> str:
        """The voice's language; else the client's; else detected from the sentence ('auto' when unsure)."""
        if response.voice.language != AUTO:
            return response.voice.language
        speakable = self.service.speaker.languages(response.voice.name)
        if response.language is not None and response.language in speakable:
            return response.language
        return self.service.detector.detect(sentence, allowed=speakable)


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


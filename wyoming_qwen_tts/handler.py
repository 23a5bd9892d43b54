"""Wyoming events of one connection: describe, synthesize, and streaming synthesis.

Home Assistant has no read timeout and ignores `error` events, so every request is answered with
audio-start ... audio-stop (plus synthesize-stopped for a stream), whatever happens; a failure adds
an `error` event before the closing events.

Events are read as they come while a per-connection task speaks the requests in order, so that a
stream's text keeps arriving while its first sentence is spoken, describe is answered at once, and
a client that goes away is noticed at once: its generation is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing, suppress
from dataclasses import dataclass
from typing import Protocol

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped

from .audio import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH
from .text import AUTO, LanguageDetector, SentenceSplitter, normalize_language, split_sentences
from .voices import VoiceCatalog, VoiceSpec

_LOGGER = logging.getLogger(__name__)
_END = object()


class Speaker(Protocol):
    """What the handler needs from synthesis.Synthesizer."""

    def languages(self, voice_name: str) -> list[str]: ...

    def speak(self, voice_name: str, text: str, language: str = AUTO): ...


@dataclass
class TtsService:
    """What every connection shares."""

    info: Info
    catalog: VoiceCatalog
    speaker: Speaker
    detector: LanguageDetector


class BadRequest(ValueError):
    pass


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
        self._info_event = service.info.event()
        self._responses: asyncio.Queue[Response] = asyncio.Queue()
        self._stream: Response | None = None
        self._splitter = SentenceSplitter()
        self._answering = asyncio.create_task(self._answer_requests(), name="wyoming tts answers")

    async def run(self) -> None:
        try:
            await super().run()
        except (ConnectionError, asyncio.IncompleteReadError):
            _LOGGER.debug("Client went away mid-event")
        except Exception:  # noqa: BLE001 - unreadable event framing: drop this connection, keep serving
            _LOGGER.warning("Dropping a connection after an unreadable event", exc_info=True)

    async def disconnect(self) -> None:
        self._answering.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self._answering

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event(self._info_event)
        elif Synthesize.is_type(event.type):
            self._on_synthesize(event)
        elif SynthesizeStart.is_type(event.type):
            self._on_stream_start(event)
        elif SynthesizeChunk.is_type(event.type):
            self._on_stream_chunk(event)
        elif SynthesizeStop.is_type(event.type):
            self._on_stream_stop()
        else:
            _LOGGER.debug("Ignoring event %s", event.type)
        return True

    # -- requests ----------------------------------------------------------------------------------------

    def _on_synthesize(self, event: Event) -> None:
        if self._stream is not None:
            # Home Assistant repeats the whole text inside a stream for older servers: already spoken.
            _LOGGER.debug("Ignoring the full-text synthesize inside a stream")
            return
        response = self._open_response(event, streaming=False)
        try:
            response.say(split_sentences(_text_of(event)))
        except BadRequest as err:
            response.report(f"synthesize: {err}")
        response.end()

    def _on_stream_start(self, event: Event) -> None:
        if self._stream is not None:
            _LOGGER.warning("synthesize-start inside an open stream: ending the open stream first")
            self._on_stream_stop()
        self._stream = self._open_response(event, streaming=True)
        self._splitter = SentenceSplitter()

    def _on_stream_chunk(self, event: Event) -> None:
        if self._stream is None:
            _LOGGER.warning("Ignoring synthesize-chunk outside a stream (no synthesize-start)")
            return
        try:
            self._stream.say(self._splitter.add(_text_of(event)))
        except BadRequest as err:
            self._stream.report(f"synthesize-chunk: {err}")

    def _on_stream_stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            # Nothing was started, but the client waits for synthesize-stopped: give it an empty stream.
            _LOGGER.warning("synthesize-stop without synthesize-start: answering with an empty stream")
            stream = self._new_response(self.service.catalog.voices[self.service.catalog.default], None, True)
        else:
            stream.say(self._splitter.finish())
        stream.end()

    def _open_response(self, event: Event, streaming: bool) -> Response:
        """A queued response with the voice and language the event asks for (default voice if unknown)."""
        catalog = self.service.catalog
        problem = None
        try:
            name, language = _voice_of(event)
        except BadRequest as err:
            name, language, problem = None, None, f"{event.type}: {err}"
        voice, known = catalog.resolve(name)
        if not known:
            _LOGGER.warning("Unknown voice %r: using the default voice %s", name, voice.name)
        response = self._new_response(voice, language, streaming)
        if problem:
            response.report(problem)
        return response

    def _new_response(self, voice: VoiceSpec, language: str | None, streaming: bool) -> Response:
        response = Response(voice, language, streaming)
        self._responses.put_nowait(response)
        return response

    # -- answers -----------------------------------------------------------------------------------------

    async def _answer_requests(self) -> None:
        try:
            while True:
                await self._answer(await self._responses.get())
        except ConnectionError:
            _LOGGER.debug("Client went away while being answered")
            self.writer.close()
        except Exception:  # noqa: BLE001 - closing is the only answer left; waiting would hang the client
            _LOGGER.exception("Closing a connection after an unexpected failure")
            self.writer.close()

    async def _answer(self, response: Response) -> None:
        audio_started = False
        while (item := await response.next()) is not _END:
            if isinstance(item, Error):
                _LOGGER.warning("Bad request: %s", item.text)
                await self.write_event(item.event())
                continue
            if not audio_started:
                await self.write_event(AudioStart(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS).event())
                audio_started = True
            await self._speak(response, item)
        if not audio_started:
            await self.write_event(AudioStart(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS).event())
        await self.write_event(AudioStop().event())
        if response.streaming:
            await self.write_event(SynthesizeStopped().event())

    async def _speak(self, response: Response, sentence: str) -> None:
        voice = response.voice
        language = self._language_for(response, sentence)
        _LOGGER.debug("Speaking with %s (%s): %r", voice.name, language, sentence[:80])
        try:
            async with aclosing(self.service.speaker.speak(voice.name, sentence, language)) as pcm_stream:
                async for pcm in pcm_stream:
                    await self.write_event(AudioChunk(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS,
                                                      audio=pcm).event())
        except ConnectionError:
            raise
        except Exception as err:  # noqa: BLE001 - this sentence failed; the answer still ends properly
            _LOGGER.error("Synthesis failed for %r with voice %s: %s", sentence[:80], voice.name, err,
                          exc_info=not isinstance(err, ValueError))
            await self.write_event(Error(text=f"synthesis failed: {err}", code=type(err).__name__).event())

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
        _LOGGER.warning("Ignoring unknown language %r in the request", language)
        return name, None

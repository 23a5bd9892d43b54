"""Answering one connection's requests, in order: each Response's sentences are spoken as they
become known, and every request ends with its closing events (audio-stop, plus synthesize-stopped
for a stream), whatever fails on the way; a failure adds an `error` event before them."""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing, suppress
from typing import TYPE_CHECKING

from wyoming.audio import AudioStart, AudioStop
from wyoming.error import Error
from wyoming.tts import SynthesizeStopped

from .audio import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH
from .engine.options import SpeechOptions
from .protocol import shorten
from .reading import Activity
from .speech import LanguageAsk, SentenceStalled, SpeechError, SpeechService, SpokenRequest, VoiceLookup
from .writing import EventWriter, write_audio

if TYPE_CHECKING:
    from .speech import Voice

_LOGGER = logging.getLogger(__name__)
END = object()  # a response's last item
CLOSE = object()  # the last item of a connection's queue: answer nothing more
LOGGED_CHARS = 80  # of a client's voice name in a log line
# On shutdown, a request in flight gets this long to write its error and closing events.
_SHUTDOWN_WRITE_SECONDS = 2.0


class Response:
    """One request's answer in the making: sentences (and error notes) as they become known, then its end."""

    def __init__(self, voice_name: str | None, language: str | None, streaming: bool,
                 options: SpeechOptions = SpeechOptions()) -> None:
        self.voice_name = voice_name  # asked for by the client; None: the default voice
        self.voice: Voice | None = None  # looked up when the first sentence is spoken
        self.spoken: SpokenRequest | None = None  # the request as the speech layer counts it, while answered
        self.language = language  # asked for by the client (a language name), else None
        self.streaming = streaming
        self.options = options
        self._items: asyncio.Queue = asyncio.Queue()

    def say(self, sentences: list[str]) -> None:
        for sentence in sentences:
            self._items.put_nowait(sentence)

    def report(self, problem: str, code: str = "bad-request") -> None:
        self._items.put_nowait(Error(text=problem, code=code))

    def end(self) -> None:
        self._items.put_nowait(END)

    async def next(self) -> str | Error | object:
        return await self._items.get()


class Answerer:
    """A connection's task that answers its queue: Responses in arrival order, an Error to report
    on its own, or CLOSE."""

    def __init__(self, service: SpeechService, events: EventWriter, activity: Activity, peer: str) -> None:
        self.service = service
        self.limits = service.limits
        self.events = events
        self.stopping = False  # the server is shutting down: a request in flight ends with an error
        self._activity = activity
        self._peer = peer
        self._queue: asyncio.Queue = asyncio.Queue(maxsize=self.limits.queued_requests)
        self._task = asyncio.create_task(self._answer_requests(), name="wyoming tts answers")

    async def enqueue(self, item: Response | Error | object) -> None:
        """Queue something to answer; waits (and so stops reading) while too many are queued."""
        putting = asyncio.ensure_future(self._queue.put(item))
        await asyncio.wait({putting, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if not putting.done():  # nobody answers any more: the connection is lost
            putting.cancel()
            raise ConnectionError("the connection stopped answering")

    async def finish(self) -> None:
        """Answer what is queued, then stop."""
        await self.enqueue(CLOSE)
        await self.wait()

    async def cancel(self) -> None:
        self._task.cancel()
        await self.wait()

    async def wait(self) -> None:
        with suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _answer_requests(self) -> None:
        try:
            while (item := await self._queue.get()) is not CLOSE:
                if isinstance(item, Error):
                    await self.events.write(item.event())
                else:
                    await self._answer(item)
        except ConnectionError:
            _LOGGER.debug("Client %s went away while being answered", self._peer)
            self.events.writer.close()
        except Exception:  # noqa: BLE001 - closing is the only answer left; waiting would hang the client
            _LOGGER.exception("Closing the connection from %s after an unexpected failure", self._peer)
            self.events.writer.close()

    async def _answer(self, response: Response) -> None:
        """Speak a response's sentences as they come, then its closing events, whatever fails."""
        request = response.spoken = self.service.begin("wyoming")
        audio_started = False
        skip_reason: str | None = None
        skipped = 0
        try:
            while (item := await response.next()) is not END:
                if isinstance(item, Error):
                    _LOGGER.warning("Request from %s: %s", self._peer, item.text)
                    request.failed(item.code or "error")
                    await self.events.write(item.event())
                elif skip_reason is not None:
                    skipped += 1
                elif response.voice is None and (skip_reason := await self._find_voice(response, request)):
                    skipped += 1
                else:
                    if not audio_started:
                        await self._write_audio_start()
                        audio_started = True
                    skip_reason = await self._speak(response, item)
        except (ConnectionError, asyncio.CancelledError):
            request.end(cancelled=True)
            if self.stopping:
                await self._end_on_shutdown(response, audio_started)
            raise
        except Exception as err:  # noqa: BLE001 - a bug; the client must still get its closing events
            _LOGGER.exception("Answering a request from %s failed", self._peer)
            request.failed("internal")
            await self.events.write(Error(text=f"internal error: {err}", code=type(err).__name__).event())
        if skipped:
            _LOGGER.warning("Skipped the last %d sentences of a request from %s: %s", skipped, self._peer, skip_reason)
        try:
            await self._write_closing(response, audio_started)
        finally:
            response.voice = response.spoken = None  # the voice holds its model: an idle unload frees it
            request.end()

    async def _find_voice(self, response: Response, request: SpokenRequest) -> str | None:
        """The response's voice once the models are ready (the default one for an unknown name);
        returns why nothing can be spoken, after writing the error, or None."""
        self._activity.speaking = True  # waiting for the models to load is answering: the connection is not idle
        try:
            await request.ready()
            voice, known = self.service.voice(response.voice_name, VoiceLookup.DEFAULT_IF_UNKNOWN)
        except SpeechError as err:
            _LOGGER.error("Request from %s: %s", self._peer, err.message)
            request.failed(err.code)
            await self.events.write(Error(text=err.message, code=err.code).event())
            return err.message
        finally:
            self._activity.speaking = False
            self._activity.touch()
        if not known:
            _LOGGER.warning("Unknown voice %s: using the default voice %s",
                            shorten(repr(response.voice_name), LOGGED_CHARS), voice.spec.name)
        response.voice = voice
        return None

    async def _write_audio_start(self) -> None:
        await self.events.write(AudioStart(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS).event())

    async def _write_closing(self, response: Response, audio_started: bool) -> None:
        if not audio_started:
            await self._write_audio_start()
        await self.events.write(AudioStop().event())
        if response.streaming:
            await self.events.write(SynthesizeStopped().event())

    async def _end_on_shutdown(self, response: Response, audio_started: bool) -> None:
        with suppress(Exception):
            async with asyncio.timeout(_SHUTDOWN_WRITE_SECONDS):
                await self.events.write(Error(text="the server is stopping", code="shutdown").event())
                await self._write_closing(response, audio_started)

    async def _speak(self, response: Response, sentence: str) -> str | None:
        """Speak one sentence; returns why the rest of the request is not to be spoken, or None."""
        voice = response.voice.spec
        request = response.spoken
        self._activity.speaking = True
        try:
            language = self.service.language(response.voice, response.language, sentence, LanguageAsk.HINT)
            _LOGGER.debug("Speaking with %s (%s): %r", voice.name, language, sentence[:80])
            async with aclosing(request.speak(response.voice, sentence, language, response.options)) as audio:
                await write_audio(audio, self.events)
        except ConnectionError:
            raise
        except SentenceStalled as err:
            _LOGGER.warning("Sentence cut after %.2f s of audio: no new audio for %g s (voice %s): %r; "
                            "ending the request", err.audio_seconds, err.stall_seconds, voice.name, sentence[:80])
            await self.events.write(Error(text=f"no new audio for {err.stall_seconds:g} s (stalled): the rest was "
                                               "not spoken", code=err.code).event())
            return f"a sentence stalled for {err.stall_seconds:g} s"
        except SpeechError as err:
            _LOGGER.error("Cannot speak %r with voice %s: %s", sentence[:80], voice.name, err.message)
            request.failed(err.code)
            await self.events.write(Error(text=err.message, code=err.code).event())
        except Exception as err:  # noqa: BLE001 - this sentence failed; the answer still ends properly
            _LOGGER.error("Synthesis failed for %r with voice %s: %s", sentence[:80], voice.name, err,
                          exc_info=not isinstance(err, ValueError))
            request.failed("synthesis-failed")
            await self.events.write(Error(text=f"synthesis failed: {err}", code=type(err).__name__).event())
        finally:
            self._activity.speaking = False
            self._activity.touch()
        return None

"""The speech layer both transports adapt: which voice speaks, which sentences in which language,
with which options, and the sentence's audio as it is generated, under the stall rule.

Wyoming (handler/answering/writing) and HTTP (http_api) turn their requests into calls on one
SpeechService and its errors (SpeechError) into their own answers: an `error` event before the
closing events on Wyoming, a 4xx/5xx on HTTP. Where the two transports differ, the difference is
decided here, by the caller saying which rule it wants (VoiceLookup, LanguageAsk, TextLimit),
with the reason written next to the rule. No torch here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from .audio import pcm16_seconds
from .engine.options import SpeechOptions
from .metrics import SpeechMetrics
from .model_lifecycle import ModelLifecycle, ModelsUnavailable
from .protocol import FrameLimits
from .request_text import AUTO, LANGUAGE_CODES, LanguageDetector, RequestText
from .voices import VoiceCatalog, VoiceSpec

_LOGGER = logging.getLogger(__name__)


class SpeechError(Exception):
    """A request that cannot be (fully) spoken. code says what kind of problem it is; Wyoming sends
    it as the `error` event's code, HTTP maps it to a status (http_api.STATUS_OF_CODE)."""

    def __init__(self, message: str, code: str = "bad-request") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class SentenceStalled(SpeechError):
    """No new audio for the stall timeout, and no progress of the engine for anyone either."""

    def __init__(self, audio_seconds: float, stall_seconds: float) -> None:
        super().__init__(f"no new audio for {stall_seconds:g} s (stalled) after {audio_seconds:.2f} s of audio",
                         "timeout")
        self.audio_seconds = audio_seconds
        self.stall_seconds = stall_seconds


class ModelsNotReady(SpeechError):
    """The models are still loading past the wait (code "loading"), or could not be loaded
    ("load-failed"): a client may ask again after retry_after seconds."""

    def __init__(self, unavailable: ModelsUnavailable) -> None:
        super().__init__(unavailable.message, unavailable.code)
        self.retry_after = unavailable.retry_after


@dataclass(frozen=True)
class Limits:
    """What one request or connection may ask of the server, on every transport."""

    max_text_chars: int = 5000  # per request
    stall_seconds: float = 30.0  # no new audio and no engine progress this long: the sentence and its request end
    markdown: bool = True  # plain text is read as markdown (LLM replies): markers, links and URLs are not spoken
    # Wyoming connections
    idle_seconds: float = 60.0  # no event received and nothing being spoken: the connection is closed
    write_seconds: float = 30.0  # a client that takes longer to accept one event is dropped
    queued_requests: int = 8  # more waiting than this: the connection is not read until one is answered
    frames: FrameLimits = field(default_factory=FrameLimits)
    # HTTP reference recordings
    upload_bytes: int = 20 * 1024 * 1024
    upload_seconds: float = 60.0

    @property
    def body_bytes(self) -> int:
        """An HTTP request body: a recording, base64-encoded in JSON (4/3), and the rest of the form."""
        return self.upload_bytes * 4 // 3 + 1024 * 1024


class Voice(Protocol):
    """A voice ready to speak (synthesis.ReadyVoice)."""

    spec: VoiceSpec

    def speed_with(self, options: SpeechOptions) -> float:
        """How many times faster than its model speaks it is played: the voice's speed times the request's."""

    @property
    def languages(self) -> list[str]:
        """The languages it speaks unless told otherwise: its own, or every one its model knows."""

    @property
    def model_languages(self) -> list[str]:
        """Every language its model can speak."""


class Speaker(Protocol):
    """What the speech layer needs from synthesis.Synthesizer (and what a test's stand-in implements)."""

    def voice(self, name: str) -> Voice | None:
        """The ready voice of that name; None when there is none (e.g. deleted meanwhile)."""

    def speak(self, voice: Voice, text: str, language: str, options: SpeechOptions) -> AsyncIterator[bytes]:
        """16-bit mono PCM at 24 kHz as the sentence is generated; closing it cancels the generation."""

    def last_progress(self, voice: Voice) -> float | None:
        """time.monotonic() when the engine speaking this voice last made audio, for any request."""

    def speed(self, voice: Voice) -> float | None:
        """Seconds of audio per second its model makes per stream lately; None while unknown."""

    def expected_seconds(self, voice: Voice, text: str) -> float:
        """How long its model will speak the text, estimated (before any speed change)."""


class VoiceLookup(Enum):
    # Home Assistant sends a voice name only when the user picked one, and may keep a name the
    # server no longer has: the default voice answers rather than nothing.
    DEFAULT_IF_UNKNOWN = "default"
    # An API caller asks for a voice by name and can correct a wrong one: a clear error.
    STRICT = "strict"


class LanguageAsk(Enum):
    # Wyoming: a client's language is the pipeline's setting, not the text's (and Home Assistant
    # sends none): a voice's own language wins, the hint is taken when the voice speaks it, else
    # each sentence's language is detected.
    HINT = "hint"
    # HTTP: `language` is set by the caller for this very text, as in the hosted APIs: it wins over
    # the voice's own, and one the voice's model cannot speak is an error.
    EXPLICIT = "explicit"


class Smoothing(Enum):
    """Whether a sentence's audio is held back, when the engine makes it slower than it plays, until
    the rest will come before the listener gets there: no gap inside a sentence, later first audio."""

    AUTO = "auto"  # held by the estimate (the model's measured speed, the sentence's expected length)
    ON = "on"  # held with a margin for a speed that varies (a CPU shared with other work)
    OFF = "off"  # never held: first audio as early as possible, gaps when slower than real time

    def margin(self) -> float:
        """How much more audio is held than the estimate says is needed."""
        return {Smoothing.AUTO: 1.1, Smoothing.ON: 1.5, Smoothing.OFF: 0.0}[self]


class TextLimit(Enum):
    # Wyoming: an assistant's reply must be answered whatever its length: the first
    # max_text_chars are spoken and the rest is reported (text-too-long).
    SPEAK_THE_START = "truncate"
    # HTTP: the caller can split its text: too long or nothing to speak is refused before any audio.
    REFUSE = "refuse"


@dataclass
class SpeechService:
    """What every request on every transport shares. `catalog` is replaced when voices are created
    or deleted; listeners hear of it (the Wyoming describe answer)."""

    catalog: VoiceCatalog
    speaker: Speaker
    detector: LanguageDetector
    limits: Limits = field(default_factory=Limits)
    smoothing: Smoothing = Smoothing.AUTO
    lifecycle: ModelLifecycle = field(default_factory=ModelLifecycle.always_ready)
    metrics: SpeechMetrics = field(default_factory=SpeechMetrics)
    _listeners: list[Callable[[VoiceCatalog], None]] = field(default_factory=list)
    _languages_seen: dict[str, list[str]] = field(default_factory=dict)  # by voice, once its model spoke for it

    def on_catalog_change(self, listener: Callable[[VoiceCatalog], None]) -> None:
        self._listeners.append(listener)

    def publish(self, catalog: VoiceCatalog) -> None:
        self.catalog = catalog
        for listener in self._listeners:
            listener(catalog)

    # -- requests and the models they need ------------------------------------------------------------

    def begin(self, transport: str) -> SpokenRequest:
        """A speech request arrived on a transport ("wyoming", "http"): the models stay loaded until
        it ends, and its end records how it went."""
        return SpokenRequest(self, transport)

    async def models_ready(self) -> None:
        """Returns once the models are loaded (loading them again after an unload); raises
        ModelsNotReady past the stall timeout of loading, or when they cannot be loaded."""
        try:
            await self.lifecycle.ready(self.limits.stall_seconds)
        except ModelsUnavailable as unavailable:
            raise ModelsNotReady(unavailable) from None

    @asynccontextmanager
    async def using_models(self):
        """Work on the models that is not speech (making a voice, a design preview): they are
        loaded first and stay loaded until it ends. Raises ModelsNotReady."""
        self.lifecycle.begin()
        try:
            await self.models_ready()
            yield
        finally:
            self.lifecycle.end()

    # -- who speaks ---------------------------------------------------------------------------------

    def languages(self, name: str) -> list[str]:
        """A voice's languages as its model speaks them; before its model has spoken for it (the
        server still loading): its own language, else the ten languages of the engine."""
        voice = self.speaker.voice(name)
        if voice is not None:
            self._languages_seen[name] = voice.languages
            return voice.languages
        if name in self._languages_seen:
            return self._languages_seen[name]
        spec = self.catalog.voices.get(name)
        return [spec.language] if spec is not None and spec.language != AUTO else list(LANGUAGE_CODES)

    def voice(self, name: str | None, lookup: VoiceLookup) -> tuple[Voice, bool]:
        """The voice called name (None: the default voice); the flag is False when an unknown name
        was asked for and the default answers instead. Raises SpeechError (unknown-voice)."""
        spec, known = self.catalog.resolve(name)
        if not known and lookup is VoiceLookup.STRICT:
            raise SpeechError(f"voice {name!r} is not one of this server's voices ({', '.join(self.catalog.voices)})",
                              "unknown-voice")
        voice = self.speaker.voice(spec.name)
        if voice is None:
            raise SpeechError(f"voice {spec.name!r} is not ready to speak", "unknown-voice")
        return voice, known

    # -- what is said ---------------------------------------------------------------------------------

    def new_text(self, markup: bool | None = None) -> RequestText:
        """A request's text as it arrives, split into speakable sentences (markup: True for SSML,
        False for plain text, None: SSML when it looks like it)."""
        return RequestText(self.limits.max_text_chars, markup, self.limits.markdown)

    def sentences(self, text: str, limit: TextLimit, markup: bool | None = None) -> tuple[list[str], bool]:
        """The sentences of a whole text, and whether it was cut at max_text_chars (SPEAK_THE_START);
        REFUSE raises SpeechError for a text too long or with nothing to speak."""
        max_chars = self.limits.max_text_chars
        if limit is TextLimit.REFUSE:
            if not text.strip():
                raise SpeechError("input is empty: give the text to speak")
            if len(text) > max_chars:
                raise SpeechError(f"input has {len(text)} characters; at most {max_chars} are spoken per request",
                                  "text-too-long")
        request_text = self.new_text(markup)
        sentences = request_text.add(text) + request_text.finish()
        if not sentences and limit is TextLimit.REFUSE:
            raise SpeechError("input has nothing to speak (no letters or digits)")
        return sentences, request_text.truncated

    def language(self, voice: Voice, asked: str | None, sentence: str, ask: LanguageAsk) -> str:
        """The language a sentence is spoken in (LanguageAsk says whose word counts most); 'auto'
        when detection is unsure. Raises SpeechError (unsupported-language) for an explicit
        language the voice's model cannot speak."""
        asked = None if asked == AUTO else asked
        own = voice.spec.language if voice.spec.language != AUTO else None
        if ask is LanguageAsk.EXPLICIT and asked is not None:
            if asked not in voice.model_languages:
                raise SpeechError(f"language {asked} is not spoken by this voice's model", "unsupported-language")
            return asked
        if own is not None:
            return own
        speakable = voice.languages
        if asked is not None and asked in speakable:
            return asked
        return self.detector.detect(sentence, allowed=speakable)

    # -- the audio ------------------------------------------------------------------------------------

    async def speak(self, voice: Voice, sentence: str, language: str, options: SpeechOptions) -> AsyncIterator[bytes]:
        """The sentence's audio as it is generated (held back first where smoothing says so); raises
        SentenceStalled once it stalls. Closing this cancels the generation."""
        async with aclosing(self.speaker.speak(voice, sentence, language, options)) as pcm_stream, \
                aclosing(audio_until_stall(pcm_stream, self.limits.stall_seconds,
                                           lambda: self.speaker.last_progress(voice))) as audio:
            if self.smoothing is Smoothing.OFF:
                async for pcm in audio:
                    yield pcm
                return
            playback = Playback(self.speaker, voice, sentence, voice.speed_with(options), self.smoothing.margin())
            async for pcm in audio:
                for ready in playback.add(pcm):
                    yield ready
            for ready in playback.finish():
                yield ready


class Playback:
    """One sentence's audio on its way to a listener who plays it as it comes: held back until what
    is held plays for as long as the engine needs to make the rest, then passed on as it comes.

    With the sentence lasting D seconds and the engine making r seconds of it per second (r < 1),
    playing can start once D * (1 - r) seconds are made: the rest, (D - made) / r seconds away, then
    arrives before the listener reaches it. Both D and r are estimates (the speaker's), r taken
    anew at every chunk; margin > 1 holds more than the estimate asks."""

    def __init__(self, speaker: Speaker, voice: Voice, sentence: str, played_faster: float, margin: float) -> None:
        self._speaker = speaker
        self._voice = voice
        self._played_faster = played_faster  # the speed change: audio plays this many times the model's pace
        self._expected = speaker.expected_seconds(voice, sentence) / played_faster
        self._margin = margin
        self._held: list[bytes] | None = []
        self._held_seconds = 0.0

    def add(self, pcm: bytes) -> list[bytes]:
        """What may be passed on now."""
        if self._held is None:
            return [pcm]
        self._held.append(pcm)
        self._held_seconds += pcm16_seconds(pcm)
        if self._held_seconds < self.hold_seconds():
            return []
        return self.finish()

    def finish(self) -> list[bytes]:
        held, self._held = self._held or [], None
        return held

    def hold_seconds(self) -> float:
        model_speed = self._speaker.speed(self._voice)
        if model_speed is None:
            return 0.0
        speed = model_speed / self._played_faster  # seconds of played audio made per second
        if speed >= 1:
            return 0.0
        return min(self._expected, self._expected * (1 - speed) * self._margin)


class SpokenRequest:
    """One speech request, from its arrival to the end of its answer, on either transport: the
    models are not unloaded under it, and its end records its outcome, first audio and speed."""

    def __init__(self, service: SpeechService, transport: str) -> None:
        self.transport = transport
        self.outcome: str | None = None  # the first error code reported; None: fine so far
        self._service = service
        self._speaking_since: float | None = None  # when it first needed the models
        self._first_audio_seconds: float | None = None
        self._audio_seconds = 0.0
        self._ended = False
        service.lifecycle.begin()

    async def ready(self) -> None:
        """Wait for the models (see SpeechService.models_ready): the time counts towards first audio."""
        if self._speaking_since is None:
            self._speaking_since = time.monotonic()
        try:
            await self._service.models_ready()
        except SpeechError as err:
            self.failed(err.code)
            raise

    def failed(self, code: str) -> None:
        if self.outcome is None:
            self.outcome = code

    async def speak(self, voice: Voice, sentence: str, language: str, options: SpeechOptions) -> AsyncIterator[bytes]:
        """SpeechService.speak, counted for this request."""
        if self._speaking_since is None:
            self._speaking_since = time.monotonic()
        metrics = self._service.metrics
        try:
            async with aclosing(self._service.speak(voice, sentence, language, options)) as audio:
                async for pcm in audio:
                    if self._first_audio_seconds is None:
                        self._first_audio_seconds = time.monotonic() - self._speaking_since
                    self._audio_seconds += pcm16_seconds(pcm)
                    yield pcm
        except SentenceStalled as err:
            metrics.stall_cuts.labels(self.transport).inc()
            self.failed(err.code)
            raise

    def end(self, cancelled: bool = False) -> None:
        """Its answer is complete (or abandoned: cancelled); once only."""
        if self._ended:
            return
        self._ended = True
        self._service.lifecycle.end()
        metrics = self._service.metrics
        outcome = "cancelled" if cancelled else self.outcome or "ok"
        metrics.requests.labels(self.transport, outcome).inc()
        if self._first_audio_seconds is not None:
            metrics.first_audio.labels(self.transport).observe(self._first_audio_seconds)
            took = time.monotonic() - self._speaking_since
            if took > 0:
                metrics.real_time.labels(self.transport).observe(self._audio_seconds / took)


async def audio_until_stall(pcm_stream: AsyncIterator[bytes], stall_seconds: float,
                            engine_progress: Callable[[], float | None]) -> AsyncIterator[bytes]:
    """The stream's audio as it comes; raises SentenceStalled once it stalls.

    A sentence may take as long as it needs while audio keeps coming (slow hardware is never cut;
    the engine's frame budget bounds its length): it is stalled when neither new audio nor any
    progress of the engine (engine_progress(): the monotonic time its batch last produced audio,
    for any request) has come for stall_seconds. So a sentence waiting for a batch row behind
    others is not stalled while the engine works for them, but a stuck device is found. Time spent
    while this generator is suspended (the consumer handling a chunk) never counts."""
    audio_seconds = 0.0
    while True:
        try:
            pcm = await _next_audio(pcm_stream, stall_seconds, engine_progress)
        except StopAsyncIteration:
            return
        if pcm is None:
            raise SentenceStalled(audio_seconds, stall_seconds)
        audio_seconds += pcm16_seconds(pcm)
        yield pcm


async def _next_audio(pcm_stream: AsyncIterator[bytes], stall_seconds: float,
                      engine_progress: Callable[[], float | None]) -> bytes | None:
    """The stream's next chunk, or None once it stalls. The pending read is only cancelled then:
    cancelling it at every check would end the stream."""
    waiting_since = time.monotonic()

    def stalls_at() -> float:
        return max(waiting_since, engine_progress() or 0.0) + stall_seconds

    getting = asyncio.ensure_future(anext(pcm_stream))
    try:
        while True:
            done, _ = await asyncio.wait({getting}, timeout=max(0.0, stalls_at() - time.monotonic()))
            if done:
                return getting.result()
            if time.monotonic() >= stalls_at():
                return None
    finally:
        if not getting.done():
            getting.cancel()
            await asyncio.wait({getting})

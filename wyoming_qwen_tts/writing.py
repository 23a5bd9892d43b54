"""Writing to one client: every event under the write timeout (a client that stops reading is
dropped), and a sentence's audio as it is generated, under the stall detector."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from functools import partial

from wyoming.audio import AudioChunk
from wyoming.event import Event, async_write_event

from .audio import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH, pcm16_seconds
from .reading import Activity

_LOGGER = logging.getLogger(__name__)


class ClientTooSlow(ConnectionError):
    """The client stopped reading: it is dropped."""


class SentenceStalled(Exception):
    """No new audio for the stall timeout, and no progress of the engine for anyone either."""

    def __init__(self, audio_seconds: float) -> None:
        super().__init__(f"no new audio for the stall timeout after {audio_seconds:.2f} s of audio")
        self.audio_seconds = audio_seconds


class EventWriter:
    """Events to one client; each may wait write_seconds for the client to take it."""

    def __init__(self, writer: asyncio.StreamWriter, write_seconds: float, activity: Activity, peer: str) -> None:
        self.writer = writer
        self.write_seconds = write_seconds
        self._activity = activity
        self._peer = peer

    async def write(self, event: Event) -> None:
        timer = asyncio.timeout(self.write_seconds)
        try:
            async with timer:
                await async_write_event(event, self.writer)
        except TimeoutError:
            if not timer.expired():
                raise
            _LOGGER.warning("Dropping the connection from %s: it accepted nothing for %.0f s (not reading)",
                            self._peer, self.write_seconds)
            self.writer.transport.abort()
            raise ClientTooSlow(f"not reading for {self.write_seconds} s") from None
        self._activity.touch()


async def write_sentence_audio(pcm_stream: AsyncIterator[bytes], events: EventWriter, stall_seconds: float,
                               engine_progress: Callable[[], float | None] = lambda: None) -> None:
    """The sentence's audio to the client as it is generated, until it ends or stalls
    (audio_until_stall). The time the client takes to read the audio never counts."""
    async with aclosing(audio_until_stall(pcm_stream, stall_seconds, engine_progress)) as audio:
        async for pcm in audio:
            await events.write(AudioChunk(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS, audio=pcm).event())


async def audio_until_stall(pcm_stream: AsyncIterator[bytes], stall_seconds: float,
                            engine_progress: Callable[[], float | None] = lambda: None) -> AsyncIterator[bytes]:
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
            raise SentenceStalled(audio_seconds)
        audio_seconds += pcm16_seconds(pcm)
        yield pcm


def engine_progress(speaker: object, voice_name: str) -> Callable[[], float | None]:
    """When the engine speaking this voice last made audio, for anyone; a speaker that cannot tell
    (a test's stand-in) leaves the sentence to be judged by its own audio only."""
    last_progress = getattr(speaker, "last_progress", None)
    if last_progress is None:
        return lambda: None
    return partial(last_progress, voice_name)


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

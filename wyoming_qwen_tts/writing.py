"""Writing to one client: every event under the write timeout (a client that stops reading is
dropped), and a sentence's audio as it is generated, under the sentence's time limit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from wyoming.audio import AudioChunk
from wyoming.event import Event, async_write_event

from .audio import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH, pcm16_seconds
from .reading import Activity

_LOGGER = logging.getLogger(__name__)


class ClientTooSlow(ConnectionError):
    """The client stopped reading: it is dropped."""


class SentenceTimeout(Exception):
    def __init__(self, audio_seconds: float) -> None:
        super().__init__(f"no more audio within the time limit after {audio_seconds:.2f} s")
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


async def write_sentence_audio(pcm_stream: AsyncIterator[bytes], events: EventWriter, sentence_seconds: float) -> None:
    """The sentence's audio to the client as it is generated. Only the time spent waiting for
    audio counts against the sentence's limit, not the time the client takes to read it."""
    time_left = sentence_seconds
    audio_seconds = 0.0
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
        await events.write(AudioChunk(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS, audio=pcm).event())

"""Writing to one Wyoming client: every event under the write timeout (a client that stops reading
is dropped), and a sentence's audio as it is generated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from wyoming.audio import AudioChunk
from wyoming.event import Event, async_write_event

from .audio import CHANNELS, SAMPLE_RATE, SAMPLE_WIDTH
from .reading import Activity

_LOGGER = logging.getLogger(__name__)


class ClientTooSlow(ConnectionError):
    """The client stopped reading: it is dropped."""


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


async def write_audio(audio: AsyncIterator[bytes], events: EventWriter) -> None:
    """A sentence's audio to the client as it is generated (SpeechService.speak: under the stall
    rule, whose clock never counts the time the client takes to read)."""
    async for pcm in audio:
        await events.write(AudioChunk(rate=SAMPLE_RATE, width=SAMPLE_WIDTH, channels=CHANNELS, audio=pcm).event())

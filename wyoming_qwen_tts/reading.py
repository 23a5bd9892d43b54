"""Reading one connection's events: as they come, until the client closes, sends something
unreadable, or sits idle too long (a connection that is being answered is never idle)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from wyoming.event import Event

from .protocol import BadFrame, FrameLimits, read_event

_LOGGER = logging.getLogger(__name__)
# While a connection is speaking it is not idle; check again this often.
_BUSY_CHECK_SECONDS = 1.0


class Activity:
    """When a connection last did something, and whether it is speaking now: what idleness is measured by."""

    def __init__(self) -> None:
        self.speaking = False
        self._last = time.monotonic()

    def touch(self) -> None:
        self._last = time.monotonic()

    def idle_for(self) -> float:
        return 0.0 if self.speaking else time.monotonic() - self._last


class ReadingStopped(Exception):
    """The connection is read no more; what it asked for is still answered, with this problem."""

    def __init__(self, problem: str, code: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.code = code


async def read_events(reader: asyncio.StreamReader, frames: FrameLimits, idle_seconds: float,
                      activity: Activity, peer: str) -> AsyncIterator[Event]:
    """The client's events until it closes; raises ReadingStopped for an unreadable event or idleness.

    One read is kept pending across idle checks: cancelling it could lose half an event."""
    reading: asyncio.Future | None = None
    try:
        while True:
            reading = reading or asyncio.ensure_future(read_event(reader, frames))
            done, _ = await asyncio.wait({reading}, timeout=_seconds_until_idle(activity, idle_seconds))
            if not done:
                if activity.idle_for() >= idle_seconds:
                    _LOGGER.info("Closing the connection from %s: idle for %.0f s", peer, idle_seconds)
                    raise ReadingStopped(f"no event for {idle_seconds:g} s", "idle-timeout")
                continue
            finished, reading = reading, None
            try:
                event = finished.result()
            except BadFrame as err:
                _LOGGER.warning("Dropping the connection from %s: unreadable event: %s", peer, err)
                raise ReadingStopped(f"unreadable event: {err}", "bad-event") from None
            if event is None:
                return
            activity.touch()
            yield event
    finally:
        if reading is not None:
            reading.cancel()


def _seconds_until_idle(activity: Activity, idle_seconds: float) -> float:
    if activity.speaking:
        return min(_BUSY_CHECK_SECONDS, idle_seconds)
    return max(0.01, idle_seconds - activity.idle_for())

"""When the models are in memory: loaded after the server listens, unloaded after a while with no
request (--unload-after), loaded again by the next request. Requests wait here for them, bounded.

One load at a time, whoever asks: the load runs as its own task, which the requests wait on
(shielded), so a request that gives up waiting never cancels it and every request arriving during
it waits for the same one. Unloading happens only with no request in flight; a request arriving
while the models are being freed waits for the unload to end, then for the reload. No torch here:
the blocking work (load, unload) is the caller's, run in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from enum import Enum

_LOGGER = logging.getLogger(__name__)


class ModelState(Enum):
    LOADING = "loading"
    READY = "ready"
    UNLOADED = "unloaded"
    FAILED = "failed"


class ModelsUnavailable(Exception):
    """The models are not there for a request: still loading when it gave up waiting ("loading"), or
    their load failed ("load-failed"). retry_after: seconds a client may wait before asking again."""

    def __init__(self, message: str, code: str, retry_after: float) -> None:
        super().__init__(message)
        self.message, self.code, self.retry_after = message, code, retry_after


class ModelLifecycle:
    """load() and unload() block (a worker thread runs them); unload_after 0: never unload."""

    def __init__(self, load: Callable[[], None] | None = None, unload: Callable[[], None] | None = None,
                 unload_after: float = 0.0) -> None:
        self._load = load
        self._unload = unload
        self.unload_after = unload_after
        self.state = ModelState.READY if load is None else ModelState.UNLOADED
        self.error: str | None = None  # why the last load failed
        self.loads = 0  # how many loads and unloads finished, and their seconds
        self.load_seconds = 0.0
        self._last_load_seconds = 0.0  # the last load that succeeded
        self.unloads = 0
        self.unload_seconds = 0.0
        self._loading: asyncio.Task | None = None
        self._unloading: asyncio.Task | None = None
        self._in_flight = 0
        self._last_end = time.monotonic()
        self._ready_listeners: list[Callable[[], None]] = []

    @classmethod
    def always_ready(cls) -> ModelLifecycle:
        """Models that are simply there (in-process tests with a stand-in speaker)."""
        return cls()

    def on_ready(self, listener: Callable[[], None]) -> None:
        self._ready_listeners.append(listener)

    # -- requests -------------------------------------------------------------------------------------

    def begin(self) -> None:
        """A request that may need the models started: they are not unloaded until it ends."""
        self._in_flight += 1

    def end(self) -> None:
        self._in_flight -= 1
        self._last_end = time.monotonic()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def ready(self, wait_seconds: float) -> None:
        """Returns once the models are loaded (loading them if they were unloaded); raises
        ModelsUnavailable when the load fails, or when it takes wait_seconds longer than the last
        one did: a reload after an idle unload is expected to take about as long as the start-up
        load, and the request that asked for it is to be answered, not cut at a fixed timeout
        shorter than the load on slow hardware."""
        if self.state is ModelState.READY:
            return
        if self._loading is None:
            self._loading = asyncio.create_task(self._load_models(), name="load models")
        loading = self._loading
        wait_seconds += self._last_load_seconds
        try:
            await asyncio.wait_for(asyncio.shield(loading), wait_seconds)
        except TimeoutError:
            raise ModelsUnavailable(f"the models are still loading (waited {wait_seconds:g} s): try again shortly",
                                    "loading", wait_seconds) from None
        if self.state is not ModelState.READY:
            raise ModelsUnavailable(f"the models could not be loaded: {self.error}", "load-failed", wait_seconds)

    def start_loading(self) -> asyncio.Task:
        """Start-up: load now, without waiting for a request."""
        if self._loading is None and self.state is not ModelState.READY:
            self._loading = asyncio.create_task(self._load_models(), name="load models")
        return self._loading

    # -- loading and unloading -----------------------------------------------------------------------

    async def _load_models(self) -> None:
        try:
            if self._unloading is not None:
                await self._unloading
            self.state = ModelState.LOADING
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._load)
            except Exception as err:  # noqa: BLE001 - every request waiting is answered with it, /health shows it
                self.state, self.error = ModelState.FAILED, str(err)
                _LOGGER.error("The models could not be loaded: %s", err)
                return
            self.loads += 1
            self._last_load_seconds = time.monotonic() - started
            self.load_seconds += self._last_load_seconds
            self.state, self.error = ModelState.READY, None
            self._last_end = time.monotonic()
            _LOGGER.info("Models ready (loaded in %.1f s)", time.monotonic() - started)
            for listener in self._ready_listeners:
                listener()
        finally:
            self._loading = None

    async def unload_when_idle(self) -> None:
        """Runs for the life of the server (nothing to do with unload_after 0)."""
        if not self.unload_after:
            return
        while True:
            await asyncio.sleep(max(0.05, self._unload_due() - time.monotonic()))
            if self.state is ModelState.READY and self._in_flight == 0 and time.monotonic() >= self._unload_due():
                self.state = ModelState.UNLOADED  # now, not when the task starts: a request arriving meanwhile waits
                self._unloading = asyncio.create_task(self._unload_models(), name="unload models")
                await self._unloading

    def _unload_due(self) -> float:
        if self.state is not ModelState.READY or self._in_flight:
            return time.monotonic() + self.unload_after
        return self._last_end + self.unload_after

    async def _unload_models(self) -> None:
        _LOGGER.info("No request for %g s: unloading the models (--unload-after)", self.unload_after)
        started = time.monotonic()
        try:
            await asyncio.to_thread(self._unload)
        except Exception:  # noqa: BLE001 - what was freed is freed; the next request loads them again
            _LOGGER.exception("Unloading the models failed")
        finally:
            self.unloads += 1
            self.unload_seconds += time.monotonic() - started
            self._unloading = None

"""The models' lifecycle in-process, with stand-in load and unload: one load for every request
waiting, a bounded wait, never an unload under a request in flight, a failed load answered and
tried again."""

import asyncio
import threading
import time

import pytest

from wyoming_qwen_tts.model_lifecycle import ModelLifecycle, ModelState, ModelsUnavailable


class Models:
    """Loads take load_seconds (in the worker thread, as the real ones block); fail_next makes the next load fail."""

    def __init__(self, load_seconds: float = 0.2) -> None:
        self.load_seconds = load_seconds
        self.loads = 0
        self.unloads = 0
        self.fail_next = False
        self.loaded = False
        self._lock = threading.Lock()

    def load(self) -> None:
        time.sleep(self.load_seconds)
        with self._lock:
            if self.fail_next:
                self.fail_next = False
                raise RuntimeError("the disk is gone")
            self.loads += 1
            self.loaded = True

    def unload(self) -> None:
        time.sleep(0.05)
        self.unloads += 1
        self.loaded = False


def lifecycle_of(models: Models, unload_after: float = 0.0) -> ModelLifecycle:
    return ModelLifecycle(load=models.load, unload=models.unload, unload_after=unload_after)


def test_every_request_waiting_during_a_load_waits_for_that_one_load():
    async def scenario():
        models = Models()
        lifecycle = lifecycle_of(models)
        lifecycle.start_loading()
        await asyncio.gather(*(lifecycle.ready(5) for _ in range(5)))
        return models, lifecycle

    models, lifecycle = asyncio.run(scenario())
    assert models.loads == 1 and lifecycle.state is ModelState.READY and lifecycle.loads == 1


def test_a_request_gives_up_after_its_wait_without_cancelling_the_load():
    async def scenario():
        models = Models(load_seconds=0.5)
        lifecycle = lifecycle_of(models)
        lifecycle.start_loading()
        with pytest.raises(ModelsUnavailable) as raised:
            await lifecycle.ready(0.1)
        assert raised.value.code == "loading"
        await lifecycle.ready(5)  # the same load went on
        return models

    assert asyncio.run(scenario()).loads == 1


def test_a_failed_load_is_reported_and_the_next_request_tries_again():
    async def scenario():
        models = Models(load_seconds=0.05)
        models.fail_next = True
        lifecycle = lifecycle_of(models)
        with pytest.raises(ModelsUnavailable) as raised:
            await lifecycle.ready(5)
        assert raised.value.code == "load-failed" and "the disk is gone" in raised.value.message
        assert lifecycle.state is ModelState.FAILED and lifecycle.error == "the disk is gone"
        await lifecycle.ready(5)
        return lifecycle

    assert asyncio.run(scenario()).state is ModelState.READY


def test_idle_unload_waits_for_the_request_in_flight_and_the_next_request_reloads():
    async def scenario():
        models = Models(load_seconds=0.05)
        lifecycle = lifecycle_of(models, unload_after=0.2)
        await lifecycle.ready(5)
        watcher = asyncio.create_task(lifecycle.unload_when_idle())
        lifecycle.begin()
        await asyncio.sleep(0.5)  # longer than unload_after, but a request is in flight
        assert models.unloads == 0 and lifecycle.state is ModelState.READY
        lifecycle.end()
        await asyncio.sleep(0.5)
        assert models.unloads == 1 and not models.loaded and lifecycle.state is ModelState.UNLOADED
        await asyncio.gather(*(lifecycle.ready(5) for _ in range(3)))
        watcher.cancel()
        return models

    models = asyncio.run(scenario())
    assert models.loads == 2 and models.loaded


def test_a_request_arriving_as_the_unload_begins_waits_for_the_reload():
    async def scenario():
        models = Models(load_seconds=0.05)
        lifecycle = lifecycle_of(models, unload_after=0.1)
        await lifecycle.ready(5)
        watcher = asyncio.create_task(lifecycle.unload_when_idle())
        while lifecycle.state is ModelState.READY:
            await asyncio.sleep(0)  # the first loop turn after the unload was decided
        await lifecycle.ready(5)
        assert models.loaded  # loaded again after the unload, not spoken on while it freed the models
        watcher.cancel()
        return models

    models = asyncio.run(scenario())
    assert models.unloads >= 1 and models.loads >= 2


def test_a_reload_may_take_as_long_as_the_last_load_plus_the_wait():
    async def scenario():
        models = Models(load_seconds=0.4)
        lifecycle = lifecycle_of(models, unload_after=0.05)
        await lifecycle.ready(5)
        watcher = asyncio.create_task(lifecycle.unload_when_idle())
        while lifecycle.state is ModelState.READY:
            await asyncio.sleep(0.01)
        await lifecycle.ready(0.1)  # 0.1 s alone would be shorter than the reload
        watcher.cancel()
        return models

    assert asyncio.run(scenario()).loads == 2


def test_freeing_gpu_memory_clears_cublas_workspaces_before_emptying_the_cache(monkeypatch):
    """cuBLAS workspaces (one per thread's handle and stream, one of them inside the CUDA graphs'
    memory pool) outlive the models unless cleared: an idle unload clears them, then empties the
    cache. Stand-ins for both calls on the CPU."""
    import torch

    from wyoming_qwen_tts import synthesis

    calls = []
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: calls.append("workspaces"), raising=False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("cache"))
    synthesis._free_memory(torch.device("cuda"))
    assert calls == ["workspaces", "cache"]

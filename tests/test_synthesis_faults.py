"""Faults inside synthesis with the real engine (tiny checkpoint, in-process): a request whose
generation fails, even a whole failed batch step, ends with an error and its closing events, and
the server goes on serving."""

import asyncio
import threading
import time
from contextlib import closing

import pytest
import torch
from wyoming.tts import Synthesize, SynthesizeVoice

from wyoming_qwen_tts import synthesis
from wyoming_qwen_tts.engine.generate import DecodeBatch
from wyoming_qwen_tts.synthesis import Handoff, ReadyVoice, Synthesizer, VoiceSetupError
from wyoming_qwen_tts.voice_kinds.clone import CloneSpec
from wyoming_qwen_tts.voice_kinds.frozen import FrozenSpec
from wyoming_qwen_tts.voices import VoiceCatalog

from .standin import exchange, serving

CLOSED = ["audio-start", "audio-stop"]
FAILED = ["audio-start", "error", "audio-stop"]


@pytest.fixture(scope="module")
def synthesizer(base_tts, ref_wav, icl_voice):
    specs = [CloneSpec(name="ann", description="Ann", reference=ref_wav, language="english"),
             CloneSpec(name="quick", description="Ann, faster", reference=ref_wav, language="english", speed=2.0)]
    synth = Synthesizer({spec.name: ReadyVoice(spec, icl_voice, base_tts) for spec in specs}, max_batch=4)
    yield synth
    synth.close()


CATALOG = VoiceCatalog({"ann": FrozenSpec(name="ann", description="Ann", design="x", language="english"),
                        "quick": FrozenSpec(name="quick", description="Quick", design="x", language="english")},
                       default="ann")


def serve(synthesizer, scenario):
    async def main():
        server = await serving(synthesizer, catalog=CATALOG)
        try:
            return await scenario(server)
        finally:
            await server.stop()

    return asyncio.run(main())


async def ask(server, text: str, voice: str = "ann"):
    return await exchange(server, Synthesize(text=text, voice=SynthesizeVoice(name=voice)).event(), last="audio-stop")


def test_out_of_memory_in_one_request_leaves_the_others_speaking(synthesizer, monkeypatch):
    open_stream = synthesis._open_stream

    def failing_mid_stream(voice, scheduler, text, *rest):
        chunks = open_stream(voice, scheduler, text, *rest)
        if "explode" not in text:
            return chunks

        def first_then_oom():
            with closing(chunks):
                yield next(chunks)
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return first_then_oom()

    monkeypatch.setattr(synthesis, "_open_stream", failing_mid_stream)

    async def scenario(server):
        texts = ["Good morning.", "Please explode now.", "Good evening.", "Good night."]
        return await asyncio.gather(*(ask(server, text) for text in texts))

    morning, exploded, evening, night = serve(synthesizer, scenario)
    for answer in (morning, evening, night):
        assert answer.closing_types() == CLOSED and answer.pcm
    assert exploded.closing_types() == FAILED and exploded.pcm  # the audio before the failure is kept
    error = next(event for _, event in exploded.events if event.type == "error")
    assert error.data["code"] == "OutOfMemoryError" and "injected" in error.data["text"]


@pytest.mark.parametrize("target, voice", [("to_pcm16", "ann"), ("SpeedChanger.process", "quick")])
def test_a_failing_audio_conversion_ends_the_request_properly(synthesizer, monkeypatch, target, voice):
    def broken(*args, **kwargs):
        raise ValueError(f"{target} broke")

    owner, _, name = target.rpartition(".")
    monkeypatch.setattr(getattr(synthesis, owner) if owner else synthesis, name, broken)

    async def scenario(server):
        return await ask(server, "Hello there.", voice)

    answer = serve(synthesizer, scenario)
    assert answer.closing_types() == FAILED
    assert f"{target} broke" in next(event for _, event in answer.events if event.type == "error").data["text"]


def test_a_failed_batch_step_fails_its_requests_properly_and_serving_goes_on(synthesizer, monkeypatch):
    """The engine fails every request in a batch whose step raised; each still gets its closing events."""
    step = DecodeBatch.step
    steps = {"count": 0}

    def failing_once(self):
        steps["count"] += 1
        if steps["count"] == 8:
            raise RuntimeError("batch step failed (injected)")
        return step(self)

    monkeypatch.setattr(DecodeBatch, "step", failing_once)

    async def scenario(server):
        during = await asyncio.gather(*(ask(server, f"Request number {number}.") for number in range(3)))
        return during, await ask(server, "After the failure.")

    during, after = serve(synthesizer, scenario)
    assert steps["count"] > 8
    failed = [answer for answer in during if "error" in answer.closing_types()]
    assert failed, "the injected failure reached no request"
    for answer in during:
        assert answer.closing_types() in (CLOSED, FAILED)
    assert after.closing_types() == CLOSED and after.pcm


def test_the_handoff_holds_at_most_its_capacity_and_a_waiting_thread_stops_when_abandoned():
    async def main():
        handoff = Handoff(asyncio.get_running_loop(), capacity=3)
        results = []
        thread = threading.Thread(target=lambda: results.extend(handoff.put_audio(b"x") for _ in range(10)))
        thread.start()
        await asyncio.sleep(0.3)
        waiting_at_first = handoff._items.qsize()
        assert await handoff.get() == b"x"  # room for one more
        await asyncio.sleep(0.3)
        waiting_after_one = handoff._items.qsize()
        handoff.abandon()
        started = time.monotonic()
        await asyncio.to_thread(thread.join, 5)
        return waiting_at_first, waiting_after_one, results, time.monotonic() - started

    waiting_at_first, waiting_after_one, results, took = asyncio.run(main())
    assert waiting_at_first == 3 and waiting_after_one == 3
    assert results[:4] == [True] * 4 and not any(results[4:]) and took < 1


def test_a_batch_that_cannot_be_made_fails_its_requests_properly_and_serving_goes_on(synthesizer, monkeypatch):
    """Out of memory while making the batch (its caches, or on a GPU the capture of its graphs):
    the request waiting for it gets an error and its closing events, and the next one is served."""
    make = DecodeBatch.__init__

    def out_of_memory_once(*args, **kwargs):
        monkeypatch.setattr(DecodeBatch, "__init__", make)
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    for scheduler in synthesizer._schedulers.values():
        assert not scheduler.active
        scheduler._batch = None  # idle: the next request makes a fresh batch
    monkeypatch.setattr(DecodeBatch, "__init__", out_of_memory_once)

    async def scenario(server):
        return await ask(server, "The first request."), await ask(server, "The second request.")

    first, second = serve(synthesizer, scenario)
    assert first.closing_types() == FAILED
    error = next(event for _, event in first.events if event.type == "error")
    assert error.data["code"] == "OutOfMemoryError" and "injected" in error.data["text"]
    assert second.closing_types() == CLOSED and second.pcm


def test_a_warm_up_whose_batch_cannot_be_made_stops_start_up_with_a_clear_error(base_tts, ref_wav, monkeypatch):
    """Out of memory while the server warms up (making the batch, capturing its graphs): start-up
    ends with a VoiceSetupError naming the voice, instead of a traceback or a wait for ever."""
    prompt = base_tts.clone_voice(ref_wav, x_vector_only=True)
    spec = CloneSpec(name="ann", description="Ann", reference=ref_wav, language="english")
    synth = Synthesizer({"ann": ReadyVoice(spec, prompt, base_tts)}, max_batch=2)

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(DecodeBatch, "__init__", out_of_memory)
    try:
        with pytest.raises(VoiceSetupError, match="'ann' cannot speak: CUDA out of memory"):
            synth.warm_up()
    finally:
        synth.close()

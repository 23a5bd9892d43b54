"""What the GPU path relies on, checked on CPU with the real engine (tiny checkpoint): a prepared
batch carries no autograd state, a batch that cannot be made (or captured) fails only the requests
waiting for it, no consumer waits for a dead engine, and the codec's state and tables are made
where the codec's CUDA stream can use them safely."""

import threading

import numpy as np
import pytest
import torch

from wyoming_qwen_tts.engine import SamplingConfig
from wyoming_qwen_tts.engine.generate import DecodeBatch
from wyoming_qwen_tts.engine.runners import BucketedRunner
from wyoming_qwen_tts.engine.scheduler import BatchScheduler

from .conftest import FIXTURES

GREEDY = SamplingConfig.greedy()
REQUEST = dict(text="Turn on the kitchen lights, please.", sampling=GREEDY, max_frames=5, min_frames=5)


@pytest.fixture(scope="module")
def voice(base_tts, ref_wav):
    return base_tts.clone_voice(ref_wav, "The quick brown fox.")


def _drain(stream, seconds: float = 60):
    """(codes, error) of a stream consumed in a thread: a stream that never ends fails the test
    instead of hanging it."""
    outcome = {}

    def consume():
        try:
            outcome["codes"] = np.concatenate([chunk.codes for chunk in stream])
        except Exception as err:  # what the consumer sees is what is checked
            outcome["error"] = err

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    assert not thread.is_alive(), f"the stream did not end within {seconds} s"
    return outcome.get("codes"), outcome.get("error")


def _batch_tensors(batch: DecodeBatch) -> dict[str, torch.Tensor]:
    tensors = {"hidden": batch.hidden, "seen": batch.seen, "cache.keys": batch.cache.keys,
               "cache.values": batch.cache.values, "predictor_cache.keys": batch.predictor_cache.keys,
               "predictor_cache.values": batch.predictor_cache.values, "text_table": batch.text_table,
               "step_ints": batch.step_ints}
    runner = batch.runner
    for which, params in zip(("talker", "predictor"), runner.params):
        tensors.update({f"runner.params.{which}.{index}": value for index, value in enumerate(params.fields())})
    return tensors


def test_no_weight_requires_grad(base_tts):
    for module in (base_tts.model, base_tts.codec):
        grads = [name for name, param in module.named_parameters() if param.requires_grad]
        assert not grads, f"weights that would record autograd graphs: {grads[:5]}"


def test_a_prepared_bucketed_batch_holds_no_autograd_state(base_tts, voice):
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=128, runner="bucketed")
    try:
        codes, error = _drain(scheduler.stream(voice=voice, **REQUEST))
        assert error is None and codes.shape == (5, 16)
        tensors = _batch_tensors(scheduler._batch)
    finally:
        scheduler.close()
    for name, tensor in tensors.items():
        assert not tensor.requires_grad and tensor.grad_fn is None, name
        assert tensor.is_inference(), f"{name} was made outside torch.inference_mode"


@pytest.mark.parametrize("runner, target", [("eager", (DecodeBatch, "__init__")),
                                            ("bucketed", (BucketedRunner, "prepare"))])
def test_a_batch_that_cannot_be_made_fails_its_requests_and_later_ones_are_served(base_tts, voice, monkeypatch,
                                                                                   runner, target):
    owner, name = target
    original = getattr(owner, name)

    def out_of_memory_once(*args, **kwargs):  # e.g. the caches or a graph capture do not fit
        monkeypatch.setattr(owner, name, original)
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(owner, name, out_of_memory_once)
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=128, runner=runner)
    try:
        codes, error = _drain(scheduler.stream(voice=voice, **REQUEST))
        assert isinstance(error, torch.OutOfMemoryError) and "injected" in str(error)
        codes, error = _drain(scheduler.stream(voice=voice, **REQUEST))
        assert error is None
        np.testing.assert_array_equal(codes, base_tts.synthesize(voice=voice, **REQUEST)[1])
    finally:
        scheduler.close()


class _ThreadKilled(BaseException):
    """Escapes every `except Exception`: stands for a fault that ends the batch thread."""


def test_a_consumer_does_not_wait_for_a_dead_engine(base_tts, voice, monkeypatch):
    monkeypatch.setattr(threading, "excepthook", lambda args: None)  # the thread's death is expected here
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=128)

    def die(joining):
        raise _ThreadKilled()

    monkeypatch.setattr(scheduler, "_serve", die)
    try:
        codes, error = _drain(scheduler.stream(voice=voice, **REQUEST), seconds=30)
        assert isinstance(error, RuntimeError) and "engine stopped" in str(error)
    finally:
        scheduler.close()


def test_codebook_tables_are_made_when_the_codec_is_loaded():
    from wyoming_qwen_tts.engine import QwenTTS

    fresh = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32")  # nothing decoded yet
    quantizer = fresh.codec.decoder.quantizer
    for rvq in (quantizer.rvq_first, quantizer.rvq_rest):
        expected = torch.stack([layer._codebook.table() for layer in rvq.vq.layers])
        assert rvq.tables is not None and torch.equal(rvq.tables, expected)


def test_decoder_states_are_made_on_the_codec_thread(base_tts, voice, monkeypatch):
    """With a codec thread (codec="thread"): on a GPU it decodes on its own CUDA stream, so states
    made there are read, replaced and freed on that stream alone."""
    made_on = []
    make_state = base_tts.decoder_state

    def recording(prompt):
        made_on.append(threading.current_thread().name)
        return make_state(prompt)

    monkeypatch.setattr(base_tts, "decoder_state", recording)
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=128, codec="thread")
    try:
        results = [_drain(scheduler.stream(voice=voice, **REQUEST)) for _ in range(2)]
    finally:
        scheduler.close()
    assert all(error is None for _, error in results)
    assert made_on == ["qwen-tts-codec"] * 2

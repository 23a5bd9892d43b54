"""A batch's KV cache and staged text table start small and grow at admission, through fixed
steps of size (each a length bucket of the runner): a row's codes do not depend on when or
whether the buffers grew, and a runner is told before the buffers it ran on are replaced."""

import numpy as np
import pytest
import torch

from wyoming_qwen_tts.engine import SamplingConfig
from wyoming_qwen_tts.engine.generate import DecodeBatch, Row, size_steps, step_for
from wyoming_qwen_tts.engine.layers import KVCache
from wyoming_qwen_tts.engine.runners import BucketedRunner

GREEDY = SamplingConfig.greedy()
SHORT = "Your timer is done."
# Long enough for more text tokens than the table's first 64 columns.
LONG = ("The quick brown fox jumps over the lazy dog while the five boxing wizards jump quickly, and "
        "a wizard's job is to vex chumps quickly in fog, so pack my box with five dozen liquor jugs, "
        "then sphinx of black quartz, judge my vow, and how vexingly quick daft zebras jump tonight.")
MAX_LEN = 1536  # the scheduler's default
FRAMES = 6  # frames compared per row


@pytest.fixture(scope="module")
def voice(base_tts, ref_wav):
    return base_tts.clone_voice(ref_wav, "The quick brown fox.")


def _row(tts, voice, text: str, sampling, seed: int, max_frames: int) -> Row:
    """A row that asks room for max_frames frames (its positions_needed) and stops after FRAMES."""
    prefill = tts.prompts.build(text, voice, "auto", device=tts.device)
    row = Row(prefill, sampling, seed=seed, max_frames=max_frames, min_frames=FRAMES)
    row.should_stop = lambda: row.frames_done >= FRAMES
    return row


def _short(tts, voice, sampling) -> Row:
    return _row(tts, voice, SHORT, sampling, seed=7, max_frames=40)


def _long(tts, voice, sampling) -> Row:
    """Needs more than 1024 positions and more than 128 text columns."""
    return _row(tts, voice, LONG, sampling, seed=11, max_frames=1200)


def _alone(tts, row: Row) -> np.ndarray:
    """The row's codes (FRAMES, G) in a batch of its own, allocated whole: nothing grows."""
    batch = DecodeBatch(tts.model.talker, max_rows=1, max_len=MAX_LEN, capacity=MAX_LEN)
    batch.admit(row)
    frames = []
    while batch.rows:
        frames += [frame for _, frame in batch.step()[0]]
    return torch.stack(frames).numpy()


class RecordingRunner(BucketedRunner):
    """A bucketed runner that records what it runs, checks each bucket against the cache, and is
    told when the buffers change (as CudaGraphRunner drops its graphs then)."""

    def __init__(self, batch, **options) -> None:
        super().__init__(batch, **options)
        self.executed: list[tuple[int, int]] = []
        self.changes: list[tuple[int, int]] = []  # (cache capacity, text columns) when told

    def execute(self, batch, rows, kv_len):
        assert kv_len <= batch.cache.capacity
        self.executed.append((rows, kv_len))
        return super().execute(batch, rows, kv_len)

    def buffers_changing(self, batch):
        self.changes.append((batch.cache.capacity, batch.text_table.shape[1]))


def test_size_steps_double_up_to_the_limit():
    assert size_steps(256, 1536) == (256, 512, 1024, 1536)
    assert size_steps(64, 1536) == (64, 128, 256, 512, 1024, 1536)
    assert size_steps(256, 200) == (200,)
    assert step_for(513, (256, 512, 1024, 1536)) == 1024 and step_for(512, (256, 512, 1024, 1536)) == 512


def test_the_buffers_start_small_and_grow_in_steps_at_admission(base_tts, voice):
    batch = DecodeBatch(base_tts.model.talker, max_rows=2, max_len=MAX_LEN)
    batch.runner = runner = RecordingRunner(batch)
    assert set(batch.kv_steps) <= set(runner.len_buckets)  # every capacity is a bucket
    assert (batch.cache.capacity, batch.text_table.shape[1]) == (512, 64)
    assert batch.cache.keys.shape[3] == batch.cache.values.shape[3] == 512
    runner.prepare(batch)
    assert {length for _, length in runner.executed} == {128, 256, 512}  # not past the cache
    short, long = _short(base_tts, voice, GREEDY), _long(base_tts, voice, GREEDY)
    batch.admit(short)
    assert (batch.cache.capacity, batch.text_table.shape[1]) == (512, 64) and runner.changes == []
    assert long.positions_needed > 1024 and 128 < long.text_length + 1 <= 256
    batch.admit(long)
    assert (batch.cache.capacity, batch.text_table.shape[1]) == (1536, 256)
    assert batch.cache.values.shape[3] == 1536
    assert runner.changes == [(512, 64)]  # told once, before the buffers were replaced
    batch.step()  # execute() checks its bucket against the grown cache
    assert runner.executed[-1][0] == 2


def test_a_cache_that_cannot_grow_its_values_keeps_its_old_size(monkeypatch):
    from wyoming_qwen_tts.engine import layers

    cache = KVCache(2, 3, 2, 8, 4, torch.device("cpu"), torch.float32)
    cache.keys.normal_()
    kept = cache.keys.clone()
    widened = layers.widened

    def values_do_not_fit(tensor, *args, **kwargs):
        if tensor is cache.values:
            raise torch.OutOfMemoryError("no room for the values")
        return widened(tensor, *args, **kwargs)

    monkeypatch.setattr(layers, "widened", values_do_not_fit)
    with pytest.raises(torch.OutOfMemoryError):
        cache.grow(16, rows=3)
    assert cache.keys.shape == cache.values.shape == (2, 3, 2, 8, 4) and cache.keys.is_contiguous()
    assert torch.equal(cache.keys, kept)


def test_growth_keeps_what_live_rows_hold():
    cache = KVCache(2, 3, 2, 8, 4, torch.device("cpu"), torch.float32)
    cache.keys.normal_(), cache.values.normal_()
    cache.lengths = [5, 8, 0]
    keys, values = cache.keys.clone(), cache.values.clone()
    cache.grow(16, rows=2)
    assert cache.capacity == 16 and cache.lengths == [5, 8, 0]
    assert torch.equal(cache.keys[:, :2, :, :8], keys[:, :2]) and torch.equal(cache.values[:, :2, :, :8], values[:, :2])
    assert not cache.keys[:, :2, :, 8:].any() and not cache.keys[:, 2:].any()  # zeros past the kept


@pytest.mark.parametrize("runner", [None, BucketedRunner], ids=["eager", "bucketed"])
@pytest.mark.parametrize("sampling", [GREEDY, None], ids=["greedy", "seeded-default-sampling"])
def test_a_newcomer_that_grows_the_buffers_mid_stream_changes_no_codes(base_tts, voice, runner, sampling):
    """A short row is mid-stream when a long one joins, and the cache and text table grow: each
    row makes the codes it makes alone, in a batch that never grew."""
    sampling = sampling or base_tts.default_sampling  # top-k 50, repetition penalty 1.05 on the talker
    batch = DecodeBatch(base_tts.model.talker, max_rows=4, max_len=MAX_LEN)
    if runner is not None:
        batch.runner = runner(batch)
    short, long = _short(base_tts, voice, sampling), _long(base_tts, voice, sampling)
    codes = {id(short): [], id(long): []}
    batch.admit(short)
    for _ in range(3):
        for row, frame in batch.step()[0]:
            codes[id(row)].append(frame)
    batch.admit(long)
    assert batch.cache.capacity == 1536 and batch.text_table.shape[1] == 256  # it grew mid-stream
    while batch.rows:
        for row, frame in batch.step()[0]:
            codes[id(row)].append(frame)
    for row, make in ((short, _short), (long, _long)):
        got = torch.stack(codes[id(row)]).numpy()
        assert got.shape == (FRAMES, 16)
        np.testing.assert_array_equal(got, _alone(base_tts, make(base_tts, voice, sampling)))


def _grown_mid_stream(tts, voice, runner) -> tuple[list[np.ndarray], DecodeBatch]:
    """The codes of a short row and of a long one that joins it mid-stream and grows the buffers."""
    batch = DecodeBatch(tts.model.talker, max_rows=4, max_len=MAX_LEN)
    batch.runner = runner(batch)
    batch.runner.prepare(batch)
    short, long = _short(tts, voice, GREEDY), _long(tts, voice, GREEDY)
    codes = {id(short): [], id(long): []}
    batch.admit(short)
    for _ in range(3):
        for row, frame in batch.step()[0]:
            codes[id(row)].append(frame.cpu())
    batch.admit(long)
    while batch.rows:
        for row, frame in batch.step()[0]:
            codes[id(row)].append(frame.cpu())
    return [torch.stack(codes[id(row)]).numpy() for row in (short, long)], batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_graphs_captured_again_after_growth_replay_the_bucketed_codes(ref_wav):
    """The graphs captured at prepare() hold the first cache: growth drops them, and the steps
    after it (captured anew, then replayed) make what the same padded steps make uncaptured."""
    from wyoming_qwen_tts.engine import QwenTTS
    from wyoming_qwen_tts.engine.runners import CudaGraphRunner, FrameStep

    from .conftest import FIXTURES

    tts = QwenTTS(FIXTURES / "tiny-base", device="cuda", dtype="float32", runner="bucketed")
    voice = tts.clone_voice(ref_wav, "The quick brown fox.")
    step = FrameStep(compiled=False)
    want, _ = _grown_mid_stream(tts, voice, lambda batch: BucketedRunner(batch, step=step))
    got, batch = _grown_mid_stream(tts, voice, lambda batch: CudaGraphRunner(batch, step=step))
    assert batch.cache.capacity == 1536
    assert batch.runner.graphs  # growth dropped those of prepare(): these were captured after it
    for w, g in zip(want, got):
        np.testing.assert_array_equal(g, w)


def test_cuda_graphs_dropped_for_growth_are_captured_again_into_a_fresh_pool(base_tts, monkeypatch):
    """With every graph of its pool gone, a pool that still holds a live block (the cuBLAS workspace
    of the first capture) is kept at use count 0, and a capture into it fails PyTorch's internal
    assert (use_count > 0): the graphs captured after growth take a pool of their own. On the CPU
    the pool handles are stand-ins."""
    from itertools import count

    from wyoming_qwen_tts.engine.runners import CudaGraphRunner

    handles = count(1)
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (0, next(handles)))
    batch = DecodeBatch(base_tts.model.talker, max_rows=1, max_len=MAX_LEN)
    runner = CudaGraphRunner(batch)
    first = runner.pool
    runner.graphs[(1, 128, batch.step_plan())] = (object(), torch.zeros(1, 16))
    runner.buffers_changing(batch)
    assert runner.graphs == {} and runner.pool != first


def test_a_step_capture_holds_the_process_wide_capture_lock(base_tts, voice, monkeypatch):
    """The step graphs' captures (and the device synchronisation before each) take the lock the
    codec's captures take: one capture at a time on torch.cuda.graph's shared capture stream."""
    from wyoming_qwen_tts.engine.devices import CAPTURE_LOCK
    from wyoming_qwen_tts.engine.runners import CudaGraphRunner

    from .test_codec_slots import fake_capture

    seen: list = []
    fake_capture(monkeypatch, seen)
    batch = DecodeBatch(base_tts.model.talker, max_rows=1, max_len=MAX_LEN)
    batch.runner = CudaGraphRunner(batch)
    batch.admit(_short(base_tts, voice, GREEDY))
    batch.step()
    assert seen == [("synchronised, lock held", True), True]
    assert not CAPTURE_LOCK.locked()

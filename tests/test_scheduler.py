"""Continuous batching gives each request exactly what it would get alone."""

import threading
import time

import numpy as np
import pytest

from wyoming_qwen_tts.engine import SamplingConfig
from wyoming_qwen_tts.engine.scheduler import BatchScheduler, PromptTooLong

GREEDY = SamplingConfig.greedy()
TEXTS = ["Hello world, this is a test.", "Good morning! The weather today is sunny.",
         "Turn on the kitchen lights, please.", "Your timer is done."]


@pytest.fixture(scope="module")
def voices(icl_voice, xvector_voice):
    return [icl_voice, xvector_voice]


@pytest.fixture(params=[("eager", "thread"), ("bucketed", "thread"), ("bucketed", "inline")],
                ids=lambda p: "-".join(p))
def scheduler(base_tts, request):
    """Eager runs each step at its exact shape; bucketed pads to the static shapes a CUDA graph
    replays. Audio is decoded by the codec thread, or inline by the batch thread (CUDA's default)."""
    runner, codec = request.param
    scheduler = BatchScheduler(base_tts, max_rows=3, max_len=256, runner=runner, codec=codec)
    yield scheduler
    scheduler.close()


def _collect(stream):
    chunks = list(stream)
    return np.concatenate([c.codes for c in chunks]), np.concatenate([c.samples for c in chunks])


def _requests(voices):
    return [dict(text=text, voice=voices[i % 2], sampling=GREEDY, max_frames=12, min_frames=6 + i,
                 text_mode="prefill" if i == 3 else None) for i, text in enumerate(TEXTS)]


def test_concurrent_greedy_requests_match_single_streams(base_tts, scheduler, voices):
    requests = _requests(voices)
    expected = [base_tts.synthesize(**r) for r in requests]
    results = [None] * len(requests)

    def run(index):
        results[index] = _collect(scheduler.stream(**requests[index]))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for (want_audio, want_codes), (codes, audio) in zip(expected, results):
        np.testing.assert_array_equal(codes, want_codes)
        # audio decoded in batches of streams (codec thread) equals each stream decoded alone
        assert audio.shape == want_audio.shape and np.abs(audio - want_audio).max() <= 1e-4


def test_a_request_joins_a_running_batch_between_frames(base_tts, scheduler, voices):
    long_request = dict(text=TEXTS[1], voice=voices[0], sampling=GREEDY, max_frames=40, min_frames=40)
    late_request = dict(text=TEXTS[2], voice=voices[1], sampling=GREEDY, max_frames=10, min_frames=10)
    long_stream = scheduler.stream(**long_request, first_chunk_frames=1, max_chunk_frames=1)
    first = next(long_stream)
    late = _collect(scheduler.stream(**late_request))
    rest = list(long_stream)
    assert sum(c.codes.shape[0] for c in rest) > 0  # the long one was still running
    np.testing.assert_array_equal(late[0], base_tts.synthesize(**late_request)[1])
    long_codes = np.concatenate([first.codes] + [c.codes for c in rest])
    np.testing.assert_array_equal(long_codes, base_tts.synthesize(**long_request)[1])


def test_seeded_sampling_does_not_depend_on_the_batch(base_tts, scheduler, voices):
    request = dict(text=TEXTS[0], voice=voices[0], seed=1234, max_frames=10, min_frames=10)
    alone = base_tts.synthesize(**request)[1]
    companions = [scheduler.stream(text=t, voice=voices[1], seed=i, max_frames=10, min_frames=10)
                  for i, t in enumerate(TEXTS[1:3])]
    together = _collect(scheduler.stream(**request))[0]
    for stream in companions:
        list(stream)
    np.testing.assert_array_equal(together, alone)


def test_more_requests_than_rows_wait_their_turn(scheduler, voices):
    streams = [scheduler.stream(text=t, voice=voices[0], sampling=GREEDY, max_frames=6, min_frames=6)
               for t in TEXTS * 2]
    assert all(_collect(s)[0].shape == (6, 16) for s in streams)


def test_each_decoded_chunk_records_how_long_its_codes_waited_when_asked(scheduler, voices):
    """Only while a benchmark asks (a list set): a server records nothing per chunk."""
    assert scheduler.codec_lag_s is None
    list(scheduler.stream(text=TEXTS[0], voice=voices[0], sampling=GREEDY, max_frames=3, min_frames=3))
    assert scheduler.codec_lag_s is None
    scheduler.codec_lag_s = []
    try:
        started = time.perf_counter()
        chunks = list(scheduler.stream(text=TEXTS[0], voice=voices[0], sampling=GREEDY, max_frames=7, min_frames=7))
        elapsed = time.perf_counter() - started
        assert [len(c.codes) for c in chunks] == [1, 2, 4]  # first chunk 1 frame, then doubling
        assert len(scheduler.codec_lag_s) == len(chunks)
        assert all(0 <= lag <= elapsed for lag in scheduler.codec_lag_s)
    finally:
        scheduler.codec_lag_s = None


def test_closing_a_stream_frees_its_row(scheduler, voices):
    stream = scheduler.stream(text=TEXTS[1], voice=voices[0], max_frames=200, min_frames=200,
                              first_chunk_frames=1, max_chunk_frames=1)
    next(stream)
    assert scheduler.active == 1
    stream.close()
    deadline = time.monotonic() + 10
    while scheduler.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert scheduler.active == 0


def test_requests_that_cannot_fit_a_row_are_refused_up_front(scheduler, voices):
    with pytest.raises(ValueError, match="max_frames must be between 1 and"):
        scheduler.stream(text=TEXTS[0], voice=voices[0], max_frames=10_000)
    with pytest.raises(PromptTooLong, match="split the text"):
        scheduler.stream(text="word " * 400, voice=voices[0])


def test_runner_choice_is_checked(base_tts):
    with pytest.raises(ValueError, match="runner must be one of"):
        BatchScheduler(base_tts, runner="warp-drive")
    with pytest.raises(ValueError, match="need a CUDA device"):
        BatchScheduler(base_tts, runner="cuda-graphs")


def test_a_failing_step_fails_its_requests_and_the_scheduler_keeps_serving(base_tts, voices):
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=256)
    try:
        first = scheduler.stream(text=TEXTS[0], voice=voices[0], max_frames=20, min_frames=20,
                                 first_chunk_frames=1, max_chunk_frames=1)
        next(first)
        batch = scheduler._batch
        original = batch.runner.run

        def failing(*args, **kwargs):  # e.g. CUDA out of memory in the middle of a step
            batch.runner.run = original
            raise RuntimeError("CUDA out of memory (injected)")

        batch.runner.run = failing
        with pytest.raises(RuntimeError, match="injected"):
            list(first)
        later = _collect(scheduler.stream(text=TEXTS[1], voice=voices[1], sampling=GREEDY, max_frames=5,
                                          min_frames=5))
        np.testing.assert_array_equal(later[0], base_tts.synthesize(text=TEXTS[1], voice=voices[1], sampling=GREEDY,
                                                                     max_frames=5, min_frames=5)[1])
    finally:
        scheduler.close()


def test_the_codec_mode_is_checked_and_auto_is_inline():
    from wyoming_qwen_tts.engine.scheduler import resolve_codec_mode

    assert resolve_codec_mode("auto") == "inline"
    assert resolve_codec_mode("thread") == "thread"
    with pytest.raises(ValueError, match="auto, thread, inline"):
        resolve_codec_mode("gpu")


def test_inline_decoding_runs_on_the_batch_thread_and_starts_no_codec_thread(base_tts, voices, monkeypatch):
    decoded_on = []
    decode_group = BatchScheduler._decode_group

    def recording(self, group):
        decoded_on.append(threading.current_thread().name)
        return decode_group(self, group)

    monkeypatch.setattr(BatchScheduler, "_decode_group", recording)
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=256, codec="inline")
    try:
        assert [t.name for t in scheduler._threads] == ["qwen-tts-batch"]
        codes, samples = _collect(scheduler.stream(text=TEXTS[0], voice=voices[0], sampling=GREEDY,
                                                   max_frames=5, min_frames=5))
    finally:
        scheduler.close()
    assert codes.shape == (5, 16) and samples.shape == (5 * 1920,)
    assert decoded_on and set(decoded_on) == {"qwen-tts-batch"}


def test_a_burst_is_admitted_in_waves_of_a_few_prompts(base_tts, voices, monkeypatch):
    """Each prefill pass holds at most ADMIT_ROWS prompts (and ADMIT_TOKENS positions): the live
    streams, and the wave's own first audio, wait for one bounded pass; the rest join next time."""
    from wyoming_qwen_tts.engine import scheduler as scheduler_module
    from wyoming_qwen_tts.engine.generate import DecodeBatch

    waves = []
    admit_many = DecodeBatch.admit_many

    def recording(batch, rows):
        waves.append([row.prefill.embeds.shape[1] for row in rows])
        return admit_many(batch, rows)

    monkeypatch.setattr(DecodeBatch, "admit_many", recording)
    requests = [dict(text=TEXTS[i % 4], voice=voices[i % 2], sampling=GREEDY, max_frames=4, min_frames=4)
                for i in range(7)]
    scheduler = BatchScheduler(base_tts, max_rows=8, max_len=256)
    try:
        with scheduler._wake:  # all seven are pending before the batch thread looks
            streams = [scheduler.stream(**request) for request in requests]
        codes = [_collect(stream)[0] for stream in streams]
        assert [len(wave) for wave in waves] == [scheduler_module.ADMIT_ROWS, 7 - scheduler_module.ADMIT_ROWS]
        for request, got in zip(requests, codes):
            np.testing.assert_array_equal(got, base_tts.synthesize(**request)[1])

        waves.clear()
        monkeypatch.setattr(scheduler_module, "ADMIT_TOKENS", 1)  # every prompt is longer: one per wave
        with scheduler._wake:
            streams = [scheduler.stream(**request) for request in requests[:3]]
        for stream in streams:
            _collect(stream)
        assert [len(wave) for wave in waves] == [1, 1, 1]
    finally:
        scheduler.close()


def test_a_newcomers_first_chunk_is_decoded_before_the_next_step(base_tts, voices, monkeypatch):
    """Inline codec: the step that makes a new row's first frame is followed by the decode of that
    1-frame chunk, ahead of the chunks of streams already playing, and before any other step."""
    from wyoming_qwen_tts.engine.generate import DecodeBatch

    events = []
    step = DecodeBatch.step
    decode_group = BatchScheduler._decode_group

    def recording_step(batch):
        produced, finished = step(batch)
        events.append(("step", [id(row.owner) for row, _ in produced]))
        return produced, finished

    def recording_decode(self, group):
        events.append(("decode", [(id(audio), audio.decoded_frames, len(chunk.codes)) for audio, chunk in group]))
        return decode_group(self, group)

    monkeypatch.setattr(DecodeBatch, "step", recording_step)
    monkeypatch.setattr(BatchScheduler, "_decode_group", recording_decode)
    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=256, codec="inline")
    try:
        # a chunk every step: each step that makes the newcomer's first frame makes one for it too
        playing = scheduler.stream(text=TEXTS[1], voice=voices[0], sampling=GREEDY, max_frames=40, min_frames=40,
                                   max_chunk_frames=1)
        for _ in range(3):
            next(playing)
        late = scheduler.stream(text=TEXTS[2], voice=voices[1], sampling=GREEDY, max_frames=6, min_frames=6)
        first = next(late)
        assert first.first_frame == 0 and len(first.codes) == 1
        list(late)
        list(playing)
    finally:
        scheduler.close()
    steps = [index for index, (kind, _) in enumerate(events) if kind == "step"]
    playing_id = events[steps[0]][1][0]
    late_id = next(audio for kind, items in events if kind == "decode" for audio, _, _ in items if audio != playing_id)
    made = next(i for i in steps if late_id in events[i][1])  # the step that made its first frame
    kind, group = events[made + 1]
    assert kind == "decode" and group[0] == (late_id, 0, 1)  # decoded first, 1 frame, nothing decoded before

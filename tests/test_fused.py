"""The one frame step (generate.frame_step) makes the same codes however it runs: called at exact
shapes, compiled (whole, as a CUDA graph captures it, or its code-predictor half, as the CPU runs
it) at padded shapes; the draws cut to the batch's plan make the codes of the widest draw; rows
admitted together (one padded prefill) make the codes they make alone."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from wyoming_qwen_tts.engine import SamplingConfig
from wyoming_qwen_tts.engine.generate import DecodeBatch, Row, frame_step
from wyoming_qwen_tts.engine.runners import BucketedRunner, EagerRunner, FrameStep, compiled
from wyoming_qwen_tts.engine.sampling import DrawPlan, SamplingParams

GREEDY = SamplingConfig.greedy()
TEXTS = ["Hello world, this is a test.", "Turn on the kitchen lights, please.", "Your timer is done."]
FRAMES = 8


@pytest.fixture(scope="module")
def voices(base_tts, ref_wav):
    return [base_tts.clone_voice(ref_wav, "The quick brown fox."), base_tts.clone_voice(ref_wav, x_vector_only=True)]


def _rows(tts, voices, sampling, frames=FRAMES):
    rows = []
    for index, text in enumerate(TEXTS):
        prefill = tts.prompts.build(text, voices[index % 2], "auto", "prefill" if index == 2 else None,
                                    device=tts.device)
        rows.append(Row(prefill, sampling, seed=100 + index, max_frames=frames, min_frames=frames))
    return rows


def _run(tts, rows, runner=None, together=True, max_rows=4):
    """Every row's codes (frames, G) from one batch."""
    batch = DecodeBatch(tts.model.talker, max_rows=max_rows, max_len=256)
    if runner is not None:
        batch.runner = runner(batch)
    if together:
        batch.admit_many(rows)
    else:
        for row in rows:
            batch.admit(row)
    codes = {id(row): [] for row in rows}
    while batch.rows:
        produced, _ = batch.step()
        for row, frame in produced:
            codes[id(row)].append(frame)
    return [torch.stack(codes[id(row)]).numpy() for row in rows]


def _fused(compiled, whole=True):
    def make(batch):
        return BucketedRunner(batch, row_buckets=(1, 2, 4), len_buckets=(256,),
                              step=FrameStep(compiled=compiled, whole=whole))
    return make


# Greedy: the whole step as one graph (what a CUDA graph captures); seeded sampling: the CPU's
# compiled code predictor with the talker's decode step eager.
@pytest.mark.parametrize("sampling, whole", [(GREEDY, True), (None, False)],
                         ids=["greedy-whole-step", "seeded-default-sampling-predictor"])
def test_compiled_fused_step_makes_the_eager_steps_codes(base_tts, voices, sampling, whole):
    sampling = sampling or base_tts.default_sampling  # top-k 50, repetition penalty 1.05 on the talker
    eager = _run(base_tts, _rows(base_tts, voices, sampling))
    fused = _run(base_tts, _rows(base_tts, voices, sampling), runner=_fused(compiled=True, whole=whole))
    for want, got in zip(eager, fused):
        assert want.shape == (FRAMES, 16)
        np.testing.assert_array_equal(got, want)


def _widest_plan(batch):
    """Every draw at full width: top-k and top-p over the whole vocabulary (the full sort
    transformers does), the repetition penalty always applied."""
    talker_vocab, predictor_vocab = batch.talker.cfg.vocab_size, batch.talker.code_predictor.cfg.vocab_size
    return DrawPlan(True, talker_vocab, True, True), DrawPlan(True, predictor_vocab, True, True)


def _eager_with_widest_plan(batch):
    batch.step_plan = lambda: _widest_plan(batch)
    return EagerRunner()


def test_top_p_rows_sample_alike_planned_and_widest(base_tts, voices):
    """With top-p the planned step sorts only the top K: on these rows it draws the codes of the
    widest draw (every code sorted)."""
    nucleus = SamplingParams(temperature=0.8, top_k=40, top_p=0.8, repetition_penalty=1.1)
    sampling = SamplingConfig(talker=nucleus, predictor=SamplingParams(top_k=0, top_p=0.9))
    widest = _run(base_tts, _rows(base_tts, voices, sampling), runner=_eager_with_widest_plan)
    planned = _run(base_tts, _rows(base_tts, voices, sampling), runner=_fused(compiled=False))
    for want, got in zip(widest, planned):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sampling", [GREEDY, None], ids=["greedy", "seeded-default-sampling"])
def test_greedy_and_default_plans_draw_the_widest_plans_codes(base_tts, voices, sampling):
    sampling = sampling or base_tts.default_sampling
    widest = _run(base_tts, _rows(base_tts, voices, sampling), runner=_eager_with_widest_plan)
    planned = _run(base_tts, _rows(base_tts, voices, sampling))
    for want, got in zip(widest, planned):
        np.testing.assert_array_equal(got, want)


def test_the_step_compiles_as_one_graph(base_tts, voices):
    """fullgraph=True: a graph break (a host sync such as .item() or .tolist()) would raise here."""
    import torch._dynamo

    batch = DecodeBatch(base_tts.model.talker, max_rows=4, max_len=256)  # the shapes of the test above
    batch.runner = _fused(compiled=True)(batch)
    batch.admit_many(_rows(base_tts, voices, GREEDY))
    torch._dynamo.utils.counters.clear()
    batch.step()
    frames = torch._dynamo.utils.counters["frames"]
    assert frames["ok"] >= 1 or frames["total"] == 0  # traced now, or served from the cache of an earlier test
    assert not torch._dynamo.utils.counters["graph_break"]
    assert compiled(frame_step) is compiled(frame_step)  # one wrapper, one code cache


def test_rows_admitted_together_match_one_by_one_and_single_streams(base_tts, voices):
    together = _run(base_tts, _rows(base_tts, voices, GREEDY), together=True)
    one_by_one = _run(base_tts, _rows(base_tts, voices, GREEDY), together=False)
    for index, text in enumerate(TEXTS):
        alone = base_tts.synthesize(text=text, voice=voices[index % 2], sampling=GREEDY, max_frames=FRAMES,
                                    min_frames=FRAMES, text_mode="prefill" if index == 2 else None)[1]
        np.testing.assert_array_equal(together[index], alone)
        np.testing.assert_array_equal(one_by_one[index], alone)


def test_admitting_more_rows_than_room_is_refused_whole(base_tts, voices):
    batch = DecodeBatch(base_tts.model.talker, max_rows=2, max_len=256)
    with pytest.raises(ValueError, match="no room"):
        batch.admit_many(_rows(base_tts, voices, GREEDY))
    assert batch.rows == []


def test_requests_queued_together_are_prefilled_in_one_pass(base_tts, voices, monkeypatch):
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    groups = []
    admit_many = DecodeBatch.admit_many

    def recording(batch, rows):
        groups.append(len(rows))
        return admit_many(batch, rows)

    monkeypatch.setattr(DecodeBatch, "admit_many", recording)
    requests = [dict(text=text, voice=voices[i % 2], sampling=GREEDY, max_frames=FRAMES, min_frames=FRAMES)
                for i, text in enumerate(TEXTS)]
    scheduler = BatchScheduler(base_tts, max_rows=4, max_len=256)
    try:
        with scheduler._wake:  # the batch thread waits for this lock: all three are pending at once
            streams = [scheduler.stream(**request) for request in requests]
        codes = [np.concatenate([c.codes for c in stream]) for stream in streams]
    finally:
        scheduler.close()
    assert groups == [3]
    for request, got in zip(requests, codes):
        np.testing.assert_array_equal(got, base_tts.synthesize(**request)[1])


@pytest.fixture(scope="module")
def solo_tts(base_tts):
    from wyoming_qwen_tts.engine import QwenTTS

    return QwenTTS(base_tts.checkpoint.path, device="cpu", dtype="float32", runner="bucketed")


@pytest.mark.parametrize("voice", [0, 1], ids=["icl", "xvector"])
def test_single_streams_run_in_a_kept_bucketed_batch_and_codec_slot(base_tts, solo_tts, voices, voice):
    """QwenTTS.stream's path on a GPU (the single-row batch and the single codec slot, there with
    CUDA graphs), bucketed here: the same codes and audio as the eager batch and eager decode."""
    request = dict(text=TEXTS[0], voice=voices[voice], sampling=GREEDY, max_frames=FRAMES, min_frames=FRAMES)
    want = base_tts.synthesize(**request)
    left_early = solo_tts.stream(**request, first_chunk_frames=1, max_chunk_frames=1)
    next(left_early)
    left_early.close()  # the kept batch is emptied and the slot freed for the next stream
    batch, slots = solo_tts._solo, solo_tts._solo_codec
    assert batch is not None and batch.rows == []
    assert slots is not None and slots.free == 1
    streamed = list(solo_tts.stream(**request, first_chunk_frames=1, max_chunk_frames=4))
    assert solo_tts._solo is batch and solo_tts._solo_codec is slots  # reused, not rebuilt
    assert slots.free == 1
    np.testing.assert_array_equal(np.concatenate([c.codes for c in streamed]), want[1])
    # The slot's state starts primed with this voice's reference (ICL), not the left stream's.
    np.testing.assert_allclose(np.concatenate([c.samples for c in streamed]), want[0], atol=1e-4)  # streamed vs whole


def test_a_second_single_stream_meanwhile_runs_eagerly_alongside(base_tts, solo_tts, voices):
    """While one stream holds the kept batch and codec slot, another runs in a batch and decoder
    state of its own; neither disturbs the other."""
    requests = [dict(text=TEXTS[index], voice=voices[index], sampling=GREEDY, max_frames=FRAMES, min_frames=FRAMES)
                for index in range(2)]
    holding = solo_tts.stream(**requests[0], first_chunk_frames=1, max_chunk_frames=1)
    first = [next(holding)]
    assert solo_tts._solo_codec.free == 0
    meanwhile = list(solo_tts.stream(**requests[1], first_chunk_frames=1, max_chunk_frames=2))
    held = first + list(holding)
    for request, chunks in zip(requests, [held, meanwhile]):
        samples, codes = base_tts.synthesize(**request)
        np.testing.assert_array_equal(np.concatenate([c.codes for c in chunks]), codes)
        np.testing.assert_allclose(np.concatenate([c.samples for c in chunks]), samples, atol=1e-4)  # streamed vs whole
    assert solo_tts._solo_codec.free == 1


class _HostReads(TorchDispatchMode):
    """Counts the operators that make the host wait for the device on CUDA: a value read back
    (.item(), bool(), int(): _local_scalar_dense) or an output sized by the data (nonzero...)."""

    SYNCING = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "is_nonzero", "equal",
               "allclose", "repeat_interleave"}

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.SYNCING:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def test_the_host_read_check_sees_an_item():
    with _HostReads() as check:
        torch.arange(3)[1].item()
        bool(torch.ones(1) > 0)
    assert check.reads == ["_local_scalar_dense", "_local_scalar_dense"]


@pytest.mark.parametrize("runner", [None, _fused(compiled=False)], ids=["eager", "bucketed"])
@pytest.mark.parametrize("sampling", [GREEDY, None], ids=["greedy", "default-sampling"])
def test_a_steady_state_step_reads_nothing_back_but_its_codes(base_tts, voices, runner, sampling):
    """No .item() or data-sized output anywhere in a step (the frame step, the packed inputs, the
    bookkeeping): the step's one read is its frames, which on CUDA is a pinned copy and an event."""
    sampling = sampling or base_tts.default_sampling
    batch = DecodeBatch(base_tts.model.talker, max_rows=4, max_len=256)
    if runner is not None:
        batch.runner = runner(batch)
    batch.admit_many(_rows(base_tts, voices, sampling, frames=6))
    batch.step()  # the composition's first step: its parameters and plan are made
    with torch.inference_mode(), _HostReads() as check:
        for _ in range(3):
            produced, finished = batch.step()
            assert len(produced) == 3 and not finished
    assert check.reads == []

"""Codec decoding through a pool of slots on static buffers (codec_slots.py): the path a CUDA graph
captures, run eagerly on the CPU with the GPU's buckets forced on."""

import pytest
import torch

from wyoming_qwen_tts.engine.codec_slots import FRAME_BUCKETS, ROW_BUCKETS, CodecSlots, frame_pieces, row_bucket

WAVE_TOLERANCE = 1e-4  # streamed vs whole decode, as tests/test_streaming.py


def bucketed(decoder, slots=4, max_group=4):
    """The GPU's layout (row and frame buckets), eagerly."""
    return CodecSlots(decoder, slots, max_group=max_group, row_buckets=ROW_BUCKETS, frame_buckets=FRAME_BUCKETS)


def random_codes(rows, frames, seed):
    return torch.randint(0, 256, (rows, frames, 16), generator=torch.Generator().manual_seed(seed))


def whole(decoder, codes, prefix=None):
    with torch.inference_mode():
        state = decoder.new_state()
        if prefix is not None:
            decoder(prefix, state)
        return decoder(codes, state)[0]


def test_frame_pieces_are_the_largest_buckets_that_fit():
    assert frame_pieces(7, FRAME_BUCKETS) == [4, 2, 1]
    assert frame_pieces(8, FRAME_BUCKETS) == [8]
    assert frame_pieces(19, FRAME_BUCKETS) == [8, 8, 2, 1]
    assert frame_pieces(19, None) == [19]
    assert [row_bucket(n, (1, 2, 4, 8)) for n in (1, 3, 5, 8)] == [1, 4, 8, 8]
    assert row_bucket(3, None) == 3


def test_streamed_through_slots_equals_a_whole_decode(base_tts):
    """Three streams, chunks of every size 1..9 (pieces and padded rows), each stream equal to
    decoding its codes at once."""
    decoder = base_tts.codec.decoder
    slots = bucketed(decoder)
    sizes = [1, 2, 4, 8, 3, 5, 7, 9, 6]
    codes = random_codes(3, sum(sizes), 1)
    owned = [slots.acquire(f"stream {b}") for b in range(3)]
    parts, start = [], 0
    for size in sizes:
        parts.append(slots.decode(owned, codes[:, start:start + size]))
        start += size
    streamed = torch.cat(parts, dim=1)
    assert streamed.shape == (3, sum(sizes) * 1920)
    for b in range(3):
        assert float((streamed[b] - whole(decoder, codes[b:b + 1])).abs().max()) <= WAVE_TOLERANCE
    assert slots.pool.positions[owned].tolist() == [sum(sizes)] * 3


def test_rows_are_independent_of_each_other_and_of_the_padding(base_tts):
    """Three rows padded to four: each as it decodes alone, however wild the scratch slot's state."""
    decoder = base_tts.codec.decoder
    slots = bucketed(decoder)
    with torch.inference_mode():
        for tensor in slots.pool.tensors()[:-1]:
            tensor[slots.scratch] = 1e4
    codes = random_codes(3, 4, 2)
    together = slots.decode([slots.acquire(b) for b in range(3)], codes)
    alone = bucketed(decoder)
    for b in range(3):
        single = alone.decode([alone.acquire(b)], codes[b:b + 1])
        assert float((together[b] - single[0]).abs().max()) <= WAVE_TOLERANCE
        assert torch.isfinite(together[b]).all()


def test_groups_larger_than_max_group_split_and_agree(base_tts):
    decoder = base_tts.codec.decoder
    slots = bucketed(decoder, slots=5, max_group=2)
    assert slots.row_buckets == (1, 2)
    codes = random_codes(5, 3, 3)
    together = slots.decode([slots.acquire(b) for b in range(5)], codes)
    for b in range(5):
        assert float((together[b] - whole(decoder, codes[b:b + 1])).abs().max()) <= WAVE_TOLERANCE


def test_a_primed_slot_continues_the_primed_state(base_tts):
    decoder = base_tts.codec.decoder
    prefix, codes = random_codes(1, 6, 4), random_codes(1, 5, 5)
    primed = decoder.new_state()
    with torch.inference_mode():
        decoder(prefix, primed)
    slots = bucketed(decoder)
    slot = slots.acquire("voice", primed)
    got = slots.decode([slot], codes)[0]
    assert float((got - whole(decoder, codes, prefix=prefix)).abs().max()) <= WAVE_TOLERANCE


def test_a_released_slot_starts_clean_for_its_next_stream(base_tts):
    decoder = base_tts.codec.decoder
    slots = bucketed(decoder, slots=1)
    first = slots.acquire("first")
    slots.decode([first], random_codes(1, 7, 6))
    slots.release(first, "first")
    codes = random_codes(1, 3, 7)
    second = slots.acquire("second")
    assert second == first and int(slots.pool.positions[second]) == 0
    assert float((slots.decode([second], codes)[0] - whole(decoder, codes)).abs().max()) <= WAVE_TOLERANCE


def test_slots_run_out_and_come_back():
    from wyoming_qwen_tts.engine import QwenTTS

    from .conftest import FIXTURES

    decoder = QwenTTS(FIXTURES / "tiny-base", device="cpu", dtype="float32").codec.decoder
    slots = CodecSlots(decoder, 2)

    class Stream:
        failed = False

    a, b, c = Stream(), Stream(), Stream()
    assert slots.acquire(a) == 0 and slots.acquire(b) == 1 and slots.acquire(c) is None
    slots.release(0, b)  # not b's: nothing happens
    assert slots.free == 0
    b.failed = True
    slots.reclaim(lambda stream: stream.failed)
    assert slots.acquire(c) == 1
    slots.release(1, b)  # b's slot went to c: b's late end marker must not free it
    assert slots.owners == [a, c]


def test_the_static_buffers_stay_the_same_tensors(base_tts):
    """What a CUDA graph replays: every buffer of a shape and of the pool is written in place,
    never replaced, and a shape's buffers are made once."""
    decoder = base_tts.codec.decoder
    slots = bucketed(decoder)
    slots.allocate()
    assert len(slots._shapes) == len(slots.bucket_shapes()) == 3 * 4  # rows 1, 2, 4 x frames 1, 2, 4, 8

    def pointers():
        buffers = [t for s in slots._shapes.values() for t in (s.codes, s.index, s.audio, *s.work.tensors())]
        return [t.data_ptr() for t in buffers + slots.pool.tensors()]

    before = pointers()
    owned = [slots.acquire(b) for b in range(3)]
    slots.decode(owned, random_codes(3, 7, 8))
    slots.decode(owned[:1], random_codes(1, 1, 9))
    assert pointers() == before and len(slots._shapes) == 12


def test_the_plain_decoder_updates_its_state_in_place(base_tts):
    decoder = base_tts.codec.decoder
    state = decoder.new_state(2)
    before = [t.data_ptr() for t in state.tensors()]
    with torch.inference_mode():
        decoder(random_codes(2, 3, 10), state)
    assert [t.data_ptr() for t in state.tensors()] == before
    assert state.positions.tolist() == [3, 3]


def test_on_the_cpu_shapes_are_exact_and_nothing_is_captured(base_tts):
    slots = CodecSlots.for_device(base_tts.codec.decoder, 8)
    assert slots.row_buckets is None and slots.frame_buckets is None and not slots.graphs
    assert slots.bucket_shapes() == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_graph_replays_equal_the_eager_decode():
    from wyoming_qwen_tts.engine import QwenTTS

    from .conftest import FIXTURES

    decoder = QwenTTS(FIXTURES / "tiny-base", device="cuda", dtype="float32").codec.decoder
    graphs, eager = CodecSlots.for_device(decoder, 4), bucketed(decoder)
    graphs.prepare()
    codes = random_codes(3, 11, 11).cuda()
    results = []
    for slots in (graphs, eager):
        owned = [slots.acquire(b) for b in range(3)]
        results.append(torch.cat([slots.decode(owned, codes[:, :4]), slots.decode(owned, codes[:, 4:])], dim=1))
    assert all(shape.graph is not None for shape in graphs._shapes.values())
    assert float((results[0] - results[1]).abs().max()) <= WAVE_TOLERANCE
    for b in range(3):
        assert float((results[0][b] - whole(decoder, codes[b:b + 1])).abs().max()) <= WAVE_TOLERANCE


@pytest.mark.parametrize("codec", ["thread", "inline"])
def test_the_scheduler_gives_every_slot_back(base_tts, icl_voice, xvector_voice, codec):
    """More requests than rows (so more streams than slots over time, and in thread mode a stream
    may wait for a slot whose end marker is still on its way): all finish, every slot comes back."""
    import threading

    from wyoming_qwen_tts.engine import SamplingConfig
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=256, codec=codec)
    results = [None] * 5

    def run(index):
        chunks = list(scheduler.stream("Hello there.", [icl_voice, xvector_voice][index % 2], max_frames=4 + index,
                                       min_frames=4 + index, sampling=SamplingConfig.greedy(), max_chunk_frames=2))
        results[index] = sum(c.codes.shape[0] for c in chunks)

    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert results == [4, 5, 6, 7, 8]
        assert scheduler._codec_slots.free == 2
    finally:
        scheduler.close()


def test_no_shape_is_made_for_more_rows_than_slots(base_tts):
    slots = CodecSlots(base_tts.codec.decoder, 3, row_buckets=ROW_BUCKETS, frame_buckets=FRAME_BUCKETS)
    assert slots.max_group == 3 and slots.row_buckets == (1, 2, 3)


def test_a_shape_s_computation_reads_no_host_value_and_takes_none(base_tts):
    """What a CUDA graph cannot hold: a value read back to the host (.item(), a data-dependent
    shape) or host data copied in (torch.tensor(list), as the positions were before), which a
    graph would freeze at its capture. Recorded at the operator level, so the CPU shows what CUDA
    would run (.tolist() does not pass through it: none is in codec.py or codec_slots.py's _compute)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Operators(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func.__name__.split(".")[0])
            return func(*args, **(kwargs or {}))

    slots = bucketed(base_tts.codec.decoder)
    owned = [slots.acquire(b) for b in range(3)]
    slots.decode(owned, random_codes(3, 2, 12))  # the shape made; its codes, slots and state set
    shape = slots._shapes[(4, 2)]
    with torch.inference_mode(), Operators() as seen:
        slots._replay(shape)
    assert {"conv1d", "scaled_dot_product_attention", "index_select", "index_copy_"} <= seen.names
    host = {"item", "_local_scalar_dense", "nonzero", "masked_select", "unique", "lift_fresh"}
    assert not seen.names & host, seen.names & host


class _FakeGraph:
    """torch.cuda.CUDAGraph on the CPU: replay() does nothing."""

    def replay(self):
        pass


def fake_capture(monkeypatch, seen: list):
    """torch.cuda's graph API stood in for on the CPU: each capture records whether
    devices.CAPTURE_LOCK was held around it (and runs its body eagerly)."""
    from contextlib import contextmanager

    from wyoming_qwen_tts.engine.devices import CAPTURE_LOCK

    @contextmanager
    def graph(cuda_graph, pool=None, stream=None, capture_error_mode="global"):
        seen.append(CAPTURE_LOCK.locked())
        yield

    class Stream:
        def synchronize(self):
            seen.append(("stream synchronised, lock held", CAPTURE_LOCK.locked()))

    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: (0, 1))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", _FakeGraph)
    monkeypatch.setattr(torch.cuda, "graph", graph)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: Stream())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: seen.append(("synchronised, lock held",
                                                                                     CAPTURE_LOCK.locked())))


def test_a_codec_capture_holds_the_process_wide_capture_lock(base_tts, monkeypatch):
    """torch.cuda.graph captures on one side stream for the whole process, and a stream already
    capturing cannot begin another capture: the codec thread's captures (and the synchronisation
    before each) take the lock the batch's step graphs take too."""
    from wyoming_qwen_tts.engine.devices import CAPTURE_LOCK

    seen: list = []
    fake_capture(monkeypatch, seen)
    slots = CodecSlots(base_tts.codec.decoder, 2, row_buckets=ROW_BUCKETS, frame_buckets=(1,), graphs=True)
    slots.decode([slots.acquire("a")], random_codes(1, 1, 13))
    assert seen == [("stream synchronised, lock held", True), True]
    assert not CAPTURE_LOCK.locked()

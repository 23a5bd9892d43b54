"""Continuous batching: every active request advances one frame per step of a shared batch, and
new requests join between steps. One thread owns the batch (talker + code predictor); audio is
decoded by that thread between steps ("inline", the default) or by a second thread ("thread"):
each round takes the next chunk of every stream that has one and decodes the chunks of equal
length together, each stream continuing its own codec state.

Neither thread may die with requests waiting on it: whatever fails (making the batch, capturing
its graphs, admitting, a step, a decode) fails the requests involved, and the threads go on
serving. A consumer that still finds a thread gone raises instead of waiting for ever.

On a GPU the codec thread decodes on its own CUDA stream. Everything it keeps between chunks (the
decoder states) is made on that stream, by that thread; chunks of codes made on the batch's
stream carry an event the codec stream waits for, and are marked as used by the codec stream so
that the allocator does not hand their memory back to the batch before the decode has read it."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .codec_slots import CodecSlots, read_to_host
from .devices import release_cached_memory, side_stream
from .engine import AudioChunk, PromptTooLong, QwenTTS, resolve_runner  # noqa: F401 (PromptTooLong: raised from here)
from .generate import MIN_FRAMES_BEFORE_EOS, DecodeBatch, FrameChunks, Row
from .prompt import TextMode, VoicePrompt
from .options import SpeechOptions
from .sampling import SamplingConfig
from .threads import release_thread_team

_LOGGER = logging.getLogger(__name__)
_END = object()
IDLE_POLL_S = 1.0  # how often a waiting thread or consumer looks whether it should stop waiting
# An admission wave (one prefill pass, between two steps) holds at most this many prompts and
# prompt positions: every live stream waits for the wave, and the wave's own first audio waits for
# its whole prefill, so a burst of requests is admitted over a few iterations instead of at once.
ADMIT_ROWS = 4
ADMIT_TOKENS = 2048
CODEC_MODES = ("auto", "thread", "inline")


def resolve_codec_mode(codec: str) -> str:
    """Where audio is decoded. "thread": a codec thread of its own (on CUDA, its own stream), meant
    to overlap decoding with the batch's steps; "inline": by the batch thread between steps, like a
    single stream. auto is inline: on a GPU a single stream decoding inline had its first audio far
    sooner than through the codec thread (BENCHMARKS.md, "First GPU run"), and on a CPU the codec
    thread's own OpenMP team slows both threads (threads.py; BENCHMARKS.md, "Through the server's
    batch: one OpenMP team at a time")."""
    if codec not in CODEC_MODES:
        raise ValueError(f"codec must be one of {', '.join(CODEC_MODES)}, not {codec!r}")
    return "inline" if codec == "auto" else codec


@dataclass
class CodesChunk:
    """Codes (n, G) for the codec thread; on a GPU, `ready` is recorded on the stream that made them."""

    codes: torch.Tensor
    ready: "torch.cuda.Event | None" = None
    made_at: float = field(default_factory=time.perf_counter)

    @classmethod
    def made_here(cls, codes: torch.Tensor) -> "CodesChunk":
        if not codes.is_cuda:
            return cls(codes)
        ready = torch.cuda.Event()
        ready.record()
        return cls(codes, ready)

    def usable_here(self) -> torch.Tensor:
        """The codes, safe to read on the current CUDA stream."""
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.codes.device)
            stream.wait_event(self.ready)
            self.codes.record_stream(stream)
        return self.codes


@dataclass(eq=False)
class StreamAudio:
    """A request's audio side: its voice, frames not yet decoded, where chunks go. Its codec state
    lives in a slot of the scheduler's CodecSlots, taken by the codec thread at the first decode
    (see the module's docstring) and given back at the end."""

    voice: VoicePrompt
    frames: FrameChunks
    slot: int | None = None
    chunks: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    decoded_frames: int = 0
    jobs: deque = field(default_factory=deque)  # CodesChunks, then _END; codec thread only
    failed: bool = False

    def fail(self, error: BaseException) -> None:
        self.failed = True
        self.chunks.put(error)


class BatchScheduler:
    """Serves many streams from one QwenTTS with a shared batch.

        scheduler = BatchScheduler(tts, max_rows=16)
        for chunk in scheduler.stream("Hello.", voice):   # from any number of threads
            ...
    """

    def __init__(self, tts: QwenTTS, max_rows: int = 8, max_len: int = 1536, runner: str = "auto",
                 codec: str = "auto", before_step: Callable[[], None] | None = None) -> None:
        """runner: "eager", "bucketed" (static padded shapes), "compiled" (bucketed, the code
        predictor compiled), "cuda-graphs" (the fused step captured), or "auto" (the model's own:
        QwenTTS.runner). codec: "thread", "inline" or "auto" (resolve_codec_mode). before_step: called
        on the batch thread before each step (threads.ThreadShare.before_step)."""
        if max_rows < 1 or max_len < 64:
            raise ValueError("need max_rows >= 1 and max_len >= 64")
        self.tts = tts
        self.runner = tts.runner if runner == "auto" else resolve_runner(runner, tts.device, tts.compile_steps)
        self.max_rows, self.max_len = max_rows, max_len
        self._pending: deque[Row] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._batch: DecodeBatch | None = None
        self._before_step = before_step
        self.codec = resolve_codec_mode(codec)
        self._codec_jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._inline_waiting: deque[StreamAudio] = deque()  # streams with audio to decode (codec "inline")
        self._codec_slots: CodecSlots | None = None  # made by whichever thread decodes, at its first decode
        # Seconds from a chunk's codes made to its audio decoded, recorded while a benchmark has set
        # this to a list: first audio through the batch came far later than for one stream alone
        # (BENCHMARKS.md, "First GPU run"), so they report where that time is spent. None in a
        # server: a record per chunk grew the heap of every soak.
        self.codec_lag_s: list[float] | None = None
        self._threads = [threading.Thread(target=self._run, name="qwen-tts-batch", daemon=True)]
        if self.codec == "thread":
            self._threads.append(threading.Thread(target=self._run_codec, name="qwen-tts-codec", daemon=True))
        for thread in self._threads:
            thread.start()

    def stream(self, text: str, voice: VoicePrompt, *, language: str | None = "auto",
               sampling: SamplingConfig | None = None, seed: int | None = None, max_frames: int | None = None,
               text_mode: TextMode | None = None, first_chunk_frames: int = 1, max_chunk_frames: int = 8,
               cancel: threading.Event | None = None, min_frames: int = MIN_FRAMES_BEFORE_EOS,
               options: SpeechOptions | None = None) -> Iterator[AudioChunk]:
        """As QwenTTS.stream; the request is checked and queued now, its frames come from the batch.
        Raises PromptTooLong for a text that does not fit a batch row (QwenTTS.stream takes it)."""
        cancel = cancel or threading.Event()
        row = self.tts.prepare(text, voice, language=language, sampling=sampling, seed=seed, max_frames=max_frames,
                               text_mode=text_mode, cancel=cancel, min_frames=min_frames, options=options,
                               max_positions=self.max_len)
        row.owner = audio = StreamAudio(voice, FrameChunks(first_chunk_frames, max_chunk_frames))
        if self.tts.device.type == "cpu":
            release_thread_team()  # the batch thread's team alone may compute while requests run (threads.py)
        with self._wake:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._pending.append(row)
            self._wake.notify()
        return self._chunks(audio.chunks, cancel)

    def _chunks(self, chunks: queue.SimpleQueue, cancel: threading.Event) -> Iterator[AudioChunk]:
        try:
            while True:
                try:
                    item = chunks.get(timeout=IDLE_POLL_S)
                except queue.Empty:
                    if not all(thread.is_alive() for thread in self._threads):
                        raise RuntimeError("the speech engine stopped; this request cannot finish") from None
                    continue
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()  # a consumer that stops listening frees its row within a frame

    @property
    def active(self) -> int:
        batch = self._batch
        return len(batch.rows) if batch is not None else 0

    @property
    def waiting(self) -> int:
        """Sentences waiting for a row."""
        return len(self._pending)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._codec_jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)
            if thread.is_alive():
                _LOGGER.warning("%s did not stop within 10 s", thread.name)

    # -- the batch thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._pending and not (self._batch and self._batch.rows):
                    self._wake.wait(timeout=IDLE_POLL_S)
                if self._closed:
                    break
                joining = self._take_pending()
            try:
                if self._before_step is not None:
                    self._before_step()
                self._serve(joining)
            except Exception as err:  # a fault nobody foresaw fails the rows it touched, never the thread
                _LOGGER.exception("The batch failed unexpectedly; failing its requests")
                self._fail(list(dict.fromkeys(joining + self.live_rows())), err)
                self._drop_batch()
        error = RuntimeError("the scheduler was closed")
        self._fail(list(self._pending) + self.live_rows(), error)

    def live_rows(self) -> list[Row]:
        batch = self._batch
        return list(batch.rows) if batch is not None else []

    def _serve(self, joining: list[Row]) -> None:
        """Admit the rows that join, then one step for every live row (then, with the codec inline,
        decode what became due)."""
        try:
            self._admit_and_step(joining)
        finally:
            self._decode_all(self._inline_waiting)

    def _admit_and_step(self, joining: list[Row]) -> None:
        try:
            batch = self._ensure_batch()
        except Exception as err:  # e.g. out of memory while capturing the graphs: try again for later requests
            _LOGGER.exception("Making the batch failed; failing the %d requests that waited for it", len(joining))
            self._fail(joining, err)
            self._drop_batch()
            return
        self._admit(batch, joining)
        if batch.rows:
            self._step(batch)

    @staticmethod
    def _fail(rows: list[Row], error: BaseException) -> None:
        for row in rows:
            row.owner.fail(error)

    def _drop_batch(self) -> None:
        """Fresh caches (and graphs) for whoever comes next."""
        self._batch = None
        release_cached_memory(self.tts.device)  # after an out-of-memory error, give the memory back first

    def _take_pending(self) -> list[Row]:
        """This iteration's admission wave: requests that fit, in arrival order, at most ADMIT_ROWS of
        them and ADMIT_TOKENS prompt positions (the first always); the rest join next iteration.
        Cancelled ones are dropped."""
        joining: list[Row] = []
        free = min(self.max_rows - self.active, ADMIT_ROWS)
        tokens = 0
        while self._pending and len(joining) < free:
            row = self._pending[0]
            if row.should_stop():
                self._pending.popleft()
                row.owner.chunks.put(_END)
                continue
            tokens += row.prefill.embeds.shape[1]
            if joining and tokens > ADMIT_TOKENS:
                break
            joining.append(self._pending.popleft())
        return joining

    def _ensure_batch(self) -> DecodeBatch:
        if self._batch is None:
            self._batch = self.tts.new_batch(self.max_rows, self.max_len, self.runner)
        return self._batch

    def _admit(self, batch: DecodeBatch, rows: list[Row]) -> None:
        """Rows that arrived together prefill together (one padded pass)."""
        if not rows:
            return
        try:
            batch.admit_many(rows)
        except Exception as err:  # one bad prefill must not take the others down
            if len(rows) > 1:
                for row in rows:  # alone, the good ones still join
                    self._admit(batch, [row])
                return
            _LOGGER.exception("Admitting a request failed")
            rows[0].owner.fail(err)

    def _step(self, batch: DecodeBatch) -> None:
        try:
            produced, finished = batch.step()
        except Exception as err:
            _LOGGER.exception("A batch step failed; failing its %d requests", len(batch.rows))
            self._fail(batch.rows, err)
            self._drop_batch()
            return
        done = {id(row) for row in finished}
        for row, frame in produced:
            row.owner.frames.pending.append(frame)
            self._send_due(row.owner, finished=id(row) in done)
        for row in finished:
            self._send_due(row.owner, finished=True)  # frames left from before an EOS step
            self._to_codec(row.owner, _END)

    def _send_due(self, audio: StreamAudio, finished: bool) -> None:
        codes = audio.frames.take_due(finished)
        if codes is not None:
            self._to_codec(audio, CodesChunk.made_here(codes))

    def _to_codec(self, audio: StreamAudio, item: object) -> None:
        if self.codec == "inline":
            self._queue_job((audio, item), self._inline_waiting)
        else:
            self._codec_jobs.put((audio, item))

    # -- the codec thread --------------------------------------------------------------------

    def _run_codec(self) -> None:
        if self.tts.device.type == "cuda":
            # Its own CUDA stream, so decoding overlaps the batch's steps (module docstring: safety).
            with torch.cuda.stream(side_stream("codec", self.tts.device)):
                self._codec_loop()
        else:
            self._codec_loop()

    def _codec_loop(self) -> None:
        waiting: deque[StreamAudio] = deque()  # streams with jobs, in arrival order
        stop = False
        while not stop:
            job = self._codec_jobs.get()  # block for the first job, then take whatever else is there
            while job is not None:
                self._queue_job(job, waiting)
                try:
                    job = self._codec_jobs.get_nowait()
                except queue.Empty:
                    break
            stop = job is None  # close() sends None
            self._decode_all(waiting)

    @staticmethod
    def _queue_job(job: tuple[StreamAudio, object], waiting: deque[StreamAudio]) -> None:
        """A job behind the stream's others. A stream whose first audio this is goes to the front:
        its 1-frame chunk is decoded (and sent) before the larger chunks of streams already playing."""
        audio, item = job
        if not audio.jobs:
            if audio.decoded_frames == 0:
                waiting.appendleft(audio)
            else:
                waiting.append(audio)
        audio.jobs.append(item)

    def _decode_all(self, waiting: deque[StreamAudio]) -> None:
        while waiting and self._decode_round(waiting):
            pass

    def _decode_round(self, waiting: deque[StreamAudio]) -> bool:
        """Each waiting stream's next job: end markers go out (the stream's codec slot with them),
        equal-length chunks decode together. False when nothing could move: every slot is held,
        and a stream that needs one waits for an end marker that has not come in yet."""
        try:
            slots = self._slots()
        except Exception as err:  # e.g. out of memory capturing the codec's graphs
            _LOGGER.exception("Making the codec's slots failed; failing %d streams", len(waiting))
            for audio in waiting:
                audio.fail(err)
                audio.jobs.clear()
            waiting.clear()
            return False
        slots.reclaim(lambda audio: audio.failed)  # a failed stream may never see its end marker
        free, moved = slots.free, False
        by_length: dict[int, list[StreamAudio]] = {}
        for audio in list(waiting):
            head = audio.jobs[0]
            if head is _END or audio.failed:
                audio.jobs.popleft()
                moved = True
                if head is _END:
                    if audio.slot is not None:
                        slots.release(audio.slot, audio)
                        audio.slot = None
                    if not audio.failed:
                        audio.chunks.put(_END)
            elif audio.slot is not None or free > 0:
                free -= audio.slot is None
                by_length.setdefault(head.codes.shape[0], []).append(audio)
        for group in by_length.values():
            self._decode_group([(audio, audio.jobs.popleft()) for audio in group])
            moved = True
        for audio in list(waiting):
            if not audio.jobs:
                waiting.remove(audio)
        return moved

    def _slots(self) -> CodecSlots:
        """The codec's slots, made (on a GPU: every graph captured) by the first decode, which the
        server's warm-up makes, on the decoding thread's stream."""
        if self._codec_slots is None:
            slots = CodecSlots.for_device(self.tts.codec.decoder, self.max_rows)
            slots.prepare()
            self._codec_slots = slots
        return self._codec_slots

    @torch.inference_mode()
    def _decode_group(self, group: list[tuple[StreamAudio, CodesChunk]]) -> None:
        slots = self._slots()
        try:
            for audio, _ in group:
                if audio.slot is None:  # its state made here, on the codec thread's stream
                    audio.slot = slots.acquire(audio, self.tts.decoder_state(audio.voice))
            codes = torch.stack([chunk.usable_here() for _, chunk in group])  # (N, n, Q)
            audio_out = slots.decode([audio.slot for audio, _ in group], codes)  # (N, n * 1920)
            samples, host_codes = read_to_host(audio_out.float(), codes)
            decoded_at = time.perf_counter()
            if self.codec_lag_s is not None:
                self.codec_lag_s.extend(decoded_at - chunk.made_at for _, chunk in group)
        except Exception as err:
            _LOGGER.exception("Decoding audio failed for %d streams", len(group))
            for audio, _ in group:
                audio.fail(err)
            return
        for index, (audio, _) in enumerate(group):
            audio.chunks.put(AudioChunk(samples=samples[index], codes=host_codes[index],
                                        first_frame=audio.decoded_frames))
            audio.decoded_frames += host_codes.shape[1]

"""Continuous batching: every active request advances one frame per step of a shared batch, and
new requests join between steps. One thread owns the batch (talker + code predictor); a second
decodes audio: each round it takes the next chunk of every stream that has one and decodes the
chunks of equal length together, each stream continuing its own codec state."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from .codec import DecoderState
from .engine import AudioChunk, QwenTTS, resolve_seed
from .engine import resolve_runner
from .fused import make_runner, step_plan_of
from .generate import MIN_FRAMES_BEFORE_EOS, DecodeBatch, FrameChunks, Row, frame_limits
from .prompt import TextMode, VoicePrompt
from .sampling import SamplingConfig

_LOGGER = logging.getLogger(__name__)
_END = object()


@dataclass(eq=False)
class Audio:
    """A request's audio side: its codec state, frames not yet decoded, where chunks go."""

    state: DecoderState
    frames: FrameChunks
    chunks: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    decoded_frames: int = 0
    jobs: deque = field(default_factory=deque)  # codes (n, G) tensors, then _END; codec thread only
    failed: bool = False


class BatchScheduler:
    """Serves many streams from one QwenTTS with a shared batch.

        scheduler = BatchScheduler(tts, max_rows=16)
        for chunk in scheduler.stream("Hello.", voice):   # from any number of threads
            ...
    """

    def __init__(self, tts: QwenTTS, max_rows: int = 8, max_len: int = 1536, runner: str = "auto") -> None:
        """runner: "eager", "bucketed" (static padded shapes), "compiled" (bucketed, the code
        predictor compiled), "cuda-graphs" (the fused step captured), or "auto" (the model's own:
        QwenTTS.runner)."""
        if max_rows < 1 or max_len < 64:
            raise ValueError("need max_rows >= 1 and max_len >= 64")
        self.tts = tts
        self.runner = tts.runner if runner == "auto" else resolve_runner(runner, tts.device, tts.compile_steps)
        self.max_rows, self.max_len = max_rows, max_len
        self._pending: deque[Row] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._batch: DecodeBatch | None = None
        self._codec_jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._run, name="qwen-tts-batch", daemon=True),
                         threading.Thread(target=self._run_codec, name="qwen-tts-codec", daemon=True)]
        for thread in self._threads:
            thread.start()

    def stream(self, text: str, voice: VoicePrompt, *, language: str | None = "auto",
               sampling: SamplingConfig | None = None, seed: int | None = None, max_frames: int | None = None,
               text_mode: TextMode | None = None, first_chunk_frames: int = 1, max_chunk_frames: int = 8,
               cancel: threading.Event | None = None, min_frames: int = MIN_FRAMES_BEFORE_EOS) -> Iterator[AudioChunk]:
        """As QwenTTS.stream; the request is checked and queued now, its frames come from the batch."""
        tts = self.tts
        prefill = tts.prompts.build(text, voice, language, text_mode, device=tts.device)
        room = self.max_len - prefill.embeds.shape[1]
        text_still_to_feed = prefill.trailing_text.shape[1]
        if room <= text_still_to_feed:
            raise ValueError(f"the prompt and text take {prefill.embeds.shape[1] + text_still_to_feed} positions, "
                             f"more than the {self.max_len} a batch row holds: split the text")
        max_frames = frame_limits(prefill.text_tokens, max_frames, min_frames, most=room)
        frames = FrameChunks(first_chunk_frames, max_chunk_frames)
        cancel = cancel or threading.Event()
        audio = Audio(tts._decoder_state(voice), frames)
        if tts.device.type == "cuda":
            torch.cuda.current_stream().synchronize()  # the state's copy is done before the codec stream reads it
        row = Row(prefill, sampling or tts.default_sampling, resolve_seed(seed), max_frames, min_frames,
                  should_stop=cancel.is_set, owner=audio)
        with self._wake:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._pending.append(row)
            self._wake.notify()
        return self._chunks(audio.chunks, cancel)

    @staticmethod
    def _chunks(chunks: queue.SimpleQueue, cancel: threading.Event) -> Iterator[AudioChunk]:
        try:
            while True:
                item = chunks.get()
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

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._codec_jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    # -- the batch thread --------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._pending and not (self._batch and self._batch.rows):
                    self._wake.wait()
                if self._closed:
                    break
                joining = self._take_pending()
            batch = self._ensure_batch()
            self._admit(batch, joining)
            if batch.rows:
                self._step(batch)
        error = RuntimeError("the scheduler was closed")
        for row in list(self._pending) + (self._batch.rows if self._batch else []):
            row.owner.chunks.put(error)

    def _take_pending(self) -> list[Row]:
        """Requests that fit now, in arrival order; cancelled ones are dropped."""
        joining = []
        free = self.max_rows - self.active
        while self._pending and len(joining) < free:
            row = self._pending.popleft()
            if row.should_stop():
                row.owner.chunks.put(_END)
                continue
            joining.append(row)
        return joining

    def _ensure_batch(self) -> DecodeBatch:
        if self._batch is None:
            talker = self.tts.model.talker
            batch = DecodeBatch(talker, self.max_rows, self.max_len)
            if self.runner != "eager":
                batch.runner = make_runner(self.runner, batch, self.tts.compile_steps,
                                           warm_plans=(step_plan_of(talker, self.tts.default_sampling),))
                batch.runner.prepare(batch)
            self._batch = batch
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
            rows[0].owner.chunks.put(err)

    def _step(self, batch: DecodeBatch) -> None:
        try:
            produced, finished = batch.step()
        except Exception as err:
            _LOGGER.exception("A batch step failed; failing its %d requests", len(batch.rows))
            for row in batch.rows:
                row.owner.chunks.put(err)
            self._batch = None  # fresh caches for whoever comes next
            if self.tts.device.type == "cuda":
                torch.cuda.empty_cache()  # after an out-of-memory error, give the memory back first
            return
        done = {id(row) for row in finished}
        for row, frame in produced:
            row.owner.frames.pending.append(frame)
            self._send_due(row.owner, finished=id(row) in done)
        for row in finished:
            self._send_due(row.owner, finished=True)  # frames left from before an EOS step
            self._codec_jobs.put((row.owner, _END))

    def _send_due(self, audio: Audio, finished: bool) -> None:
        codes = audio.frames.take_due(finished)
        if codes is not None:
            self._codec_jobs.put((audio, codes))

    # -- the codec thread --------------------------------------------------------------------

    def _run_codec(self) -> None:
        if self.tts.device.type == "cuda":
            # Its own CUDA stream, so decoding overlaps the batch's steps. Frames arrive complete
            # (the batch thread read them back before queueing), and every decode ends with a copy
            # to the host, so no cross-stream synchronisation is needed.
            with torch.cuda.stream(torch.cuda.Stream(device=self.tts.device)):
                self._codec_loop()
        else:
            self._codec_loop()

    def _codec_loop(self) -> None:
        waiting: deque[Audio] = deque()  # streams with jobs, in arrival order
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
            while waiting:
                self._decode_round(waiting)

    @staticmethod
    def _queue_job(job: tuple[Audio, object], waiting: deque[Audio]) -> None:
        audio, item = job
        if not audio.jobs:
            waiting.append(audio)
        audio.jobs.append(item)

    def _decode_round(self, waiting: deque[Audio]) -> None:
        """Each waiting stream's next job: end markers go out, equal-length chunks decode together."""
        by_length: dict[int, list[Audio]] = {}
        for audio in list(waiting):
            head = audio.jobs[0]
            if head is _END:
                audio.jobs.popleft()
                if not audio.failed:
                    audio.chunks.put(_END)
            else:
                by_length.setdefault(head.shape[0], []).append(audio)
        for group in by_length.values():
            codes = [audio.jobs.popleft() for audio in group]
            live = [(a, c) for a, c in zip(group, codes) if not a.failed]
            if live:
                self._decode_group(live)
        for audio in list(waiting):
            if not audio.jobs:
                waiting.remove(audio)

    @torch.inference_mode()
    def _decode_group(self, group: list[tuple[Audio, torch.Tensor]]) -> None:
        decoder = self.tts.codec.decoder
        try:
            state = group[0][0].state if len(group) == 1 else DecoderState.stack([a.state for a, _ in group])
            audio_out = decoder(torch.stack([c for _, c in group]), state)
            states = [state] if len(group) == 1 else state.split()
        except Exception as err:
            _LOGGER.exception("Decoding audio failed for %d streams", len(group))
            for audio, _ in group:
                audio.failed = True
                audio.chunks.put(err)
            return
        samples = audio_out.float().cpu().numpy()
        for index, ((audio, codes), new_state) in enumerate(zip(group, states)):
            audio.state = new_state
            audio.chunks.put(AudioChunk(samples=np.ascontiguousarray(samples[index]), codes=codes.cpu().numpy(),
                                        first_frame=audio.decoded_frames))
            audio.decoded_frames += codes.shape[0]

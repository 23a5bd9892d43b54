"""Continuous batching: every active request advances one frame per step of a shared batch, and
new requests join between steps. One thread owns the batch; each request's audio is decoded on
the caller's side, as its frames arrive, with the request's own codec state."""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Iterator

import torch

from .engine import AudioChunk, QwenTTS, resolve_seed
from .generate import (MIN_FRAMES_BEFORE_EOS, BucketedRunner, CudaGraphRunner, DecodeBatch, EagerRunner, Row,
                       decode_stream, frame_budget)
from .prompt import TextMode, VoicePrompt, normalize_language
from .sampling import SamplingConfig

_LOGGER = logging.getLogger(__name__)
_END = object()
RUNNERS = {"eager": EagerRunner, "bucketed": BucketedRunner, "cuda-graphs": CudaGraphRunner}


class BatchScheduler:
    """Serves many streams from one QwenTTS with a shared batch.

        scheduler = BatchScheduler(tts, max_rows=16)
        for chunk in scheduler.stream("Hello.", voice):   # from any number of threads
            ...
    """

    def __init__(self, tts: QwenTTS, max_rows: int = 8, max_len: int = 1536, runner: str = "auto") -> None:
        """runner: "eager", "bucketed" (static padded shapes), "cuda-graphs", or "auto" (CUDA graphs
        on a CUDA device, eager elsewhere)."""
        if max_rows < 1 or max_len < 64:
            raise ValueError("need max_rows >= 1 and max_len >= 64")
        if runner == "auto":
            runner = "cuda-graphs" if tts.device.type == "cuda" else "eager"
        if runner not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)} or auto")
        if runner == "cuda-graphs" and tts.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.tts = tts
        self.runner = runner
        self.max_rows, self.max_len = max_rows, max_len
        self._pending: deque[Row] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._batch: DecodeBatch | None = None
        self._thread = threading.Thread(target=self._run, name="qwen-tts-batch", daemon=True)
        self._thread.start()

    def stream(self, text: str, voice: VoicePrompt, *, language: str | None = "auto",
               sampling: SamplingConfig | None = None, seed: int | None = None, max_frames: int | None = None,
               text_mode: TextMode | None = None, first_chunk_frames: int = 1, max_chunk_frames: int = 8,
               cancel: threading.Event | None = None, min_frames: int = MIN_FRAMES_BEFORE_EOS) -> Iterator[AudioChunk]:
        """As QwenTTS.stream; the request is checked and queued now, its frames come from the batch."""
        tts = self.tts
        prefill = tts.prompts.build(text, voice, normalize_language(language), text_mode, device=tts.device)
        room = self.max_len - prefill.embeds.shape[1]
        text_still_to_feed = prefill.trailing_text.shape[1]
        if room <= text_still_to_feed:
            raise ValueError(f"the prompt and text take {prefill.embeds.shape[1] + text_still_to_feed} positions, "
                             f"more than the {self.max_len} a batch row holds: split the text")
        if max_frames is None:
            max_frames = min(frame_budget(prefill.text_tokens), room)
        elif not 1 <= max_frames <= room:
            raise ValueError(f"max_frames must be between 1 and {room} for this prompt")
        if not 0 <= min_frames <= max_frames:
            raise ValueError("min_frames must be between 0 and max_frames")
        cancel = cancel or threading.Event()
        frames_out: queue.SimpleQueue = queue.SimpleQueue()
        row = Row(prefill, sampling or tts.default_sampling, resolve_seed(seed), max_frames, min_frames,
                  should_stop=cancel.is_set, owner=frames_out)
        state = tts._decoder_state(voice)
        with self._wake:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._pending.append(row)
            self._wake.notify()
        frames = self._frames(frames_out, cancel)
        return tts._chunks(decode_stream(frames, tts.codec, state, first_chunk_frames, max_chunk_frames))

    @staticmethod
    def _frames(frames_out: queue.SimpleQueue, cancel: threading.Event) -> Iterator[torch.Tensor]:
        try:
            while True:
                item = frames_out.get()
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
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._pending and not (self._batch and self._batch.rows):
                    self._wake.wait()
                if self._closed:
                    break
                joining = self._take_pending()
            batch = self._ensure_batch()
            for row in joining:
                self._admit(batch, row)
            if batch.rows:
                self._step(batch)
        self._fail_everything(RuntimeError("the scheduler was closed"))

    def _take_pending(self) -> list[Row]:
        """Requests that fit now, in arrival order; cancelled ones are dropped."""
        joining = []
        free = self.max_rows - self.active
        while self._pending and len(joining) < free:
            row = self._pending.popleft()
            if row.should_stop():
                row.owner.put(_END)
                continue
            joining.append(row)
        return joining

    def _ensure_batch(self) -> DecodeBatch:
        if self._batch is None:
            batch = DecodeBatch(self.tts.model.talker, self.max_rows, self.max_len)
            if self.runner != "eager":
                batch.runner = RUNNERS[self.runner](batch)
            self._batch = batch
        return self._batch

    def _admit(self, batch: DecodeBatch, row: Row) -> None:
        try:
            batch.admit(row)
        except Exception as err:  # one bad prefill must not take the others down
            _LOGGER.exception("Admitting a request failed")
            row.owner.put(err)

    def _step(self, batch: DecodeBatch) -> None:
        try:
            produced, finished = batch.step()
        except Exception as err:
            _LOGGER.exception("A batch step failed; failing its %d requests", len(batch.rows))
            for row in batch.rows:
                row.owner.put(err)
            self._batch = None  # fresh caches for whoever comes next
            return
        for row, frame in produced:
            row.owner.put(frame)
        for row in finished:
            row.owner.put(_END)

    def _fail_everything(self, err: Exception) -> None:
        rows = list(self._pending) + (self._batch.rows if self._batch else [])
        for row in rows:
            row.owner.put(err)

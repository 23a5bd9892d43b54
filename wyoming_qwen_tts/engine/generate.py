"""The streaming decode loop: prompts -> frames of codes -> 24 kHz audio chunks.

One frame (80 ms) per step for every live row of a batch: the talker picks each row's first code
from its last hidden state, the code predictor fills in the other 15, the frames go out at once,
and each frame's summed embedding (plus the row's next text token, in per-frame text mode) is the
talker's next input. A single stream is a batch of one; the scheduler admits new rows between
steps. Rows stay contiguous in the caches (a finished row's place is taken by the last row), so a
step works on plain slices.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch._dynamo

from .devices import release_cached_memory
from .prompt import Prefill
from .layers import KVCache, RowPositions, widened
from .options import SpeechOptions
from .sampling import DrawPlan, RowParams, SamplingConfig, apply_repetition_penalty, choose_planned, draw_keys
from .talker import Talker


MIN_FRAMES_BEFORE_EOS = 2  # the official generate() passes min_new_tokens=2
FRAMES_CAP = 2048  # ~164 s: no request, however long its text, runs past this
BUDGET_BASE_FRAMES = 24  # ~2 s of slack for very short texts
BUDGET_FRAMES_PER_TOKEN = 12  # ~3x a normal speaking rate per text token
# A batch's buffers start small and grow at admission, a step at a time (doubling, then max_len):
# the KV cache's positions per row (an ICL prompt plus a sentence's frame budget mostly fits 512)
# and the staged text table's columns (a sentence's text tokens).
KV_STEP, KV_START = 256, 512
TEXT_STEP, TEXT_START = 64, 64


def size_steps(first: int, limit: int) -> tuple[int, ...]:
    """first, 2 first, 4 first ... below limit, then limit: the sizes a buffer grows through."""
    steps = []
    while first < limit:
        steps.append(first)
        first *= 2
    return (*steps, limit)


def step_for(need: int, steps: tuple[int, ...]) -> int:
    """The smallest step that holds `need` (the last one if none does: admission refuses more)."""
    return next((step for step in steps if step >= need), steps[-1])


def frame_budget(text_tokens: int, cap: int = FRAMES_CAP) -> int:
    """How many frames a text may take before we stop waiting for EOS."""
    return max(1, min(cap, BUDGET_BASE_FRAMES + BUDGET_FRAMES_PER_TOKEN * text_tokens))


def frame_limits(text_tokens: int, max_frames: int | None, min_frames: int, most: int) -> int:
    """The request's max_frames: the caller's (1..most) or the text's budget (at most `most`);
    min_frames checked against it."""
    if max_frames is None:
        max_frames = min(frame_budget(text_tokens), most)
    elif not 1 <= max_frames <= most:
        raise ValueError(f"max_frames must be between 1 and {most} for this request")
    if not 0 <= min_frames <= max_frames:
        raise ValueError("min_frames must be between 0 and max_frames")
    return max_frames


def suppressed_codes(talker: Talker, device: torch.device) -> torch.Tensor:
    """Bool (V,): the top 1024 ids (specials, languages, speakers) except EOS never get sampled."""
    cfg = talker.cfg
    mask = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    mask[max(0, cfg.vocab_size - 1024):] = True
    mask[cfg.codec_eos_id] = False
    return mask


@dataclass(eq=False)
class Row:
    """One request inside a batch."""

    prefill: Prefill
    sampling: SamplingConfig
    seed: int
    max_frames: int
    min_frames: int = MIN_FRAMES_BEFORE_EOS
    should_stop: Callable[[], bool] | None = None
    owner: Any = None  # whoever waits for this row's frames
    options: SpeechOptions | None = None  # the request's, as its transport made them (sampling and seed above)
    frames_done: int = field(default=0, init=False)

    @property
    def positions_needed(self) -> int:
        return self.prefill.embeds.shape[1] + self.max_frames

    @property
    def text_length(self) -> int:
        """Frames that get a text token of their own (the rest get tts_pad): at most max_frames."""
        return min(self.prefill.trailing_text.shape[1], self.max_frames)

    def texts(self) -> torch.Tensor:
        """(text_length + 1, H): what gets added to frame f's embedding is row min(f, text_length)."""
        return torch.cat((self.prefill.trailing_text[0, : self.text_length], self.prefill.tts_pad[0]))


@dataclass
class StepInputs:
    """What changes from one step to the next, per row."""

    seeds: torch.Tensor  # (R,) int64
    frame_index: torch.Tensor  # (R,) int64: frames the row has made so far
    hold_eos: torch.Tensor  # (R,) bool: EOS not allowed yet
    texts: torch.Tensor  # (R, H): text embedding added to this step's frame
    positions: torch.Tensor  # (R,) int64: where the talker writes this step


# Per-row integers of a step, packed so that one host-to-device copy carries them all.
SEED, FRAME_INDEX, HOLD_EOS, POSITION, TEXT_INDEX = range(5)
STEP_COLUMNS = 5


def step_inputs(ints: torch.Tensor, text_table: torch.Tensor) -> StepInputs:
    """StepInputs of rows 0..R-1 from their packed integers (R, STEP_COLUMNS) and the texts staged
    on the device at admission (max_rows, L, H), whole: no host value is read."""
    rows = torch.arange(ints.shape[0], device=ints.device)
    return StepInputs(seeds=ints[:, SEED], frame_index=ints[:, FRAME_INDEX], hold_eos=ints[:, HOLD_EOS] != 0,
                      texts=text_table[rows, ints[:, TEXT_INDEX]], positions=ints[:, POSITION])


def frame_codes(talker: Talker, hidden: torch.Tensor, seen: torch.Tensor, ints: torch.Tensor,
                text_table: torch.Tensor, talker_fields: tuple[torch.Tensor, ...],
                predictor_fields: tuple[torch.Tensor, ...], banned: torch.Tensor, eos_column: torch.Tensor,
                predictor_cache: KVCache, plan: tuple[DrawPlan, DrawPlan]) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's frames (R, G) and the talker's next input (R, 1, H): the talker's draw of code 0 and
    the code predictor's 15 steps with their draws. Nothing here depends on the cache length, so a
    compiled copy of it serves every kv_len (one graph per rows x plan); seen (R, V) is updated in place."""
    inputs = step_inputs(ints, text_table)
    talker_rows, predictor_rows = RowParams(*talker_fields), RowParams(*predictor_fields)
    talker_plan, predictor_plan = plan
    groups = talker.cfg.num_code_groups
    logits = talker.codec_head(hidden).float()  # (R, V)
    if talker_plan.penalty:
        logits = apply_repetition_penalty(logits, seen, talker_rows.penalty)
    logits = logits.masked_fill(banned | (inputs.hold_eos[:, None] & eos_column), float("-inf"))
    first = choose_planned(logits, talker_rows, draw_keys(inputs.seeds, inputs.frame_index * groups), talker_plan)
    seen.scatter_(1, first[:, None], True)
    rest = talker.code_predictor.predict(hidden, talker.embed_codec(first), predictor_cache, predictor_rows,
                                         inputs.seeds, inputs.frame_index, predictor_plan)  # (R, G-1)
    frames = torch.cat((first[:, None], rest), dim=1)
    return frames, (talker.embed_frames(frames) + inputs.texts)[:, None]


def talker_decode(talker: Talker, hidden: torch.Tensor, ints: torch.Tensor, embeds: torch.Tensor, cache: KVCache,
                  kv_len: int) -> None:
    """The talker's decode step: next hidden states (R, H) into `hidden`, in place."""
    hidden.copy_(talker.decode(embeds, cache, RowPositions(ints[:, POSITION], kv_len)))


def frame_step(talker: Talker, hidden: torch.Tensor, seen: torch.Tensor, ints: torch.Tensor,
               text_table: torch.Tensor, talker_fields: tuple[torch.Tensor, ...],
               predictor_fields: tuple[torch.Tensor, ...], banned: torch.Tensor, eos_column: torch.Tensor,
               cache: KVCache, predictor_cache: KVCache, kv_len: int, plan: tuple[DrawPlan, DrawPlan]) -> torch.Tensor:
    """The frame step, the only one: frames (R, G) for rows 0..R-1 from their packed integers
    (R, STEP_COLUMNS); hidden (R, H), seen (R, V) and the caches are updated in place.

    Eager runners call it, the compiled runner compiles it (runners.py) and the CUDA graph runner
    captures it: shapes depend only on (R, kv_len, plan) and no host value is read. Rows that draw
    EOS, or will stop, still run the talker's decode step: wasted work, no harm."""
    frames, embeds = frame_codes(talker, hidden, seen, ints, text_table, talker_fields, predictor_fields, banned,
                                 eos_column, predictor_cache, plan)
    talker_decode(talker, hidden, ints, embeds, cache, kv_len)
    return frames


class DecodeBatch:
    """Live rows sharing static caches; step() makes one frame for each of them."""

    def __init__(self, talker: Talker, max_rows: int, max_len: int, runner: Any = None,
                 capacity: int | None = None) -> None:
        """runner: how step() runs the frame step (runners.py); None calls it at the exact shapes.
        max_len: the most positions a row may need (admission refuses more); capacity: the cache
        positions per row allocated now (default the first kv_steps one holding KV_START), grown
        through kv_steps as admitted rows need it."""
        weight = talker.model.norm.weight  # in the model dtype even when linears hold int8
        self.talker = talker
        self.device, self.dtype = weight.device, weight.dtype
        self.max_rows, self.max_len = max_rows, max_len
        self.eos = talker.cfg.codec_eos_id
        vocab = talker.cfg.vocab_size
        self.kv_steps = size_steps(KV_STEP, max_len)
        self.text_steps = size_steps(TEXT_STEP, max_len)
        start = step_for(min(KV_START if capacity is None else capacity, max_len), self.kv_steps)
        self.cache = talker.new_cache(max_rows, start, self.device, self.dtype)
        self.predictor_cache = talker.code_predictor.new_cache(max_rows, self.device, self.dtype)
        self.banned = suppressed_codes(talker, self.device)[None, :]
        self.eos_column = (torch.arange(vocab, device=self.device) == self.eos)[None, :]
        self.hidden = torch.zeros(max_rows, talker.cfg.hidden_size, device=self.device, dtype=self.dtype)
        self.seen = torch.zeros(max_rows, vocab, dtype=torch.bool, device=self.device)
        # Each row's texts for its frames (Row.texts), staged at admission; a frame picks its own.
        # (max_rows, columns, H), columns grown through text_steps.
        self.text_table = torch.zeros(max_rows, step_for(TEXT_START, self.text_steps), talker.cfg.hidden_size,
                                      device=self.device, dtype=self.dtype)
        self._mark_dynamic()
        self.step_ints = torch.zeros(max_rows, STEP_COLUMNS, dtype=torch.int64, device=self.device)
        on_cuda = self.device.type == "cuda"
        self._host_ints = torch.zeros(max_rows, STEP_COLUMNS, dtype=torch.int64, pin_memory=on_cuda)
        # Where a step's frames are read back (the one read of a step), and when they have landed.
        self._host_frames = torch.zeros(max_rows, talker.cfg.num_code_groups, dtype=torch.int64, pin_memory=on_cuda)
        self._frames_landed = torch.cuda.Event() if on_cuda else None
        self.rows: list[Row] = []
        self.runner = runner
        self._params: tuple[RowParams, RowParams] | None = None
        self._plan: tuple[DrawPlan, DrawPlan] | None = None

    def admit(self, row: Row) -> None:
        """Prefill a new row's prompt into the next free cache row."""
        self.admit_many([row])

    @torch.inference_mode()
    def admit_many(self, rows: list[Row]) -> None:
        """Prefill new rows' prompts together into the next free cache rows: right-padded to the
        longest, one pass (causal attention keeps each prompt's positions blind to the padding,
        which later frames overwrite)."""
        if len(self.rows) + len(rows) > self.max_rows:
            raise ValueError(f"no room: {len(self.rows)}/{self.max_rows} rows, {len(rows)} more asked for")
        for row in rows:
            if row.positions_needed > self.max_len:
                raise ValueError(f"no room: the request needs {row.positions_needed}/{self.max_len} positions")
        if not rows:
            return
        self._make_room(rows)
        first = len(self.rows)
        for row in rows:
            row.prefill.wait_here()
        lengths = [row.prefill.embeds.shape[1] for row in rows]
        prompts = torch.zeros(len(rows), max(lengths), self.hidden.shape[1], device=self.device, dtype=self.dtype)
        for index, row in enumerate(rows):
            prompts[index, : lengths[index]] = row.prefill.embeds[0]
            self.cache.lengths[first + index] = 0
        hidden = self.talker.prefill(prompts, self.cache, first)
        for index, (row, length) in enumerate(zip(rows, lengths)):
            slot = first + index
            self.cache.lengths[slot] = length
            self.hidden[slot] = hidden[index, length - 1]
            self.seen[slot] = False
            self.text_table[slot, : row.text_length + 1] = row.texts()
            self.rows.append(row)
        self._params = self._plan = None

    def _make_room(self, joining: list[Row]) -> None:
        """The cache and the text table grown to the steps that hold the live rows and those joining."""
        rows = self.rows + joining
        self.grow(step_for(max(row.positions_needed for row in rows), self.kv_steps),
                  step_for(max(row.text_length + 1 for row in rows), self.text_steps))

    def grow(self, positions: int, columns: int) -> None:
        """At least `positions` cache positions and `columns` text columns per row, live rows
        keeping theirs. The runner drops what holds the old buffers (CUDA graphs) first."""
        if positions <= self.cache.capacity and columns <= self.text_table.shape[1]:
            return
        if self.runner is not None:
            self.runner.buffers_changing(self)
        try:
            if positions > self.cache.capacity:
                self.cache.grow(positions, len(self.rows))
            if columns > self.text_table.shape[1]:
                self.text_table = widened(self.text_table, 1, columns, len(self.rows))
        finally:
            self._mark_dynamic()
        release_cached_memory(self.device)  # the old buffers' blocks are too small for what comes next

    def _mark_dynamic(self) -> None:
        """The text table's columns vary: a compiled step traces them as a size, so that its growth
        does not recompile the step in the middle of somebody's sentence. The cache's capacity is
        kept a constant: the whole step compiled with it symbolic made other codes than the eager
        step (CPU, torch 2.13), so each capacity compiles its own (at most len(kv_steps))."""
        for tensor in (self.cache.keys, self.cache.values):
            torch._dynamo.mark_static(tensor, 3)
        torch._dynamo.maybe_mark_dynamic(self.text_table, 1)

    def row_params(self) -> tuple[RowParams, RowParams]:
        if self._params is None:
            vocab, predictor_vocab = self.talker.cfg.vocab_size, self.talker.code_predictor.cfg.vocab_size
            self._params = (RowParams.stack([r.sampling.talker for r in self.rows], vocab, self.device),
                            RowParams.stack([r.sampling.predictor for r in self.rows], predictor_vocab, self.device))
        return self._params

    def step_plan(self) -> tuple[DrawPlan, DrawPlan]:
        """The talker's and the predictor's DrawPlan for the live rows (fixed until rows change)."""
        if self._plan is None:
            vocab, predictor_vocab = self.talker.cfg.vocab_size, self.talker.code_predictor.cfg.vocab_size
            self._plan = (DrawPlan.of([r.sampling.talker for r in self.rows], vocab),
                          DrawPlan.of([r.sampling.predictor for r in self.rows], predictor_vocab))
        return self._plan

    def step_args(self, rows: int, params: tuple[RowParams, RowParams]) -> tuple:
        """frame_step's arguments up to the caches, over rows 0..rows-1 of the buffers."""
        # The text table whole: a slice would be a new tensor each step, without _mark_dynamic's mark.
        return (self.talker, self.hidden[:rows], self.seen[:rows], self.step_ints[:rows], self.text_table,
                params[0].fields(), params[1].fields(), self.banned, self.eos_column)

    def eager_step(self, rows: int, kv_len: int, params: tuple[RowParams, RowParams]) -> torch.Tensor:
        """frame_step called on rows 0..rows-1 with the batch's step plan: frames (rows, G)."""
        return frame_step(*self.step_args(rows, params), self.cache, self.predictor_cache, kv_len, self.step_plan())

    def _load_inputs(self) -> None:
        """This step's per-row integers into step_ints: one copy (from pinned memory on CUDA; the
        previous step's read-back has synchronised, so the host buffer is free to rewrite)."""
        host = self._host_ints.numpy()
        host[:] = 0
        for slot, row in enumerate(self.rows):
            done = row.frames_done
            host[slot] = (row.seed, done, done < row.min_frames, self.cache.lengths[slot], min(done, row.text_length))
        self.step_ints.copy_(self._host_ints, non_blocking=True)

    @torch.inference_mode()
    def step(self) -> tuple[list[tuple[Row, torch.Tensor]], list[Row]]:
        """One frame for every live row: ([(row, frame (G,))...], rows that finished this step)."""
        count = len(self.rows)
        kv_len = max(self.cache.lengths[:count]) + 1
        self._load_inputs()
        if self.runner is None:
            frames = self.eager_step(count, kv_len, self.row_params())  # (R, G) on the device
        else:
            frames = self.runner.run(self, count, kv_len)
        first_codes = self._read_back(frames)[:, 0]
        produced, finished = [], []
        for slot, row in enumerate(self.rows):
            if first_codes[slot] == self.eos:
                finished.append(row)
                continue
            produced.append((row, frames[slot]))
            row.frames_done += 1
            self.cache.lengths[slot] += 1
            if row.frames_done >= row.max_frames or (row.should_stop is not None and row.should_stop()):
                finished.append(row)
        self._remove(finished)
        return produced, finished

    def _read_back(self, frames: torch.Tensor) -> np.ndarray:
        """The step's frames (R, G) on the host: the only device value a step reads. On CUDA one
        copy into pinned memory and a wait for its event, not a pageable copy that waits for the
        whole device. The array is overwritten by the next step."""
        if self._frames_landed is None:
            return frames.numpy()
        host = self._host_frames[: frames.shape[0]]
        host.copy_(frames, non_blocking=True)
        self._frames_landed.record()
        self._frames_landed.synchronize()
        return host.numpy()

    def drop_all(self) -> None:
        self._remove(list(self.rows))

    def _remove(self, finished: list[Row]) -> None:
        """Drop finished rows; the last live row moves into each freed place."""
        for row in finished:
            slot = self.rows.index(row)
            last = len(self.rows) - 1
            if slot != last:
                self.cache.move_row(last, slot)
                self.hidden[slot] = self.hidden[last]
                self.seen[slot] = self.seen[last]
                self.text_table[slot] = self.text_table[last]
                self.rows[slot] = self.rows[last]
            self.rows.pop()
        if finished:
            self._params = self._plan = None


def generate_frames(talker: Talker, row: Row, batch: DecodeBatch | None = None,
                    before_step: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
    """One stream's frames of codes, (G,) int64 each, until EOS (allowed from frame row.min_frames
    on), row.max_frames, or row.should_stop(). In `batch` (an empty one, kept for reuse: its graphs
    or compiled steps are ready), else in a fresh eager batch of its own. before_step: called on
    this thread before the prefill and before each step (as a batch thread calls it)."""
    if batch is None:
        batch = DecodeBatch(talker, max_rows=1, max_len=row.positions_needed, capacity=row.positions_needed)
    if before_step is not None:
        before_step()
    batch.admit(row)
    try:
        while batch.rows:
            if before_step is not None:
                before_step()
            produced, _ = batch.step()
            for _, frame in produced:
                yield frame
    finally:
        batch.drop_all()  # the consumer may leave early: the batch is empty for the next stream


class FrameChunks:
    """Frames gathered into chunks for the codec: first_chunk_frames, then doubling up to
    max_chunk_frames (a small first chunk for early audio, larger ones for throughput)."""

    def __init__(self, first_chunk_frames: int = 1, max_chunk_frames: int = 8) -> None:
        if not 1 <= first_chunk_frames <= max_chunk_frames:
            raise ValueError("need 1 <= first_chunk_frames <= max_chunk_frames")
        self.pending: list[torch.Tensor] = []
        self.target = first_chunk_frames
        self.largest = max_chunk_frames

    def take_due(self, finished: bool) -> torch.Tensor | None:
        """The pending frames as one chunk (n, G), when enough have gathered (or the stream ended)."""
        if not self.pending or (len(self.pending) < self.target and not finished):
            return None
        codes = torch.stack(self.pending)
        self.pending = []
        self.target = min(self.target * 2, self.largest)
        return codes


@torch.inference_mode()
def decode_stream(frames: Iterator[torch.Tensor], decode: Callable[[torch.Tensor], torch.Tensor],
                  chunks: FrameChunks) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Decode each chunk as soon as it is full, by decode (codes (n, G) -> audio (n * 1920,), the
    stream's decoder state advancing). Yields (codes (n, G), audio (n * 1920,)) per chunk."""
    for frame in frames:
        chunks.pending.append(frame)
        if (codes := chunks.take_due(finished=False)) is not None:
            yield codes, decode(codes)
    if (codes := chunks.take_due(finished=True)) is not None:
        yield codes, decode(codes)

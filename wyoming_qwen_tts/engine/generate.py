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

import torch

from .codec import DecoderState, SpeechCodec
from .prompt import Prefill
from .sampling import RowParams, SamplingConfig, apply_repetition_penalty, choose, draw_keys
from .talker import Talker

MIN_FRAMES_BEFORE_EOS = 2  # the official generate() passes min_new_tokens=2
FRAMES_CAP = 2048  # ~164 s: no request, however long its text, runs past this
BUDGET_BASE_FRAMES = 24  # ~2 s of slack for very short texts
BUDGET_FRAMES_PER_TOKEN = 12  # ~3x a normal speaking rate per text token


def frame_budget(text_tokens: int, cap: int = FRAMES_CAP) -> int:
    """How many frames a text may take before we stop waiting for EOS."""
    return max(1, min(cap, BUDGET_BASE_FRAMES + BUDGET_FRAMES_PER_TOKEN * text_tokens))


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
    frames_done: int = field(default=0, init=False)

    @property
    def positions_needed(self) -> int:
        return self.prefill.embeds.shape[1] + self.max_frames

    def text_for_frame(self, index: int) -> torch.Tensor:
        """What gets added to frame `index`'s embedding: its text token, else tts_pad."""
        trailing = self.prefill.trailing_text
        return trailing[0, index] if index < trailing.shape[1] else self.prefill.tts_pad[0, 0]


class DecodeBatch:
    """Live rows sharing static caches; step() makes one frame for each of them."""

    def __init__(self, talker: Talker, max_rows: int, max_len: int) -> None:
        weight = talker.codec_head.weight
        self.talker = talker
        self.device, self.dtype = weight.device, weight.dtype
        self.max_rows, self.max_len = max_rows, max_len
        self.groups = talker.cfg.num_code_groups
        self.eos = talker.cfg.codec_eos_id
        self.cache = talker.new_cache(max_rows, max_len, self.device, self.dtype)
        self.predictor_cache = talker.code_predictor.new_cache(max_rows, self.device, self.dtype)
        self.suppress = suppressed_codes(talker, self.device)
        self.hidden = torch.zeros(max_rows, talker.cfg.hidden_size, device=self.device, dtype=self.dtype)
        self.seen = torch.zeros(max_rows, talker.cfg.vocab_size, dtype=torch.bool, device=self.device)
        self.rows: list[Row] = []
        self._params: tuple[RowParams, RowParams] | None = None

    def has_room(self, row: Row) -> bool:
        return len(self.rows) < self.max_rows and row.positions_needed <= self.max_len

    @torch.inference_mode()
    def admit(self, row: Row) -> None:
        """Prefill a new row's prompt into the next free cache row."""
        if not self.has_room(row):
            raise ValueError(f"no room: {len(self.rows)}/{self.max_rows} rows, request needs "
                             f"{row.positions_needed}/{self.max_len} positions")
        index = len(self.rows)
        self.cache.lengths[index] = 0
        hidden = self.talker.prefill(row.prefill.embeds.to(self.dtype), self.cache, index)
        self.hidden[index] = hidden[0, -1]
        self.seen[index] = False
        self.rows.append(row)
        self._params = None

    def _row_params(self) -> tuple[RowParams, RowParams]:
        if self._params is None:
            vocab, predictor_vocab = self.talker.cfg.vocab_size, self.talker.code_predictor.cfg.vocab_size
            self._params = (RowParams.stack([r.sampling.talker for r in self.rows], vocab, self.device),
                            RowParams.stack([r.sampling.predictor for r in self.rows], predictor_vocab, self.device))
        return self._params

    def _host_column(self, values: list[int]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.int64, device=self.device)

    @torch.inference_mode()
    def step(self) -> tuple[list[tuple[Row, torch.Tensor]], list[Row]]:
        """One frame for every live row: ([(row, frame (G,))...], rows that finished this step)."""
        count = len(self.rows)
        talker_params, predictor_params = self._row_params()
        seeds = self._host_column([r.seed for r in self.rows])
        frame_index = self._host_column([r.frames_done for r in self.rows])

        logits = self.talker.codec_head(self.hidden[:count]).float()
        if talker_params.any_penalty:
            logits = apply_repetition_penalty(logits, self.seen[:count], talker_params.penalty)
        hold_eos = [i for i, r in enumerate(self.rows) if r.frames_done < r.min_frames]
        if hold_eos:
            logits[hold_eos, self.eos] = float("-inf")
        logits.masked_fill_(self.suppress, float("-inf"))
        first = choose(logits, talker_params, draw_keys(seeds, frame_index * self.groups))
        first_host = first.tolist()

        going = [i for i in range(count) if first_host[i] != self.eos]
        frames = None
        if going:
            picked = self._host_column(going) if len(going) < count else slice(None)
            rest = self.talker.code_predictor.predict(
                self.hidden[:count][picked], self.talker.embed_codec(first[picked]), self.predictor_cache,
                predictor_params if len(going) == count else _subset(predictor_params, picked),
                seeds[picked], frame_index[picked])
            frames = torch.cat((first[picked, None], rest), dim=1)
            self.seen[self._host_column(going), first[picked]] = True

        produced, finished, last_frame = [], [], {}
        for slot, row in enumerate(self.rows):
            if slot not in going:
                finished.append(row)
                continue
            frame = frames[going.index(slot)]
            produced.append((row, frame))
            row.frames_done += 1
            if row.frames_done >= row.max_frames or (row.should_stop is not None and row.should_stop()):
                finished.append(row)
            else:
                last_frame[id(row)] = frame
        self._remove(finished)
        if self.rows:
            next_frames = torch.stack([last_frame[id(r)] for r in self.rows])
            texts = torch.stack([r.text_for_frame(r.frames_done - 1) for r in self.rows]).to(self.dtype)
            embeds = self.talker.embed_frames(next_frames) + texts
            self.hidden[: len(self.rows)] = self.talker.decode(embeds[:, None], self.cache)
        return produced, finished

    def _remove(self, finished: list[Row]) -> None:
        """Drop finished rows; the last live row moves into each freed place."""
        for row in finished:
            slot = self.rows.index(row)
            last = len(self.rows) - 1
            if slot != last:
                self.cache.move_row(last, slot)
                self.hidden[slot] = self.hidden[last]
                self.seen[slot] = self.seen[last]
                self.rows[slot] = self.rows[last]
            self.rows.pop()
        if finished:
            self._params = None


def _subset(params: RowParams, picked: torch.Tensor) -> RowParams:
    return RowParams(params.do_sample[picked], params.inv_temperature[picked], params.top_k[picked],
                     params.top_p[picked], params.penalty[picked], params.any_penalty)


def generate_frames(talker: Talker, prefill: Prefill, sampling: SamplingConfig, max_frames: int, seed: int,
                    should_stop: Callable[[], bool] | None = None,
                    min_frames: int = MIN_FRAMES_BEFORE_EOS) -> Iterator[torch.Tensor]:
    """One stream: frames of codes, (G,) int64 each, until EOS (allowed from frame min_frames
    on), max_frames, or should_stop()."""
    row = Row(prefill, sampling, seed, max_frames, min_frames, should_stop)
    batch = DecodeBatch(talker, max_rows=1, max_len=row.positions_needed)
    batch.admit(row)
    while batch.rows:
        produced, _ = batch.step()
        for _, frame in produced:
            yield frame


@torch.inference_mode()
def decode_stream(frames: Iterator[torch.Tensor], codec: SpeechCodec, state: DecoderState,
                  first_chunk_frames: int = 1, max_chunk_frames: int = 8) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Group frames into chunks (first_chunk_frames, then doubling up to max_chunk_frames) and
    decode each as soon as it is full. Yields (codes (n, G), audio (n * 1920,)) per chunk."""
    if first_chunk_frames < 1 or max_chunk_frames < first_chunk_frames:
        raise ValueError("need 1 <= first_chunk_frames <= max_chunk_frames")
    pending: list[torch.Tensor] = []
    target = first_chunk_frames
    for frame in frames:
        pending.append(frame)
        if len(pending) >= target:
            codes = torch.stack(pending)
            yield codes, codec.decoder(codes[None], state)[0]
            pending = []
            target = min(target * 2, max_chunk_frames)
    if pending:
        codes = torch.stack(pending)
        yield codes, codec.decoder(codes[None], state)[0]

"""Codec decoding from a fixed pool of per-stream decoder states ("slots"), on static buffers.

Every stream's decoder state (each causal conv's history, the window keys/values, the position)
lives in one row of a pool allocated once: (slots + 1, ...) tensors on the device, the last row a
scratch slot that padding rows read and write. A group of rows decodes a piece of frames in four
steps on buffers kept per (rows, frames) shape: gather the rows' slots into a work state of the
group's size, decode the codes buffer into it, scatter the work state back, copy the audio into
the output buffer. For a given shape these are the same tensors on every call and no host value
is read, so on a GPU each shape is captured once as a CUDA graph and replayed; on a CPU the very
same calls run eagerly.

Rows are padded to a bucket (the scratch slot fills them; rows never see each other in the
decoder). Frames are never padded, since a padded frame would advance the state past the chunk:
a chunk is decoded as pieces of the frame buckets (7 = 4 + 2 + 1), which the decoder's exact
streaming makes the same audio as one decode. On a CPU there are no buckets at all: a padded row
or a split chunk would only cost compute there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .codec import CodecDecoder, DecoderState
from .devices import CAPTURE_LOCK, to_device

ROW_BUCKETS = (1, 2, 4, 8, 16, 32)
FRAME_BUCKETS = (1, 2, 4, 8)
MAX_GROUP_ROWS = 8  # the rows decoded at once: more only adds memory (BENCHMARKS.md, "Codec decode in slots")


def frame_pieces(frames: int, buckets: tuple[int, ...] | None) -> list[int]:
    """A chunk's frames as the largest buckets that fit, in order (buckets include 1)."""
    if buckets is None:
        return [frames]
    pieces = []
    while frames:
        pieces.append(max(b for b in buckets if b <= frames))
        frames -= pieces[-1]
    return pieces


def row_bucket(rows: int, buckets: tuple[int, ...] | None) -> int:
    return rows if buckets is None else min(b for b in buckets if b >= rows)


@dataclass
class _Shape:
    """The static buffers of one (rows, frames) shape; `work` is shared by shapes of equal rows."""

    codes: torch.Tensor  # (R, F, Q) int64
    index: torch.Tensor  # (R,) int64: the pool slot of each row
    work: DecoderState  # (R, ...)
    audio: torch.Tensor  # (R, F * samples_per_frame)
    graph: torch.cuda.CUDAGraph | None = None


class CodecSlots:
    """A pool of `slots` decoder states and the decode of groups of them.

        slots = CodecSlots.for_device(decoder, 8)
        slot = slots.acquire(owner, primed_state)     # None when every slot is taken
        audio = slots.decode([slot, ...], codes)      # codes (N, n, Q) on the device
        slots.release(slot, owner)
    """

    def __init__(self, decoder: CodecDecoder, slots: int, *, max_group: int = MAX_GROUP_ROWS,
                 row_buckets: tuple[int, ...] | None = None, frame_buckets: tuple[int, ...] | None = None,
                 graphs: bool = False) -> None:
        if frame_buckets is not None and 1 not in frame_buckets:
            raise ValueError("frame buckets must include 1")
        self.decoder = decoder
        self.device = decoder.output_weight().device
        self.pool = decoder.new_state(slots + 1)
        self.scratch = slots
        self.owners: list[object | None] = [None] * slots
        self.max_group = max_group = min(max_group, slots)  # no graph for a group that cannot happen
        self.row_buckets = None if row_buckets is None else tuple(sorted({min(b, max_group) for b in row_buckets}
                                                                         | {max_group}))
        self.frame_buckets = frame_buckets
        self.graphs = graphs
        self._graph_pool = torch.cuda.graph_pool_handle() if graphs else None
        self._work: dict[int, DecoderState] = {}
        self._shapes: dict[tuple[int, int], _Shape] = {}

    @classmethod
    def for_device(cls, decoder: CodecDecoder, slots: int, max_group: int = MAX_GROUP_ROWS) -> CodecSlots:
        """Buckets and CUDA graphs on a GPU; exact shapes, eagerly, elsewhere."""
        if decoder.output_weight().device.type == "cuda":
            return cls(decoder, slots, max_group=max_group, row_buckets=ROW_BUCKETS, frame_buckets=FRAME_BUCKETS,
                       graphs=True)
        return cls(decoder, slots, max_group=max_group)

    # -- slots ----------------------------------------------------------------------------------

    def acquire(self, owner: object, primed: DecoderState | None = None) -> int | None:
        """A free slot for `owner`, holding `primed` (batch 1) or a fresh state; None if all are taken."""
        if None not in self.owners:
            return None
        slot = self.owners.index(None)
        self.owners[slot] = owner
        with torch.inference_mode():
            if primed is None:
                for tensor in self.pool.tensors():
                    tensor[slot].zero_()
            else:
                for tensor, source in zip(self.pool.tensors(), primed.tensors(), strict=True):
                    tensor[slot].copy_(source[0])
        return slot

    def release(self, slot: int, owner: object) -> None:
        """Free `slot` if `owner` still holds it (reclaim may have freed it already)."""
        if self.owners[slot] is owner:
            self.owners[slot] = None

    def reclaim(self, gone: Callable[[object], bool]) -> None:
        """Free the slots of owners that will never decode again (e.g. failed streams)."""
        for slot, owner in enumerate(self.owners):
            if owner is not None and gone(owner):
                self.owners[slot] = None

    @property
    def free(self) -> int:
        return self.owners.count(None)

    # -- decoding -------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode(self, slots: list[int], codes: torch.Tensor) -> torch.Tensor:
        """codes (N, n, Q) on the device, row i continuing slot slots[i] -> audio (N, n * 1920) on the
        device; the slots' states advance by n frames. One host-to-device copy (the slot ids)."""
        rows, frames = codes.shape[0], codes.shape[1]
        spf = self.decoder.cfg.samples_per_frame
        ids = to_device(torch.tensor(slots, dtype=torch.int64), self.device)
        out = torch.empty(rows, frames * spf, dtype=self.pool.keys[0].dtype, device=self.device)
        for start in range(0, rows, self.max_group):
            group = slice(start, min(start + self.max_group, rows))
            offset = 0
            for piece in frame_pieces(frames, self.frame_buckets):
                out[group, offset * spf:(offset + piece) * spf] = self._run(ids[group], codes[group, offset:offset + piece])
                offset += piece
        return out

    def _run(self, ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """ids (n,) and codes (n, F, Q) -> audio (n, F * 1920), a view of the shape's static output."""
        count, frames = codes.shape[0], codes.shape[1]
        shape = self._shape(row_bucket(count, self.row_buckets), frames)
        shape.codes[:count].copy_(codes)
        shape.index[:count].copy_(ids)
        if count < shape.index.shape[0]:
            shape.codes[count:].zero_()
            shape.index[count:].fill_(self.scratch)
        self._replay(shape)
        return shape.audio[:count]

    def _shape(self, rows: int, frames: int) -> _Shape:
        shape = self._shapes.get((rows, frames))
        if shape is None:
            if rows not in self._work:
                self._work[rows] = self.decoder.new_state(rows)
            quantizers = self.decoder.cfg.num_quantizers
            codes = torch.zeros(rows, frames, quantizers, dtype=torch.int64, device=self.device)
            index = torch.full((rows,), self.scratch, dtype=torch.int64, device=self.device)
            audio = torch.zeros(rows, frames * self.decoder.cfg.samples_per_frame, dtype=self.pool.keys[0].dtype,
                                device=self.device)
            shape = self._shapes[(rows, frames)] = _Shape(codes, index, self._work[rows], audio)
        return shape

    def bucket_shapes(self) -> list[tuple[int, int]]:
        """Every (rows, frames) shape of the buckets, largest first (none without buckets)."""
        if self.row_buckets is None or self.frame_buckets is None:
            return []
        return [(rows, frames) for rows in reversed(self.row_buckets) for frames in reversed(self.frame_buckets)]

    def allocate(self) -> None:
        """The static buffers of every bucket shape, without computing anything."""
        for rows, frames in self.bucket_shapes():
            self._shape(rows, frames)

    def _compute(self, shape: _Shape) -> None:
        """The one computation of a shape: gather the slots, decode, scatter back, audio out."""
        for pooled, worked in zip(self.pool.tensors(), shape.work.tensors()):
            torch.index_select(pooled, 0, shape.index, out=worked)
        audio = self.decoder(shape.codes, shape.work)
        for pooled, worked in zip(self.pool.tensors(), shape.work.tensors()):
            pooled.index_copy_(0, shape.index, worked)
        shape.audio.copy_(audio)

    def _replay(self, shape: _Shape) -> None:
        if not self.graphs:
            self._compute(shape)
            return
        if shape.graph is None:
            # The first call runs for real (and warms the kernels up); the capture only records.
            self._compute(shape)
            with CAPTURE_LOCK:  # one capture at a time in the process (devices.CAPTURE_LOCK)
                torch.cuda.current_stream(self.device).synchronize()
                shape.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(shape.graph, pool=self._graph_pool, capture_error_mode="thread_local"):
                    self._compute(shape)
            return
        shape.graph.replay()

    @torch.inference_mode()
    def prepare(self) -> None:
        """Every shape made (and on a GPU captured) now, largest first, on the scratch slot alone:
        no stream's state is touched, and no capture happens in the middle of a sentence."""
        quantizers = self.decoder.cfg.num_quantizers
        for rows, frames in self.bucket_shapes():
            ids = torch.full((rows,), self.scratch, dtype=torch.int64, device=self.device)
            self._run(ids, torch.zeros(rows, frames, quantizers, dtype=torch.int64, device=self.device))


def read_to_host(*tensors: torch.Tensor) -> list[np.ndarray]:
    """Device tensors as host arrays, in one wait: on CUDA through pinned buffers and one event
    (nothing else of the device is waited for); copies, so no caller holds the pinned memory."""
    if not tensors or tensors[0].device.type != "cuda":
        return [tensor.numpy(force=True).copy() for tensor in tensors]
    pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for host, tensor in zip(pinned, tensors):
        host.copy_(tensor, non_blocking=True)
    done = torch.cuda.Event()
    done.record()
    done.synchronize()
    return [host.numpy().copy() for host in pinned]

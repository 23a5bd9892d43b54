"""How a batch runs generate.frame_step, the one frame step: called at exact shapes (eager),
called at a few padded static shapes (bucketed), compiled by torch.compile, or captured as one CUDA
graph per bucket and replayed. Each of these runs the same function, so each makes the same codes.

Compiled, the step is traced whole (fullgraph: a graph break or a host sync anywhere in it is an
error) and fused by Inductor into few kernels. It is shaped by the batch's step plan
(sampling.DrawPlan per stage: greedy only, top-k via torch.topk, top-p only when some row asks for
it, the repetition penalty only when some row has one), known on the host whenever the batch's
rows change; each plan is its own graph.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch
import torch._dynamo

from .devices import CAPTURE_LOCK
from .generate import DecodeBatch, frame_codes, frame_step, talker_decode
from .sampling import DrawPlan, RowParams, SamplingConfig
from .talker import Talker

_LOGGER = logging.getLogger(__name__)
# Shapes x plans x batches each trace once; the default limit (8) would silently fall back to eager.
RECOMPILE_LIMIT = 256
# Automatic dynamic shapes: the first shape compiles static, the next one that differs in rows or
# cache length compiles once more with that size symbolic, and it then serves every bucket (each
# still captured at its own concrete size). dynamic=False would compile every (rows, kv_len)
# bucket, and one compile at the 1.7B layer counts takes many minutes on a small CPU (BENCHMARKS.md,
# "Kernels per frame step").
DYNAMIC = None

_compiled: dict[str, object] = {}
_compiled_lock = threading.Lock()


def compiled(function):
    """`function` under torch.compile: fullgraph (no graph break, so no host sync inside), shapes as
    DYNAMIC says, and no CUDA graphs of Inductor's own (CudaGraphRunner captures the whole step
    itself). One wrapper per function."""
    with _compiled_lock:
        if function.__name__ not in _compiled:
            config = torch._dynamo.config
            config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
            config.accumulated_recompile_limit = max(config.accumulated_recompile_limit, RECOMPILE_LIMIT)
            _compiled[function.__name__] = torch.compile(function, fullgraph=True, dynamic=DYNAMIC)
        return _compiled[function.__name__]


class FrameStep:
    """generate.frame_step over rows 0..rows-1 of a batch's buffers, with the batch's step plan.

    compiled=False calls it. compiled=True with whole: the step is one compiled graph (what a CUDA
    graph captures); without whole only its frame_codes part is compiled and the talker's decode
    step (frame_step's other half) is called (on a CPU, where launches are cheap and the code
    predictor is most of a frame: a smaller graph, compiled sooner, serving every cache length)."""

    def __init__(self, compiled: bool = False, whole: bool = True) -> None:
        self.compiled, self.whole = compiled, whole

    def __call__(self, batch: DecodeBatch, rows: int, kv_len: int, params: tuple[RowParams, RowParams]) -> torch.Tensor:
        if not self.compiled:
            return batch.eager_step(rows, kv_len, params)
        inputs, plan = batch.step_args(rows, params), batch.step_plan()
        if self.whole:
            return self._call(frame_step, *inputs, batch.cache, batch.predictor_cache, kv_len, plan)
        frames, embeds = self._call(frame_codes, *inputs, batch.predictor_cache, plan)
        talker_decode(batch.talker, batch.hidden[:rows], batch.step_ints[:rows], embeds, batch.cache, kv_len)
        return frames

    def _call(self, function, *args):
        try:
            return compiled(function)(*args)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            # e.g. no C++ compiler or no Triton on this machine: the same step, uncompiled, still works
            _LOGGER.warning("Compiling the frame step failed, running it uncompiled: %s", err)
            self.compiled = False
            return function(*args)


# What a runner calls for a step: FrameStep, or anything with its signature.
StepFunction = Callable[[DecodeBatch, int, int, tuple[RowParams, RowParams]], torch.Tensor]


class StepRunner:
    """How a batch runs its step: directly, padded to fixed buckets, or as CUDA graph replays."""

    def run(self, batch: DecodeBatch, count: int, kv_len: int) -> torch.Tensor:
        raise NotImplementedError

    def prepare(self, batch: DecodeBatch) -> None:
        """Called once on the empty batch, before any row is admitted."""

    def buffers_changing(self, batch: DecodeBatch) -> None:
        """The batch is about to grow its cache or text table: new tensors in place of those a
        step has run on."""


class EagerRunner(StepRunner):
    """A step function at the batch's exact shapes (a batch without a runner calls FrameStep's
    uncompiled step, DecodeBatch.eager_step, itself)."""

    def __init__(self, step: StepFunction | None = None) -> None:
        self.step = step or FrameStep()

    def run(self, batch: DecodeBatch, count: int, kv_len: int) -> torch.Tensor:
        return self.step(batch, count, kv_len, batch.row_params())


def _bucket(value: int, buckets: tuple[int, ...]) -> int:
    return next(b for b in buckets if b >= value)


class BucketedRunner(StepRunner):
    """The step on the batch's buffers padded to a few (rows, kv_len) shapes: the computation a CUDA
    graph replays. Padding rows sit in free cache rows; they write there and are ignored.

    warm_plans: the step plans (DecodeBatch.step_plan) that prepare() runs every bucket with (the
    plan of an empty batch, all greedy, when none are given)."""

    def __init__(self, batch: DecodeBatch, row_buckets: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
                 len_buckets: tuple[int, ...] | None = None, step: StepFunction | None = None,
                 warm_plans: tuple[tuple[DrawPlan, DrawPlan], ...] = ()) -> None:
        rows, device = batch.max_rows, batch.device
        self.row_buckets = tuple(sorted({min(b, rows) for b in row_buckets} | {rows}))
        lengths = len_buckets or tuple(128 * 2 ** i for i in range(12))
        # Each cache capacity a bucket: a step's kv_len bucket then never exceeds the cache.
        self.len_buckets = tuple(sorted({min(b, batch.max_len) for b in lengths} | set(batch.kv_steps)))
        self.step = step or FrameStep()
        self.warm_plans = warm_plans
        greedy = SamplingConfig.greedy()
        self.params = (RowParams.stack([greedy.talker] * rows, batch.talker.cfg.vocab_size, device),
                       RowParams.stack([greedy.predictor] * rows, batch.talker.code_predictor.cfg.vocab_size, device))
        self._params_of: tuple[RowParams, RowParams] | None = None

    def _load(self, batch: DecodeBatch, count: int) -> None:
        current = batch.row_params()
        if current is not self._params_of:  # a new batch composition: new per-row parameters
            for static, fresh in zip(self.params, current):
                for static_field, fresh_field in zip(static.fields(), fresh.fields()):
                    static_field[:count].copy_(fresh_field)
            self._params_of = current

    def run(self, batch: DecodeBatch, count: int, kv_len: int) -> torch.Tensor:
        self._load(batch, count)
        rows, length = _bucket(count, self.row_buckets), _bucket(kv_len, self.len_buckets)
        return self.execute(batch, rows, length)[:count]

    def prepare(self, batch: DecodeBatch) -> None:
        """Every bucket the cache holds now once, so that a CUDA graph runner captures them all now
        (at start-up) and not in the middle of somebody's sentence (lengths past the cache come
        after it grows, and are captured when first used). No row is live: what the steps write into
        the caches and the row buffers is overwritten when a row is admitted. Largest first: the
        smaller graphs then fit in the memory the larger ones' captures freed in the shared pool."""
        lengths = [length for length in self.len_buckets if length <= batch.cache.capacity]
        try:
            for plan in self.warm_plans or (None,):
                batch._plan = plan
                for rows in reversed(self.row_buckets):
                    for length in reversed(lengths):
                        self.execute(batch, rows, length)
        finally:
            batch._plan = None

    def execute(self, batch: DecodeBatch, rows: int, kv_len: int) -> torch.Tensor:
        params = (self.params[0].rows(rows), self.params[1].rows(rows))
        return self.step(batch, rows, kv_len, params)

    def shape_key(self, batch: DecodeBatch, rows: int, kv_len: int) -> tuple:
        """What makes one captured graph differ from another."""
        return rows, kv_len, batch.step_plan()


class CudaGraphRunner(BucketedRunner):
    """Captures one CUDA graph per bucket (and step plan) on first use and replays it after.

    The first step of a bucket runs eagerly (it is a real step, and it warms the kernels up, or
    compiles them); the capture that follows only records. All graphs share one memory pool."""

    def __init__(self, batch: DecodeBatch, **options) -> None:
        super().__init__(batch, **options)
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def execute(self, batch: DecodeBatch, rows: int, kv_len: int) -> torch.Tensor:
        key = self.shape_key(batch, rows, kv_len)
        captured = self.graphs.get(key)
        if captured is not None:
            graph, frames = captured
            graph.replay()
            return frames.clone()  # the graph's output buffer is overwritten by the next replay
        frames = super().execute(batch, rows, kv_len)
        with CAPTURE_LOCK:  # one capture at a time in the process (devices.CAPTURE_LOCK)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            # thread_local: the codec thread keeps allocating and launching while this thread captures
            with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
                static_frames = super().execute(batch, rows, kv_len)
        self.graphs[key] = (graph, static_frames)
        return frames

    def buffers_changing(self, batch: DecodeBatch) -> None:
        """Every graph replays on the cache and text table about to be freed (their memory then
        reused): drop them all; each bucket is captured again on its next use, on the new buffers,
        into a fresh memory pool. Not the old one: with no graph left its use count is 0, and the
        allocator keeps it while a block of it lives (the cuBLAS workspace the first capture on the
        capture stream allocated there lives for ever), so a capture into it again fails PyTorch's
        assert `use_count > 0` (CUDACachingAllocator create_or_incref_pool)."""
        self.graphs.clear()
        self.pool = torch.cuda.graph_pool_handle()


def step_plan_of(talker: Talker, sampling: SamplingConfig) -> tuple[DrawPlan, DrawPlan]:
    """The plan of a batch whose rows all sample with `sampling` (what a server warms up)."""
    return (DrawPlan.of([sampling.talker], talker.cfg.vocab_size),
            DrawPlan.of([sampling.predictor], talker.code_predictor.cfg.vocab_size))


RUNNERS = ("eager", "bucketed", "compiled", "cuda-graphs")


def make_runner(name: str, batch: DecodeBatch, compile_steps: bool = True,
                warm_plans: tuple[tuple[DrawPlan, DrawPlan], ...] = (), **buckets) -> StepRunner:
    """eager: the step at exact shapes; bucketed: the step at padded static shapes (what a CUDA graph
    replays, checkable on CPU); compiled: bucketed, with the step's frame_codes half (the draws and
    the code predictor's 15 steps) compiled (the CPU's fast path); cuda-graphs: the whole step
    (compiled when compile_steps) captured as one CUDA graph per bucket and plan."""
    if name == "eager":
        return EagerRunner()
    if name == "bucketed":
        return BucketedRunner(batch, warm_plans=warm_plans, **buckets)
    if name == "compiled":
        return BucketedRunner(batch, step=FrameStep(compiled=True, whole=False), warm_plans=warm_plans, **buckets)
    if name == "cuda-graphs":
        return CudaGraphRunner(batch, step=FrameStep(compiled=compile_steps, whole=True), warm_plans=warm_plans,
                               **buckets)
    raise ValueError(f"runner must be one of {', '.join(RUNNERS)} or auto")

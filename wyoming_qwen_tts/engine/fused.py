"""One frame step as one compiled graph: the talker's draw, the code predictor's 15 steps with
their draws, and the talker's decode step, traced whole by torch.compile (fullgraph: a graph break
or a host sync anywhere in it is an error) and fused by Inductor into few kernels, which
CudaGraphRunner then captures as a single CUDA graph per bucket.

The step is shaped by the batch's step plan (sampling.DrawPlan per stage: greedy only, top-k via
torch.topk, top-p only when some row asks for it, the repetition penalty only when some row has
one), known on the host whenever the batch's rows change; each plan is its own graph.
"""

from __future__ import annotations

import logging
import threading

import torch
import torch._dynamo

from .generate import POSITION, BucketedRunner, CudaGraphRunner, DecodeBatch, EagerRunner, StepRunner, step_inputs
from .layers import KVCache, RowPositions, block_step
from .predictor import CodePredictor
from .sampling import DrawPlan, RowParams, SamplingConfig, apply_repetition_penalty, choose_planned, draw_keys
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


def _draw(logits: torch.Tensor, seen: torch.Tensor | None, rows: RowParams, keys: torch.Tensor,
          plan: DrawPlan) -> torch.Tensor:
    if plan.penalty:
        logits = apply_repetition_penalty(logits, seen, rows.penalty)
    return choose_planned(logits, rows, keys, plan)


def predict_codes(predictor: CodePredictor, talker_hidden: torch.Tensor, first_code_embedding: torch.Tensor,
                  cache: KVCache, rows: RowParams, seeds: torch.Tensor, frame_index: torch.Tensor,
                  plan: DrawPlan) -> torch.Tensor:
    """CodePredictor.predict's codes (B, G-1) without host state: positions are loop constants."""
    cfg = predictor.cfg
    batch = talker_hidden.shape[0]
    groups = cfg.num_code_groups - 1
    seen = torch.zeros(batch, cfg.vocab_size, dtype=torch.bool, device=talker_hidden.device) if plan.penalty else None
    x = torch.stack((talker_hidden, first_code_embedding), dim=1)
    start = 0
    codes = []
    for group in range(groups):
        hidden = block_step(predictor.model.layers, predictor.small_to_mtp_projection(x), cache, slice(0, batch),
                            start, cfg.rope_theta, cfg.head_dim)
        start += x.shape[1]
        logits = predictor.lm_head[group](predictor.model.norm(hidden[:, -1])).float()
        code = _draw(logits, seen, rows, draw_keys(seeds, frame_index * cfg.num_code_groups + group + 1), plan)
        if seen is not None:
            seen.scatter_(1, code[:, None], True)
        codes.append(code)
        if group + 1 < groups:
            x = predictor.model.codec_embedding[group](code)[:, None]
    return torch.stack(codes, dim=1)


def fused_codes(talker: Talker, hidden: torch.Tensor, seen: torch.Tensor, ints: torch.Tensor,
                text_table: torch.Tensor, talker_fields: tuple[torch.Tensor, ...],
                predictor_fields: tuple[torch.Tensor, ...], banned: torch.Tensor, eos_column: torch.Tensor,
                predictor_cache: KVCache, plan: tuple[DrawPlan, DrawPlan]) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's frames (R, G) and the talker's next input (R, 1, H): everything but the talker's
    decode step, so nothing here depends on the cache length (one graph per rows x plan)."""
    inputs = step_inputs(ints, text_table)
    talker_rows, predictor_rows = RowParams(*talker_fields), RowParams(*predictor_fields)
    talker_plan, predictor_plan = plan
    groups = talker.cfg.num_code_groups
    logits = talker.codec_head(hidden).float()
    if talker_plan.penalty:
        logits = apply_repetition_penalty(logits, seen, talker_rows.penalty)
    logits = logits.masked_fill(banned | (inputs.hold_eos[:, None] & eos_column), float("-inf"))
    first = choose_planned(logits, talker_rows, draw_keys(inputs.seeds, inputs.frame_index * groups), talker_plan)
    seen.scatter_(1, first[:, None], True)
    rest = predict_codes(talker.code_predictor, hidden, talker.embed_codec(first), predictor_cache,
                         predictor_rows, inputs.seeds, inputs.frame_index, predictor_plan)
    frames = torch.cat((first[:, None], rest), dim=1)
    return frames, (talker.embed_frames(frames) + inputs.texts)[:, None]


def talker_decode(talker: Talker, hidden: torch.Tensor, ints: torch.Tensor, embeds: torch.Tensor, cache: KVCache,
                  kv_len: int) -> None:
    """The talker's decode step: next hidden states into `hidden` (R, H), in place."""
    hidden.copy_(talker.decode(embeds, cache, RowPositions(ints[:, POSITION], kv_len)))


def fused_frame_step(talker: Talker, hidden: torch.Tensor, seen: torch.Tensor, ints: torch.Tensor,
                     text_table: torch.Tensor, talker_fields: tuple[torch.Tensor, ...],
                     predictor_fields: tuple[torch.Tensor, ...], banned: torch.Tensor, eos_column: torch.Tensor,
                     cache: KVCache, predictor_cache: KVCache, kv_len: int,
                     plan: tuple[DrawPlan, DrawPlan]) -> torch.Tensor:
    """generate.frame_step for rows 0..R-1 (the same codes), cut to the plan, from packed inputs."""
    frames, embeds = fused_codes(talker, hidden, seen, ints, text_table, talker_fields, predictor_fields, banned,
                                 eos_column, predictor_cache, plan)
    talker_decode(talker, hidden, ints, embeds, cache, kv_len)
    return frames


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


class FusedStep:
    """A generate.StepFunction running the fused step on a batch's buffers.

    whole: the step is one graph (what a CUDA graph captures); else only fused_codes is, and the
    talker's decode step runs eagerly (on a CPU, where launches are cheap and the predictor is
    most of a frame: a smaller graph, compiled sooner). compiled=False runs the same code eagerly."""

    planned = True

    def __init__(self, compiled: bool = True, whole: bool = True) -> None:
        self.compiled, self.whole = compiled, whole

    def __call__(self, batch: DecodeBatch, rows: int, kv_len: int, params: tuple[RowParams, RowParams]) -> torch.Tensor:
        hidden, ints = batch.hidden[:rows], batch.step_ints[:rows]
        common = (batch.talker, hidden, batch.seen[:rows], ints, batch.text_table[:rows], params[0].fields(),
                  params[1].fields(), batch.banned, batch.eos_column)
        if self.whole:
            return self._call(fused_frame_step, *common, batch.cache, batch.predictor_cache, kv_len, batch.step_plan())
        frames, embeds = self._call(fused_codes, *common, batch.predictor_cache, batch.step_plan())
        talker_decode(batch.talker, hidden, ints, embeds, batch.cache, kv_len)
        return frames

    def _call(self, function, *args):
        if not self.compiled:
            return function(*args)
        try:
            return compiled(function)(*args)
        except torch._dynamo.exc.BackendCompilerFailed as err:
            # e.g. no C++ compiler or no Triton on this machine: the same step, unfused, still works
            _LOGGER.warning("Compiling the frame step failed, running it uncompiled: %s", err)
            self.compiled = False
            return function(*args)


def step_plan_of(talker: Talker, sampling: SamplingConfig) -> tuple[DrawPlan, DrawPlan]:
    """The plan of a batch whose rows all sample with `sampling` (what a server warms up)."""
    return (DrawPlan.of([sampling.talker], talker.cfg.vocab_size),
            DrawPlan.of([sampling.predictor], talker.code_predictor.cfg.vocab_size))


RUNNERS = ("eager", "bucketed", "compiled", "cuda-graphs")


def make_runner(name: str, batch: DecodeBatch, compile_steps: bool = True,
                warm_plans: tuple[tuple[DrawPlan, DrawPlan], ...] = (), **buckets) -> StepRunner:
    """eager: frame_step at exact shapes; bucketed: frame_step at padded static shapes (what a CUDA
    graph replays, checkable on CPU); compiled: bucketed, with the code predictor's 15 steps and the
    draws as one compiled graph (the CPU's fast path); cuda-graphs: the whole fused step (compiled
    when compile_steps) captured as one CUDA graph per bucket and plan."""
    if name == "eager":
        return EagerRunner()
    if name == "bucketed":
        return BucketedRunner(batch, **buckets)
    if name == "compiled":
        return BucketedRunner(batch, step=FusedStep(compiled=True, whole=False), warm_plans=warm_plans, **buckets)
    if name == "cuda-graphs":
        return CudaGraphRunner(batch, step=FusedStep(compiled=compile_steps, whole=True), warm_plans=warm_plans,
                               **buckets)
    raise ValueError(f"runner must be one of {', '.join(RUNNERS)} or auto")

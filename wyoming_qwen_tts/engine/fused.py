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

from .generate import DecodeBatch, step_inputs
from .layers import KVCache, RowPositions, block_step
from .predictor import CodePredictor
from .sampling import DrawPlan, RowParams, apply_repetition_penalty, choose_planned, draw_keys
from .talker import Talker

_LOGGER = logging.getLogger(__name__)
# Buckets x plans x batches each trace once; the default limit (8) would silently fall back to eager.
RECOMPILE_LIMIT = 256


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


def fused_frame_step(talker: Talker, hidden: torch.Tensor, seen: torch.Tensor, ints: torch.Tensor,
                     text_table: torch.Tensor, talker_fields: tuple[torch.Tensor, ...],
                     predictor_fields: tuple[torch.Tensor, ...], banned: torch.Tensor, eos_column: torch.Tensor,
                     cache: KVCache, predictor_cache: KVCache, kv_len: int,
                     plan: tuple[DrawPlan, DrawPlan]) -> torch.Tensor:
    """generate.frame_step for rows 0..R-1 (the same codes), cut to the plan, from packed inputs."""
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
    embeds = talker.embed_frames(frames) + inputs.texts
    hidden.copy_(talker.decode(embeds[:, None], cache, RowPositions(inputs.positions, kv_len)))
    return frames


_compiled = None
_compiled_lock = threading.Lock()


def compiled_frame_step():
    """fused_frame_step under torch.compile: fullgraph (no graph break, so no host sync inside),
    static shapes (one graph per rows x kv_len x plan, as CUDA graphs need anyway), and no CUDA
    graphs of Inductor's own (CudaGraphRunner captures the whole step itself)."""
    global _compiled
    with _compiled_lock:
        if _compiled is None:
            import torch._dynamo

            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            torch._dynamo.config.accumulated_recompile_limit = max(
                torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT)
            _compiled = torch.compile(fused_frame_step, fullgraph=True, dynamic=False)
        return _compiled


class FusedStep:
    """A generate.StepFunction running fused_frame_step on a batch's buffers, compiled or not."""

    planned = True

    def __init__(self, compiled: bool = True) -> None:
        self.compiled = compiled

    def __call__(self, batch: DecodeBatch, rows: int, kv_len: int, params: tuple[RowParams, RowParams]) -> torch.Tensor:
        function = compiled_frame_step() if self.compiled else fused_frame_step
        return function(batch.talker, batch.hidden[:rows], batch.seen[:rows], batch.step_ints[:rows],
                        batch.text_table[:rows], params[0].fields(), params[1].fields(), batch.banned,
                        batch.eos_column, batch.cache, batch.predictor_cache, kv_len, batch.step_plan())

"""The code predictor: given the talker's hidden state and the first code of a frame, it
produces the frame's other 15 codes, one small transformer step each.

The official code runs a nested transformers generate() per frame for this; here it is a plain
loop over a 16-position static cache, with no per-step allocation beyond the step itself, and
part of the one frame step (generate.frame_step).
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import PredictorConfig
from .layers import KVCache, RMSNorm, block_step, decoder_stack
from .sampling import DrawPlan, RowParams, apply_repetition_penalty, choose_planned, draw_keys


class PredictorModel(nn.Module):
    def __init__(self, cfg: PredictorConfig, talker_hidden: int) -> None:
        super().__init__()
        self.layers = decoder_stack(cfg)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        # Embeddings of codebooks 1..15 live in the talker's width; the projection follows.
        self.codec_embedding = nn.ModuleList(
            nn.Embedding(cfg.vocab_size, talker_hidden) for _ in range(cfg.num_code_groups - 1)
        )


class CodePredictor(nn.Module):
    def __init__(self, cfg: PredictorConfig, talker_hidden: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = PredictorModel(cfg, talker_hidden)
        self.lm_head = nn.ModuleList(
            nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False) for _ in range(cfg.num_code_groups - 1)
        )
        if cfg.hidden_size != talker_hidden:
            self.small_to_mtp_projection: nn.Module = nn.Linear(talker_hidden, cfg.hidden_size, bias=True)
        else:
            self.small_to_mtp_projection = nn.Identity()

    def new_cache(self, rows: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        cfg = self.cfg
        return KVCache(cfg.num_layers, rows, cfg.num_kv_heads, cfg.num_code_groups, cfg.head_dim, device, dtype)

    def predict(self, talker_hidden: torch.Tensor, first_code_embedding: torch.Tensor, cache: KVCache,
                rows: RowParams, seeds: torch.Tensor, frame_index: torch.Tensor, plan: DrawPlan) -> torch.Tensor:
        """Codes of groups 1..G-1, (B, G-1), for talker hidden (B, H) and group-0 embedding (B, H),
        drawn as `plan` says (sampling.DrawPlan). No host state is read or written (positions are
        loop constants, cache.lengths is left alone), so the frame step holding it compiles whole.

        Draw g of frame f of a row uses the noise key (seed, f * G + g): group 0 is the talker's."""
        cfg = self.cfg
        batch = talker_hidden.shape[0]
        groups = cfg.num_code_groups - 1
        seen = None
        if plan.penalty:
            seen = torch.zeros(batch, cfg.vocab_size, dtype=torch.bool, device=talker_hidden.device)
        x = torch.stack((talker_hidden, first_code_embedding), dim=1)  # (B, 2, H)
        start = 0
        codes = []
        for group in range(groups):
            hidden = block_step(self.model.layers, self.small_to_mtp_projection(x), cache, slice(0, batch), start,
                                cfg.rope_theta, cfg.head_dim)
            start += x.shape[1]
            logits = self.lm_head[group](self.model.norm(hidden[:, -1])).float()
            keys = draw_keys(seeds, frame_index * cfg.num_code_groups + group + 1)
            code = draw(logits, seen, rows, keys, plan)
            if seen is not None:
                seen.scatter_(1, code[:, None], True)
            codes.append(code)
            if group + 1 < groups:
                x = self.model.codec_embedding[group](code)[:, None]  # (B, 1, H)
        return torch.stack(codes, dim=1)


def draw(logits: torch.Tensor, seen: torch.Tensor | None, rows: RowParams, keys: torch.Tensor,
         plan: DrawPlan) -> torch.Tensor:
    """One code per row of float32 logits (R, V): the repetition penalty when the plan has one, then
    the plan's draw. The talker's draw and the predictor's 15 are this one function."""
    if plan.penalty:
        logits = apply_repetition_penalty(logits, seen, rows.penalty)
    return choose_planned(logits, rows, keys, plan)

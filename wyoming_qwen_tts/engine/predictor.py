"""The code predictor: given the talker's hidden state and the first code of a frame, it
produces the frame's other 15 codes, one small transformer step each.

The official code runs a nested transformers generate() per frame for this; here it is a plain
loop over a 16-position static cache, with no per-step allocation beyond the step itself.
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import PredictorConfig
from .layers import KVCache, RMSNorm, decoder_stack, run_layers
from .sampling import RowParams, apply_repetition_penalty, choose, draw_keys


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

    def _step(self, talker_space: torch.Tensor, cache: KVCache) -> torch.Tensor:
        x = run_layers(self.model.layers, self.small_to_mtp_projection(talker_space), cache,
                       self.cfg.rope_theta, self.cfg.head_dim)
        return self.model.norm(x[:, -1])

    def predict(self, talker_hidden: torch.Tensor, first_code_embedding: torch.Tensor, cache: KVCache,
                rows: RowParams, seeds: torch.Tensor, frame_index: torch.Tensor) -> torch.Tensor:
        """Codes of groups 1..G-1, (B, G-1), for talker hidden (B, H) and group-0 embedding (B, H).

        Draw g of frame f of a row uses the noise key (seed, f * G + g): group 0 is the talker's."""
        batch = talker_hidden.shape[0]
        cache.lengths[:batch] = [0] * batch
        groups = self.cfg.num_code_groups - 1
        codes = []
        # Always applied (a penalty of 1 changes nothing), so the step has one shape for any batch.
        seen = torch.zeros(batch, self.cfg.vocab_size, dtype=torch.bool, device=talker_hidden.device)
        x = torch.stack((talker_hidden, first_code_embedding), dim=1)
        for group in range(groups):
            logits = self.lm_head[group](self._step(x, cache)).float()
            logits = apply_repetition_penalty(logits, seen, rows.penalty)
            code = choose(logits, rows, draw_keys(seeds, frame_index * self.cfg.num_code_groups + group + 1))
            seen.scatter_(1, code[:, None], True)
            codes.append(code)
            if group + 1 < groups:
                x = self.model.codec_embedding[group](code)[:, None]
        return torch.stack(codes, dim=1)

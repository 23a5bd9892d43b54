"""The talker: a Qwen3 decoder over summed text + codec embeddings that predicts each frame's
first code, plus the model container whose parameter names match the released checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import ModelConfig, TalkerConfig
from .devices import to_device
from .layers import KVCache, RMSNorm, RowPositions, decode_rows, decoder_stack, run_layers
from .predictor import CodePredictor
from .speaker import SpeakerEncoder


class TextProjection(nn.Module):
    """Two-layer MLP from the text embedding width to the talker width."""

    def __init__(self, text_hidden: int, hidden: int) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(text_hidden, text_hidden, bias=True)
        self.linear_fc2 = nn.Linear(text_hidden, hidden, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(F.silu(self.linear_fc1(x)))


class TalkerModel(nn.Module):
    def __init__(self, cfg: TalkerConfig) -> None:
        super().__init__()
        self.layers = decoder_stack(cfg)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.codec_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.text_embedding = nn.Embedding(cfg.text_vocab_size, cfg.text_hidden_size)


class Talker(nn.Module):
    def __init__(self, model_cfg: ModelConfig) -> None:
        super().__init__()
        cfg = model_cfg.talker
        self.cfg = cfg
        self.model = TalkerModel(cfg)
        self.text_projection = TextProjection(cfg.text_hidden_size, cfg.hidden_size)
        self.codec_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.code_predictor = CodePredictor(model_cfg.predictor, cfg.hidden_size)

    def new_cache(self, rows: int, max_len: int, device: torch.device, dtype: torch.dtype) -> KVCache:
        cfg = self.cfg
        return KVCache(cfg.num_layers, rows, cfg.num_kv_heads, max_len, cfg.head_dim, device, dtype)

    def embed_text(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Projected text embeddings, on the projection's device. The table may live in host
        memory (the loader keeps it there), as should the ids: only the looked-up rows travel."""
        table = self.model.text_embedding
        rows = table(token_ids.to(table.weight.device))
        return self.text_projection(to_device(rows, self.text_projection.linear_fc1.weight.device))

    def embed_codec(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.model.codec_embedding(token_ids)

    def embed_frames(self, codes: torch.Tensor) -> torch.Tensor:
        """Summed embeddings of all code groups, (..., H) for codes (..., G)."""
        parts = [self.model.codec_embedding(codes[..., 0])]
        parts += [emb(codes[..., g + 1]) for g, emb in enumerate(self.code_predictor.model.codec_embedding)]
        return torch.stack(parts, dim=-2).sum(dim=-2)

    def prefill(self, embeds: torch.Tensor, cache: KVCache, row: int) -> torch.Tensor:
        """Final-norm hidden states (B, T, H) for prompts (B, T, H) appended to cache rows row..row+B-1."""
        x = run_layers(self.model.layers, embeds, cache, self.cfg.rope_theta, self.cfg.head_dim, row=row)
        return self.model.norm(x)

    def decode(self, embeds: torch.Tensor, cache: KVCache, at: RowPositions) -> torch.Tensor:
        """Final-norm hidden states (R, H) for one new position (R, 1, H) of cache rows 0..R-1."""
        x = decode_rows(self.model.layers, embeds, cache, self.cfg.rope_theta, self.cfg.head_dim, at)
        return self.model.norm(x[:, 0])


class Qwen3TTSModel(nn.Module):
    """talker.* and speaker_encoder.* as in the released model.safetensors."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.talker = Talker(cfg)
        self.speaker_encoder = SpeakerEncoder(cfg.speaker_encoder) if cfg.speaker_encoder is not None else None

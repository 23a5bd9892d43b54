"""The speech tokenizer's encoder: Mimi (SEANet convs, transformer, downsampling, split RVQ).

It runs once per cloned voice, to turn the reference recording into codes. We own it rather
than borrow transformers' MimiModel because that class changed its module layout (and with it
the checkpoint key names) within transformers 5.x; this one reads the released
speech_tokenizer/model.safetensors keys (encoder.*) directly and computes what transformers
4.57.3 computes for the official code: full causal attention in the transformer (the config's
sliding_window is not applied there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .layers import Attention, LayerScale, rope_cos_sin


@dataclass(frozen=True)
class MimiConfig:
    sampling_rate: int = 24000
    frame_rate: float | None = None
    audio_channels: int = 1
    hidden_size: int = 512
    num_filters: int = 64
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 6, 5, 4)
    kernel_size: int = 7
    last_kernel_size: int = 3
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "constant"
    compress: int = 2
    codebook_size: int = 2048
    codebook_dim: int = 256
    num_quantizers: int = 32
    use_conv_shortcut: bool = False
    vector_quantization_hidden_dimension: int = 256
    num_semantic_quantizers: int = 1
    num_hidden_layers: int = 8
    intermediate_size: int = 2048
    num_attention_heads: int = 8
    num_key_value_heads: int = 8
    head_dim: int | None = None
    hidden_act: str = "gelu"
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    layer_scale_initial_scale: float = 0.01
    attention_bias: bool = False

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "MimiConfig":
        values = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        if values.get("frame_rate") is None and raw.get("_frame_rate") is not None:
            values["frame_rate"] = raw["_frame_rate"]
        if "upsampling_ratios" in values:
            values["upsampling_ratios"] = tuple(values["upsampling_ratios"])
        config = cls(**values)
        if not config.use_causal_conv:
            raise ValueError("only causal Mimi encoders are supported")
        if config.hidden_act != "gelu":
            raise ValueError(f"Mimi hidden_act {config.hidden_act!r} is not supported (only gelu)")
        return config

    @property
    def heads_dim(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def encodec_frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / math.prod(self.upsampling_ratios))

    @property
    def downsample_stride(self) -> int:
        frame_rate = self.frame_rate or self.sampling_rate / (math.prod(self.upsampling_ratios) * 2)
        return int(self.encodec_frame_rate / frame_rate)


class MimiConv(nn.Module):
    """Causal Conv1d: left padding of kernel - stride, plus right padding up to a whole last frame."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1,
                 pad_mode: str = "constant", bias: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride, dilation=dilation, bias=bias)
        self.stride = stride
        self.kernel = (kernel - 1) * dilation + 1
        self.padding = self.kernel - stride
        self.pad_mode = pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        frames = math.ceil((length - self.kernel + self.padding) / self.stride + 1) - 1
        extra = frames * self.stride + self.kernel - self.padding - length
        mode = "constant" if self.pad_mode in ("constant", "zero") else self.pad_mode
        return self.conv(F.pad(x, (self.padding, extra), mode=mode))


class MimiResnetBlock(nn.Module):
    def __init__(self, cfg: MimiConfig, dim: int, dilation: int) -> None:
        super().__init__()
        hidden = dim // cfg.compress
        self.block = nn.ModuleList([
            nn.ELU(), MimiConv(dim, hidden, cfg.residual_kernel_size, dilation=dilation, pad_mode=cfg.pad_mode),
            nn.ELU(), MimiConv(hidden, dim, 1, pad_mode=cfg.pad_mode),
        ])
        self.shortcut = MimiConv(dim, dim, 1, pad_mode=cfg.pad_mode) if cfg.use_conv_shortcut else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(x) if self.shortcut is not None else x
        for layer in self.block:
            x = layer(x)
        return residual + x


class SEANetEncoder(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [MimiConv(cfg.audio_channels, cfg.num_filters, cfg.kernel_size, pad_mode=cfg.pad_mode)]
        scale = 1
        for ratio in reversed(cfg.upsampling_ratios):
            channels = scale * cfg.num_filters
            layers += [MimiResnetBlock(cfg, channels, cfg.dilation_growth_rate ** j) for j in range(cfg.num_residual_layers)]
            layers += [nn.ELU(), MimiConv(channels, channels * 2, ratio * 2, stride=ratio, pad_mode=cfg.pad_mode)]
            scale *= 2
        layers += [nn.ELU(), MimiConv(scale * cfg.num_filters, cfg.hidden_size, cfg.last_kernel_size, pad_mode=cfg.pad_mode)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MimiMLP(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class MimiTransformerLayer(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.heads_dim,
                                   qk_norm_eps=None, bias=cfg.attention_bias)
        self.mlp = MimiMLP(cfg)
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.post_attention_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.self_attn_layer_scale = LayerScale(cfg.hidden_size)
        self.mlp_layer_scale = LayerScale(cfg.hidden_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self.self_attn.project(self.input_layernorm(x), cos, sin)
        x = x + self.self_attn_layer_scale(self.self_attn.attend(q, k, v, None, causal=True))
        return x + self.mlp_layer_scale(self.mlp(self.post_attention_layernorm(x)))


class MimiTransformer(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(MimiTransformerLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        cos, sin = rope_cos_sin(positions, self.cfg.heads_dim, self.cfg.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return x


class MimiCodebook(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("initialized", torch.ones(1))
        self.register_buffer("cluster_usage", torch.ones(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))

    def table(self) -> torch.Tensor:
        return self.embed_sum / self.cluster_usage.clamp(min=1e-5)[:, None]


class _MimiVQ(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.codebook = MimiCodebook(size, dim)


class MimiRVQ(nn.Module):
    def __init__(self, cfg: MimiConfig, count: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_MimiVQ(cfg.codebook_size, cfg.codebook_dim) for _ in range(count))
        vq_dim = cfg.vector_quantization_hidden_dimension
        if vq_dim != cfg.hidden_size:
            self.input_proj = nn.Conv1d(cfg.hidden_size, vq_dim, 1, bias=False)
            self.output_proj = nn.Conv1d(vq_dim, cfg.hidden_size, 1, bias=False)
        else:
            self.input_proj = self.output_proj = None

    def encode(self, latents: torch.Tensor, count: int) -> torch.Tensor:
        """latents (B, hidden, T) -> codes (B, count, T) by greedy nearest-centroid residual coding."""
        residual = self.input_proj(latents) if self.input_proj is not None else latents
        residual = residual.transpose(1, 2)  # (B, T, D)
        codes = []
        for layer in self.layers[:count]:
            table = layer.codebook.table()
            flat = residual.reshape(-1, residual.shape[-1])
            index = torch.cdist(flat[None].float(), table[None].float(), p=2)[0].argmin(dim=-1)
            index = index.view(residual.shape[:-1])
            residual = residual - F.embedding(index, table)
            codes.append(index)
        return torch.stack(codes, dim=1)


class MimiQuantizer(nn.Module):
    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.semantic = cfg.num_semantic_quantizers
        self.semantic_residual_vector_quantizer = MimiRVQ(cfg, cfg.num_semantic_quantizers)
        self.acoustic_residual_vector_quantizer = MimiRVQ(cfg, cfg.num_quantizers - cfg.num_semantic_quantizers)

    def encode(self, latents: torch.Tensor, count: int) -> torch.Tensor:
        codes = self.semantic_residual_vector_quantizer.encode(latents, self.semantic)
        if count > self.semantic:
            acoustic = self.acoustic_residual_vector_quantizer.encode(latents, count - self.semantic)
            codes = torch.cat((codes, acoustic), dim=1)
        return codes


class MimiEncoder(nn.Module):
    """encoder.{encoder,encoder_transformer,downsample,quantizer}.* of the speech tokenizer."""

    def __init__(self, cfg: MimiConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SEANetEncoder(cfg)
        self.encoder_transformer = MimiTransformer(cfg)
        stride = cfg.downsample_stride
        self.downsample = (MimiConv(cfg.hidden_size, cfg.hidden_size, 2 * stride, stride=stride, pad_mode="replicate",
                                    bias=False) if stride != 1 else None)
        self.quantizer = MimiQuantizer(cfg)

    def forward(self, wav: torch.Tensor, num_quantizers: int) -> torch.Tensor:
        """(B, samples) audio -> (B, num_quantizers, frames) codes."""
        latents = self.encoder(wav[:, None, :])
        latents = self.encoder_transformer(latents.transpose(1, 2)).transpose(1, 2)
        if self.downsample is not None:
            latents = self.downsample(latents)
        return self.quantizer.encode(latents, num_quantizers)

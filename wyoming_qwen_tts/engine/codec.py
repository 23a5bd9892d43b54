"""The 12 Hz speech tokenizer: Mimi encoder (reference audio -> codes) and a streaming decoder
(codes -> 24 kHz audio, 1920 samples per frame).

The decoder is fully causal. Every layer that looks back in time keeps what it needs between
calls in a DecoderState: causal-conv input history, the transposed convs' last input frame
(whose output overlaps the next chunk), the sliding-window attention keys/values and the
position counter. Decoding codes in any split therefore gives the same samples as decoding them
at once, and nothing is decoded twice. Module names follow speech_tokenizer/model.safetensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CodecConfig, CodecDecoderConfig
from .layers import Attention, GatedMLP, LayerScale, RMSNorm, causal_mask, rope_cos_sin
from .mimi import MimiConfig, MimiEncoder


@dataclass
class DecoderState:
    """Everything a batch of streams' decoders remember between chunks; row b is stream b.

    Allocated whole by CodecDecoder.new_state (zeros = nothing heard yet), so the states of
    different streams stack into one batch and split back without special cases. A decode updates
    every tensor in place (never rebinds one), and positions live on the device: a state's tensors
    are the same buffers from call to call, with no host value read, which is what a CUDA graph of
    the decode needs (codec_slots.py)."""

    history: dict[int, torch.Tensor]  # id(module) -> (B, C, context) last inputs of a causal conv
    keys: list[torch.Tensor]  # per transformer layer, (B, KV, window-1, D): the last window-1 keys
    values: list[torch.Tensor]
    positions: torch.Tensor  # (B,) int64: frames each stream has decoded (a list is taken too)

    def __post_init__(self) -> None:
        if not isinstance(self.positions, torch.Tensor):
            self.positions = torch.tensor(self.positions, dtype=torch.int64)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor of the state, in a fixed order (rows first in each)."""
        return [*self.history.values(), *self.keys, *self.values, self.positions]

    def clone(self) -> "DecoderState":
        return DecoderState({k: v.clone() for k, v in self.history.items()}, [k.clone() for k in self.keys],
                            [v.clone() for v in self.values], self.positions.clone())

    @staticmethod
    def stack(states: "list[DecoderState]") -> "DecoderState":
        first = states[0]
        return DecoderState(
            {key: torch.cat([s.history[key] for s in states]) for key in first.history},
            [torch.cat([s.keys[i] for s in states]) for i in range(len(first.keys))],
            [torch.cat([s.values[i] for s in states]) for i in range(len(first.values))],
            torch.cat([s.positions for s in states]),
        )

    def split(self) -> "list[DecoderState]":
        return [DecoderState({k: v[b:b + 1] for k, v in self.history.items()}, [k[b:b + 1] for k in self.keys],
                             [v[b:b + 1] for v in self.values], self.positions[b:b + 1])
                for b in range(self.positions.shape[0])]


def _with_history(module: nn.Module, x: torch.Tensor, length: int, state: DecoderState) -> torch.Tensor:
    """x preceded by the module's last `length` input steps; the state keeps the new last ones."""
    if length == 0:
        return x
    kept = state.history[id(module)]
    joined = torch.cat((kept, x), dim=-1)
    kept.copy_(joined[..., -length:])
    return joined


# A conv whose weight has at least this many elements runs as one matmul over its unfolded
# input while its output has at most MATMUL_MAX_STEPS steps (all rows of the batch together).
# oneDNN's direct conv (F.conv1d) reorders the whole weight into its blocked layout on every
# call, which for big weights costs more than the matmul's unfolded copy of a short input; on
# long inputs the direct conv wins, and smaller weights (the residual units') gain nothing. The
# measurements behind both limits: BENCHMARKS.md, "Codec decoder on CPU".
MATMUL_MIN_WEIGHT = 8_000_000
MATMUL_MAX_STEPS = 128


def unfold_steps(x: torch.Tensor, taps: int, dilation: int) -> torch.Tensor:
    """(B, C, L) -> (B * T, C * taps), T = L - (taps - 1) * dilation: row (b, t) holds what output
    step t sees, x[b, c, t + i * dilation] at column c * taps + i (the order of a Conv1d weight's
    memory, so the weight needs no copy)."""
    windows = x.unfold(2, (taps - 1) * dilation + 1, 1)[..., ::dilation]  # (B, C, T, taps), a view
    return windows.transpose(1, 2).reshape(-1, x.shape[1] * taps)


class Conv1dAsMatmul:
    """A stride-1 Conv1d run as one matmul of its unfolded input by its weight (a view of it)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dilation: int) -> None:
        self.weight_t = weight.detach().flatten(1).t()  # (in * taps, out), as addmm takes it
        self.bias = None if bias is None else bias.detach()
        self.taps, self.dilation = weight.shape[-1], dilation

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, L) -> (B, C_out, T), time-major in memory (the next conv's unfold reads it so)."""
        rows = unfold_steps(x, self.taps, self.dilation)
        y = torch.mm(rows, self.weight_t) if self.bias is None else torch.addmm(self.bias, rows, self.weight_t)
        return y.view(x.shape[0], -1, y.shape[-1]).transpose(1, 2)

    def suits(self, x: torch.Tensor) -> bool:
        steps = x.shape[-1] - (self.taps - 1) * self.dilation
        return x.device.type == "cpu" and x.dtype == self.weight_t.dtype and x.shape[0] * steps <= MATMUL_MAX_STEPS


def matmul_form(weight: torch.Tensor, bias: torch.Tensor | None, dilation: int = 1,
                groups: int = 1) -> Conv1dAsMatmul | None:
    """The matmul layout of a big conv weight on the CPU; None where the conv stays direct."""
    if weight.device.type != "cpu" or groups != 1 or weight.numel() < MATMUL_MIN_WEIGHT:
        return None
    return Conv1dAsMatmul(weight, bias, dilation)


class CausalConv(nn.Module):
    """Conv1d padded on the left only (stride 1, as everywhere in this decoder)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, dilation: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, dilation=dilation, groups=groups)
        self.context = (kernel - 1) * dilation
        self.as_matmul: Conv1dAsMatmul | None = None

    def build_tables(self) -> None:
        with torch.inference_mode():
            self.as_matmul = matmul_form(self.conv.weight, self.conv.bias, self.conv.dilation[0], self.conv.groups)

    def forward(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        joined = _with_history(self, x, self.context, state)
        if self.as_matmul is not None and self.as_matmul.suits(joined):
            return self.as_matmul(joined)
        return self.conv(joined)


def transposed_as_conv_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """A ConvTranspose1d weight (in, out, kernel), kernel = stride or 2 * stride, as the weight
    (out * stride, in, taps) of a plain conv over the input frames whose output channel
    (o, j) is sample j of output block t: tap 0 sees frame t-1 through the kernel's second half,
    the last tap frame t through its first half."""
    in_ch, out_ch, kernel = weight.shape
    halves = (weight[:, :, stride:], weight[:, :, :stride]) if kernel == 2 * stride else (weight,)
    return torch.stack(halves, dim=-1).permute(1, 2, 0, 3).reshape(out_ch * stride, in_ch, len(halves))


class CausalTransConv(nn.Module):
    """ConvTranspose1d with its right overhang cut, so L frames give L*stride samples.

    Output block t depends on inputs t and t-1; the previous chunk's last input frame is
    carried over and its own (already emitted) output block dropped.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_ch, out_ch, kernel, stride=stride)
        self.stride = stride
        self.overhang = kernel - stride
        if self.overhang not in (0, stride):
            raise ValueError("only kernel == stride or kernel == 2 * stride is supported")
        self.as_conv: tuple[torch.Tensor, torch.Tensor] | None = None  # on the CPU: the same map as a plain conv
        self.as_matmul: Conv1dAsMatmul | None = None

    def build_tables(self) -> None:
        """On the CPU, the transposed conv as a plain conv with `stride` times the output channels:
        torch runs this ConvTranspose1d on its slow im2col path or reorders its weight on every call,
        several times slower for short chunks (BENCHMARKS.md, "Codec decoder on CPU")."""
        if self.conv.weight.device.type != "cpu":
            return
        with torch.inference_mode():
            if self.as_conv is None:
                weight = transposed_as_conv_weight(self.conv.weight, self.stride).contiguous()
                self.as_conv = weight, self.conv.bias.repeat_interleave(self.stride)
                # The CPU never runs the transposed form again: its weights (107 MB in all) are freed.
                self.conv.weight = nn.Parameter(torch.empty(0, dtype=weight.dtype), requires_grad=False)
            self.as_matmul = matmul_form(*self.as_conv)

    def forward(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        carried = 1 if self.overhang else 0
        joined = _with_history(self, x, carried, state)
        if self.as_conv is not None and joined.device.type == "cpu":
            if self.as_matmul is not None and self.as_matmul.suits(joined):
                blocks = self.as_matmul(joined)
            else:
                blocks = F.conv1d(joined, *self.as_conv)
            return blocks_to_samples(blocks, self.stride)
        y = self.conv(joined)
        if self.overhang:
            y = y[..., self.stride: y.shape[-1] - self.overhang]
        return y


def blocks_to_samples(blocks: torch.Tensor, stride: int) -> torch.Tensor:
    """(B, C * stride, T) with channel (o, j) sample j of block t -> (B, C, T * stride)."""
    batch, frames = blocks.shape[0], blocks.shape[-1]
    return blocks.unflatten(1, (-1, stride)).transpose(2, 3).reshape(batch, -1, frames * stride)


class SnakeBeta(nn.Module):
    """x + sin(x * e^alpha)^2 / (e^beta + 1e-9), per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.frequency: torch.Tensor | None = None  # e^alpha, (C, 1)
        self.inverse_magnitude: torch.Tensor | None = None  # 1 / (e^beta + 1e-9), (C, 1)

    def build_tables(self) -> None:
        """The per-channel factors, made once at load rather than two exps and a division each call."""
        with torch.inference_mode():
            self.frequency = torch.exp(self.alpha)[:, None].clone()
            self.inverse_magnitude = (1.0 / (torch.exp(self.beta) + 1e-9))[:, None].clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frequency is None or self.inverse_magnitude is None:
            raise RuntimeError("SnakeBeta's tables are made when the codec's weights are loaded: call build_tables()")
        # Two full-size temporaries instead of five: sin and its square in place.
        wave = torch.mul(x, self.frequency).sin_()
        return torch.addcmul(x, wave.square_(), self.inverse_magnitude)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = CausalConv(dim, dim, 7, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        y = self.dwconv(x, state).transpose(1, 2)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class ResidualUnit(nn.Module):
    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.act1 = SnakeBeta(dim)
        self.conv1 = CausalConv(dim, dim, 7, dilation=dilation)
        self.act2 = SnakeBeta(dim)
        self.conv2 = CausalConv(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x), state)), state)


class DecoderBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, rate: int) -> None:
        super().__init__()
        self.block = nn.ModuleList([
            SnakeBeta(in_dim), CausalTransConv(in_dim, out_dim, 2 * rate, rate),
            ResidualUnit(out_dim, 1), ResidualUnit(out_dim, 3), ResidualUnit(out_dim, 9),
        ])

    def forward(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        x = self.block[0](x)
        for layer in self.block[1:]:
            x = layer(x, state)
        return x


class TransformerLayer(nn.Module):
    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, qk_norm_eps=None)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn_layer_scale = LayerScale(cfg.hidden_size)
        self.mlp_layer_scale = LayerScale(cfg.hidden_size)


class PreTransformer(nn.Module):
    """Sliding-window transformer at the frame rate; keeps the last window-1 keys per layer."""

    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_proj = nn.Linear(cfg.latent_dim, cfg.hidden_size)
        self.output_proj = nn.Linear(cfg.hidden_size, cfg.latent_dim)

    def forward(self, x: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """x (B, T, latent) continuing each row's stream at its own position."""
        cfg = self.cfg
        steps, kept = x.shape[1], cfg.sliding_window - 1
        starts = state.positions[:, None]
        query_pos = starts + torch.arange(steps, device=x.device)  # (B, T)
        key_pos = starts - kept + torch.arange(kept + steps, device=x.device)  # (B, window-1+T)
        visible = causal_mask(query_pos, key_pos, cfg.sliding_window) & (key_pos >= 0)[:, None, :]
        cos, sin = rope_cos_sin(query_pos, cfg.head_dim, cfg.rope_theta, x.dtype)
        x = self.input_proj(x)
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            q, k, v = attn.project(layer.input_layernorm(x), cos, sin)
            k = torch.cat((state.keys[index], k), dim=2)
            v = torch.cat((state.values[index], v), dim=2)
            x = x + layer.self_attn_layer_scale(attn.attend(q, k, v, visible[:, None], causal=False))
            x = x + layer.mlp_layer_scale(layer.mlp(layer.post_attention_layernorm(x)))
            state.keys[index].copy_(k[:, :, -kept:])
            state.values[index].copy_(v[:, :, -kept:])
        return self.output_proj(self.norm(x))


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.cluster_usage = nn.Parameter(torch.ones(size))
        self.embedding_sum = nn.Parameter(torch.zeros(size, dim))

    def table(self) -> torch.Tensor:
        return self.embedding_sum / self.cluster_usage.clamp(min=1e-5)[:, None]


class _VQ(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self._codebook = Codebook(size, dim)


class _RVQLayers(nn.Module):
    def __init__(self, count: int, size: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_VQ(size, dim) for _ in range(count))


class ResidualVQ(nn.Module):
    """Sum of codebook lookups, then a 1x1 conv out of the codebook space."""

    def __init__(self, count: int, size: int, dim: int, out_dim: int) -> None:
        super().__init__()
        self.vq = _RVQLayers(count, size, dim)
        self.output_proj = nn.Conv1d(dim, out_dim, 1, bias=False)
        self.tables: torch.Tensor | None = None

    def build_tables(self) -> None:
        """The lookup tables, made once when the weights are loaded: not lazily by whichever
        thread (and CUDA stream) happens to decode first."""
        with torch.inference_mode():
            self.tables = torch.stack([layer._codebook.table() for layer in self.vq.layers])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, T, count) -> (B, out_dim, T)."""
        if self.tables is None:
            raise RuntimeError("the codebook tables are made when the codec's weights are loaded: call build_tables()")
        total = self.tables[0][codes[..., 0]]
        for index in range(1, codes.shape[-1]):
            total = total + self.tables[index][codes[..., index]]
        return self.output_proj(total.transpose(1, 2))


class SplitResidualVQ(nn.Module):
    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        dim = cfg.codebook_dim // 2
        self.semantic = cfg.num_semantic_quantizers
        self.rvq_first = ResidualVQ(self.semantic, cfg.codebook_size, dim, cfg.codebook_dim)
        self.rvq_rest = ResidualVQ(cfg.num_quantizers - self.semantic, cfg.codebook_size, dim, cfg.codebook_dim)

    def build_tables(self) -> None:
        self.rvq_first.build_tables()
        self.rvq_rest.build_tables()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.rvq_first.decode(codes[..., : self.semantic]) + self.rvq_rest.decode(codes[..., self.semantic:])


class CodecDecoder(nn.Module):
    def __init__(self, cfg: CodecDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.quantizer = SplitResidualVQ(cfg)
        self.pre_conv = CausalConv(cfg.codebook_dim, cfg.latent_dim, 3)
        self.pre_transformer = PreTransformer(cfg)
        self.upsample = nn.ModuleList(
            nn.ModuleList([CausalTransConv(cfg.latent_dim, cfg.latent_dim, factor, factor),
                           ConvNeXtBlock(cfg.latent_dim)])
            for factor in cfg.upsampling_ratios
        )
        layers: list[nn.Module] = [CausalConv(cfg.latent_dim, cfg.decoder_dim, 7)]
        for index, rate in enumerate(cfg.upsample_rates):
            layers.append(DecoderBlock(cfg.decoder_dim // 2 ** index, cfg.decoder_dim // 2 ** (index + 1), rate))
        out_dim = cfg.decoder_dim // 2 ** len(cfg.upsample_rates)
        layers += [SnakeBeta(out_dim), CausalConv(out_dim, 1, 7)]
        self.decoder = nn.ModuleList(layers)

    def build_tables(self) -> None:
        """What the decoder precomputes once its weights are loaded: the codebook lookup tables,
        SnakeBeta's factors and, on the CPU, the weight layouts the convs run fastest with."""
        self.quantizer.build_tables()
        for module in self.modules():
            if isinstance(module, (SnakeBeta, CausalConv, CausalTransConv)):
                module.build_tables()

    def new_state(self, batch: int = 1) -> DecoderState:
        """Zeros everywhere: what the decoder of a fresh stream remembers."""
        param = self.output_weight()
        history = {}
        for module in self.modules():
            if isinstance(module, CausalConv) and module.context:
                history[id(module)] = param.new_zeros(batch, module.conv.in_channels, module.context)
            elif isinstance(module, CausalTransConv) and module.overhang:
                history[id(module)] = param.new_zeros(batch, module.conv.in_channels, 1)
        cfg = self.cfg
        window = param.new_zeros(batch, cfg.num_kv_heads, cfg.sliding_window - 1, cfg.head_dim)
        return DecoderState(history, [window.clone() for _ in range(cfg.num_layers)],
                            [window.clone() for _ in range(cfg.num_layers)],
                            torch.zeros(batch, dtype=torch.int64, device=param.device))

    def output_weight(self) -> torch.Tensor:
        return self.decoder[-1].conv.weight

    def forward(self, codes: torch.Tensor, state: DecoderState | None = None) -> torch.Tensor:
        """codes (B, T, Q) -> audio (B, T * samples_per_frame) in [-1, 1], continuing `state`."""
        if state is None:
            state = self.new_state(codes.shape[0])
        hidden = self.pre_conv(self.quantizer.decode(codes), state).transpose(1, 2)
        hidden = self.pre_transformer(hidden, state).transpose(1, 2)
        for transconv, convnext in self.upsample:
            hidden = convnext(transconv(hidden, state), state)
        for layer in self.decoder:
            hidden = layer(hidden) if isinstance(layer, SnakeBeta) else layer(hidden, state)
        state.positions.add_(codes.shape[1])
        return hidden.clamp(min=-1.0, max=1.0).squeeze(1)


class SpeechCodec(nn.Module):
    """encoder.* (Mimi, only in Base checkpoints' use) and decoder.* of speech_tokenizer/model.safetensors."""

    def __init__(self, cfg: CodecConfig, with_encoder: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = CodecDecoder(cfg.decoder)
        self.encoder = MimiEncoder(MimiConfig.from_dict(cfg.encoder)) if with_encoder else None

    @property
    def samples_per_frame(self) -> int:
        return self.cfg.decode_upsample_rate

    @torch.inference_mode()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """Mono 24 kHz audio (samples,) -> codes (frames, valid_quantizers), frames = ceil(samples/1920)."""
        if self.encoder is None:
            raise RuntimeError("this codec was loaded without its encoder")
        param = next(self.encoder.parameters())
        codes = self.encoder(wav.to(device=param.device, dtype=param.dtype)[None], self.cfg.valid_quantizers)[0]
        frames = -(-wav.shape[-1] // self.cfg.encode_downsample_rate)
        return codes[:, :frames].transpose(0, 1).contiguous()

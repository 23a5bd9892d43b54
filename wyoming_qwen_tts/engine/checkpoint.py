"""Find a Qwen3-TTS 12 Hz checkpoint (local directory or hub id) and read its configuration.

The official layout:
    config.json  generation_config.json  model.safetensors (or sharded + index)
    vocab.json  merges.txt  tokenizer_config.json
    speech_tokenizer/{config.json, model.safetensors, preprocessor_config.json}

Missing config keys fall back to the defaults of the official config classes; extra keys are
ignored. Anything we cannot run (25 Hz tokenizer, scaled RoPE, sliding-window talker) is refused
with a message naming the file and the key.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

_LOGGER = logging.getLogger(__name__)

MODEL_FILES = ("config.json", "generation_config.json", "vocab.json", "merges.txt", "tokenizer_config.json")
CODEC_FILES = ("speech_tokenizer/config.json", "speech_tokenizer/preprocessor_config.json")
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "speech_tokenizer/*"]


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete, or of a kind this engine cannot run."""


@dataclass(frozen=True)
class TransformerConfig:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_positions: int


@dataclass(frozen=True)
class TalkerConfig(TransformerConfig):
    vocab_size: int
    text_vocab_size: int
    text_hidden_size: int
    num_code_groups: int
    codec_pad_id: int
    codec_bos_id: int
    codec_eos_id: int
    codec_think_id: int
    codec_nothink_id: int
    codec_think_bos_id: int
    codec_think_eos_id: int
    language_ids: dict[str, int]
    speaker_ids: dict[str, int]
    speaker_dialects: dict[str, Any]


@dataclass(frozen=True)
class PredictorConfig(TransformerConfig):
    vocab_size: int
    num_code_groups: int


@dataclass(frozen=True)
class SpeakerEncoderConfig:
    mel_dim: int = 128
    enc_dim: int = 1024
    enc_channels: tuple[int, ...] = (512, 512, 512, 512, 1536)
    enc_kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 1)
    enc_dilations: tuple[int, ...] = (1, 2, 3, 4, 1)
    enc_attention_channels: int = 128
    enc_res2net_scale: int = 8
    enc_se_channels: int = 128
    sample_rate: int = 24000


@dataclass(frozen=True)
class CodecDecoderConfig(TransformerConfig):
    codebook_size: int
    codebook_dim: int
    latent_dim: int
    decoder_dim: int
    num_quantizers: int
    num_semantic_quantizers: int
    sliding_window: int
    layer_scale: float
    upsample_rates: tuple[int, ...]
    upsampling_ratios: tuple[int, ...]

    @property
    def samples_per_frame(self) -> int:
        total = 1
        for rate in (*self.upsample_rates, *self.upsampling_ratios):
            total *= rate
        return total


@dataclass(frozen=True)
class CodecConfig:
    decoder: CodecDecoderConfig
    encoder: dict[str, Any]  # MimiConfig keyword arguments
    valid_quantizers: int
    input_sample_rate: int
    output_sample_rate: int
    encode_downsample_rate: int
    decode_upsample_rate: int


@dataclass(frozen=True)
class GenerationDefaults:
    do_sample: bool = True
    top_k: int = 50
    top_p: float = 1.0
    temperature: float = 0.9
    repetition_penalty: float = 1.05
    subtalker_dosample: bool = True
    subtalker_top_k: int = 50
    subtalker_top_p: float = 1.0
    subtalker_temperature: float = 0.9
    max_new_tokens: int = 2048


@dataclass(frozen=True)
class ModelConfig:
    model_type: str  # "base" | "voice_design" | "custom_voice"
    model_size: str | None
    talker: TalkerConfig
    predictor: PredictorConfig
    speaker_encoder: SpeakerEncoderConfig | None
    im_start_id: int
    im_end_id: int
    tts_pad_id: int
    tts_bos_id: int
    tts_eos_id: int

    @property
    def speakers_take_instructions(self) -> bool:
        """Whether a built-in speaker takes a style instruction: on every CustomVoice checkpoint but
        the 0.6B (the official generate_custom_voice leaves it out of the 0.6B's prompt)."""
        return self.model_type == "custom_voice" and self.model_size != "0b6"


@dataclass
class Checkpoint:
    """A resolved checkpoint directory and everything read from its config files."""

    path: Path
    config: ModelConfig
    codec: CodecConfig
    generation: GenerationDefaults
    weight_files: list[Path] = field(default_factory=list)
    codec_weight_files: list[Path] = field(default_factory=list)


def resolve_model_dir(model: str | os.PathLike, *, local_files_only: bool = False,
                      revision: str | None = None, cache_dir: str | None = None) -> Path:
    """A local directory as is; otherwise a hub id fetched (or found in the cache) by huggingface_hub.

    huggingface_hub shows its own progress bars and honours HF_HOME, HF_HUB_CACHE and
    HF_HUB_OFFLINE; local_files_only forces the cache-only behaviour of HF_HUB_OFFLINE.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    text = str(model)
    if path.exists():
        raise CheckpointError(f"model path {text} is a file, not a checkpoint directory")
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(
            f"model {text!r} is neither an existing directory nor a hub id of the form owner/name"
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    _LOGGER.info("Resolving %s through huggingface_hub (downloads on first use)", text)
    try:
        return Path(snapshot_download(text, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=DOWNLOAD_PATTERNS, local_files_only=local_files_only))
    except LocalEntryNotFoundError as err:
        raise CheckpointError(_not_cached_message(text, cache_dir, local_files_only)) from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(f"model {text} was not found on the hub (check the id and your token)") from err
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointError(f"could not fetch model {text}: {err}") from err


def _not_cached_message(model: str, cache_dir: str | None, local_files_only: bool) -> str:
    """Why a hub id could not be resolved from the cache, where that cache is, and the ways out.

    huggingface_hub raises the same error whether downloads were switched off or the hub could not
    be reached (no network, a proxy, the hub down), so the settings tell the two apart."""
    from huggingface_hub import constants

    cache = cache_dir or constants.HF_HUB_CACHE
    if local_files_only or constants.HF_HUB_OFFLINE:
        switch = "--local-files-only" if local_files_only else "HF_HUB_OFFLINE"
        reason = f"downloads are off ({switch})"
    else:
        reason = f"the hub ({constants.ENDPOINT}) could not be reached"
    return (f"model {model} is not in the cache at {cache} and {reason}. Either download it once: with network "
            f"access start again, or copy a download into that cache (set HF_HOME to choose where it lives); "
            f"or point --model at a local checkpoint directory")


def load_checkpoint(model: str | os.PathLike, **resolve_kwargs: Any) -> Checkpoint:
    path = resolve_model_dir(model, **resolve_kwargs)
    missing = [name for name in (*MODEL_FILES, *CODEC_FILES) if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    raw = _read_json(path / "config.json")
    config = parse_model_config(raw, source=path / "config.json")
    codec = parse_codec_config(_read_json(path / "speech_tokenizer" / "config.json"),
                               source=path / "speech_tokenizer" / "config.json")
    generation = parse_generation_defaults(_read_json(path / "generation_config.json"))
    return Checkpoint(
        path=path, config=config, codec=codec, generation=generation,
        weight_files=_weight_files(path), codec_weight_files=_weight_files(path / "speech_tokenizer"),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def _weight_files(directory: Path) -> list[Path]:
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(_read_json(index)["weight_map"].values()))
        files = [directory / shard for shard in shards]
    else:
        files = [directory / "model.safetensors"]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise CheckpointError(f"weights missing: {', '.join(absent)}")
    return files


def _transformer(raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    def get(key: str, default_key: str | None = None) -> Any:
        return raw.get(key, defaults[default_key or key])

    hidden = get("hidden_size")
    heads = get("num_attention_heads")
    return dict(
        hidden_size=hidden,
        intermediate_size=get("intermediate_size"),
        num_layers=get("num_hidden_layers"),
        num_heads=heads,
        num_kv_heads=raw.get("num_key_value_heads") or defaults["num_key_value_heads"] or heads,
        head_dim=raw.get("head_dim") or defaults.get("head_dim") or hidden // heads,
        rms_norm_eps=get("rms_norm_eps"),
        rope_theta=float(get("rope_theta")),
        max_positions=get("max_position_embeddings"),
    )


# Defaults of the official config classes (qwen-tts 0.1.1), used for keys a config leaves out.
_TALKER_DEFAULTS = dict(
    vocab_size=3072, hidden_size=1024, intermediate_size=2048, num_hidden_layers=20, num_attention_heads=16,
    num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=10000, max_position_embeddings=32768,
    num_code_groups=32, text_hidden_size=2048, text_vocab_size=151936, codec_eos_token_id=4198,
    codec_think_id=4202, codec_nothink_id=4203, codec_think_bos_id=4204, codec_think_eos_id=4205,
    codec_pad_id=4196, codec_bos_id=4197,
)
_PREDICTOR_DEFAULTS = dict(
    vocab_size=2048, hidden_size=1024, intermediate_size=3072, num_hidden_layers=5, num_attention_heads=16,
    num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=10000, max_position_embeddings=32768,
    num_code_groups=32,
)
_CODEC_DECODER_DEFAULTS = dict(
    codebook_size=2048, hidden_size=1024, latent_dim=1024, codebook_dim=512, max_position_embeddings=8000,
    rope_theta=10000, num_attention_heads=16, num_key_value_heads=16, sliding_window=72,
    intermediate_size=3072, layer_scale_initial_scale=0.01, rms_norm_eps=1e-5, num_hidden_layers=8,
    num_quantizers=16, num_semantic_quantizers=1, upsample_rates=(8, 5, 4, 3), upsampling_ratios=(2, 2),
    decoder_dim=1536,
)


def _check_rope(raw: dict[str, Any], source: str) -> None:
    scaling = raw.get("rope_scaling")
    if not scaling:
        return
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type != "default":
        raise CheckpointError(f"{source}: rope_scaling.rope_type {rope_type!r} is not supported (only 'default')")


def _check_no_sliding_window(raw: dict[str, Any], source: str, longest: int) -> None:
    window = raw.get("sliding_window") or 4096
    if raw.get("use_sliding_window") and window < longest:
        raise CheckpointError(f"{source}: use_sliding_window with window {window} is not supported")


def parse_model_config(raw: dict[str, Any], source: Path | str = "config.json") -> ModelConfig:
    tokenizer_type = raw.get("tokenizer_type")
    if tokenizer_type not in (None, "qwen3_tts_tokenizer_12hz"):
        raise CheckpointError(f"{source}: tokenizer_type {tokenizer_type!r} is not supported (only the 12 Hz tokenizer)")
    model_type = raw.get("tts_model_type")
    if model_type not in ("base", "voice_design", "custom_voice"):
        raise CheckpointError(f"{source}: tts_model_type {model_type!r} is not one of base, voice_design, custom_voice")
    talker_raw = raw.get("talker_config") or {}
    predictor_raw = talker_raw.get("code_predictor_config") or {}
    _check_rope(talker_raw, f"{source} talker_config")
    _check_rope(predictor_raw, f"{source} code_predictor_config")
    _check_no_sliding_window(talker_raw, f"{source} talker_config", longest=1 << 30)
    _check_no_sliding_window(predictor_raw, f"{source} code_predictor_config", longest=64)

    def talker_get(key: str) -> Any:
        return talker_raw.get(key, _TALKER_DEFAULTS[key])

    talker = TalkerConfig(
        **_transformer(talker_raw, _TALKER_DEFAULTS),
        vocab_size=talker_get("vocab_size"),
        text_vocab_size=talker_get("text_vocab_size"),
        text_hidden_size=talker_get("text_hidden_size"),
        num_code_groups=talker_get("num_code_groups"),
        codec_pad_id=talker_get("codec_pad_id"),
        codec_bos_id=talker_get("codec_bos_id"),
        codec_eos_id=talker_get("codec_eos_token_id"),
        codec_think_id=talker_get("codec_think_id"),
        codec_nothink_id=talker_get("codec_nothink_id"),
        codec_think_bos_id=talker_get("codec_think_bos_id"),
        codec_think_eos_id=talker_get("codec_think_eos_id"),
        language_ids={k.lower(): int(v) for k, v in (talker_raw.get("codec_language_id") or {}).items()},
        speaker_ids={k.lower(): int(v) for k, v in (talker_raw.get("spk_id") or {}).items()},
        speaker_dialects={k.lower(): v for k, v in (talker_raw.get("spk_is_dialect") or {}).items()},
    )
    predictor = PredictorConfig(
        **_transformer(predictor_raw, _PREDICTOR_DEFAULTS),
        vocab_size=predictor_raw.get("vocab_size", _PREDICTOR_DEFAULTS["vocab_size"]),
        num_code_groups=predictor_raw.get("num_code_groups", _PREDICTOR_DEFAULTS["num_code_groups"]),
    )
    if predictor.num_code_groups != talker.num_code_groups:
        raise CheckpointError(f"{source}: talker and code predictor disagree on num_code_groups")
    speaker = None
    if model_type == "base":
        spk_raw = dict(raw.get("speaker_encoder_config") or {})
        spk_raw.pop("model_type", None)  # the official config class saves it but cannot take it back
        known = SpeakerEncoderConfig.__dataclass_fields__
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in spk_raw.items() if k in known}
        speaker = SpeakerEncoderConfig(**values)
        if speaker.enc_dim != talker.hidden_size:
            raise CheckpointError(
                f"{source}: speaker_encoder_config.enc_dim {speaker.enc_dim} differs from talker hidden_size "
                f"{talker.hidden_size}"
            )
        if speaker.mel_dim != 128:
            raise CheckpointError(f"{source}: speaker_encoder_config.mel_dim must be 128 (the mel front end is fixed)")
    return ModelConfig(
        model_type=model_type, model_size=raw.get("tts_model_size"), talker=talker, predictor=predictor,
        speaker_encoder=speaker,
        im_start_id=raw.get("im_start_token_id", 151644), im_end_id=raw.get("im_end_token_id", 151645),
        tts_pad_id=raw.get("tts_pad_token_id", 151671), tts_bos_id=raw.get("tts_bos_token_id", 151672),
        tts_eos_id=raw.get("tts_eos_token_id", 151673),
    )


def parse_codec_config(raw: dict[str, Any], source: Path | str = "speech_tokenizer/config.json") -> CodecConfig:
    model_type = raw.get("model_type", "qwen3_tts_tokenizer_12hz")
    if model_type != "qwen3_tts_tokenizer_12hz":
        raise CheckpointError(f"{source}: model_type {model_type!r} is not the 12 Hz speech tokenizer")
    dec_raw = raw.get("decoder_config") or {}

    def get(key: str) -> Any:
        return dec_raw.get(key, _CODEC_DECODER_DEFAULTS[key])

    decoder = CodecDecoderConfig(
        **_transformer(dec_raw, _CODEC_DECODER_DEFAULTS),
        codebook_size=get("codebook_size"), codebook_dim=get("codebook_dim"), latent_dim=get("latent_dim"),
        decoder_dim=get("decoder_dim"), num_quantizers=get("num_quantizers"),
        num_semantic_quantizers=get("num_semantic_quantizers"), sliding_window=get("sliding_window"),
        layer_scale=get("layer_scale_initial_scale"), upsample_rates=tuple(get("upsample_rates")),
        upsampling_ratios=tuple(get("upsampling_ratios")),
    )
    codec = CodecConfig(
        decoder=decoder,
        encoder=dict(raw.get("encoder_config") or {}),
        valid_quantizers=raw.get("encoder_valid_num_quantizers", 16),
        input_sample_rate=raw.get("input_sample_rate", 24000),
        output_sample_rate=raw.get("output_sample_rate", 24000),
        encode_downsample_rate=raw.get("encode_downsample_rate", 1920),
        decode_upsample_rate=raw.get("decode_upsample_rate", 1920),
    )
    if decoder.samples_per_frame != codec.decode_upsample_rate:
        raise CheckpointError(
            f"{source}: decoder upsampling gives {decoder.samples_per_frame} samples per frame, "
            f"decode_upsample_rate says {codec.decode_upsample_rate}"
        )
    return codec


def parse_generation_defaults(raw: dict[str, Any]) -> GenerationDefaults:
    known = GenerationDefaults.__dataclass_fields__
    return GenerationDefaults(**{k: v for k, v in raw.items() if k in known and v is not None})


def load_safetensors(files: list[Path], device: torch.device | str = "cpu",
                     prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors whose names start with prefix (prefix stripped). safetensors only: never pickles.

    On the CPU safetensors hands out views of the file mapped into memory; those pages are read from
    disk on first use and dropped again under memory pressure, so a model kept in the file's dtype
    (bf16 weights of a bf16 checkpoint) would stall on disk reads in the middle of a request. The
    tensors are copied into the process's own memory instead."""
    from safetensors import safe_open

    in_memory = torch.device(device).type == "cpu"
    tensors: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt", device=str(device)) as handle:
            for name in handle.keys():
                if name.startswith(prefix):
                    tensor = handle.get_tensor(name)
                    tensors[name[len(prefix):]] = tensor.clone() if in_memory else tensor
    return tensors

"""Build tiny random Qwen3-TTS checkpoints with the official classes and record their outputs.

Runs ONLY inside the oracle venv made by tools/oracle_venv.sh (official qwen-tts 0.1.1 on
transformers 4.57.3). It writes, under tests/fixtures/:

  tiny-base/     a Base checkpoint (speaker encoder, ICL and x-vector cloning)
  tiny-design/   a VoiceDesign checkpoint
  tiny-custom/   a CustomVoice checkpoint (a few built-in speakers, two of them dialect speakers);
                 it shares tiny-design's text and speech tokenizers
                 all in the official layout: config.json, generation_config.json,
                 model.safetensors, vocab.json, merges.txt, tokenizer_config.json,
                 speech_tokenizer/{config.json, model.safetensors, preprocessor_config.json}
  ref_16k_stereo.wav   the reference recording (16 kHz stereo: exercises resampling and mixdown)
  parity/*.npz   the official outputs with greedy decoding, one file per case
  parity/manifest.json   the inputs of every case

The checkpoints are scaled down but keep the real structure: 16 code groups, two layers in
talker, code predictor and codec, grouped-query attention everywhere, a talker wider than the
code predictor and than the text embedding, a codec sliding window shorter than the decoded
sequences. The codec vocabulary is scaled down (256 codes, talker vocab 256 + 1024) so that the
official "suppress the top 1024 ids" rule still leaves exactly the codes and EOS.

Usage:  .oracle-venv/bin/python tools/make_parity_fixtures.py [--out tests/fixtures] [--only custom]

--only custom rebuilds tiny-custom/ and the custom_* cases alone, from the tokenizers already in
tiny-design/, and keeps every other fixture and manifest entry as it is. The custom part draws from
its own random generator, so a full run writes the same tiny-custom/ as --only custom.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import math
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import transformers  # noqa: F401  (imported before the stubs below, see _stub_unused_audio_deps)
from torch import nn


def _stub_unused_audio_deps() -> None:
    """qwen_tts imports its 25 Hz tokenizer eagerly, which needs sox, onnxruntime and torchaudio.

    None has a wheel for this torch, and the 12 Hz path never calls them. The stubs go in after
    transformers is imported, so that transformers does not believe torchaudio is installed.
    """
    for name in ("sox", "onnxruntime", "torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"):
        stub = types.ModuleType(name)
        stub.__spec__ = importlib.machinery.ModuleSpec(name, None)  # torch._dynamo calls find_spec on some
        sys.modules.setdefault(name, stub)
    sys.modules["torchaudio"].compliance = sys.modules["torchaudio.compliance"]
    sys.modules["torchaudio.compliance"].kaldi = sys.modules["torchaudio.compliance.kaldi"]


_stub_unused_audio_deps()

from qwen_tts import Qwen3TTSModel  # noqa: E402
from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration  # noqa: E402
from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Config  # noqa: E402
from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Model  # noqa: E402

CODEBOOK = 256  # codes 0..255; the real checkpoints use 2048
SHIFT = 2048 - CODEBOOK  # special codec ids keep their offsets above the codebook
LANGUAGE_IDS = {
    "chinese": 2055, "english": 2050, "german": 2053, "italian": 2070, "portuguese": 2071,
    "spanish": 2054, "japanese": 2058, "korean": 2064, "french": 2061, "russian": 2069,
}
# CustomVoice's dialects are extra language ids, used instead of chinese/auto for a dialect speaker.
DIALECT_LANGUAGE_IDS = {"beijing_dialect": 2074, "sichuan_dialect": 2062}
# Built-in speakers: (codec embedding row, dialect or False), in the released spk_id / spk_is_dialect
# layout (lower-case keys: the official code looks the lower-cased name up). serena, ryan and aiden
# carry their published ids; the published values do not give the dialect speakers' ids, so dylan
# and eric have made-up ones in the same range of the codec vocabulary.
CUSTOM_SPEAKERS = {
    "serena": (3066, False), "ryan": (3061, False), "aiden": (2861, False),
    "dylan": (2878, "beijing_dialect"), "eric": (2875, "sichuan_dialect"),
}
CUSTOM_SEED = 4321
MAX_NEW_TOKENS = 16

BPE_CORPUS = [
    "assistant", "user", "system", "Hello world, this is a test.", "The quick brown fox jumps over the lazy dog.",
    "Good morning! The weather today is sunny. Tomorrow it will rain.",
    "Turn on the kitchen lights, please.", "A deep male voice with a calm, authoritative presence.",
    "A warm and clear female voice, speaking slowly.", "What time is it? It is twelve o'clock.",
    "Your timer is done. The front door is open.", "speech synthesis for a smart home speaker",
]


def build_text_tokenizer(out: Path) -> dict[str, int]:
    """A byte-level BPE in Qwen2's file layout, small enough for a fixture.

    Returns the ids of the special tokens, appended after the BPE vocabulary as Qwen2 does.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(BPE_CORPUS * 20 + ["assistant\n", "user\n"] * 200, trainer=trainer)
    tok.model.save(str(out))  # vocab.json, merges.txt
    vocab_size = tok.get_vocab_size()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tts_pad>", "<tts_text_bos>", "<tts_text_eod>"]
    ids = {name: vocab_size + i for i, name in enumerate(specials)}
    added = {
        str(i): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": True}
        for name, i in ids.items()
    }
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False, "add_prefix_space": False, "added_tokens_decoder": added,
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None,
        "errors": "replace", "clean_up_tokenization_spaces": False, "split_special_tokens": False,
        "model_max_length": 131072, "tokenizer_class": "Qwen2Tokenizer",
    }, indent=2))
    return ids


def talker_config(text_vocab_size: int, model_type: str) -> dict:
    language_ids = dict(LANGUAGE_IDS)
    speaker_ids, speaker_dialects = {}, {}
    if model_type == "custom_voice":
        language_ids.update(DIALECT_LANGUAGE_IDS)
        speaker_ids = {name: row - SHIFT for name, (row, _) in CUSTOM_SPEAKERS.items()}
        speaker_dialects = {name: dialect for name, (_, dialect) in CUSTOM_SPEAKERS.items()}
    return {
        "vocab_size": CODEBOOK + 1024, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "hidden_act": "silu", "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"rope_type": "default", "mrope_section": [2, 3, 3], "interleaved": True},
        "num_code_groups": 16, "text_vocab_size": text_vocab_size, "text_hidden_size": 40,
        "position_id_per_seconds": 13,
        "codec_pad_id": 2148 - SHIFT, "codec_bos_id": 2149 - SHIFT, "codec_eos_token_id": 2150 - SHIFT,
        "codec_think_id": 2154 - SHIFT, "codec_nothink_id": 2155 - SHIFT,
        "codec_think_bos_id": 2156 - SHIFT, "codec_think_eos_id": 2157 - SHIFT,
        "codec_language_id": {k: v - SHIFT for k, v in language_ids.items()},
        "spk_id": speaker_ids, "spk_is_dialect": speaker_dialects,
        "code_predictor_config": {
            "vocab_size": CODEBOOK, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "hidden_act": "silu",
            "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
            "num_code_groups": 16,
        },
    }


def speech_tokenizer_config() -> dict:
    return {
        "input_sample_rate": 24000, "output_sample_rate": 24000,
        "decode_upsample_rate": 1920, "encode_downsample_rate": 1920, "encoder_valid_num_quantizers": 16,
        "decoder_config": {
            "codebook_size": CODEBOOK, "codebook_dim": 32, "latent_dim": 32, "hidden_size": 24,
            "intermediate_size": 48, "head_dim": 8, "num_attention_heads": 4, "num_key_value_heads": 2,
            "num_hidden_layers": 2, "num_quantizers": 16, "num_semantic_quantizers": 1,
            "semantic_codebook_size": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000,
            "sliding_window": 8, "max_position_embeddings": 8000, "layer_scale_initial_scale": 0.01,
            "decoder_dim": 32, "upsample_rates": [8, 5, 4, 3], "upsampling_ratios": [2, 2],
        },
        "encoder_config": {
            "sampling_rate": 24000, "frame_rate": 12.5, "audio_channels": 1, "hidden_size": 32,
            "num_filters": 4, "num_residual_layers": 1, "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7, "last_kernel_size": 3, "residual_kernel_size": 3, "dilation_growth_rate": 2,
            "use_causal_conv": True, "pad_mode": "constant", "compress": 2, "trim_right_ratio": 1.0,
            "codebook_size": CODEBOOK, "codebook_dim": 16, "num_quantizers": 16, "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": 16, "upsample_groups": 32, "num_hidden_layers": 2,
            "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 8,
            "hidden_act": "gelu", "max_position_embeddings": 8000, "sliding_window": 250,
            "rope_theta": 10000.0, "layer_scale_initial_scale": 0.01, "attention_bias": False,
        },
    }


def randomize(module: nn.Module, gen: torch.Generator) -> None:
    """Unit-scale random weights: official init (std 0.02, zero codebooks) gives near-silent,
    near-tied outputs that would make a parity test weak."""
    for name, param in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        shape = param.shape
        with torch.no_grad():
            if "embedding_sum" in name or name.endswith("embed_sum"):
                param.copy_(torch.randn(shape, generator=gen))
            elif "cluster_usage" in name:
                param.copy_(torch.rand(shape, generator=gen) * 1.5 + 0.5)
            elif leaf in ("alpha", "beta"):
                param.copy_(torch.randn(shape, generator=gen) * 0.3)
            elif leaf == "scale" or leaf == "gamma":
                param.copy_(torch.rand(shape, generator=gen) * 0.4 + 0.1)
            elif param.ndim == 1 and leaf == "weight":  # norm weights
                param.copy_(1.0 + torch.randn(shape, generator=gen) * 0.1)
            elif leaf == "bias":
                param.copy_(torch.randn(shape, generator=gen) * 0.05)
            elif param.ndim >= 2:
                fan_in = math.prod(shape[1:]) if "embedding" not in name else 1
                param.copy_(torch.randn(shape, generator=gen) / math.sqrt(max(fan_in, 1)))
    for name, buf in module.named_buffers():
        if name.endswith("embed_sum"):
            buf.copy_(torch.randn(buf.shape, generator=gen))
        elif name.endswith("cluster_usage"):
            buf.copy_(torch.rand(buf.shape, generator=gen) * 1.5 + 0.5)
        elif name.endswith("initialized"):
            buf.fill_(True)


def normalize_codec_activations(codec: Qwen3TTSTokenizerV2Model, gen: torch.Generator) -> None:
    """Rescale each decoder conv, in order, to unit output std (LSUV). Unit-scale random weights
    otherwise grow activations into the hundreds, where float32 rounding differences between
    equally valid computation orders reach 1e-4 at the output; trained weights stay near unit scale."""
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2CausalConvNet, Qwen3TTSTokenizerV2CausalTransConvNet)

    convs = [m for m in codec.decoder.modules()
             if isinstance(m, (Qwen3TTSTokenizerV2CausalConvNet, Qwen3TTSTokenizerV2CausalTransConvNet))]
    codes = torch.randint(0, CODEBOOK, (1, 16, 30), generator=gen)
    for conv in convs[:-1]:  # the last one is set by tame_codec_output
        captured = {}
        handle = conv.register_forward_hook(lambda _m, _i, out: captured.setdefault("out", out))
        with torch.no_grad():
            codec.decoder(codes)
            conv.conv.weight.div_(captured["out"].std())
            if conv.conv.bias is not None:
                conv.conv.bias.div_(captured["out"].std())
        handle.remove()


def tame_codec_output(codec: Qwen3TTSTokenizerV2Model, gen: torch.Generator) -> None:
    """Scale the last conv so the decoded waveform rarely hits the +-1 clamp (a clamped wave
    would make the waveform comparison trivially true)."""
    last = codec.decoder.decoder[-1].conv
    codes = torch.randint(0, CODEBOOK, (1, 16, 30), generator=gen)
    for _ in range(30):
        with torch.no_grad():
            wav = codec.decoder(codes)
        if (wav.abs() >= 0.999).float().mean() < 0.005 and wav.std() > 0.02:
            return
        with torch.no_grad():
            factor = 0.5 if (wav.abs() >= 0.999).float().mean() >= 0.005 else 2.0
            last.weight.mul_(factor)
            last.bias.mul_(factor)
    raise RuntimeError("could not bring the tiny codec's output into range")


def save_speech_tokenizer(directory: Path, gen: torch.Generator) -> None:
    config = Qwen3TTSTokenizerV2Config(**speech_tokenizer_config())
    codec = Qwen3TTSTokenizerV2Model(config).eval()
    randomize(codec, gen)
    normalize_codec_activations(codec, gen)
    tame_codec_output(codec, gen)
    codec.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(json.dumps({
        "chunk_length_s": None, "feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1,
        "overlap": None, "padding_side": "right", "padding_value": 0.0, "return_attention_mask": True,
        "sampling_rate": 24000,
    }, indent=2))


def finalize_layout(directory: Path, model_type: str) -> None:
    """Undo what save_pretrained writes differently from the released files."""
    saved = json.loads((directory / "config.json").read_text())
    if model_type == "base":
        # Official gotcha: the sub-config saves a model_type key its own class cannot reload.
        saved["speaker_encoder_config"].pop("model_type", None)
    else:
        saved.pop("speaker_encoder_config", None)  # released VoiceDesign / CustomVoice configs have none
    (directory / "config.json").write_text(json.dumps(saved, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({
        "do_sample": True, "top_k": 50, "top_p": 1.0, "temperature": 0.9, "repetition_penalty": 1.05,
        "subtalker_dosample": True, "subtalker_top_k": 50, "subtalker_top_p": 1.0,
        "subtalker_temperature": 0.9, "max_new_tokens": 8192,
    }, indent=2))


def save_checkpoint(directory: Path, model_type: str, token_ids: dict[str, int], tokenizer_dir: Path,
                    speech_tokenizer_dir: Path, gen: torch.Generator) -> Qwen3TTSForConditionalGeneration:
    text_vocab_size = max(token_ids.values()) + 10
    config = Qwen3TTSConfig(
        talker_config=talker_config(text_vocab_size, model_type),
        speaker_encoder_config={
            "mel_dim": 128, "enc_dim": 64, "enc_channels": [32, 32, 32, 32, 96],
            "enc_kernel_sizes": [5, 3, 3, 3, 1], "enc_dilations": [1, 2, 3, 4, 1],
            "enc_attention_channels": 16, "enc_res2net_scale": 4, "enc_se_channels": 16, "sample_rate": 24000,
        },
        tokenizer_type="qwen3_tts_tokenizer_12hz", tts_model_size="tiny", tts_model_type=model_type,
        im_start_token_id=token_ids["<|im_start|>"], im_end_token_id=token_ids["<|im_end|>"],
        tts_pad_token_id=token_ids["<tts_pad>"], tts_bos_token_id=token_ids["<tts_text_bos>"],
        tts_eos_token_id=token_ids["<tts_text_eod>"],
    )
    model = Qwen3TTSForConditionalGeneration(config).eval()
    randomize(model, gen)
    directory.mkdir(parents=True, exist_ok=True)
    # Stored in bfloat16 like the released talker weights; both engines compute in float32.
    model.to(torch.bfloat16).save_pretrained(directory)
    model.to(torch.float32)
    finalize_layout(directory, model_type)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, directory / name)
    shutil.copytree(speech_tokenizer_dir, directory / "speech_tokenizer", dirs_exist_ok=True)
    return model


def write_reference_audio(path: Path) -> None:
    """1.6 s of a voiced-like signal at 16 kHz, stereo with different channels."""
    rng = np.random.default_rng(7)
    sr = 16000
    t = np.arange(int(1.6 * sr)) / sr
    f0 = 140 + 30 * np.sin(2 * np.pi * 1.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    left = 0.3 * voiced + 0.02 * rng.standard_normal(t.size)
    right = 0.25 * voiced + 0.03 * rng.standard_normal(t.size)
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), sr, subtype="PCM_16")


GREEDY = dict(do_sample=False, subtalker_dosample=False, repetition_penalty=1.0, max_new_tokens=MAX_NEW_TOKENS)
SHORT_TEXT = "Hello world, this is a test."
LONG_TEXT = ("Good morning! The weather today is sunny. Tomorrow it will rain, "
             "so turn on the kitchen lights, please.")
REF_TEXT = "The quick brown fox."
INSTRUCT = "A deep male voice with a calm, authoritative presence."


def tokenize(official: Qwen3TTSModel, text: str) -> np.ndarray:
    return official._tokenize_texts([text])[0][0].cpu().numpy()


def record_clone_cases(official: Qwen3TTSModel, ref_wav: Path, out: Path, manifest: dict) -> None:
    for name, text, language, xvec, prefill in [
        ("icl_en_stream", SHORT_TEXT, "English", False, False),
        ("icl_auto_stream_long", LONG_TEXT, "Auto", False, False),
        ("icl_en_prefill", SHORT_TEXT, "English", False, True),
        ("xvec_en_stream", SHORT_TEXT, "English", True, False),
        ("xvec_auto_stream", LONG_TEXT, "Auto", True, False),
        ("xvec_auto_prefill", SHORT_TEXT, "Auto", True, True),
    ]:
        items = official.create_voice_clone_prompt(ref_audio=str(ref_wav), ref_text=None if xvec else REF_TEXT,
                                                   x_vector_only_mode=xvec)
        prompt = official._prompt_items_to_voice_clone_prompt(items)
        input_ids = official._tokenize_texts([official._build_assistant_text(text)])
        ref_ids = None if xvec else [official._tokenize_texts([official._build_ref_text(REF_TEXT)])[0]]
        codes, _ = official.model.generate(input_ids=input_ids, ref_ids=ref_ids, voice_clone_prompt=prompt,
                                           languages=[language], non_streaming_mode=prefill, **GREEDY)
        codes = codes[0]
        wavs, sr = official.generate_voice_clone(text=text, language=language, voice_clone_prompt=items,
                                                 non_streaming_mode=prefill, **GREEDY)
        record = {
            "codes": codes.cpu().numpy(), "wav": wavs[0], "input_ids": input_ids[0][0].cpu().numpy(),
            "speaker_embedding": items[0].ref_spk_embedding.float().cpu().numpy(),
        }
        if not xvec:
            ref_code = items[0].ref_code
            record["ref_code"] = ref_code.cpu().numpy()
            record["ref_ids"] = ref_ids[0][0].cpu().numpy()
            full, _ = official.model.speech_tokenizer.decode([{"audio_codes": torch.cat([ref_code, codes])}])
            record["wav_with_reference"] = full[0]
        np.savez_compressed(out / f"base_{name}.npz", **record)
        manifest[f"base_{name}"] = {
            "checkpoint": "tiny-base", "text": text, "language": language, "ref_audio": ref_wav.name,
            "ref_text": None if xvec else REF_TEXT, "x_vector_only": xvec, "non_streaming_mode": prefill,
            "max_new_tokens": MAX_NEW_TOKENS, "frames": int(codes.shape[0]),
        }
        print(f"base_{name}: {codes.shape[0]} frames")


def record_design_cases(official: Qwen3TTSModel, out: Path, manifest: dict) -> None:
    for name, text, language, prefill in [
        ("en_prefill", SHORT_TEXT, "English", True),
        ("auto_prefill_long", LONG_TEXT, "Auto", True),
        ("en_stream", SHORT_TEXT, "English", False),
    ]:
        wavs, sr = official.generate_voice_design(text=text, instruct=INSTRUCT, language=language,
                                                  non_streaming_mode=prefill, **GREEDY)
        input_ids = official._tokenize_texts([official._build_assistant_text(text)])
        instruct_ids = official._tokenize_texts([official._build_instruct_text(INSTRUCT)])
        codes, _ = official.model.generate(input_ids=input_ids, instruct_ids=instruct_ids, languages=[language],
                                           non_streaming_mode=prefill, **GREEDY)
        np.savez_compressed(out / f"design_{name}.npz", codes=codes[0].cpu().numpy(), wav=wavs[0],
                            input_ids=input_ids[0][0].cpu().numpy(), instruct_ids=instruct_ids[0][0].cpu().numpy())
        manifest[f"design_{name}"] = {
            "checkpoint": "tiny-design", "text": text, "language": language, "instruct": INSTRUCT,
            "non_streaming_mode": prefill, "max_new_tokens": MAX_NEW_TOKENS, "frames": int(codes[0].shape[0]),
        }
        print(f"design_{name}: {codes[0].shape[0]} frames")


CUSTOM_INSTRUCT = "Speak slowly, in a warm and clear voice."
# (name, checkpoint, speaker, text, language, instruct, non_streaming_mode). tiny-custom-0b6 is
# tiny-custom with tts_model_size "0b6", made in the build folder only (the tests make theirs the
# same way): generate_custom_voice drops the instruction when `tts_model_size in "0b6"`.
CUSTOM_CASES = [
    ("serena_en_prefill", "tiny-custom", "Serena", SHORT_TEXT, "English", None, True),
    ("serena_instruct_en_prefill", "tiny-custom", "Serena", SHORT_TEXT, "English", CUSTOM_INSTRUCT, True),
    ("serena_instruct_auto_stream", "tiny-custom", "serena", SHORT_TEXT, "Auto", CUSTOM_INSTRUCT, False),
    ("ryan_auto_stream_long", "tiny-custom", "Ryan", LONG_TEXT, "Auto", None, False),
    ("dylan_auto_prefill", "tiny-custom", "Dylan", SHORT_TEXT, "Auto", None, True),
    ("dylan_zh_stream", "tiny-custom", "Dylan", SHORT_TEXT, "Chinese", None, False),
    ("dylan_en_prefill", "tiny-custom", "Dylan", SHORT_TEXT, "English", None, True),
    ("eric_instruct_auto_prefill_long", "tiny-custom", "Eric", LONG_TEXT, "Auto", CUSTOM_INSTRUCT, True),
    ("0b6_serena_instruct_en_prefill", "tiny-custom-0b6", "Serena", SHORT_TEXT, "English", CUSTOM_INSTRUCT, True),
]


def record_custom_cases(checkpoints: dict[str, Path], out: Path, manifest: dict) -> None:
    """The official generate_custom_voice, its own prompt building included: the arguments it hands
    to model.generate (token ids, the instruction it kept) are captured on the way."""
    loaded = {name: Qwen3TTSModel.from_pretrained(str(path), dtype=torch.float32)
              for name, path in checkpoints.items()}
    for name, checkpoint, speaker, text, language, instruct, prefill in CUSTOM_CASES:
        official = loaded[checkpoint]
        calls = []
        generate = official.model.generate

        def capture(**kwargs):
            result = generate(**kwargs)
            calls.append((kwargs, result))
            return result

        official.model.generate = capture
        try:
            wavs, sr = official.generate_custom_voice(text=text, speaker=speaker, language=language,
                                                      instruct=instruct, non_streaming_mode=prefill, **GREEDY)
        finally:
            del official.model.generate
        (kwargs, (codes, _)), = calls
        record = {"codes": codes[0].cpu().numpy(), "wav": wavs[0], "input_ids": kwargs["input_ids"][0][0].cpu().numpy()}
        instruct_ids = kwargs["instruct_ids"][0]
        if instruct_ids is not None:
            record["instruct_ids"] = instruct_ids[0].cpu().numpy()
        np.savez_compressed(out / f"custom_{name}.npz", **record)
        manifest[f"custom_{name}"] = {
            "checkpoint": checkpoint, "speaker": speaker, "text": text, "language": language, "instruct": instruct,
            "instruct_used": instruct_ids is not None, "non_streaming_mode": prefill,
            "max_new_tokens": MAX_NEW_TOKENS, "frames": int(codes[0].shape[0]),
        }
        print(f"custom_{name}: {codes[0].shape[0]} frames, instruction {'used' if instruct_ids is not None else 'none'}")


def build_custom(out: Path, parity: Path, manifest: dict) -> None:
    """tiny-custom/ (talker weights from CUSTOM_SEED, tokenizers copied from tiny-design/) and its cases."""
    design = out / "tiny-design"
    added = json.loads((design / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    token_ids = {entry["content"]: int(i) for i, entry in added.items()}
    directory = out / "tiny-custom"
    shutil.rmtree(directory, ignore_errors=True)
    save_checkpoint(directory, "custom_voice", token_ids, design, design / "speech_tokenizer",
                    torch.Generator().manual_seed(CUSTOM_SEED))
    small = out / "_build" / "tiny-custom-0b6"
    shutil.rmtree(small, ignore_errors=True)
    shutil.copytree(directory, small)
    config = json.loads((small / "config.json").read_text())
    config["tts_model_size"] = "0b6"
    (small / "config.json").write_text(json.dumps(config, indent=2))
    for name in [n for n in manifest if n.startswith("custom_")]:
        del manifest[name]
    record_custom_cases({"tiny-custom": directory, "tiny-custom-0b6": small}, parity, manifest)
    shutil.rmtree(small)


def record_codec_case(official: Qwen3TTSModel, out: Path, manifest: dict, gen: torch.Generator) -> None:
    """A code sequence much longer than the codec's sliding window, decoded whole."""
    codes = torch.randint(0, CODEBOOK, (40, 16), generator=gen)
    wavs, _ = official.model.speech_tokenizer.decode([{"audio_codes": codes}])
    np.savez_compressed(out / "codec_decode.npz", codes=codes.numpy(), wav=wavs[0])
    manifest["codec_decode"] = {"checkpoint": "tiny-base", "frames": 40}


def record_long_reference_case(official: Qwen3TTSModel, out: Path, manifest: dict) -> None:
    """Reference codes of a 12 s recording: longer than the Mimi encoder transformer's configured
    sliding window (250 steps at 25 Hz = 10 s), which transformers 4.57.3 does not apply.
    Stored as 16-bit FLAC so both engines read bit-identical samples."""
    rng = np.random.default_rng(11)
    t = np.arange(12 * 24000) / 24000
    wav = (0.3 * np.sin(2 * np.pi * (120 + 40 * np.sin(2 * np.pi * 0.5 * t)) * t)
           + 0.1 * np.sin(2 * np.pi * 610 * t) * (t % 1.3 < 0.6) + 0.002 * rng.standard_normal(t.size))
    path = out / "long_reference_24k.flac"
    sf.write(path, wav.astype(np.float32), 24000, subtype="PCM_16")
    samples, sr = sf.read(path, dtype="float32")
    codes = official.model.speech_tokenizer.encode(samples, sr=sr).audio_codes[0]
    np.savez_compressed(out / "encoder_long.npz", codes=codes.cpu().numpy())
    manifest["encoder_long"] = {"checkpoint": "tiny-base", "audio": path.name, "frames": int(codes.shape[0])}


def make_eos_reachable(directory: Path, official: Qwen3TTSModel, ref_wav: Path) -> float:
    """Scale the EOS row of the codec head until a greedy run stops on EOS mid-utterance, so the
    fixtures also cover stopping (and min_new_tokens) rather than always running to the cap."""
    head = official.model.talker.codec_head.weight
    eos = official.model.config.talker_config.codec_eos_token_id
    original = head[eos].clone()
    items = official.create_voice_clone_prompt(ref_audio=str(ref_wav), x_vector_only_mode=True)
    for scale in [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0]:
        with torch.no_grad():
            head[eos] = original * scale
        wavs, _ = official.generate_voice_clone(text=SHORT_TEXT, language="English", voice_clone_prompt=items,
                                                **GREEDY)
        frames = wavs[0].shape[0] // 1920
        if 3 <= frames <= MAX_NEW_TOKENS - 4:
            return scale
    raise RuntimeError("no EOS scale gave a mid-utterance stop")


def scale_eos_row_on_disk(directory: Path, eos: int, scale: float) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = directory / "model.safetensors"
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    head = tensors["talker.codec_head.weight"].float()
    head[eos] *= scale
    tensors["talker.codec_head.weight"] = head.to(torch.bfloat16)
    save_file(tensors, path, metadata=metadata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    parser.add_argument("--only", choices=["custom"], help="rebuild only this part, keep every other fixture")
    args = parser.parse_args()
    out: Path = args.out
    if args.only == "custom":
        parity = out / "parity"
        manifest = json.loads((parity / "manifest.json").read_text())
        build_custom(out, parity, manifest["cases"])
        shutil.rmtree(out / "_build", ignore_errors=True)
        (parity / "manifest.json").write_text(json.dumps(manifest, indent=2))
        print("custom fixtures written to", out)
        return
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)

    work = out / "_build"
    shutil.rmtree(work, ignore_errors=True)
    (work / "tokenizer").mkdir(parents=True)
    (work / "speech_tokenizer").mkdir(parents=True)
    token_ids = build_text_tokenizer(work / "tokenizer")
    save_speech_tokenizer(work / "speech_tokenizer", gen)

    ref_wav = out / "ref_16k_stereo.wav"
    write_reference_audio(ref_wav)
    parity = out / "parity"
    shutil.rmtree(parity, ignore_errors=True)
    parity.mkdir(parents=True)
    manifest: dict = {"generator": "tools/make_parity_fixtures.py", "official": "qwen-tts 0.1.1",
                      "transformers": transformers.__version__, "torch": torch.__version__, "cases": {}}

    for model_type, dirname in [("base", "tiny-base"), ("voice_design", "tiny-design")]:
        directory = out / dirname
        shutil.rmtree(directory, ignore_errors=True)
        save_checkpoint(directory, model_type, token_ids, work / "tokenizer", work / "speech_tokenizer", gen)
        official = Qwen3TTSModel.from_pretrained(str(directory), dtype=torch.float32)
        role = tokenize(official, "<|im_start|>assistant\n")
        assert len(role) == 3, f"'<|im_start|>assistant\\n' must be 3 tokens, got {role}"
        if model_type == "base":
            scale = make_eos_reachable(directory, official, ref_wav)
            manifest["eos_row_scale"] = scale
            scale_eos_row_on_disk(directory, official.model.config.talker_config.codec_eos_token_id, scale)
            official = Qwen3TTSModel.from_pretrained(str(directory), dtype=torch.float32)
            record_clone_cases(official, ref_wav, parity, manifest["cases"])
            record_codec_case(official, parity, manifest["cases"], gen)
            record_long_reference_case(official, parity, manifest["cases"])
        else:
            record_design_cases(official, parity, manifest["cases"])
    build_custom(out, parity, manifest["cases"])
    shutil.rmtree(work)
    (parity / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print("fixtures written to", out)


if __name__ == "__main__":
    main()

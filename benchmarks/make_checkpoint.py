"""Write a random-weight Qwen3-TTS checkpoint in the official layout, full size or scaled down.

No downloads: shapes come from tools/published_configs/ (the released config.json values).
Compute does not depend on weight values, so this is what speed is measured on. The same
directory loads in our engine and in the official qwen-tts code.

    python benchmarks/make_checkpoint.py --config 1.7B-Base --out bench-checkpoints/1.7B-Base
    python benchmarks/make_checkpoint.py --config 1.7B-Base --talker-layers 8 --out bench-checkpoints/small

--device cuda draws the weights on the GPU, directly in their dtype (other values than the CPU's
for the same seed, same shapes and scale): the GPU run builds the 1.7B in seconds that way, where
drawing ~2 G float32 normals on the CPU took most of its 28 s. The directory is written under a
temporary name and renamed when complete, so an existing directory is always a whole checkpoint.

The text tokenizer is a byte-level BPE in Qwen2's file layout whose special tokens sit at the
released ids (<|im_start|> = 151644 ...); its vocabulary below them is mostly filler, so
tokenization is cruder than the real one (more tokens per word) but the shapes are real.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wyoming_qwen_tts.engine.checkpoint import parse_codec_config, parse_model_config  # noqa: E402
from wyoming_qwen_tts.engine.codec import SpeechCodec  # noqa: E402
from wyoming_qwen_tts.engine.talker import Qwen3TTSModel  # noqa: E402

PUBLISHED = Path(__file__).resolve().parents[1] / "tools" / "published_configs"
SPECIAL_TOKENS = {  # released ids
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<tts_pad>": 151671, "<tts_text_bos>": 151672, "<tts_text_eod>": 151673,
}
BPE_TEXT = ("assistant user system Hello world, this is a test. The quick brown fox jumps over the lazy dog. "
            "Good morning! The weather today is sunny. Tomorrow it will rain. Turn on the kitchen lights, please.")


def scaled_config(name: str, talker_layers: int | None, predictor_layers: int | None) -> dict:
    config = json.loads((PUBLISHED / f"{name}.json").read_text())
    if talker_layers:
        config["talker_config"]["num_hidden_layers"] = talker_layers
    if predictor_layers:
        config["talker_config"]["code_predictor_config"]["num_hidden_layers"] = predictor_layers
    return config


def random_state(module: torch.nn.Module, dtype: torch.dtype, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Unit-scale random tensors for every entry of the module's state dict (built on meta), in host
    memory. With a CUDA generator they are drawn on its GPU, in their final dtype, and copied back."""
    device = gen.device
    state = {}
    for name, meta in module.state_dict().items():
        shape = tuple(meta.shape)
        leaf = name.rsplit(".", 1)[-1]
        keep_float32 = name.startswith(("speaker_encoder.", "encoder.", "decoder."))
        final = torch.float32 if keep_float32 else dtype
        # On the CPU drawn in float32 and converted (the values every earlier checkpoint had); on a
        # GPU drawn in the final dtype at once.
        draw = final if device.type == "cuda" else torch.float32
        if leaf in ("cluster_usage", "initialized"):
            tensor = torch.ones(shape)
        elif leaf in ("embedding_sum", "embed_sum") or "embedding" in name:
            tensor = torch.randn(shape, generator=gen, device=device, dtype=draw)
        elif len(shape) == 1:
            tensor = torch.ones(shape) if leaf in ("weight", "scale", "gamma") else torch.zeros(shape)
            if leaf in ("alpha", "beta"):
                tensor = torch.zeros(shape)
        else:
            fan_in = math.prod(shape[1:])
            tensor = torch.randn(shape, generator=gen, device=device, dtype=draw).div_(math.sqrt(fan_in))
        state[name] = tensor.to(final).contiguous().cpu()
    return state


def write_tokenizer(out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([BPE_TEXT] * 50 + ["assistant\n"] * 200, trainer=trainer)
    vocab = tok.get_vocab()
    merges = json.loads(tok.to_str())["model"]["merges"]
    first_special = min(SPECIAL_TOKENS.values())
    for index in range(len(vocab), first_special):  # filler ids no merge ever produces
        vocab[f"<|filler_{index}|>"] = index
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(lines) + "\n")
    added = {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                      "special": True} for t, i in SPECIAL_TOKENS.items()}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "add_prefix_space": False, "added_tokens_decoder": added, "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace", "model_max_length": 131072,
        "clean_up_tokenization_spaces": False, "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer",
    }, indent=2))


def build(config_name: str, out: Path, dtype: torch.dtype, talker_layers: int | None,
          predictor_layers: int | None, seed: int = 0, device: str = "cpu") -> None:
    """The checkpoint at `out` (replaced if there), written as out + ".partial" and renamed."""
    final, out = out, out.with_name(out.name + ".partial")
    for stale in (out, final):
        if stale.exists():
            shutil.rmtree(stale)
    _write(config_name, out, dtype, talker_layers, predictor_layers, torch.Generator(device).manual_seed(seed))
    out.rename(final)


def _write(config_name: str, out: Path, dtype: torch.dtype, talker_layers: int | None,
           predictor_layers: int | None, gen: torch.Generator) -> None:
    from safetensors.torch import save_file

    config = scaled_config(config_name, talker_layers, predictor_layers)
    codec_config = json.loads((PUBLISHED / "speech_tokenizer.json").read_text())
    (out / "speech_tokenizer").mkdir(parents=True)

    model_cfg = parse_model_config(config)
    with torch.device("meta"):
        model = Qwen3TTSModel(model_cfg)
        codec = SpeechCodec(parse_codec_config(codec_config), with_encoder=True)
    save_file(random_state(model, dtype, gen), str(out / "model.safetensors"), metadata={"format": "pt"})
    codec_state = random_state(codec, torch.float32, gen)
    decoder_cfg = codec_config["decoder_config"]
    for part in ("rvq_first", "rvq_rest"):  # present in released files, unused when decoding
        dim = decoder_cfg["codebook_dim"]
        codec_state[f"decoder.quantizer.{part}.input_proj.weight"] = (
            torch.randn(dim // 2, dim, 1, generator=gen, device=gen.device) / dim).cpu()
    save_file(codec_state, str(out / "speech_tokenizer" / "model.safetensors"), metadata={"format": "pt"})

    (out / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copy(PUBLISHED / "generation_config.json", out / "generation_config.json")
    (out / "speech_tokenizer" / "config.json").write_text(json.dumps(codec_config, indent=2))
    (out / "speech_tokenizer" / "preprocessor_config.json").write_text(json.dumps({
        "feature_extractor_type": "EncodecFeatureExtractor", "feature_size": 1, "padding_side": "right",
        "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": 24000,
        "chunk_length_s": None, "overlap": None}, indent=2))
    write_tokenizer(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="1.7B-Base", help="a name in tools/published_configs (without .json)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--talker-layers", type=int, help="scale down: fewer talker layers (published: 28)")
    parser.add_argument("--predictor-layers", type=int, help="scale down: fewer code predictor layers (published: 5)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where the weights are drawn (cuda: far faster, other values than the CPU's)")
    args = parser.parse_args()
    started = time.perf_counter()
    build(args.config, args.out, getattr(torch, args.dtype), args.talker_layers, args.predictor_layers,
          device=args.device)
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file()) / 2**30
    print(f"wrote {args.out} ({size:.2f} GiB) in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

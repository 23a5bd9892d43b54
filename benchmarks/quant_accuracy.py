"""How far bf16 / int8 weights move the model from float32, on the same checkpoint.

Teacher forcing: float32 generates the codes (greedy), then every variant scores those same codes,
so the logits compare position by position (the talker's first code of each frame, and the code
predictor's 15 others). Reported: relative error of the logits (||variant - fp32|| / ||fp32||),
how often their argmax agrees, and the SNR of the audio decoded from each one's argmax codes
against float32's (the codec is the same float32 one: only the codes that flip count). Free-running
generation is no measure here: random weights give nearly flat logits, so two runs part early.

    python benchmarks/quant_accuracy.py --model bench-checkpoints/0.6B-Base --frames 24
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wyoming_qwen_tts.engine import QwenTTS, SamplingConfig, VoicePrompt  # noqa: E402
from wyoming_qwen_tts.engine.layers import run_layers  # noqa: E402

TEXT = "Hello world, this is a test. The quick brown fox jumps over the lazy dog."


@dataclass
class Accuracy:
    talker_rel_error: float  # first code of each frame
    predictor_rel_error: float  # the other 15 codes
    argmax_agreement: float  # share of the 16 codes per frame whose argmax matches fp32
    audio_snr_db: float  # audio of the teacher-forced argmax codes, against fp32's


@torch.inference_mode()
def teacher_forced_logits(tts: QwenTTS, voice: VoicePrompt, codes: torch.Tensor,
                          text: str = TEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits (F, V) of the talker and (F, G-1, V') of the code predictor for codes (F, G)."""
    talker, predictor = tts.model.talker, tts.model.talker.code_predictor
    dtype, device = talker.model.norm.weight.dtype, tts.device
    codes = codes.to(device)
    frames, groups = codes.shape
    prefill = tts.prompts.build(text, voice, "auto", device=device)
    texts = torch.cat((prefill.trailing_text[0], prefill.tts_pad[0].expand(frames, -1)))[:frames]
    inputs = talker.embed_frames(codes) + texts.to(dtype)
    embeds = torch.cat((prefill.embeds.to(dtype), inputs[None].to(dtype)), dim=1)
    prompt = prefill.embeds.shape[1]
    hidden = talker.prefill(embeds, talker.new_cache(1, embeds.shape[1], device, dtype), row=0)[0]
    before_frame = hidden[prompt - 1: prompt - 1 + frames]  # the state each frame's first code is drawn from
    talker_logits = talker.codec_head(before_frame).float()
    steps = [before_frame, talker.embed_codec(codes[:, 0])]
    steps += [predictor.model.codec_embedding[g](codes[:, g + 1]) for g in range(groups - 2)]
    x = predictor.small_to_mtp_projection(torch.stack(steps, dim=1))
    cfg = predictor.cfg
    out = predictor.model.norm(run_layers(predictor.model.layers, x, predictor.new_cache(frames, device, dtype),
                                          cfg.rope_theta, cfg.head_dim))
    predictor_logits = torch.stack([predictor.lm_head[g](out[:, g + 1]).float() for g in range(groups - 1)], dim=1)
    return talker_logits, predictor_logits


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


def snr_db(value: np.ndarray, reference: np.ndarray) -> float:
    size = min(value.size, reference.size)
    noise = float(np.sum((value[:size] - reference[:size]) ** 2))
    return float(10 * np.log10(np.sum(reference[:size] ** 2) / max(noise, 1e-20)))


def greedy_codes(tts: QwenTTS, voice: VoicePrompt, frames: int) -> torch.Tensor:
    """(frames, G) codes of a greedy run of a fixed length."""
    _, codes = tts.synthesize(TEXT, voice, sampling=SamplingConfig.greedy(), max_frames=frames, min_frames=frames)
    return torch.from_numpy(codes)


def argmax_codes(tts: QwenTTS, talker_logits: torch.Tensor, predictor_logits: torch.Tensor) -> torch.Tensor:
    codebook = tts.checkpoint.codec.decoder.codebook_size  # the talker's vocabulary adds control tokens
    return torch.cat((talker_logits[:, :codebook].argmax(-1)[:, None], predictor_logits.argmax(-1)), dim=1)


def compare(reference: QwenTTS, variant: QwenTTS, voice: VoicePrompt, frames: int) -> Accuracy:
    codes = greedy_codes(reference, voice, frames)
    ref_talker, ref_predictor = teacher_forced_logits(reference, voice, codes)
    talker, predictor = teacher_forced_logits(variant, voice, codes)
    ref_codes, codes = argmax_codes(reference, ref_talker, ref_predictor), argmax_codes(variant, talker, predictor)
    agreement = float((codes == ref_codes).float().mean())
    snr = snr_db(reference.decode(codes), reference.decode(ref_codes))
    return Accuracy(relative_error(talker, ref_talker), relative_error(predictor, ref_predictor), agreement, snr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="Base checkpoint directory")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reference = QwenTTS(args.model, device="cpu", dtype="float32")
    voice = VoicePrompt(kind="xvector", speaker_embedding=torch.ones(reference.model.cfg.talker.hidden_size))
    print(f"{args.model}, {args.frames} teacher-forced frames, against float32 weights")
    print("| weights | activations | logits rel. error talker | code predictor | argmax agreement | audio SNR |")
    print("|---|---|---|---|---|---|")
    for dtype, quantize in (("bfloat16", "none"), ("float32", "int8"), ("bfloat16", "int8")):
        variant = QwenTTS(args.model, device="cpu", dtype=dtype, quantize=quantize)
        acc = compare(reference, variant, voice, args.frames)
        weights = dtype if quantize == "none" else quantize
        print(f"| {weights} | {dtype} | {acc.talker_rel_error:.4f} | {acc.predictor_rel_error:.4f} | "
              f"{acc.argmax_agreement:.3f} | {acc.audio_snr_db:.1f} dB |", flush=True)
        del variant


if __name__ == "__main__":
    main()

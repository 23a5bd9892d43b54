"""Offline synthesis, no server: text -> 24 kHz mono 16-bit WAV.

    python -m wyoming_qwen_tts.synth --model DIR_OR_ID --text TEXT --out OUT.wav
        [--language auto|English|...|en|zh|...]
        [--ref-audio WAV --ref-text TEXT] | [--ref-audio WAV --x-vector-only] | [--instruct DESCRIPTION]
        | [--speaker NAME [--instruct STYLE]] | [--voice-prompt V.safetensors]
        [--greedy] [--seed N] [--max-new-tokens N] [--device cpu|cuda] [--dtype float32|bfloat16|float16]
        [--quantize none|int8] [--compile auto|true|false]
        [--codes OUT.npy]

--max-new-tokens counts talker tokens as the official code does: N gives at most N-1 frames
(the last token's frame is never completed there either), so codes match its output.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

from .engine import CheckpointError, QwenTTS, ReferenceAudioError, SamplingConfig, VoicePrompt, normalize_language


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m wyoming_qwen_tts.synth", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint directory or hub id")
    parser.add_argument("--text", required=True)
    parser.add_argument("--out", required=True, type=Path, help="WAV to write (24 kHz, mono, 16-bit)")
    parser.add_argument("--language", default="auto", help="auto, a language name or code (default auto)")
    parser.add_argument("--ref-audio", type=Path, help="reference recording of the voice to clone (Base models)")
    parser.add_argument("--ref-text", help="transcript of --ref-audio: ICL cloning")
    parser.add_argument("--x-vector-only", action="store_true", help="clone from the speaker embedding only")
    parser.add_argument("--instruct", help="voice description (VoiceDesign models), or the optional style "
                                           "instruction of a --speaker (CustomVoice; the 0.6B takes none)")
    parser.add_argument("--speaker", help="built-in speaker of a CustomVoice model (any case)")
    parser.add_argument("--voice-prompt", type=Path, help="a voice prompt saved earlier (instead of the above)")
    parser.add_argument("--save-voice-prompt", type=Path, help="save the voice prompt made from the options above")
    parser.add_argument("--greedy", action="store_true", help="argmax everywhere, no repetition penalty")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-new-tokens", type=int, help="talker token limit as in the official code (N -> <= N-1 frames)")
    parser.add_argument("--text-mode", choices=["per_frame", "prefill"], help="override the voice type's default")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default); another GPU than the first: CUDA_VISIBLE_DEVICES=N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument("--quantize", default="none", choices=["none", "int8"],
                        help="int8 weights for the talker and code predictor (default none)")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                        help="frame steps through torch.compile (default auto: off; compiling takes minutes)")
    parser.add_argument("--codes", type=Path, help="also save the generated codes, (frames, 16) int64 .npy")
    parser.add_argument("--local-files-only", action="store_true", help="never download; use the local cache only")
    parser.add_argument("--debug", action="store_true")
    return parser


def voice_from_args(args: argparse.Namespace, tts: QwenTTS, parser: argparse.ArgumentParser) -> VoicePrompt:
    if args.voice_prompt:
        if args.ref_audio or args.instruct or args.speaker:
            parser.error("--voice-prompt excludes --ref-audio, --instruct and --speaker")
        return VoicePrompt.load(args.voice_prompt)
    if args.speaker is not None:
        if args.ref_audio or args.ref_text or args.x_vector_only:
            parser.error("--speaker (CustomVoice) excludes --ref-audio, --ref-text and --x-vector-only")
        return tts.custom_voice(args.speaker, args.instruct)
    if args.instruct is not None:
        if args.ref_audio or args.ref_text or args.x_vector_only:
            parser.error("--instruct (voice design) excludes --ref-audio, --ref-text and --x-vector-only")
        return tts.design_voice(args.instruct)
    if args.ref_audio is None:
        parser.error("give --ref-audio (with --ref-text or --x-vector-only), --instruct, --speaker or --voice-prompt")
    if args.ref_text is None and not args.x_vector_only:
        parser.error("--ref-audio needs --ref-text (ICL) or --x-vector-only")
    if args.ref_text is not None and args.x_vector_only:
        parser.error("--ref-text and --x-vector-only exclude each other")
    return tts.clone_voice(args.ref_audio, args.ref_text, x_vector_only=args.x_vector_only)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(samples, -1.0, 1.0), rate, subtype="PCM_16")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        language = normalize_language(args.language)
    except ValueError as err:
        parser.error(str(err))
    if args.max_new_tokens is not None and args.max_new_tokens < 2:
        parser.error("--max-new-tokens must be at least 2 (N tokens give at most N-1 frames)")
    try:
        started = time.perf_counter()
        tts = QwenTTS(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize,
                      compile=args.compile, local_files_only=args.local_files_only)
        loaded = time.perf_counter()
        voice = voice_from_args(args, tts, parser)
        if args.save_voice_prompt:
            voice.save(args.save_voice_prompt)
        sampling = SamplingConfig.greedy() if args.greedy else None
        max_frames = args.max_new_tokens - 1 if args.max_new_tokens is not None else None
        samples, codes = tts.synthesize(args.text, voice, language=language, sampling=sampling, seed=args.seed,
                                        max_frames=max_frames, text_mode=args.text_mode)
    except (CheckpointError, ReferenceAudioError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    write_wav(args.out, samples, tts.sample_rate)
    if args.codes:
        args.codes.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.codes, codes.astype(np.int64))
    seconds = samples.size / tts.sample_rate
    took = time.perf_counter() - loaded
    print(f"wrote {args.out}: {seconds:.2f} s of audio, {codes.shape[0]} frames, "
          f"generated in {took:.2f} s (load {loaded - started:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

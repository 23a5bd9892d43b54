"""First audio and the longest gap inside a sentence, with and without smooth playback (--smooth),
on this machine's real engine: what a listener hears when speech comes slower than real time.

    .venv/bin/python benchmarks/smooth_bench.py --model /tmp/qwen-0.6b-base [--dtype float32] [--seconds-per-token 0.3]

The server's own path in-process (Synthesizer + SpeechService.speak, a batch of one): each
sentence's chunks are timed as they are passed on and played back by a simulated listener who plays
a chunk the moment it arrives or the previous one ends. Random weights never say end-of-speech, so
each sentence is capped at a length that follows its text, as real speech does (--seconds-per-token
of speech per text token), and the first sentence (not counted) teaches the server that pace.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from contextlib import aclosing
from pathlib import Path

from wyoming_qwen_tts.engine import QwenTTS
from wyoming_qwen_tts.engine.options import SpeechOptions
from wyoming_qwen_tts.request_text import LanguageDetector
from wyoming_qwen_tts.speech import Smoothing, SpeechService, VoiceLookup
from wyoming_qwen_tts.synthesis import ReadyVoice, Synthesizer
from wyoming_qwen_tts.voice_kinds.clone import CloneSpec
from wyoming_qwen_tts.voices import VoiceCatalog

REFERENCE = Path(__file__).parent.parent / "tests" / "fixtures" / "ref_16k_stereo.wav"
SENTENCES = ["Good morning! The kitchen lights are on and the front door is locked.",
             "Your timer is done, and the washing machine has finished its cycle.",
             "Tomorrow it will rain in the afternoon, so take an umbrella with you.",
             "The living room is at twenty one degrees and the windows are closed."]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def heard(arrivals: list[tuple[float, float]]) -> tuple[float, float]:
    """(first audio, longest gap once playing) of chunks (arrival, seconds long) played as they come."""
    plays_until, longest = None, 0.0
    for at, length in arrivals:
        if plays_until is not None and at > plays_until:
            longest = max(longest, at - plays_until)
        plays_until = max(at, plays_until or at) + length
    return arrivals[0][0], longest


async def sentence(speech: SpeechService, text: str, seconds_per_token: float) -> list[tuple[float, float]]:
    voice, _ = speech.voice(None, VoiceLookup.STRICT)
    frames = round(len(voice.model.prompts.tokenize(text)[0]) * seconds_per_token * 12.5)
    started, arrivals = time.perf_counter(), []
    async with aclosing(speech.speak(voice, text, "english", SpeechOptions(seed=1, max_frames=frames))) as audio:
        async for pcm in audio:
            arrivals.append((time.perf_counter() - started, len(pcm) / 2 / 24000))
    return arrivals


async def run(args: argparse.Namespace) -> dict:
    tts = QwenTTS(args.model, device="cpu", dtype=args.dtype, quantize=args.quantize)
    voice = tts.clone_voice(REFERENCE, "The quick brown fox.")
    spec = CloneSpec(name="ann", description="Ann", reference=REFERENCE, language="english")
    synthesizer = Synthesizer({"ann": ReadyVoice(spec, voice, tts)}, max_batch=1)
    synthesizer.warm_up()
    results = {}
    try:
        for smoothing in (Smoothing.OFF, Smoothing.AUTO, Smoothing.ON):
            speech = SpeechService(VoiceCatalog({"ann": spec}, default="ann"), synthesizer, LanguageDetector(),
                                   smoothing=smoothing)
            await sentence(speech, SENTENCES[0], args.seconds_per_token)  # the server learns the pace
            heard_runs = [await sentence(speech, text, args.seconds_per_token) for text in SENTENCES[1:]]
            runs = [heard(arrivals) for arrivals in heard_runs]
            results[smoothing.value] = {
                "sentence_s": [round(sum(length for _, length in arrivals), 2) for arrivals in heard_runs],
                "first_audio_s": [round(first, 3) for first, _ in runs],
                "longest_gap_s": [round(gap, 3) for _, gap in runs],
                "speed_x_real_time": round(synthesizer.speed(synthesizer.voice("ann")), 3),
            }
            print(smoothing.value, json.dumps(results[smoothing.value]), flush=True)
    finally:
        synthesizer.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--quantize", default="none")
    parser.add_argument("--seconds-per-token", type=float, default=0.12,
                        help="how long each sentence lasts per text token (default 0.12: 3-5 s sentences with "
                             "make_checkpoint.py's small tokenizer, which splits words finely)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    results = {"cpu": cpu_model(), "model": args.model, "dtype": args.dtype, "quantize": args.quantize,
               "seconds_per_token": args.seconds_per_token, "by_smoothing": asyncio.run(run(args))}
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

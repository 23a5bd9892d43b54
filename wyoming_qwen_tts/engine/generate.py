"""The streaming decode loop: prompt -> frames of codes -> 24 kHz audio chunks.

One frame (80 ms) per iteration: the talker picks the frame's first code from its last hidden
state, the code predictor fills in the other 15, the frame is yielded at once, and its summed
embedding (plus the next text token, in per-frame text mode) is the talker's next input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from .codec import DecoderState, SpeechCodec
from .prompt import Prefill
from .sampling import SamplingConfig, apply_repetition_penalty, choose
from .talker import Talker

MIN_FRAMES_BEFORE_EOS = 2  # the official generate() passes min_new_tokens=2
FRAMES_CAP = 2048  # ~164 s: no request, however long its text, runs past this
BUDGET_BASE_FRAMES = 24  # ~2 s of slack for very short texts
BUDGET_FRAMES_PER_TOKEN = 12  # ~3x a normal speaking rate per text token


def frame_budget(text_tokens: int, cap: int = FRAMES_CAP) -> int:
    """How many frames a text may take before we stop waiting for EOS."""
    return max(1, min(cap, BUDGET_BASE_FRAMES + BUDGET_FRAMES_PER_TOKEN * text_tokens))


def suppressed_codes(talker: Talker, device: torch.device) -> torch.Tensor:
    """Bool (V,): the top 1024 ids (specials, languages, speakers) except EOS never get sampled."""
    cfg = talker.cfg
    mask = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
    mask[max(0, cfg.vocab_size - 1024):] = True
    mask[cfg.codec_eos_id] = False
    return mask


@torch.inference_mode()
def generate_frames(talker: Talker, prefill: Prefill, sampling: SamplingConfig, max_frames: int,
                    generator: torch.Generator | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    min_frames: int = MIN_FRAMES_BEFORE_EOS) -> Iterator[torch.Tensor]:
    """Yield frames of codes, (G,) int64 each, until EOS (allowed from frame min_frames on),
    max_frames, or should_stop()."""
    weight = talker.codec_head.weight
    device, dtype = weight.device, weight.dtype
    eos = talker.cfg.codec_eos_id
    predictor = talker.code_predictor
    cache = talker.new_cache(1, prefill.embeds.shape[1] + max_frames, device, dtype)
    predictor_cache = predictor.new_cache(1, device, dtype)
    suppress = suppressed_codes(talker, device)
    seen = torch.zeros(1, talker.cfg.vocab_size, dtype=torch.bool, device=device)
    trailing = prefill.trailing_text.to(dtype)

    hidden = talker(prefill.embeds.to(dtype), cache)[:, -1]
    for step in range(max_frames):
        logits = apply_repetition_penalty(talker.codec_head(hidden).float(), seen, sampling.talker.repetition_penalty)
        if step < min_frames:
            logits[:, eos] = float("-inf")
        first = choose(logits.masked_fill(suppress, float("-inf")), sampling.talker, generator)
        if int(first) == eos:
            return
        seen[0, first] = True
        rest = predictor.predict(hidden, talker.embed_codec(first), predictor_cache, sampling.predictor, generator)
        frame = torch.cat((first, rest[0]))
        yield frame
        if step + 1 == max_frames or (should_stop is not None and should_stop()):
            return
        text = trailing[:, step] if step < trailing.shape[1] else prefill.tts_pad[:, 0].to(dtype)
        hidden = talker((talker.embed_frames(frame) + text).view(1, 1, -1), cache)[:, -1]


@torch.inference_mode()
def decode_stream(frames: Iterator[torch.Tensor], codec: SpeechCodec, state: DecoderState,
                  first_chunk_frames: int = 1, max_chunk_frames: int = 8) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Group frames into chunks (first_chunk_frames, then doubling up to max_chunk_frames) and
    decode each as soon as it is full. Yields (codes (n, G), audio (n * 1920,)) per chunk."""
    if first_chunk_frames < 1 or max_chunk_frames < first_chunk_frames:
        raise ValueError("need 1 <= first_chunk_frames <= max_chunk_frames")
    pending: list[torch.Tensor] = []
    target = first_chunk_frames
    for frame in frames:
        pending.append(frame)
        if len(pending) >= target:
            codes = torch.stack(pending)
            yield codes, codec.decoder(codes[None], state)[0]
            pending = []
            target = min(target * 2, max_chunk_frames)
    if pending:
        codes = torch.stack(pending)
        yield codes, codec.decoder(codes[None], state)[0]

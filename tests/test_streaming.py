"""Streaming: chunks while frames are generated, exactly the audio of a whole decode."""

import threading

import numpy as np
import pytest
import torch

from wyoming_qwen_tts.engine import SamplingConfig
from wyoming_qwen_tts.engine.generate import FRAMES_CAP, frame_budget

TEXT = "Good morning! The weather today is sunny. Tomorrow it will rain."
WAVE_TOLERANCE = 1e-4


@pytest.mark.parametrize("splits", [[1] * 50, [1, 2, 4, 8, 16, 19], [7, 13, 30], [49, 1]])
def test_decoder_state_makes_any_split_equal_whole_decode(base_tts, splits):
    gen = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 256, (1, sum(splits), 16), generator=gen)
    decoder = base_tts.codec.decoder
    with torch.inference_mode():
        whole = decoder(codes)
        state, parts, start = decoder.new_state(), [], 0
        for size in splits:
            parts.append(decoder(codes[:, start:start + size], state))
            start += size
    streamed = torch.cat(parts, dim=1)
    assert streamed.shape == whole.shape == (1, sum(splits) * 1920)
    assert float((streamed - whole).abs().max()) <= WAVE_TOLERANCE


def test_stream_chunks_equal_whole_decode_of_their_codes(base_tts, icl_voice):
    chunks = list(base_tts.stream(TEXT, icl_voice, sampling=SamplingConfig.greedy(), max_frames=40,
                                  first_chunk_frames=1, max_chunk_frames=8))
    sizes = [c.codes.shape[0] for c in chunks]
    schedule = [1, 2, 4] + [8] * 10
    assert len(sizes) >= 3
    assert sizes[:-1] == schedule[: len(sizes) - 1] and sizes[-1] <= schedule[len(sizes) - 1]
    assert all(c.samples.shape == (c.codes.shape[0] * 1920,) for c in chunks)
    assert [c.first_frame for c in chunks] == list(np.cumsum([0] + sizes[:-1]))
    codes = np.concatenate([c.codes for c in chunks])
    streamed = np.concatenate([c.samples for c in chunks])
    whole = base_tts.decode(codes, prefix=icl_voice.ref_codes)
    assert np.abs(streamed - whole).max() <= WAVE_TOLERANCE


def test_chunking_changes_nothing_but_chunk_boundaries(base_tts, icl_voice):
    def run(first, largest):
        chunks = list(base_tts.stream(TEXT, icl_voice, sampling=SamplingConfig.greedy(), max_frames=20,
                                      first_chunk_frames=first, max_chunk_frames=largest))
        return np.concatenate([c.codes for c in chunks]), np.concatenate([c.samples for c in chunks])

    codes_a, audio_a = run(1, 1)
    codes_b, audio_b = run(5, 5)
    np.testing.assert_array_equal(codes_a, codes_b)
    assert np.abs(audio_a - audio_b).max() <= WAVE_TOLERANCE


def test_first_chunk_is_one_frame_and_arrives_before_generation_ends(base_tts, icl_voice):
    stream = base_tts.stream(TEXT, icl_voice, sampling=SamplingConfig.greedy(), max_frames=30, first_chunk_frames=1)
    first = next(stream)
    assert first.codes.shape[0] == 1 and first.samples.shape == (1920,)
    rest = list(stream)
    assert sum(c.codes.shape[0] for c in rest) > 0


def test_cancel_stops_between_frames(base_tts, icl_voice):
    cancel = threading.Event()
    stream = base_tts.stream(TEXT, icl_voice, sampling=SamplingConfig.greedy(), max_frames=40,
                             first_chunk_frames=1, max_chunk_frames=1, cancel=cancel)
    next(stream)
    cancel.set()
    remaining = list(stream)
    assert sum(c.codes.shape[0] for c in remaining) <= 1


def test_closing_the_stream_early_is_clean(base_tts, icl_voice):
    stream = base_tts.stream(TEXT, icl_voice, max_frames=40)
    next(stream)
    stream.close()
    # the engine stays usable afterwards
    assert next(base_tts.stream(TEXT, icl_voice, max_frames=3)).samples.size > 0


def test_seed_makes_sampling_repeatable(base_tts, icl_voice):
    def codes(seed):
        return base_tts.synthesize(TEXT, icl_voice, seed=seed, max_frames=12)[1]

    np.testing.assert_array_equal(codes(5), codes(5))
    assert not np.array_equal(codes(5), codes(6))


def test_default_length_budget_bounds_a_text_without_eos(design_tts):
    voice = design_tts.design_voice("A calm voice.")
    text = "Hi."
    tokens = design_tts.prompts.build(text, voice).text_tokens
    _, codes = design_tts.synthesize(text, voice, sampling=SamplingConfig.greedy())
    assert 0 < codes.shape[0] <= frame_budget(tokens)


def test_frame_budget_grows_with_text_and_is_capped():
    assert frame_budget(1) < frame_budget(10) < frame_budget(100)
    assert frame_budget(100_000) == FRAMES_CAP


def test_min_frames_holds_off_eos(base_tts, icl_voice):
    """tiny-base stops early on EOS; with min_frames = max_frames it runs the full length."""
    greedy = SamplingConfig.greedy()
    natural = base_tts.synthesize(TEXT, icl_voice, sampling=greedy, max_frames=60)[1].shape[0]
    assert natural < 60
    forced = base_tts.synthesize(TEXT, icl_voice, sampling=greedy, max_frames=60, min_frames=60)[1].shape[0]
    assert forced == 60


def test_streams_at_different_positions_decode_together_as_they_would_alone(base_tts):
    """Batched codec decoding: states of separate streams stack, decode as one batch, split back."""
    decoder = base_tts.codec.decoder
    gen = torch.Generator().manual_seed(9)
    histories = [torch.randint(0, 256, (1, n, 16), generator=gen) for n in (0, 3, 11)]
    chunk = torch.randint(0, 256, (3, 4, 16), generator=gen)
    with torch.inference_mode():
        alone, states = [], []
        for b, history in enumerate(histories):
            state = decoder.new_state()
            if history.shape[1]:
                decoder(history, state)
            states.append(state.clone())
            alone.append(decoder(chunk[b:b + 1], state))
        batched_state = type(states[0]).stack(states)
        together = decoder(chunk, batched_state)
    assert batched_state.positions.tolist() == [4, 7, 15]
    for b in range(3):
        assert float((together[b] - alone[b][0]).abs().max()) <= WAVE_TOLERANCE
    split = batched_state.split()
    assert [s.positions.tolist() for s in split] == [[4], [7], [15]]

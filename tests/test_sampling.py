import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from wyoming_qwen_tts.engine.generate import suppressed_codes
from wyoming_qwen_tts.engine.sampling import SamplingConfig, SamplingParams, _top_k, _top_p, apply_repetition_penalty, choose


def test_warpers_match_transformers():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 300, generator=gen) * 3
    for k in (1, 5, 50):
        torch.testing.assert_close(_top_k(logits, k), TopKLogitsWarper(k)(None, logits.clone()))
    for p in (0.1, 0.5, 0.9, 0.99):
        torch.testing.assert_close(_top_p(logits, p), TopPLogitsWarper(p)(None, logits.clone()))
    torch.testing.assert_close(logits / 0.7, TemperatureLogitsWarper(0.7)(None, logits.clone()))


def test_repetition_penalty_matches_transformers():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 64, generator=gen)
    history = torch.tensor([[3, 7, 7, 40]])
    seen = torch.zeros(1, 64, dtype=torch.bool)
    seen[0, history[0]] = True
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    torch.testing.assert_close(apply_repetition_penalty(logits, seen, 1.3), expected)


def test_greedy_takes_the_argmax_and_sampling_respects_top_k():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.9]])
    assert choose(logits, SamplingParams(do_sample=False), None).item() == 1
    gen = torch.Generator().manual_seed(0)
    picks = {choose(logits, SamplingParams(top_k=2, temperature=1.0), gen).item() for _ in range(200)}
    assert picks == {1, 3}


def test_sampling_params_reject_nonsense():
    with pytest.raises(ValueError):
        SamplingParams(temperature=0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(repetition_penalty=0)


def test_greedy_config_turns_off_penalty_everywhere():
    greedy = SamplingConfig.greedy()
    assert not greedy.talker.do_sample and not greedy.predictor.do_sample
    assert greedy.talker.repetition_penalty == greedy.predictor.repetition_penalty == 1.0


def test_defaults_come_from_generation_config(base_tts):
    defaults = base_tts.default_sampling
    assert defaults.talker == SamplingParams(do_sample=True, temperature=0.9, top_k=50, top_p=1.0,
                                             repetition_penalty=1.05)
    assert defaults.predictor.repetition_penalty == 1.0


def test_only_codes_and_eos_can_be_sampled(base_tts):
    talker = base_tts.model.talker
    mask = suppressed_codes(talker, torch.device("cpu"))
    allowed = (~mask).nonzero().flatten().tolist()
    cfg = talker.cfg
    assert allowed == list(range(cfg.vocab_size - 1024)) + [cfg.codec_eos_id]

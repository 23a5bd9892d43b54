import pytest
import torch
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

from wyoming_qwen_tts.engine.generate import suppressed_codes
from wyoming_qwen_tts.engine.sampling import (
    RowParams, SamplingConfig, SamplingParams, apply_repetition_penalty, choose, draw_keys, gumbel_noise, hash32,
    keep_mask)


def _rows(params, vocab):
    return RowParams.stack(params, vocab, torch.device("cpu"))


def test_filters_match_transformers_warpers():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 300, generator=gen) * 3
    for k, p, t in [(1, 1.0, 1.0), (5, 1.0, 0.7), (50, 0.9, 0.9), (0, 0.5, 1.3), (300, 0.99, 1.0)]:
        rows = _rows([SamplingParams(temperature=t, top_k=k, top_p=p)] * 3, 300)
        scaled = logits * rows.inv_temperature
        ours = scaled.masked_fill(~keep_mask(scaled, rows), float("-inf"))
        expected = TemperatureLogitsWarper(t)(None, logits.clone()) if t != 1.0 else logits.clone()
        if k:
            expected = TopKLogitsWarper(k)(None, expected)
        if p < 1.0:
            expected = TopPLogitsWarper(p)(None, expected)
        torch.testing.assert_close(ours, expected)


def test_each_row_keeps_its_own_parameters():
    logits = torch.linspace(0, 5, 20).repeat(2, 1)
    rows = _rows([SamplingParams(top_k=3), SamplingParams(top_k=10)], 20)
    kept = keep_mask(logits * rows.inv_temperature, rows).sum(dim=1).tolist()
    assert kept == [3, 10]


ROW_PARAMS = [SamplingParams(temperature=0.7, top_k=3, top_p=0.9, repetition_penalty=1.05),
              SamplingParams(do_sample=False), SamplingParams(top_k=0), SamplingParams(top_k=5000)]


def test_row_params_hold_each_rows_values_exactly():
    rows = _rows(ROW_PARAMS, 300)
    def float32(*values):
        return torch.tensor(values, dtype=torch.float64).float().tolist()

    assert rows.do_sample[:, 0].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert rows.inv_temperature[:, 0].tolist() == float32(1 / 0.7, 1.0, 1 / 0.9, 1 / 0.9)
    assert rows.top_k.tolist() == [3, 300, 300, 300] and rows.top_k.dtype == torch.int64
    assert rows.top_p[:, 0].tolist() == float32(0.9, 2.0, 2.0, 2.0)
    assert rows.penalty[:, 0].tolist() == float32(1.05, 1.0, 1.0, 1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_row_params_on_cuda_equal_the_cpus():
    """On CUDA the table goes through pinned memory without blocking (no host round-trip in the
    step loop): the same values."""
    cpu, cuda = _rows(ROW_PARAMS, 300), RowParams.stack(ROW_PARAMS, 300, torch.device("cuda"))
    for ours, theirs in zip(cuda.fields(), cpu.fields()):
        assert ours.is_cuda and ours.dtype == theirs.dtype and torch.equal(ours.cpu(), theirs)

def test_repetition_penalty_matches_transformers():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 64, generator=gen)
    history = torch.tensor([[3, 7, 7, 40]])
    seen = torch.zeros(1, 64, dtype=torch.bool)
    seen[0, history[0]] = True
    expected = RepetitionPenaltyLogitsProcessor(1.3)(history, logits.clone())
    torch.testing.assert_close(apply_repetition_penalty(logits, seen, torch.tensor([[1.3]])), expected)


def test_greedy_rows_take_the_argmax_whatever_the_noise():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.9]] * 2)
    rows = _rows([SamplingParams(do_sample=False), SamplingParams(do_sample=False)], 4)
    for key in range(20):
        assert choose(logits, rows, torch.tensor([key, key + 100])).tolist() == [1, 1]


def test_sampled_frequencies_follow_the_softmax():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    rows = _rows([SamplingParams(temperature=1.0, top_k=0)] * 4000, 4)
    picks = choose(logits.repeat(4000, 1), rows, draw_keys(torch.arange(4000), torch.zeros(4000, dtype=torch.int64)))
    frequencies = torch.bincount(picks, minlength=4).float() / 4000
    torch.testing.assert_close(frequencies, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)


def test_noise_is_a_function_of_the_key_only():
    keys = torch.tensor([7, 8, 9])
    torch.testing.assert_close(gumbel_noise(keys, 50)[1], gumbel_noise(torch.tensor([8]), 50)[0])
    assert not torch.equal(gumbel_noise(torch.tensor([7]), 50), gumbel_noise(torch.tensor([8]), 50))
    assert torch.isfinite(gumbel_noise(torch.arange(1000), 300)).all()


def test_hash_stays_in_32_bits_and_spreads():
    values = hash32(torch.arange(100_000))
    assert int(values.min()) >= 0 and int(values.max()) < 2**32
    assert values.unique().numel() == 100_000
    assert abs(float((values >> 31).float().mean()) - 0.5) < 0.01


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


@pytest.mark.parametrize("params", [
    [SamplingParams(do_sample=False)] * 3,
    [SamplingParams(top_k=50), SamplingParams(do_sample=False), SamplingParams(top_k=7, temperature=1.3)],
    [SamplingParams(top_k=0), SamplingParams(top_k=20)],
    [SamplingParams(top_k=0, top_p=0.7), SamplingParams(top_k=30, top_p=0.95), SamplingParams(do_sample=False)],
    [SamplingParams(top_k=100, top_p=0.5, temperature=0.6)] * 2,
], ids=["greedy", "top-k-mixed", "top-k-off-and-on", "top-p-mixed", "top-p"])
def test_planned_draws_pick_what_the_full_sort_picks(params):
    """choose_planned (torch.topk over K, top-p only when asked) against choose (a full sort)."""
    from wyoming_qwen_tts.engine.sampling import DrawPlan, choose_planned

    vocab = 300
    rows = _rows(params, vocab)
    plan = DrawPlan.of(params, vocab)
    assert plan.sample == any(p.do_sample for p in params)
    gen = torch.Generator().manual_seed(3)
    for draw in range(40):
        logits = torch.randn(len(params), vocab, generator=gen) * 4
        keys = draw_keys(torch.arange(len(params)), torch.full((len(params),), draw))
        assert choose_planned(logits, rows, keys, plan).tolist() == choose(logits, rows, keys).tolist()


def test_a_plan_without_top_p_never_sorts_the_vocabulary():
    from wyoming_qwen_tts.engine.sampling import DrawPlan

    assert DrawPlan.of([SamplingParams(top_k=50)], 2048) == DrawPlan(True, 64, False, False)
    assert DrawPlan.of([SamplingParams(top_k=0)], 2048) == DrawPlan(True, 0, False, False)
    assert DrawPlan.of([SamplingParams(do_sample=False, repetition_penalty=1.05)], 2048) == DrawPlan(
        False, 0, False, True)

"""Choosing the next code: repetition penalty, temperature, top-k, top-p, or argmax.

The order and arithmetic follow transformers' generate(), which the official code uses:
repetition penalty, then token suppression / EOS blocking, then temperature, top-k, top-p,
then a multinomial draw from the softmax. Greedy skips the warpers and takes the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class SamplingParams:
    """How one stage (talker or code predictor) picks its codes."""

    do_sample: bool = True
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.do_sample and not self.temperature > 0:
            raise ValueError("temperature must be > 0 when sampling (use greedy instead)")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not self.repetition_penalty > 0:
            raise ValueError("repetition_penalty must be > 0")


@dataclass(frozen=True)
class SamplingConfig:
    """Talker (first codebook) and code predictor (the other 15) settings."""

    talker: SamplingParams = SamplingParams(repetition_penalty=1.05)
    predictor: SamplingParams = SamplingParams()

    @classmethod
    def greedy(cls) -> "SamplingConfig":
        """Argmax everywhere, no repetition penalty: the official code's greedy codes."""
        off = SamplingParams(do_sample=False, repetition_penalty=1.0)
        return cls(talker=off, predictor=off)

    @classmethod
    def from_generation_config(cls, defaults: Any) -> "SamplingConfig":
        """Defaults from a checkpoint's generation_config.json (a GenerationDefaults)."""
        return cls(
            talker=SamplingParams(
                do_sample=defaults.do_sample, temperature=defaults.temperature, top_k=defaults.top_k,
                top_p=defaults.top_p, repetition_penalty=defaults.repetition_penalty,
            ),
            predictor=SamplingParams(
                do_sample=defaults.subtalker_dosample, temperature=defaults.subtalker_temperature,
                top_k=defaults.subtalker_top_k, top_p=defaults.subtalker_top_p,
            ),
        )

    def with_overrides(self, **talker_overrides: Any) -> "SamplingConfig":
        return replace(self, talker=replace(self.talker, **talker_overrides))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Divide positive / multiply negative logits of codes already generated (seen: bool mask)."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, logits.shape[-1])
    threshold = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < threshold, float("-inf"))


def _top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    sorted_logits, sorted_index = torch.sort(logits, descending=False, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - p)
    remove_sorted[..., -1:] = False  # always keep the most likely code
    remove = remove_sorted.scatter(-1, sorted_index, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def choose(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one code per row of (B, V) logits that already carry penalties and suppression."""
    if not params.do_sample:
        return logits.argmax(dim=-1)
    logits = logits.float()
    if params.temperature != 1.0:
        logits = logits / params.temperature
    if params.top_k:
        logits = _top_k(logits, params.top_k)
    if params.top_p < 1.0:
        logits = _top_p(logits, params.top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

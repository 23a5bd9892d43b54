"""Choosing the next code: repetition penalty, temperature, top-k, top-p, or argmax.

The order and arithmetic follow transformers' generate(), which the official code uses:
repetition penalty, then token suppression / EOS blocking, then temperature, top-k, top-p,
then a draw from the softmax. Greedy takes the argmax.

Every row of a batch carries its own parameters and its own random stream. The draw is a
Gumbel-max over counter-based noise: uniform numbers hashed from (seed, draw index, code), so
a request's samples depend only on its seed and position, never on which other requests share
the batch, and no generator state lives outside the tensors (CUDA-graph friendly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import torch

from . import kernels
from .devices import to_device
from .kernels import MASK32, _mul32, gumbel_noise, hash32  # noqa: F401 (re-exported)


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


@dataclass
class RowParams:
    """SamplingParams of each row of a batch, as (R, 1) tensors."""

    do_sample: torch.Tensor  # 1.0 samples, 0.0 takes the argmax
    inv_temperature: torch.Tensor
    top_k: torch.Tensor  # (R,) int64; the vocabulary size when top-k is off
    top_p: torch.Tensor  # above 1 when top-p is off
    penalty: torch.Tensor

    @classmethod
    def stack(cls, params: list[SamplingParams], vocab: int, device: torch.device) -> "RowParams":
        # One host-to-device copy for all five (float64 holds every value exactly, top_k included).
        # Made when a batch's rows change, inside the step loop: to_device copies without blocking
        # on CUDA, so the loop has no host round-trip here.
        table = torch.tensor([[1.0 if p.do_sample else 0.0, 1.0 / p.temperature if p.do_sample else 1.0,
                               min(p.top_k, vocab) if p.do_sample and p.top_k else vocab,
                               p.top_p if p.do_sample and p.top_p < 1.0 else 2.0, p.repetition_penalty]
                              for p in params], dtype=torch.float64).reshape(len(params), 5)
        table = to_device(table, device)
        floats = table.float()
        return cls(do_sample=floats[:, 0:1], inv_temperature=floats[:, 1:2], top_k=table[:, 2].long(),
                   top_p=floats[:, 3:4], penalty=floats[:, 4:5])

    def fields(self) -> tuple[torch.Tensor, ...]:
        return self.do_sample, self.inv_temperature, self.top_k, self.top_p, self.penalty

    def rows(self, count: int) -> "RowParams":
        return RowParams(*(field[:count] for field in self.fields()))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """Divide positive / multiply negative logits of codes already generated (seen: bool mask)."""
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalized, logits)


# The noise and the key derivation live with the other custom ops (engine/kernels.py); they are
# re-exported here, where the draws are described.
draw_keys = kernels.draw_keys


def keep_mask(scaled: torch.Tensor, rows: RowParams) -> torch.Tensor:
    """Bool (R, V): codes that survive top-k and then top-p (transformers' definitions)."""
    sorted_logits, order = scaled.sort(dim=-1, descending=True)
    kth = sorted_logits.gather(1, (rows.top_k - 1)[:, None])
    keep_sorted = sorted_logits >= kth
    probs = sorted_logits.masked_fill(~keep_sorted, float("-inf")).softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    keep_sorted &= mass_before < rows.top_p
    keep_sorted[:, 0] = True  # the most likely code always stays
    return keep_sorted.scatter(1, order, keep_sorted)


def choose(logits: torch.Tensor, rows: RowParams, keys: torch.Tensor) -> torch.Tensor:
    """One code per row of (R, V) float32 logits that already carry penalties and bans."""
    return _choose(logits, rows.inv_temperature, rows.top_k, rows.top_p, rows.do_sample, keys)


def choose_reference(logits: torch.Tensor, inv_temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                     do_sample: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    rows = RowParams(do_sample=do_sample, inv_temperature=inv_temperature, top_k=top_k, top_p=top_p, penalty=top_p)
    scaled = logits * rows.inv_temperature
    filtered = scaled.masked_fill(~keep_mask(scaled, rows), float("-inf"))
    return kernels.gumbel_argmax(filtered, keys, rows.do_sample)


# One op per draw: the filter's few ops (sort, softmax, cumsum) and one noise + argmax kernel.
@torch.library.custom_op("qwen_tts::choose", mutates_args=())
def _choose_op(logits: torch.Tensor, inv_temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
               do_sample: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    return choose_reference(logits, inv_temperature, top_k, top_p, do_sample, keys)


@_choose_op.register_fake
def _(logits, inv_temperature, top_k, top_p, do_sample, keys):
    return logits.new_empty(logits.shape[:-1], dtype=torch.int64)


_choose = kernels._op(_choose_op, choose_reference)


class DrawPlan(NamedTuple):
    """What one stage's draw needs for the rows of a batch composition, as host values, so that a
    compiled / captured step holds only the work those rows need (no sort when top-p is off)."""

    sample: bool  # some row samples; else every row takes the argmax
    top_k: int  # K of one torch.topk covering every sampling row's top_k; 0: no top-k filter at all
    top_p: bool  # some sampling row has top_p < 1
    penalty: bool  # some row has a repetition penalty other than 1

    @classmethod
    def of(cls, params: Sequence[SamplingParams], vocab: int) -> "DrawPlan":
        penalty = any(p.repetition_penalty != 1.0 for p in params)
        sampling = [p for p in params if p.do_sample]
        if not sampling:
            return cls(False, 0, False, penalty)
        top_p = any(p.top_p < 1.0 for p in sampling)
        top_ks = [min(p.top_k, vocab) if p.top_k else vocab for p in sampling]
        if min(top_ks) >= vocab and not top_p:  # nothing to filter
            return cls(True, 0, False, penalty)
        largest = max(top_ks)
        # A power of two: compositions with nearby top_k values share one compiled graph.
        return cls(True, min(vocab, max(16, 1 << (largest - 1).bit_length())), top_p, penalty)


def choose_planned(logits: torch.Tensor, rows: RowParams, keys: torch.Tensor, plan: DrawPlan) -> torch.Tensor:
    """choose() (penalty already applied) with the work cut to the plan: the same codes (top-k and
    the argmax are exact; top-p sums its softmax over the top K only, which can move a near-tie at
    the top-p boundary by an ulp)."""
    if not plan.sample:
        return logits.argmax(dim=-1)
    scaled = logits * rows.inv_temperature
    if plan.top_k:
        # Greedy rows (top_k = vocab) clamp to K: the argmax always survives the filter.
        top_values, top_index = scaled.topk(plan.top_k, dim=-1)
        kth = top_values.gather(1, (rows.top_k.clamp(max=plan.top_k) - 1)[:, None])
        if plan.top_p:
            keep_top = top_values >= kth
            probs = top_values.masked_fill(~keep_top, float("-inf")).softmax(dim=-1)
            keep_top &= (probs.cumsum(dim=-1) - probs) < rows.top_p
            keep_top[:, 0] = True
            keep = torch.zeros_like(scaled, dtype=torch.bool).scatter(1, top_index, keep_top)
        else:
            keep = scaled >= kth
        scaled = scaled.masked_fill(~keep, float("-inf"))
    return kernels.gumbel_argmax(scaled, keys, rows.do_sample)

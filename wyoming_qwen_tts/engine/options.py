"""What one request asks of its generation beyond text and voice: SpeechOptions, built once by a
transport and carried unchanged down to the engine's batch row.

No torch here: the protocol side builds options (and checks them) before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

# Seeds are 32-bit: the counter-based noise of sampling.py draws from 32-bit keys.
MAX_SEED = 2**32 - 1
MIN_SPEED, MAX_SPEED = 0.25, 4.0  # times the voice's own speed; pitch is kept


class OptionError(ValueError):
    """An option out of its range; the message names it."""


@dataclass(frozen=True)
class SamplingOverrides:
    """How the talker picks each frame's first code, where the request differs from the
    checkpoint's generation_config.json (None: the checkpoint's value). The code predictor keeps
    the checkpoint's settings, as the hosted APIs leave it."""

    temperature: float | None = None  # > 0, at most 2
    top_k: int | None = None  # 0 disables it
    top_p: float | None = None  # in (0, 1]
    repetition_penalty: float | None = None  # at least 1 (1: off), at most 2

    def __post_init__(self) -> None:
        checks = {
            "temperature": lambda v: 0 < v <= 2,
            "top_k": lambda v: isinstance(v, int) and 0 <= v <= 4096,
            "top_p": lambda v: 0 < v <= 1,
            "repetition_penalty": lambda v: 1 <= v <= 2,
        }
        for name, ok in checks.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not ok(value)):
                raise OptionError(f"{name} {value!r} is out of range ({RANGES[name]})")

    def asked(self) -> dict[str, float | int]:
        """The settings the request gives, by SamplingParams field name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


RANGES = {"temperature": "> 0, at most 2", "top_k": "0 to 4096, 0 is off", "top_p": "> 0, at most 1",
          "repetition_penalty": "1 to 2, 1 is off"}


@dataclass(frozen=True)
class SpeechOptions:
    """One request's generation settings; the same seed, voice, text and options give the same audio."""

    seed: int | None = None  # 0..MAX_SEED; None: a fresh random one per sentence
    max_frames: int | None = None  # per sentence, 12.5 frames a second; None: the text's budget
    speed: float = 1.0  # times the voice's own; applied to the decoded audio
    sampling: SamplingOverrides = field(default_factory=SamplingOverrides)

    def __post_init__(self) -> None:
        if self.seed is not None and (isinstance(self.seed, bool) or not 0 <= self.seed <= MAX_SEED):
            raise OptionError(f"seed {self.seed!r} is out of range (0 to {MAX_SEED})")
        if self.max_frames is not None and not 1 <= self.max_frames:
            raise OptionError(f"max_frames {self.max_frames!r} must be at least 1")
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            raise OptionError(f"speed {self.speed!r} is out of range ({MIN_SPEED} to {MAX_SPEED})")

    def with_seed(self, seed: int | None) -> SpeechOptions:
        return replace(self, seed=seed)


def next_seeds(first: int, count: int) -> list[int]:
    """count seeds from first on, wrapping within the seed range: one per variation of a request."""
    return [(first + index) & MAX_SEED for index in range(count)]

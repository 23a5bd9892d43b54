"""Where voices are prepared, at start-up and at run time alike: prepare_voice asks the voice's kind,
with a Workshop (the models by role, the cache of prepared voices, previews heard)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ..text import AUTO
from .base import ReadyVoice, VoiceSetupError, VoiceSpec
from .cache import VoiceCache
from .registry import kind_of

if TYPE_CHECKING:
    import numpy as np

    from ..engine import QwenTTS

KEPT_PREVIEWS = 16  # design previews kept in memory, so that keeping a take clones exactly what was heard


class Models(Protocol):
    """The models by role (synthesis.ModelPool)."""

    def configured(self, role: str) -> bool: ...

    def source(self, role: str) -> str:
        """The checkpoint a role loads (directory or hub id); raises VoiceSetupError when none is configured."""

    def get(self, role: str) -> QwenTTS:
        """The role's model, loaded on first need; raises VoiceSetupError."""


class KeptSamples:
    """The last few audio takes by key (thread-safe)."""

    def __init__(self, capacity: int = KEPT_PREVIEWS) -> None:
        self._capacity = capacity
        self._takes: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, samples: np.ndarray) -> None:
        with self._lock:
            self._takes[key] = samples
            while len(self._takes) > self._capacity:
                self._takes.popitem(last=False)

    def get(self, key: str) -> np.ndarray | None:
        with self._lock:
            return self._takes.get(key)


@dataclass
class Workshop:
    models: Models
    cache: VoiceCache
    previews: KeptSamples = field(default_factory=KeptSamples)


def prepare_voice(spec: VoiceSpec, workshop: Workshop) -> ReadyVoice:
    """The one way a voice becomes speakable, at start-up and at run time; raises VoiceSetupError."""
    voice = kind_of(spec).prepare(spec, workshop)
    check_language(voice)
    return voice


def prepare_voices(specs: list[VoiceSpec], workshop: Workshop) -> dict[str, ReadyVoice]:
    """Start-up: every voice, one after another, as prepare_voice makes one at run time."""
    return {spec.name: prepare_voice(spec, workshop) for spec in specs}


def check_language(voice: ReadyVoice) -> None:
    if voice.spec.language != AUTO and voice.spec.language not in voice.model.languages:
        raise VoiceSetupError(f"voice {voice.spec.name!r}: field 'language': {voice.spec.language} is not "
                              f"spoken by {voice.model.checkpoint.path} ({', '.join(voice.model.languages)})")

"""What a voice kind prepares voices with: the models by role, the cache of prepared voices, the
design previews heard (a Workshop). No kind module is imported here, so each can name it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .cache import VoiceCache

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

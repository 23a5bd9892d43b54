"""Our Qwen3-TTS 12 Hz engine: load a checkpoint, make voices, stream audio while generating.

Names are imported on first use, so `from wyoming_qwen_tts.engine.languages import ...` and the
constants here cost no torch import (the server's protocol layer relies on that).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .languages import LANGUAGES, normalize_language

SAMPLE_RATE = 24000  # output audio: 24 kHz mono, 1920 samples per 80 ms frame

_LAZY = {
    "AudioChunk": "engine", "QwenTTS": "engine", "CheckpointError": "checkpoint",
    "ReferenceAudioError": "audio_io", "VoicePrompt": "prompt", "SamplingConfig": "sampling",
    "SamplingParams": "sampling", "BatchScheduler": "scheduler",
}

__all__ = ["LANGUAGES", "SAMPLE_RATE", "normalize_language", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Our Qwen3-TTS 12 Hz engine: load a checkpoint, make voices, stream audio while generating."""

from .audio_io import ReferenceAudioError
from .checkpoint import CheckpointError
from .engine import SAMPLE_RATE, AudioChunk, QwenTTS
from .prompt import LANGUAGES, VoicePrompt, normalize_language
from .sampling import SamplingConfig, SamplingParams

__all__ = [
    "LANGUAGES", "SAMPLE_RATE", "AudioChunk", "CheckpointError", "QwenTTS", "ReferenceAudioError",
    "SamplingConfig", "SamplingParams", "VoicePrompt", "normalize_language",
]

"""Where voices are prepared, at start-up and at run time alike: prepare_voice asks the voice's kind,
with a Workshop (resources.py: the models by role, the cache of prepared voices, previews heard)."""

from __future__ import annotations

from ..request_text import AUTO
from .base import ReadyVoice, VoiceSetupError, VoiceSpec
from .registry import kind_of
from .resources import KeptSamples, Models, Workshop  # noqa: F401 (re-exported)


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

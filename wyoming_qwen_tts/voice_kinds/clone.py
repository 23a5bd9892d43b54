"""Cloned voices: a reference recording, cloned by the Base model; ICL with its transcript, x-vector
only without.

    alice:
      reference: voices/alice.wav      # relative to the voices file
      transcript: "What is said in alice.wav"
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..request_text import AUTO
from .base import ReadyVoice, VoiceKind, VoiceSetupError, VoiceSpec, Where, optional_text
from .cache import digest, model_identity

if TYPE_CHECKING:
    import numpy as np

    from ..engine import QwenTTS, VoicePrompt
    from .resources import Workshop

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CloneSpec(VoiceSpec):
    kind = "clone"
    reference: Path
    transcript: str | None = None  # ICL when given, x-vector only when not


class ClonedVoiceRequest(BaseModel):
    """A cloned voice over HTTP: the recording comes as the form's 'reference' file or JSON's reference_audio."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = Field(None, max_length=200)
    reference_text: str | None = None
    x_vector_only: bool = False
    language: str = AUTO


class CloneKind(VoiceKind):
    name = "clone"
    label = "cloned"
    marker = "reference"
    marker_meaning = "a cloned voice"
    fields = frozenset({"reference", "transcript"})
    speaks_with = "base"
    creation = ClonedVoiceRequest
    request_marker = "reference_audio"
    takes_recording = True

    def parse(self, entry: dict, common: dict[str, Any], where: Where) -> CloneSpec:
        transcript = optional_text(entry, "transcript", where)
        return CloneSpec(**common, reference=_reference(entry, where), transcript=transcript)

    def prepare(self, spec: CloneSpec, workshop: Workshop) -> ReadyVoice:
        base = workshop.models.get("base")
        return ReadyVoice(spec, _cloned_prompt(spec, base, workshop), base)

    def entry_of(self, asked: ClonedVoiceRequest) -> dict[str, Any]:
        """Without the reference, which the voice store writes and names."""
        entry: dict[str, Any] = {"description": _clean(asked.description) or asked.name, "language": asked.language}
        transcript = None if asked.x_vector_only else _clean(asked.reference_text)
        if transcript:
            entry["transcript"] = transcript
        return entry


KIND = CloneKind()


def clone_prompt_key(spec: CloneSpec, base_model: str) -> str:
    """Key of a cloned voice's prompt: the reference's content (not its name), transcript, Base model."""
    audio = hashlib.sha256(spec.reference.read_bytes()).hexdigest()
    return digest({"audio": audio, "transcript": spec.transcript, "base_model": model_identity(base_model)})


def voice_from_recording(label: str, samples: np.ndarray, rate: int, transcript: str | None,
                         workshop: Workshop) -> ReadyVoice:
    """A voice for one request, cloned from a recording (ICL with a transcript, else x-vector only)."""
    from ..engine import ReferenceAudioError

    base = workshop.models.get("base")
    try:
        prompt = base.clone_voice((samples, rate), transcript, x_vector_only=transcript is None)
    except (ReferenceAudioError, ValueError) as err:
        raise VoiceSetupError(f"the reference recording cannot be cloned: {err}") from err
    spec = CloneSpec(name=label, description=label, reference=Path("(request)"), transcript=transcript)
    return ReadyVoice(spec, prompt, base)


def _cloned_prompt(spec: CloneSpec, base: QwenTTS, workshop: Workshop) -> VoicePrompt:
    from ..engine import ReferenceAudioError

    key = clone_prompt_key(spec, workshop.models.source("base"))
    cached = workshop.cache.load_prompt(key, spec.name)
    if cached is not None:
        return cached
    try:
        prompt = base.clone_voice(spec.reference, spec.transcript, x_vector_only=spec.transcript is None)
    except (ReferenceAudioError, ValueError) as err:
        raise VoiceSetupError(f"voice {spec.name!r}: field 'reference': {err}") from err
    workshop.cache.save_prompt(key, prompt)
    _LOGGER.info("Voice %s: cloned from %s (%s)", spec.name, spec.reference,
                 "with transcript" if spec.transcript else "x-vector only")
    return prompt


def _reference(entry: dict, where: Where) -> Path:
    value = entry["reference"]
    if not isinstance(value, str) or not value.strip():
        raise where.error("reference", f"must be the path of an audio file, not {value!r}")
    reference = Path(value).expanduser()
    if not reference.is_absolute():
        reference = where.path.parent / reference
    if not reference.is_file():
        raise where.error("reference", f"audio file {reference} does not exist")
    import soundfile as sf

    try:
        info = sf.info(str(reference))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise where.error("reference", f"{reference} is not a readable audio file: {err}") from None
    if info.frames == 0:
        raise where.error("reference", f"{reference} holds no audio")
    return reference.resolve()


def _clean(text: str | None) -> str | None:
    return text.strip() if text and text.strip() else None

"""Custom voices: one of the built-in speakers of a CustomVoice checkpoint (--custom-model), with an
optional style instruction that a request may replace.

    vivian:
      speaker: vivian
      instructions: "cheerful, a little faster"   # omitted: the speaker's own manner

The 0.6B CustomVoice checkpoint takes no instructions: a voice with some stops the start-up (or its
creation), a request's are a 400. Nothing is cached: the voice prompt is the speaker's name and the
instruction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..request_text import AUTO
from .base import ReadyVoice, VoiceKind, VoiceSetupError, VoiceSpec, Where, optional_text

if TYPE_CHECKING:
    from ..engine import QwenTTS
    from .resources import Workshop

MAX_INSTRUCTIONS = 2000


@dataclass(frozen=True, kw_only=True)
class CustomSpec(VoiceSpec):
    kind = "custom"
    speaker: str  # one of the checkpoint's speakers (any case)
    instructions: str | None = None  # the style; None: the speaker's own


class CustomVoiceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    speaker: str = Field(min_length=1, max_length=100)
    instructions: str | None = Field(None, max_length=MAX_INSTRUCTIONS)
    description: str | None = Field(None, max_length=200)
    language: str = AUTO


class CustomKind(VoiceKind):
    name = "custom"
    label = "built-in speaker"
    marker = "speaker"
    marker_meaning = "a custom voice: a built-in speaker of --custom-model"
    fields = frozenset({"speaker", "instructions"})
    speaks_with = "custom"
    creation = CustomVoiceRequest
    request_marker = "speaker"

    def misplaced(self, field: str) -> str:
        return "only for custom voices (with 'speaker')"

    def parse(self, entry: dict, common: dict[str, Any], where: Where) -> CustomSpec:
        speaker = optional_text(entry, "speaker", where)
        if speaker is None:
            raise where.error("speaker", "must be the name of one of the CustomVoice model's speakers")
        instructions = optional_text(entry, "instructions", where)
        if instructions is not None and len(instructions) > MAX_INSTRUCTIONS:
            raise where.error("instructions", f"must be at most {MAX_INSTRUCTIONS} characters")
        return CustomSpec(**common, speaker=speaker, instructions=instructions)

    def prepare(self, spec: CustomSpec, workshop: Workshop) -> ReadyVoice:
        model = workshop.models.get("custom")
        _check_speaker(spec, model)
        if spec.instructions is not None and not model.checkpoint.config.speakers_take_instructions:
            raise VoiceSetupError(f"voice {spec.name!r}: field 'instructions': {model.checkpoint.path} is a 0.6B "
                                  "CustomVoice model, which takes no instructions; remove them, or use a 1.7B "
                                  "CustomVoice model (--custom-model)")
        return ReadyVoice(spec, model.custom_voice(spec.speaker, spec.instructions), model)

    takes_style = True  # a request's instructions are its style for that request

    def styled(self, voice: ReadyVoice, instructions: str, workshop: Workshop) -> ReadyVoice:
        spec = replace(voice.spec, instructions=instructions.strip() or None)
        if spec.instructions is not None and not voice.model.checkpoint.config.speakers_take_instructions:
            raise VoiceSetupError(f"voice {spec.name!r} is a built-in speaker of a 0.6B CustomVoice model, which "
                                  "takes no instructions: ask without them")
        return ReadyVoice(spec, voice.model.custom_voice(spec.speaker, spec.instructions), voice.model)

    def entry_of(self, asked: CustomVoiceRequest) -> dict[str, Any]:
        description = asked.description.strip() if asked.description and asked.description.strip() else None
        entry = {"description": description or asked.name, "speaker": asked.speaker.strip(),
                 "language": asked.language}
        if asked.instructions and asked.instructions.strip():
            entry["instructions"] = asked.instructions.strip()
        return entry

    def details(self, spec: CustomSpec) -> dict[str, Any]:
        return {"speaker": spec.speaker, "instructions": spec.instructions}


KIND = CustomKind()


def _check_speaker(spec: CustomSpec, model: QwenTTS) -> None:
    if spec.speaker.lower() not in model.speakers:
        raise VoiceSetupError(f"voice {spec.name!r}: field 'speaker': {spec.speaker!r} is not a speaker of "
                              f"{model.checkpoint.path} (speakers: {', '.join(model.speakers) or 'none'})")

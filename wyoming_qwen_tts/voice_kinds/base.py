"""What every voice kind shares: the common voice spec, the ready voice, the model roles, errors, and
the VoiceKind interface each kind module implements. No torch (the protocol side imports this)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..engine.options import MAX_SPEED, MIN_SPEED, SpeechOptions
from ..request_text import AUTO, LANGUAGE_CODES

if TYPE_CHECKING:
    from pydantic import BaseModel

    from ..engine import QwenTTS, VoicePrompt
    from .resources import Workshop

# Fields of every voice, whatever its kind; the kinds own the rest.
COMMON_FIELDS = frozenset({"description", "language", "speed"})


class VoicesFileError(ValueError):
    """A voices file that cannot be used; the message names the file, the voice and the field."""


class VoiceSetupError(RuntimeError):
    """A voice or model that cannot be prepared; the message says which and why."""


@dataclass(frozen=True)
class VoiceSpec:
    """A voice as configured; each kind's subclass adds its own fields (keyword-only)."""

    kind: ClassVar[str]  # the kind's name: "clone", "frozen", "live", "custom"
    name: str
    description: str
    language: str = AUTO  # "auto" or an engine language name
    speed: float = 1.0


@dataclass
class ReadyVoice:
    spec: VoiceSpec
    prompt: VoicePrompt
    model: QwenTTS  # the checkpoint that speaks it (its kind's speaks_with role)

    @property
    def languages(self) -> list[str]:
        """Language names this voice speaks: its own, or every one its model knows."""
        if self.spec.language != AUTO:
            return [self.spec.language]
        return self.model_languages

    @property
    def model_languages(self) -> list[str]:
        """Every language name its model speaks."""
        return [name for name in self.model.languages if name in LANGUAGE_CODES]

    def speed_with(self, options: SpeechOptions) -> float:
        """The request's speed times the voice's own, within what the speed changer takes."""
        return min(MAX_SPEED, max(MIN_SPEED, self.spec.speed * options.speed))


@dataclass(frozen=True)
class ModelRole:
    """A checkpoint the server may load, by what voices use it for."""

    name: str  # "base", "design", "custom"
    title: str  # as Qwen names the checkpoint
    option: str  # the server option that names it
    model_type: str  # what its config must say
    unset: str  # how the option reads when it names no model

    def missing(self) -> str:
        return f"the {self.title} model, but {self.option} {self.unset}"


MODEL_ROLES = {role.name: role for role in (
    ModelRole("base", "Base", "--model", "base", "is none"),
    ModelRole("design", "VoiceDesign", "--design-model", "voice_design", "is none"),
    ModelRole("custom", "CustomVoice", "--custom-model", "custom_voice", "is not given"),
)}


@dataclass(frozen=True)
class Where:
    """A voice entry's place in its voices file, for error messages."""

    path: Path
    name: str

    def error(self, field: str, problem: str) -> VoicesFileError:
        return VoicesFileError(f"{self.path}: voice {self.name!r}: field {field!r}: {problem}")


def optional_text(entry: dict, field: str, where: Where) -> str | None:
    if field not in entry or entry[field] is None:
        return None
    value = entry[field]
    if not isinstance(value, str) or not value.strip():
        raise where.error(field, f"must be non-empty text, not {value!r}")
    return value.strip()


class VoiceKind:
    """One kind of voice. A kind module defines its VoiceSpec subclass and one instance of a
    subclass of this, listed in registry.KINDS."""

    name: str  # VoiceSpec.kind of its voices
    label: str  # how the web page names it
    marker: str  # the voices-file field that makes an entry this kind (unless recognises says more)
    marker_meaning: str  # what giving the marker means, for the "give exactly one of" message
    fields: frozenset[str]  # voices-file fields this kind owns: it alone validates them
    borrowed: frozenset[str] = frozenset()  # fields another kind owns that this kind reads too
    speaks_with: str  # the model role that speaks its voices
    also_needs: frozenset[str] = frozenset()  # roles needed to prepare its voices, besides speaks_with
    creation: type[BaseModel] | None = None  # body of POST /v1/audio/voices; None: not created over HTTP
    request_marker: str | None = None  # the creation body's field that asks for this kind
    takes_recording: bool = False  # its creation brings a recording (request_marker in JSON, 'reference' in a form)
    takes_style: bool = False  # a speech request's instructions restyle it (styled) instead of designing a voice

    @property
    def models_needed(self) -> frozenset[str]:
        return frozenset({self.speaks_with, *self.also_needs})

    @property
    def accepted(self) -> frozenset[str]:
        return self.fields | self.borrowed

    def recognises(self, entry: dict) -> bool:
        return self.marker in entry

    def misplaced(self, field: str) -> str:
        """The problem with one of this kind's fields on a voice of another kind."""
        return f"only for {self.label} voices (with {self.marker!r})"

    def parse(self, entry: dict, common: dict[str, Any], where: Where) -> VoiceSpec:
        """The entry's spec; common holds name, description, language and speed, checked."""
        raise NotImplementedError

    def prepare(self, spec: VoiceSpec, workshop: Workshop) -> ReadyVoice:
        """Make the voice speakable (blocking: models may load, voices render); raises VoiceSetupError."""
        raise NotImplementedError

    def styled(self, voice: ReadyVoice, instructions: str, workshop: Workshop) -> ReadyVoice:
        """The voice speaking in another style, for one request."""
        raise VoiceSetupError(f"voice {voice.spec.name!r} is a {self.label} voice: only custom voices take "
                              "instructions as a style")

    def entry_of(self, asked: BaseModel) -> dict[str, Any]:
        """The voices-file entry of a creation request (its name aside)."""
        raise NotImplementedError

    def details(self, spec: VoiceSpec) -> dict[str, Any]:
        """What GET /v1/audio/voices shows of a voice beyond the common fields."""
        return {}

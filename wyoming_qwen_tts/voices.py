"""The voice catalog: a YAML voices file (or the built-in voices) -> validated voice specs.

    default: alice
    voices:
      alice:
        description: Alice (warm, clear)
        reference: voices/alice.wav      # a cloned voice (voice_kinds/clone.py)
        language: auto                   # or one of the ten languages, name or code
        speed: 1.0                       # 0.25 - 4.0, pitch kept
      narrator:
        design: "A deep male voice with a calm, authoritative presence"   # frozen.py, live.py
      vivian:
        speaker: vivian                  # a CustomVoice speaker (custom.py)

description, language and speed are every voice's; the other fields belong to the voice's kind
(voice_kinds/), which also recognises the entry. Everything is checked before any model loads; a
mistake names the file, the voice and the field. No torch: the engine side is synthesis.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wyoming.info import Attribution, TtsVoice

from .audio import MAX_SPEED, MIN_SPEED
from .request_text import AUTO, language_codes, normalize_language
from .voice_kinds.base import VoicesFileError, VoiceSpec, Where
from .voice_kinds.frozen import FrozenSpec
from .voice_kinds.registry import kind_for_entry, kind_of, voice_fields

__all__ = [
    "QWEN_ATTRIBUTION",
    "VoiceCatalog",
    "VoiceSpec",
    "VoicesFileError",
    "builtin_catalog",
    "check_voice_name",
    "load_voices_file",
    "parse_voice",
    "parse_voices",
    "tts_voices",
]

QWEN_ATTRIBUTION = Attribution(name="Qwen", url="https://github.com/QwenLM/Qwen3-TTS")
VOICE_NAME = re.compile(r"^[\w][\w.-]{0,63}$")

BUILTIN_VOICES = {
    "clara": ("Clara (warm female, designed)",
              "A warm, clear female voice in her thirties, friendly and calm, speaking at a relaxed, natural pace."),
    "maya": ("Maya (bright female, designed)",
             "A bright, cheerful young female voice, energetic and articulate, with a light and lively tone."),
    "james": ("James (deep male, designed)",
              "A deep, calm male voice in his forties, steady and reassuring, with clear articulation."),
    "leo": ("Leo (friendly male, designed)",
            "A friendly, relaxed young male voice, light and conversational, with a warm smile in it."),
}
BUILTIN_DEFAULT = "clara"


@dataclass(frozen=True)
class VoiceCatalog:
    voices: dict[str, VoiceSpec]
    default: str
    source: Path | None = None  # None: the built-in voices

    @property
    def names(self) -> list[str]:
        return list(self.voices)

    def with_default(self, name: str | None) -> VoiceCatalog:
        """This catalog with another default voice (--default-voice), which must exist."""
        if name is None or name == self.default:
            return self
        if name not in self.voices:
            where = self.source or "the built-in voices"
            raise VoicesFileError(f"default voice {name!r} is not in {where} (voices: {', '.join(self.voices)})")
        return VoiceCatalog(self.voices, name, self.source)

    def resolve(self, name: str | None) -> tuple[VoiceSpec, bool]:
        """The voice called name, or the default voice; the flag is False when an unknown name was asked for."""
        if name is not None and name in self.voices:
            return self.voices[name], True
        return self.voices[self.default], name is None

    def models_needed(self) -> frozenset[str]:
        """The model roles its voices need (base, design, custom)."""
        return frozenset().union(*(kind_of(spec).models_needed for spec in self.voices.values()))

    def needs_design_model(self) -> bool:
        return "design" in self.models_needed()

    def live_voices(self) -> list[VoiceSpec]:
        """The voices the design model speaks."""
        return [spec for spec in self.voices.values() if kind_of(spec).speaks_with == "design"]


def builtin_catalog() -> VoiceCatalog:
    voices = {name: FrozenSpec(name=name, description=description, design=design)
              for name, (description, design) in BUILTIN_VOICES.items()}
    return VoiceCatalog(voices, BUILTIN_DEFAULT)


def load_voices_file(path: str | Path) -> VoiceCatalog:
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VoicesFileError(f"voices file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise VoicesFileError(f"voices file {path} cannot be read: {err}") from None
    except yaml.YAMLError as err:
        raise VoicesFileError(f"voices file {path} is not valid YAML: {err}") from None
    return parse_voices(raw, path)


def parse_voices(raw: Any, path: Path) -> VoiceCatalog:
    """Validate the parsed YAML of a voices file; relative references resolve against its folder."""
    if not isinstance(raw, dict):
        raise VoicesFileError(f"{path}: expected a mapping with 'voices' (and optionally 'default')")
    unknown = sorted(set(raw) - {"voices", "default"})
    if unknown:
        raise VoicesFileError(f"{path}: unknown top-level field {unknown[0]!r} (expected 'voices', 'default')")
    entries = raw.get("voices")
    if not isinstance(entries, dict) or not entries:
        raise VoicesFileError(f"{path}: field 'voices': expected a mapping of voice names to voices, with at least one")
    voices = {}
    for name, entry in entries.items():
        spec = parse_voice(path, name, entry)
        voices[spec.name] = spec
    default = raw.get("default", next(iter(voices)))
    if not isinstance(default, str) or default not in voices:
        raise VoicesFileError(f"{path}: field 'default': {default!r} is not one of the voices ({', '.join(voices)})")
    return VoiceCatalog(voices, default, path)


def check_voice_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not VOICE_NAME.match(name):
        raise VoicesFileError(f"{where}voice name {name!r}: use letters, digits, '_', '.' or '-' "
                              "(starting with a letter or digit, at most 64 characters)")


def parse_voice(path: Path, name: Any, entry: Any) -> VoiceSpec:
    """One voice entry of a voices file (references relative to its folder); raises VoicesFileError."""
    check_voice_name(name, f"{path}: ")
    if not isinstance(entry, dict):
        raise VoicesFileError(f"{path}: voice {name!r}: expected a mapping of fields "
                              "(reference/transcript, design or speaker, description, language, speed)")
    where = Where(path, name)
    known = voice_fields()
    for field in entry:
        if field not in known:
            raise where.error(field, f"unknown field (known: {', '.join(sorted(known))})")
    common = {"name": name, "description": _description(entry, where), "language": _language(entry, where),
              "speed": _speed(entry, where)}
    return kind_for_entry(entry, where).parse(entry, common, where)


def _description(entry: dict, where: Where) -> str:
    value = entry.get("description")
    if value is None:
        return where.name
    if not isinstance(value, str) or not value.strip():
        raise where.error("description", f"must be non-empty text, not {value!r}")
    return value.strip()


def _language(entry: dict, where: Where) -> str:
    value = entry.get("language", AUTO)
    if not isinstance(value, str):
        raise where.error("language", f"must be text (auto, a language name or code), not {value!r}")
    try:
        return normalize_language(value)
    except ValueError as err:
        raise where.error("language", str(err)) from None


def _speed(entry: dict, where: Where) -> float:
    value = entry.get("speed", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_SPEED <= value <= MAX_SPEED:
        raise where.error("speed", f"must be a number from {MIN_SPEED} to {MAX_SPEED}, not {value!r}")
    return float(value)


# -- what Home Assistant sees ---------------------------------------------------------------------------


def tts_voices(catalog: VoiceCatalog, languages_of: Callable[[str], list[str]]) -> list[TtsVoice]:
    """One installed TtsVoice per voice. Languages go out as ISO 639-1 codes ('en', 'de', ...): Home
    Assistant offers them as the pipeline's TTS languages and lists a voice under each of its codes."""
    return [TtsVoice(name=spec.name, description=spec.description, attribution=QWEN_ATTRIBUTION, installed=True,
                     version=None, languages=language_codes(languages_of(spec.name)))
            for spec in catalog.voices.values()]

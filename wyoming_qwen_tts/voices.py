"""The voice catalog: a YAML voices file (or the built-in voices) -> validated voice specs.

    default: alice
    voices:
      alice:
        description: Alice (warm, clear)
        reference: voices/alice.wav      # relative to the voices file
        transcript: "What is said in alice.wav"   # omitted -> x-vector-only clone
        language: auto                   # or one of the ten languages, name or code
        speed: 1.0                       # 0.25 - 4.0, pitch kept
      narrator:
        description: Narrator (designed)
        design: "A deep male voice with a calm, authoritative presence"
        mode: frozen                     # frozen (default) or live
        seed: 1234                       # frozen only: another seed, another rendering

Everything is checked before any model loads; a mistake names the file, the voice and the field.
Also here: what a frozen designed voice renders (sentence per language, seed, length cap) and the
cache keys of prepared voices. No torch: the engine side is synthesis.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wyoming.info import Attribution, TtsVoice

from .audio import MAX_SPEED, MIN_SPEED
from .text import AUTO, language_codes, normalize_language

VoiceKind = Literal["clone", "frozen", "live"]
QWEN_ATTRIBUTION = Attribution(name="Qwen", url="https://github.com/QwenLM/Qwen3-TTS")

DEFAULT_DESIGN_SEED = 1234
FROZEN_MAX_SECONDS = 12.0
CACHE_FORMAT = 1  # bump when what a cached voice holds changes: old entries are then ignored
VOICE_NAME = re.compile(r"^[\w][\w.-]{0,63}$")
VOICE_FIELDS = {"description", "reference", "transcript", "language", "speed", "design", "mode", "seed"}

# A frozen designed voice is rendered once speaking this neutral sentence (about 8 s), then cloned.
RENDER_SENTENCES = {
    "english": "Hello, it's nice to meet you. I can read your messages, tell you about the weather, "
               "and let you know when something at home needs your attention.",
    "chinese": "你好，很高兴认识你。我可以为你朗读消息，播报天气，并在家里有事情需要注意时提醒你。",
    "japanese": "こんにちは、はじめまして。メッセージを読み上げたり、天気をお知らせしたり、"
                "家の中で気になることがあればお伝えします。",
    "korean": "안녕하세요, 만나서 반가워요. 메시지를 읽어 드리고, 날씨를 알려 드리고, "
              "집에 신경 쓸 일이 생기면 알려 드릴게요.",
    "german": "Hallo, schön, dich kennenzulernen. Ich lese dir Nachrichten vor, sage dir das Wetter an "
              "und melde mich, wenn zu Hause etwas deine Aufmerksamkeit braucht.",
    "french": "Bonjour, c'est un plaisir de faire ta connaissance. Je peux te lire tes messages, te donner "
              "la météo et te prévenir quand quelque chose à la maison demande ton attention.",
    "russian": "Привет, приятно познакомиться. Я могу прочитать тебе сообщения, рассказать о погоде "
               "и сообщить, если дома что-то потребует твоего внимания.",
    "portuguese": "Olá, é um prazer conhecer você. Posso ler suas mensagens, contar como está o tempo "
                  "e avisar quando algo em casa precisar da sua atenção.",
    "spanish": "Hola, es un placer conocerte. Puedo leerte los mensajes, decirte qué tiempo hace "
               "y avisarte cuando algo en casa necesite tu atención.",
    "italian": "Ciao, è un piacere conoscerti. Posso leggerti i messaggi, dirti che tempo fa "
               "e avvisarti quando qualcosa in casa ha bisogno della tua attenzione.",
}

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


class VoicesFileError(ValueError):
    """A voices file that cannot be used; the message names the file, the voice and the field."""


@dataclass(frozen=True)
class VoiceSpec:
    name: str
    description: str
    language: str = AUTO  # "auto" or an engine language name
    speed: float = 1.0
    reference: Path | None = None  # clone
    transcript: str | None = None  # clone: ICL when given, x-vector only when not
    design: str | None = None  # designed voice description
    mode: Literal["frozen", "live"] | None = None
    seed: int = DEFAULT_DESIGN_SEED

    @property
    def kind(self) -> VoiceKind:
        if self.reference is not None:
            return "clone"
        return "live" if self.mode == "live" else "frozen"

    @property
    def render_language(self) -> str:
        """The language a frozen voice is rendered in: its own, English when auto."""
        return "english" if self.language == AUTO else self.language

    @property
    def render_sentence(self) -> str:
        return RENDER_SENTENCES[self.render_language]


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

    def needs_design_model(self) -> bool:
        return any(voice.kind in ("frozen", "live") for voice in self.voices.values())

    def live_voices(self) -> list[VoiceSpec]:
        return [voice for voice in self.voices.values() if voice.kind == "live"]


def builtin_catalog() -> VoiceCatalog:
    voices = {name: VoiceSpec(name=name, description=description, design=design, mode="frozen")
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

    def fail(field: str, problem: str) -> VoicesFileError:
        return VoicesFileError(f"{path}: voice {name!r}: field {field!r}: {problem}")

    if not isinstance(entry, dict):
        raise VoicesFileError(f"{path}: voice {name!r}: expected a mapping of fields "
                              "(reference/transcript or design, description, language, speed)")
    for field in entry:
        if field not in VOICE_FIELDS:
            raise fail(field, f"unknown field (known: {', '.join(sorted(VOICE_FIELDS))})")
    description = _optional_text(entry, "description", fail) or name
    language = _language(entry, fail)
    speed = _speed(entry, fail)
    if ("reference" in entry) == ("design" in entry):
        raise fail("reference", "give exactly one of 'reference' (a cloned voice) or 'design' (a designed voice)")
    if "reference" in entry:
        for field in ("mode", "seed"):
            if field in entry:
                raise fail(field, "only for designed voices")
        return VoiceSpec(name=name, description=description, language=language, speed=speed,
                         reference=_reference(entry, path, fail), transcript=_optional_text(entry, "transcript", fail))
    if "transcript" in entry:
        raise fail("transcript", "only for cloned voices (with 'reference')")
    design = _optional_text(entry, "design", fail)
    if design is None:
        raise fail("design", "must be a non-empty description of the voice")
    mode = entry.get("mode", "frozen")
    if mode not in ("frozen", "live"):
        raise fail("mode", f"must be 'frozen' or 'live', not {mode!r}")
    seed = entry.get("seed", DEFAULT_DESIGN_SEED)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise fail("seed", f"must be a non-negative integer, not {seed!r}")
    if mode == "live" and "seed" in entry:
        raise fail("seed", "only for frozen voices (a live voice is designed anew for every request)")
    return VoiceSpec(name=name, description=description, language=language, speed=speed, design=design,
                     mode=mode, seed=seed)


def _optional_text(entry: dict, field: str, fail) -> str | None:
    if field not in entry or entry[field] is None:
        return None
    value = entry[field]
    if not isinstance(value, str) or not value.strip():
        raise fail(field, f"must be non-empty text, not {value!r}")
    return value.strip()


def _language(entry: dict, fail) -> str:
    value = entry.get("language", AUTO)
    if not isinstance(value, str):
        raise fail("language", f"must be text (auto, a language name or code), not {value!r}")
    try:
        return normalize_language(value)
    except ValueError as err:
        raise fail("language", str(err)) from None


def _speed(entry: dict, fail) -> float:
    value = entry.get("speed", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_SPEED <= value <= MAX_SPEED:
        raise fail("speed", f"must be a number from {MIN_SPEED} to {MAX_SPEED}, not {value!r}")
    return float(value)


def _reference(entry: dict, path: Path, fail) -> Path:
    value = entry["reference"]
    if not isinstance(value, str) or not value.strip():
        raise fail("reference", f"must be the path of an audio file, not {value!r}")
    reference = Path(value).expanduser()
    if not reference.is_absolute():
        reference = path.parent / reference
    if not reference.is_file():
        raise fail("reference", f"audio file {reference} does not exist")
    import soundfile as sf

    try:
        info = sf.info(str(reference))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise fail("reference", f"{reference} is not a readable audio file: {err}") from None
    if info.frames == 0:
        raise fail("reference", f"{reference} holds no audio")
    return reference.resolve()


# -- cache keys ----------------------------------------------------------------------------------------


def model_identity(model: str | Path) -> str:
    """What a cached voice was made with: a local checkpoint's absolute path, or the hub id."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def _digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True).encode()).hexdigest()[:32]


def render_key(spec: VoiceSpec, design_model: str) -> str:
    """Key of a frozen voice's rendered reference (WAV + transcript): what the design model was asked."""
    return _digest({"description": spec.design, "language": spec.render_language, "seed": spec.seed,
                    "sentence": spec.render_sentence, "design_model": model_identity(design_model)})


def frozen_prompt_key(spec: VoiceSpec, design_model: str, base_model: str) -> str:
    """Key of a frozen voice's prompt: its rendering plus the Base model that cloned it."""
    return _digest({"render": render_key(spec, design_model), "base_model": model_identity(base_model)})


def clone_prompt_key(spec: VoiceSpec, base_model: str) -> str:
    """Key of a cloned voice's prompt: the reference's content (not its name), transcript, Base model."""
    audio = hashlib.sha256(spec.reference.read_bytes()).hexdigest()
    return _digest({"audio": audio, "transcript": spec.transcript, "base_model": model_identity(base_model)})


# -- what Home Assistant sees ---------------------------------------------------------------------------


def tts_voices(catalog: VoiceCatalog, languages_of: Callable[[str], list[str]]) -> list[TtsVoice]:
    """One installed TtsVoice per voice. Languages go out as ISO 639-1 codes ('en', 'de', ...): Home
    Assistant offers them as the pipeline's TTS languages and lists a voice under each of its codes."""
    return [TtsVoice(name=spec.name, description=spec.description, attribution=QWEN_ATTRIBUTION, installed=True,
                     version=None, languages=language_codes(languages_of(spec.name)))
            for spec in catalog.voices.values()]

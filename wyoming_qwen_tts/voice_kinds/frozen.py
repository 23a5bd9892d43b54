"""Frozen designed voices: a description, rendered once by the VoiceDesign model with a seed (a
neutral sentence in the voice's language), then cloned by Base from that rendering. Base speaks it.

    narrator:
      design: "A deep male voice with a calm, authoritative presence"
      mode: frozen                     # the default (live: live.py)
      seed: 1234                       # another seed, another rendering

The rendering and the prompt are cached: the design model loads only to render a voice not yet rendered.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..audio import SAMPLE_RATE
from ..engine.options import MAX_SEED
from ..request_text import AUTO
from .base import ReadyVoice, VoiceKind, VoiceSetupError, VoiceSpec, Where, optional_text
from .cache import digest, model_identity

if TYPE_CHECKING:
    import numpy as np

    from ..engine import QwenTTS, VoicePrompt
    from .resources import Workshop

_LOGGER = logging.getLogger(__name__)
DEFAULT_DESIGN_SEED = 1234
FROZEN_MAX_SECONDS = 12.0
FRAMES_PER_SECOND = 12.5
MODES = ("frozen", "live")

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


@dataclass(frozen=True, kw_only=True)
class FrozenSpec(VoiceSpec):
    kind = "frozen"
    design: str  # the description the design model renders
    seed: int = DEFAULT_DESIGN_SEED

    @property
    def render_language(self) -> str:
        """The language a frozen voice is rendered in: its own, English when auto."""
        return "english" if self.language == AUTO else self.language

    @property
    def render_sentence(self) -> str:
        return RENDER_SENTENCES[self.render_language]


class DesignedVoiceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str | None = Field(None, max_length=200)
    design: str = Field(min_length=1, max_length=2000)
    language: str = AUTO
    seed: int = Field(DEFAULT_DESIGN_SEED, ge=0, le=MAX_SEED)


class FrozenKind(VoiceKind):
    name = "frozen"
    label = "designed"
    marker = "design"
    marker_meaning = "a designed voice"
    fields = frozenset({"design", "mode", "seed"})  # live.py borrows design and mode
    speaks_with = "base"
    also_needs = frozenset({"design"})
    creation = DesignedVoiceRequest
    request_marker = "design"

    def recognises(self, entry: dict) -> bool:
        return "design" in entry and entry.get("mode", "frozen") != "live"

    def misplaced(self, field: str) -> str:
        if field == "seed":
            return "only for frozen voices (a live voice is designed anew for every request)"
        return "only for designed voices"

    def parse(self, entry: dict, common: dict[str, Any], where: Where) -> FrozenSpec:
        mode = entry.get("mode", "frozen")
        if mode not in MODES:
            raise where.error("mode", f"must be 'frozen' or 'live', not {mode!r}")
        seed = entry.get("seed", DEFAULT_DESIGN_SEED)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise where.error("seed", f"must be a non-negative integer up to {MAX_SEED}, not {seed!r}")
        return FrozenSpec(**common, design=design_text(entry, where), seed=seed)

    def prepare(self, spec: FrozenSpec, workshop: Workshop) -> ReadyVoice:
        base = workshop.models.get("base")
        key = frozen_prompt_key(spec, workshop.models.source("design"), workshop.models.source("base"))
        prompt = workshop.cache.load_prompt(key, spec.name)
        if prompt is not None:
            _LOGGER.info("Voice %s: using the frozen voice cached in %s", spec.name, workshop.cache.prompts)
        else:
            _keep_preview(spec, workshop)
            prompt = _clone_rendering(spec, base, workshop)
            workshop.cache.save_prompt(key, prompt)
        return ReadyVoice(spec, prompt, base)

    def entry_of(self, asked: DesignedVoiceRequest) -> dict[str, Any]:
        description = asked.description.strip() if asked.description and asked.description.strip() else None
        return {"description": description or asked.name, "design": asked.design.strip(), "language": asked.language,
                "seed": asked.seed}

    def details(self, spec: FrozenSpec) -> dict[str, Any]:
        return {"seed": spec.seed}


KIND = FrozenKind()


def design_text(entry: dict, where: Where) -> str:
    """The design field of a designed voice (frozen or live)."""
    design = optional_text(entry, "design", where)
    if design is None:
        raise where.error("design", "must be a non-empty description of the voice")
    return design


# -- cache keys ----------------------------------------------------------------------------------------


def render_key(spec: FrozenSpec, design_model: str) -> str:
    """Key of a frozen voice's rendered reference (WAV + transcript): what the design model was asked."""
    return digest({"description": spec.design, "language": spec.render_language, "seed": spec.seed,
                   "sentence": spec.render_sentence, "design_model": model_identity(design_model)})


def frozen_prompt_key(spec: FrozenSpec, design_model: str, base_model: str) -> str:
    """Key of a frozen voice's prompt: its rendering plus the Base model that cloned it."""
    return digest({"render": render_key(spec, design_model), "base_model": model_identity(base_model)})


# -- rendering -----------------------------------------------------------------------------------------


def preview(design: str, language: str, seeds: list[int], workshop: Workshop) -> tuple[str, list[np.ndarray]]:
    """What frozen voices of this design and language would be rendered from, one per seed:
    (the sentence, 24 kHz float samples per seed). Each take is kept a while: keeping it as a
    voice then clones exactly what was heard."""
    model = workshop.models.get("design")
    specs = [FrozenSpec(name="preview", description="preview", design=design, language=language, seed=seed)
             for seed in seeds]
    takes = []
    for spec in specs:
        samples = _render_samples(spec, model)
        workshop.previews.put(render_key(spec, workshop.models.source("design")), samples)
        takes.append(samples)
    return specs[0].render_sentence, takes


def _keep_preview(spec: FrozenSpec, workshop: Workshop) -> None:
    """A preview heard of this very rendering becomes the voice's cached rendering."""
    key = render_key(spec, workshop.models.source("design"))
    samples = workshop.previews.get(key)
    wav, transcript = workshop.cache.render_paths(key)
    if samples is not None and not (wav.is_file() and transcript.is_file()):
        _write_render(spec, samples, wav, transcript)


def _clone_rendering(spec: FrozenSpec, base: QwenTTS, workshop: Workshop) -> VoicePrompt:
    """Render the voice's sentence with the design model (once), then clone the rendering with Base."""
    from ..engine import ReferenceAudioError

    wav, transcript_path = workshop.cache.render_paths(render_key(spec, workshop.models.source("design")))
    if wav.is_file() and transcript_path.is_file():
        _LOGGER.info("Voice %s: cloning the cached rendering %s", spec.name, wav)
    else:
        _render(spec, workshop.models.get("design"), wav, transcript_path)
    transcript = transcript_path.read_text(encoding="utf-8").strip()
    try:
        return base.clone_voice(wav, transcript)
    except (ReferenceAudioError, ValueError) as err:
        raise VoiceSetupError(f"voice {spec.name!r}: the design model's rendering cannot be cloned ({err}); "
                              "try another 'seed'") from err


def _render(spec: FrozenSpec, design: QwenTTS, wav: Path, transcript_path: Path) -> None:
    started = time.perf_counter()
    _LOGGER.info("Voice %s: rendering with the design model (once; cached in %s)", spec.name, wav.parent)
    samples = _render_samples(spec, design)
    _write_render(spec, samples, wav, transcript_path)
    _LOGGER.info("Voice %s: rendered %.1f s in %.1f s", spec.name, samples.size / SAMPLE_RATE,
                 time.perf_counter() - started)


def _render_samples(spec: FrozenSpec, design: QwenTTS) -> np.ndarray:
    """The design model speaking the voice's render sentence with its seed: what a frozen voice is cloned from."""
    max_frames = int(FROZEN_MAX_SECONDS * FRAMES_PER_SECOND)
    samples, codes = design.synthesize(spec.render_sentence, design.design_voice(spec.design),
                                       language=spec.render_language, seed=spec.seed, max_frames=max_frames)
    if codes.shape[0] >= max_frames:
        _LOGGER.warning("Voice %s: the rendering did not end within %.0f s and was cut; if the voice sounds "
                        "off, give it another 'seed'", spec.name, FROZEN_MAX_SECONDS)
    return samples


def _write_render(spec: FrozenSpec, samples: np.ndarray, wav: Path, transcript_path: Path) -> None:
    import soundfile as sf

    wav.parent.mkdir(parents=True, exist_ok=True)
    partial = wav.with_name(wav.stem + ".partial.wav")
    sf.write(str(partial), samples.clip(-1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    transcript_path.write_text(spec.render_sentence + "\n", encoding="utf-8")
    partial.replace(wav)  # last: a WAV next to its transcript means a complete rendering

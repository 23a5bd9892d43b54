"""The ten languages Qwen3-TTS speaks, by name and ISO 639-1 code. No torch here: the server's
protocol layer uses this too."""

from __future__ import annotations

AUTO = "auto"
# Engine language name (as in the checkpoints' codec_language_id) -> ISO 639-1 code.
LANGUAGE_CODES = {
    "chinese": "zh", "english": "en", "japanese": "ja", "korean": "ko", "german": "de",
    "french": "fr", "russian": "ru", "portuguese": "pt", "spanish": "es", "italian": "it",
}
LANGUAGE_NAMES = {code: name for name, code in LANGUAGE_CODES.items()}
LANGUAGES = tuple(LANGUAGE_CODES)


def normalize_language(value: str | None) -> str:
    """'auto' or one of the ten language names, from a name or code in any case ('EN', 'en-US', 'German')."""
    if value is None or not str(value).strip():
        return AUTO
    text = str(value).strip().lower().replace("_", "-")
    if text == AUTO or text in LANGUAGE_CODES:
        return text
    code = text.split("-", 1)[0]
    if code in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[code]
    raise ValueError(f"unknown language {value!r}; use auto, a name ({', '.join(LANGUAGE_CODES)}) "
                     f"or a code ({', '.join(LANGUAGE_NAMES)})")

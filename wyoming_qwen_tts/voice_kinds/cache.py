"""Prepared voices on disk under data-dir, and the keys they are stored by: a key changes with
everything the prepared voice depends on, so a changed voice is prepared anew."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine import VoicePrompt

_LOGGER = logging.getLogger(__name__)
CACHE_FORMAT = 1  # bump when what a cached voice holds changes: old entries are then ignored


class VoiceCache:
    """Prepared voices under data-dir: rendered references of frozen voices and voice prompts."""

    def __init__(self, data_dir: Path) -> None:
        self.renders = data_dir / "voices" / "designed"
        self.prompts = data_dir / "voices" / "prompts"

    def prompt_path(self, key: str) -> Path:
        return self.prompts / f"{key}.safetensors"

    def load_prompt(self, key: str, voice_name: str) -> VoicePrompt | None:
        from ..engine import VoicePrompt

        path = self.prompt_path(key)
        if not path.is_file():
            return None
        try:
            return VoicePrompt.load(path)
        except (ValueError, KeyError, OSError) as err:
            _LOGGER.warning("Voice %s: ignoring unreadable cached prompt %s (%s)", voice_name, path, err)
            return None

    def save_prompt(self, key: str, prompt: VoicePrompt) -> None:
        prompt.save(self.prompt_path(key))

    def render_paths(self, key: str) -> tuple[Path, Path]:
        return self.renders / f"{key}.wav", self.renders / f"{key}.txt"


def model_identity(model: str | Path) -> str:
    """What a cached voice was made with: a local checkpoint's absolute path, or the hub id."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def digest(fields: dict) -> str:
    """A cache key of everything a prepared voice depends on."""
    return hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **fields}, sort_keys=True).encode()).hexdigest()[:32]

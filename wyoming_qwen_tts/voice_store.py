"""Voices created over HTTP: kept in the data dir, in a managed voices file (the format of a voices
file) and the reference recordings it names, stored under generated names. The user's voices file
is never written; a managed voice whose name the user's file also has is skipped.

VoiceLibrary is the catalog as it changes at run time: the user's voices (read-only) plus the
managed ones; a change is prepared by the Synthesizer first (rendered, cloned), then persisted,
then announced (Home Assistant sees it at its next describe).
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .request_text import AUTO
from .voices import VoiceCatalog, VoicesFileError, VoiceSpec, check_voice_name, parse_voice

_LOGGER = logging.getLogger(__name__)
REFERENCES = "references"


class VoiceConflict(ValueError):
    """The name is taken, or the voice is not ours to delete."""


class UnknownVoice(KeyError):
    pass


class VoiceStore:
    """The managed voices file under data-dir/voices/managed and its reference recordings."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = Path(data_dir) / "voices" / "managed"
        self.path = self.folder / "voices.yaml"
        self.references = self.folder / REFERENCES
        self._entries: dict[str, dict[str, Any]] = {}

    def load(self) -> dict[str, VoiceSpec]:
        """The managed voices; an entry that no longer parses (e.g. its recording was removed) is skipped."""
        import yaml

        if not self.path.is_file():
            return {}
        try:
            raw = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            _LOGGER.error("Ignoring the managed voices file %s: %s", self.path, err)
            return {}
        entries = raw.get("voices") if isinstance(raw, dict) else None
        specs = {}
        for name, entry in (entries or {}).items():
            try:
                specs[name] = parse_voice(self.path, name, entry)
            except VoicesFileError as err:
                _LOGGER.error("Skipping a managed voice: %s", err)
                continue
            self._entries[name] = entry
        return specs

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def parse(self, name: str, entry: dict[str, Any]) -> VoiceSpec:
        return parse_voice(self.path, name, entry)

    def add(self, name: str, entry: dict[str, Any]) -> None:
        self._entries[name] = entry
        self._save()

    def remove(self, name: str) -> None:
        entry = self._entries.pop(name)
        self._save()
        reference = entry.get("reference")
        if reference:
            self.discard_reference(reference)

    def store_reference(self, samples: np.ndarray, rate: int) -> str:
        """Writes a recording under a generated name; returns its path relative to the managed file."""
        import soundfile as sf

        self.references.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.wav"
        partial = self.references / f"{name}.partial"
        sf.write(str(partial), samples, rate, subtype="PCM_16", format="WAV")
        partial.replace(self.references / name)
        return f"{REFERENCES}/{name}"

    def discard_reference(self, relative: str) -> None:
        path = (self.folder / relative).resolve()
        if path.parent == self.references.resolve():  # only files this store made
            path.unlink(missing_ok=True)

    def _save(self) -> None:
        import yaml

        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        text = "# Voices created over HTTP (managed by wyoming-qwen-tts; edit with care)\n"
        text += yaml.safe_dump({"voices": self._entries}, allow_unicode=True, sort_keys=False)
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, self.path)


def merged_catalog(user: VoiceCatalog, managed: dict[str, VoiceSpec]) -> VoiceCatalog:
    voices = dict(user.voices)
    for name, spec in managed.items():
        if name in voices:
            _LOGGER.warning("Managed voice %s is skipped: %s has a voice of that name", name,
                            user.source or "the built-in voices")
            continue
        voices[name] = spec
    return VoiceCatalog(voices, user.default, user.source)


class VoiceLibrary:
    """The voices as they change: creating one prepares it (in a worker thread), persists it, then
    hands the new catalog to on_change. One change at a time."""

    def __init__(self, catalog: VoiceCatalog, store: VoiceStore, synthesizer: Any,
                 on_change: Callable[[VoiceCatalog], None]) -> None:
        self.catalog = catalog
        self.store = store
        self.synthesizer = synthesizer
        self._on_change = on_change
        self._lock = asyncio.Lock()

    def follow(self, catalog: VoiceCatalog) -> None:
        """The catalog as published (after a load, without the managed voices it had to skip)."""
        self.catalog = catalog

    def is_managed(self, name: str) -> bool:
        return name in self.store

    async def create(self, name: str, entry: dict[str, Any]) -> VoiceSpec:
        """A voice from its voices-file entry (its kind's entry_of), prepared, persisted, announced."""
        async with self._lock:
            self._check_free(name)
            return await self._add(name, entry)

    async def create_with_recording(self, name: str, entry: dict[str, Any], samples: np.ndarray,
                                    rate: int) -> VoiceSpec:
        """As create, for a cloned voice: the recording is stored first and becomes its reference."""
        async with self._lock:
            self._check_free(name)
            reference = await asyncio.to_thread(self.store.store_reference, samples, rate)
            try:
                return await self._add(name, {**entry, "reference": reference})
            except BaseException:
                self.store.discard_reference(reference)
                raise

    async def delete(self, name: str) -> None:
        async with self._lock:
            if name not in self.catalog.voices and name in self.store:
                # Stored but not offered (its model is not configured, or it could not be prepared at
                # the last load): its owner can still remove it.
                self.store.remove(name)
                _LOGGER.info("Voice %s deleted (it was not offered)", name)
                return
            if name not in self.catalog.voices:
                raise UnknownVoice(name)
            if name not in self.store:
                where = self.catalog.source or "the built-in voices"
                raise VoiceConflict(f"voice {name!r} comes from {where}, which is read-only: it cannot be deleted")
            if name == self.catalog.default:
                raise VoiceConflict(f"voice {name!r} is the default voice: it cannot be deleted")
            voices = {key: spec for key, spec in self.catalog.voices.items() if key != name}
            self._publish(VoiceCatalog(voices, self.catalog.default, self.catalog.source))
            self.synthesizer.remove_voice(name)
            self.store.remove(name)
            _LOGGER.info("Voice %s deleted", name)

    def _check_free(self, name: str) -> None:
        check_voice_name(name, "")
        if name in self.catalog.voices:
            raise VoiceConflict(f"a voice named {name!r} exists already")

    async def _add(self, name: str, entry: dict[str, Any]) -> VoiceSpec:
        if entry.get("language") == AUTO:
            del entry["language"]
        spec = self.store.parse(name, entry)
        await asyncio.to_thread(self.synthesizer.add_voice, spec)
        try:
            self.store.add(name, entry)
        except BaseException:
            self.synthesizer.remove_voice(name)
            raise
        self._publish(VoiceCatalog({**self.catalog.voices, name: spec}, self.catalog.default, self.catalog.source))
        _LOGGER.info("Voice %s created (%s)", name, spec.kind)
        return spec

    def _publish(self, catalog: VoiceCatalog) -> None:
        self.catalog = catalog
        self._on_change(catalog)

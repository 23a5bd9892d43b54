"""The server's only door to the engine: loads the models, prepares every voice at start-up, and
runs generation through the engine's batch scheduler (one per loaded model), handing 16-bit PCM
to asyncio as frames are decoded.

Requests from all connections share one continuous batch: a new sentence joins between frames
instead of waiting for the others to finish. Cancelling a request (its consumer stops, e.g. the
client disconnected) sets the engine's cancel event, which frees its batch row within a frame; a
request still waiting for a row never starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audio import MAX_SPEED, MIN_SPEED, SAMPLE_RATE, SpeedChanger, pcm16_seconds, to_pcm16
from .engine.options import SpeechOptions
from .text import AUTO, LANGUAGE_CODES
from .voices import FROZEN_MAX_SECONDS, VoiceCatalog, VoiceSpec, clone_prompt_key, frozen_prompt_key, render_key

if TYPE_CHECKING:
    import numpy as np

    from .engine import QwenTTS, VoicePrompt

_LOGGER = logging.getLogger(__name__)
FRAMES_PER_SECOND = 12.5
# Audio chunks (80-640 ms each) per request that may wait for a slow client.
PENDING_CHUNKS = 16
# The first request through a batch makes it: on a GPU that includes capturing (and compiling) its
# CUDA graphs. A warm-up that takes longer than this is stuck: fail start-up instead of waiting.
WARM_UP_TIMEOUT_S = 900
# Design previews kept in memory, so that keeping a take clones exactly what was heard, at once.
KEPT_PREVIEWS = 16
_DONE = object()


class VoiceSetupError(RuntimeError):
    """A voice or model that cannot be prepared; the message says which and why."""


@dataclass(frozen=True)
class EngineSettings:
    model: str  # Base checkpoint: directory or hub id
    design_model: str | None  # VoiceDesign checkpoint, None to run without
    data_dir: Path
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "auto"  # "int8" or "none": weights of the talker and code predictor; auto: int8 on a bf16 CPU
    compile: str = "auto"  # "true"/"false": frame steps through torch.compile; auto: off (start-up time)
    local_files_only: bool = False
    max_batch: int = 8  # sentences generated together per model


@dataclass
class ReadyVoice:
    spec: VoiceSpec
    prompt: VoicePrompt
    model: QwenTTS  # the checkpoint that speaks it: Base for cloned and frozen voices, VoiceDesign for live ones

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


class VoiceCache:
    """Prepared voices under data-dir: rendered references of frozen voices and voice prompts."""

    def __init__(self, data_dir: Path) -> None:
        self.renders = data_dir / "voices" / "designed"
        self.prompts = data_dir / "voices" / "prompts"

    def prompt_path(self, key: str) -> Path:
        return self.prompts / f"{key}.safetensors"

    def load_prompt(self, key: str, voice_name: str) -> VoicePrompt | None:
        from .engine import VoicePrompt

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


class Synthesizer:
    def __init__(self, voices: dict[str, ReadyVoice], max_batch: int = 8, *, settings: EngineSettings | None = None,
                 base: QwenTTS | None = None, design: QwenTTS | None = None) -> None:
        self.voices = voices
        self._max_batch = max_batch
        self._settings = settings  # None: no voices can be added (tests of the batch alone)
        self._cache = VoiceCache(settings.data_dir) if settings is not None else None
        self._base = base
        self._design = design  # loaded on first need when voices are designed at run time, then kept
        self._models_lock = threading.Lock()  # held briefly: the event loop takes it too
        self._design_loading = threading.Lock()  # held while the design model loads (seconds)
        self._schedulers: dict[int, Any] = {}
        self._progress: dict[int, Progress] = {}  # per model, as its scheduler
        for voice in voices.values():
            self._scheduler(voice.model)
        self._previews: OrderedDict[str, np.ndarray] = OrderedDict()
        # One thread per request in flight: each waits for its chunks, converts them and hands them over.
        self._executor = ThreadPoolExecutor(max_workers=8 * max_batch, thread_name_prefix="synthesis")

    @classmethod
    def load(cls, settings: EngineSettings, catalog: VoiceCatalog) -> Synthesizer:
        """Load the models and prepare every voice of the catalog; raises VoiceSetupError."""
        from .engine import CheckpointError

        try:
            voices, base, design = _prepare_voices(settings, catalog)
        except CheckpointError as err:
            raise VoiceSetupError(str(err)) from err
        synthesizer = cls(voices, settings.max_batch, settings=settings, base=base, design=design)
        synthesizer.warm_up()
        _release_thread_team()  # this thread loaded the models: from now on the batch threads compute
        return synthesizer

    def languages(self, voice_name: str) -> list[str]:
        return self.voices[voice_name].languages

    def voice(self, name: str) -> ReadyVoice | None:
        return self.voices.get(name)

    def last_progress(self, voice: ReadyVoice) -> float | None:
        """time.monotonic() when the model speaking this voice last made audio, for any request
        (None before the first): a request waiting for a batch row is not stalled while it works."""
        progress = self._progress.get(id(voice.model))
        return progress.last if progress is not None else None

    @property
    def can_design(self) -> bool:
        return self._settings is not None and self._settings.design_model is not None

    def _scheduler(self, model: QwenTTS) -> Any:
        from .engine.scheduler import BatchScheduler

        with self._models_lock:
            scheduler = self._schedulers.get(id(model))
            if scheduler is None:
                scheduler = self._schedulers[id(model)] = BatchScheduler(model, max_rows=self._max_batch)
                self._progress[id(model)] = Progress()
            return scheduler

    # -- voices at run time (blocking: call from a worker thread) ------------------------------------

    def design_model(self) -> QwenTTS:
        """The VoiceDesign model, loaded on first need and then kept; raises VoiceSetupError."""
        if not self.can_design:
            raise VoiceSetupError("voice design needs the VoiceDesign model, but --design-model is none")
        with self._design_loading:
            if self._design is None:
                self._design = _load_model(self._settings, self._settings.design_model, "voice_design",
                                           "--design-model")
            return self._design

    def base_model(self) -> QwenTTS:
        if self._base is None:
            raise VoiceSetupError("no Base model to clone voices with")
        return self._base

    def add_voice(self, spec: VoiceSpec) -> None:
        """Prepare a voice (clone it, or render and clone a frozen design) and make it speakable."""
        if self._settings is None:
            raise VoiceSetupError("this synthesizer cannot prepare voices")
        voice = self._prepare(spec)
        _check_language(voice)
        self.voices[spec.name] = voice

    def remove_voice(self, name: str) -> None:
        self.voices.pop(name, None)

    def _prepare(self, spec: VoiceSpec) -> ReadyVoice:
        settings, cache, base = self._settings, self._cache, self.base_model()
        if spec.kind == "clone":
            return ReadyVoice(spec, _cloned_prompt(spec, base, settings, cache), base)
        if spec.kind == "live":
            design = self.design_model()
            return ReadyVoice(spec, design.design_voice(spec.design), design)
        if not self.can_design:
            raise VoiceSetupError("a designed voice needs the VoiceDesign model, but --design-model is none")
        prompt = cache.load_prompt(frozen_prompt_key(spec, settings.design_model, settings.model), spec.name)
        if prompt is None:
            self._keep_preview(spec)
            design = None if _render_cached(spec, settings, cache) else self.design_model()
            prompt = _frozen_prompt(spec, base, design, settings, cache)
        return ReadyVoice(spec, prompt, base)

    def _keep_preview(self, spec: VoiceSpec) -> None:
        """A preview heard of this very rendering becomes the voice's cached rendering."""
        key = render_key(spec, self._settings.design_model)
        with self._models_lock:
            samples = self._previews.get(key)
        wav, transcript = self._cache.render_paths(key)
        if samples is not None and not (wav.is_file() and transcript.is_file()):
            _write_render(spec, samples, wav, transcript)

    def preview(self, design: str, language: str, seeds: list[int]) -> tuple[str, list[np.ndarray]]:
        """What frozen voices of this design and language would be rendered from, one per seed:
        (the sentence, 24 kHz float samples per seed)."""
        model = self.design_model()
        takes = []
        spec = None
        for seed in seeds:
            spec = VoiceSpec(name="preview", description="preview", design=design, language=language, mode="frozen",
                             seed=seed)
            samples = _render_samples(spec, model)
            with self._models_lock:
                self._previews[render_key(spec, self._settings.design_model)] = samples
                while len(self._previews) > KEPT_PREVIEWS:
                    self._previews.popitem(last=False)
            takes.append(samples)
        return spec.render_sentence, takes

    def cloned_voice(self, label: str, samples: np.ndarray, rate: int, transcript: str | None) -> ReadyVoice:
        """A voice for one request, cloned from a recording (ICL with a transcript, else x-vector only)."""
        from .engine import ReferenceAudioError

        base = self.base_model()
        try:
            prompt = base.clone_voice((samples, rate), transcript, x_vector_only=transcript is None)
        except (ReferenceAudioError, ValueError) as err:
            raise VoiceSetupError(f"the reference recording cannot be cloned: {err}") from err
        return ReadyVoice(VoiceSpec(name=label, description=label, reference=Path("(request)"),
                                    transcript=transcript), prompt, base)

    def designed_voice(self, label: str, instructions: str) -> ReadyVoice:
        """A voice for one request, spoken by the VoiceDesign model as described."""
        design = self.design_model()
        return ReadyVoice(VoiceSpec(name=label, description=label, design=instructions, mode="live"),
                          design.design_voice(instructions), design)

    def warm_up(self) -> None:
        """A two-frame generation per voice through its model's batch: the first request then pays
        neither the device's lazy initialisation, nor the batch's caches (and, on a GPU, the capture
        of its CUDA graphs), nor the priming of a cloned voice's decoder state."""
        started = time.perf_counter()
        def speak_briefly(scheduler: Any, voice: ReadyVoice) -> None:
            with closing(scheduler.stream("Hello.", voice.prompt, max_frames=2)) as chunks:
                for _ in chunks:
                    pass

        for voice in self.voices.values():
            scheduler = self._schedulers[id(voice.model)]
            try:
                self._executor.submit(speak_briefly, scheduler, voice).result(timeout=WARM_UP_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                raise VoiceSetupError(f"voice {voice.spec.name!r} did not speak within {WARM_UP_TIMEOUT_S} s "
                                      "of warming up") from None
            except (ValueError, RuntimeError) as err:  # RuntimeError: e.g. out of memory making the batch
                raise VoiceSetupError(f"voice {voice.spec.name!r} cannot speak: {err}") from err
        warmed = set()
        for voice in self.voices.values():
            if voice.model.runner == "eager" or id(voice.model) in warmed:
                continue
            warmed.add(id(voice.model))
            # The single-stream path (sentences too long for a batch row): its graphs and compiled
            # step are made now too, not in the middle of a long sentence.
            with closing(voice.model.stream("Hello.", voice.prompt, max_frames=2)) as chunks:
                for _ in chunks:
                    pass
        _LOGGER.info("Warmed up %d voices in %.2f s", len(self.voices), time.perf_counter() - started)
        for model in {id(voice.model): voice.model for voice in self.voices.values()}.values():
            memory = model.device_memory()
            if memory:
                _LOGGER.info("%s", memory)

    async def speak(self, voice: ReadyVoice, text: str, language: str,
                    options: SpeechOptions = SpeechOptions()) -> AsyncIterator[bytes]:
        """16-bit mono PCM at 24 kHz while the sentence is generated. Closing this (or cancelling the
        task that iterates it) stops the generation. The same seed, voice and text give the same
        audio; the options' speed multiplies the voice's own."""
        handoff = Handoff(asyncio.get_running_loop(), PENDING_CHUNKS)
        scheduler = self._scheduler(voice.model)
        self._executor.submit(_generate, voice, scheduler, text, language, handoff, self._progress[id(voice.model)],
                              options)
        try:
            while (item := await handoff.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            handoff.abandon()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        for scheduler in self._schedulers.values():
            scheduler.close()


def _open_stream(voice: ReadyVoice, scheduler: Any, text: str, language: str, cancel: threading.Event,
                 options: SpeechOptions):
    """The batch scheduler's stream; a sentence too long for a batch row runs on its own instead."""
    from .engine.scheduler import PromptTooLong

    try:
        return scheduler.stream(text, voice.prompt, language=language, cancel=cancel, options=options)
    except PromptTooLong as err:
        _LOGGER.debug("Sentence too long for a batch row, generating it alone: %s", err)
        return voice.model.stream(text, voice.prompt, language=language, cancel=cancel, options=options)


class Progress:
    """When a model last produced audio: written by the generation threads, read by the requests."""

    def __init__(self) -> None:
        self.last: float | None = None

    def tick(self) -> None:
        self.last = time.monotonic()


class Handoff:
    """Audio from a generation thread to the request's coroutine. At most `capacity` chunks wait
    for the client: a client that reads slowly makes the thread wait, instead of the server
    buffering the whole sentence a second time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, capacity: int) -> None:
        self.cancel = threading.Event()  # the engine's: also set by the engine when a stream ends
        self.abandoned = False  # the request stopped listening (client gone, time limit, shutdown)
        self._loop = loop
        self._items: asyncio.Queue = asyncio.Queue()
        self._room = threading.Semaphore(capacity)

    def abandon(self) -> None:
        """Stop the generation: its batch row is freed within a frame."""
        self.abandoned = True
        self.cancel.set()

    def put_audio(self, pcm: bytes) -> bool:
        """From the thread: waits for room; False when the request was abandoned meanwhile."""
        while not self._room.acquire(timeout=0.1):
            if self.abandoned:
                return False
        return self._send(pcm)

    def put_end(self, item: Any) -> None:
        """From the thread: the end (_DONE) or a failure, which never wait for room."""
        self._send(item)

    async def get(self) -> Any:
        item = await self._items.get()
        if isinstance(item, bytes):
            self._room.release()
        return item

    def _send(self, item: Any) -> bool:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
            return True
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening
            self.abandon()
            return False


def _generate(voice: ReadyVoice, scheduler: Any, text: str, language: str, handoff: Handoff,
              progress: Progress, options: SpeechOptions) -> None:
    """Runs on a worker thread, one per request."""
    try:
        if handoff.abandoned:
            return
        started = time.perf_counter()
        first_audio = None
        audio_seconds = 0.0
        stretch = SpeedChanger(voice.speed_with(options))
        with closing(_open_stream(voice, scheduler, text, language, handoff.cancel, options)) as chunks:
            for chunk in chunks:
                progress.tick()
                pcm = to_pcm16(stretch.process(chunk.samples))
                first_audio = first_audio or time.perf_counter() - started
                audio_seconds += pcm16_seconds(pcm, SAMPLE_RATE)
                if pcm and not handoff.put_audio(pcm):
                    break
        if handoff.abandoned:
            _LOGGER.debug("Cancelled %s after %.2f s of audio: %r", voice.spec.name, audio_seconds, text[:60])
            return
        tail = to_pcm16(stretch.flush())
        if tail:
            handoff.put_audio(tail)
        took = time.perf_counter() - started
        _LOGGER.debug("Spoke %.2f s with %s (%s) in %.2f s, first audio after %.3f s: %r", audio_seconds,
                      voice.spec.name, language, took, first_audio or took, text[:60])
    except Exception as err:  # noqa: BLE001 - handed to the request, which reports it to its client
        handoff.put_end(err)
    finally:
        _release_thread_team()  # a sentence generated alone computed here
        handoff.put_end(_DONE)


def _release_thread_team() -> None:
    from .engine.threads import release_thread_team

    release_thread_team()


# -- start-up: models and voices ------------------------------------------------------------------------


def _prepare_voices(settings: EngineSettings, catalog: VoiceCatalog) -> tuple[dict[str, ReadyVoice], QwenTTS,
                                                                               QwenTTS | None]:
    cache = VoiceCache(settings.data_dir)
    base = _load_model(settings, settings.model, "base", "--model")
    if base.device.type == "cpu":
        why = "as asked" if settings.device == "cpu" else "PyTorch sees no CUDA GPU"
        _LOGGER.warning("Running on the CPU (%s): speech will come slower than real time", why)
    specs = list(catalog.voices.values())
    prompts: dict[str, VoicePrompt] = {}
    for spec in specs:
        if spec.kind == "clone":
            prompts[spec.name] = _cloned_prompt(spec, base, settings, cache)
        elif spec.kind == "frozen" and settings.design_model is not None:
            cached = cache.load_prompt(frozen_prompt_key(spec, settings.design_model, settings.model), spec.name)
            if cached is not None:
                _LOGGER.info("Voice %s: using the frozen voice cached in %s", spec.name, cache.prompts)
                prompts[spec.name] = cached

    unrendered = [spec for spec in specs if spec.kind == "frozen" and spec.name not in prompts
                  and not _render_cached(spec, settings, cache)]
    live = [spec for spec in specs if spec.kind == "live"]
    design = None
    if unrendered or live:
        if settings.design_model is None:
            needs = (live or unrendered)[0]
            raise VoiceSetupError(f"voice {needs.name!r} needs the VoiceDesign model, but --design-model is none")
        design = _load_model(settings, settings.design_model, "voice_design", "--design-model")
    elif any(spec.kind == "frozen" for spec in specs):
        _LOGGER.info("Every designed voice is frozen and cached: not loading the design model (saves its memory)")

    for spec in specs:
        if spec.kind == "frozen" and spec.name not in prompts:
            prompts[spec.name] = _frozen_prompt(spec, base, design, settings, cache)
        elif spec.kind == "live":
            prompts[spec.name] = design.design_voice(spec.design)
    if design is not None and not live:
        _LOGGER.info("Frozen voices rendered; releasing the design model (no live voices)")
        device = design.device
        design = None
        _free_memory(device)

    voices = {spec.name: ReadyVoice(spec, prompts[spec.name], design if spec.kind == "live" else base)
              for spec in specs}
    for voice in voices.values():
        _check_language(voice)
    return voices, base, design


def _check_language(voice: ReadyVoice) -> None:
    if voice.spec.language != AUTO and voice.spec.language not in voice.model.languages:
        raise VoiceSetupError(f"voice {voice.spec.name!r}: field 'language': {voice.spec.language} is not "
                              f"spoken by {voice.model.checkpoint.path} ({', '.join(voice.model.languages)})")


def _load_model(settings: EngineSettings, model: str, expected_type: str, option: str) -> QwenTTS:
    from safetensors import SafetensorError

    from .engine import CheckpointError, QwenTTS

    started = time.perf_counter()
    _LOGGER.info("Loading %s (%s) ...", model, option)
    try:
        tts = QwenTTS(model, device=settings.device, dtype=settings.dtype, quantize=settings.quantize,
                      compile=settings.compile, local_files_only=settings.local_files_only)
    except CheckpointError as err:
        raise VoiceSetupError(f"{option}: {err}") from err
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as err:  # damaged files, out of memory
        raise VoiceSetupError(f"{option} {model} cannot be loaded: {type(err).__name__}: {err}") from err
    if tts.model_type != expected_type:
        raise VoiceSetupError(f"{option} {model} is a {tts.model_type} checkpoint; it must be a {expected_type} one")
    _LOGGER.info("Loaded %s in %.1f s", model, time.perf_counter() - started)
    return tts


def _free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _cloned_prompt(spec: VoiceSpec, base: QwenTTS, settings: EngineSettings, cache: VoiceCache) -> VoicePrompt:
    from .engine import ReferenceAudioError

    key = clone_prompt_key(spec, settings.model)
    cached = cache.load_prompt(key, spec.name)
    if cached is not None:
        return cached
    try:
        prompt = base.clone_voice(spec.reference, spec.transcript, x_vector_only=spec.transcript is None)
    except (ReferenceAudioError, ValueError) as err:
        raise VoiceSetupError(f"voice {spec.name!r}: field 'reference': {err}") from err
    cache.save_prompt(key, prompt)
    _LOGGER.info("Voice %s: cloned from %s (%s)", spec.name, spec.reference,
                 "with transcript" if spec.transcript else "x-vector only")
    return prompt


def _render_cached(spec: VoiceSpec, settings: EngineSettings, cache: VoiceCache) -> bool:
    if settings.design_model is None:
        return False
    wav, transcript = cache.render_paths(render_key(spec, settings.design_model))
    return wav.is_file() and transcript.is_file()


def _frozen_prompt(spec: VoiceSpec, base: QwenTTS, design: QwenTTS | None, settings: EngineSettings,
                   cache: VoiceCache) -> VoicePrompt:
    """Render the voice's sentence with the design model (once), then clone the rendering with Base."""
    from .engine import ReferenceAudioError

    wav, transcript_path = cache.render_paths(render_key(spec, settings.design_model))
    if wav.is_file() and transcript_path.is_file():
        _LOGGER.info("Voice %s: cloning the cached rendering %s", spec.name, wav)
    else:
        _render(spec, design, wav, transcript_path)
    transcript = transcript_path.read_text(encoding="utf-8").strip()
    try:
        prompt = base.clone_voice(wav, transcript)
    except (ReferenceAudioError, ValueError) as err:
        raise VoiceSetupError(f"voice {spec.name!r}: the design model's rendering cannot be cloned ({err}); "
                              "try another 'seed'") from err
    cache.save_prompt(frozen_prompt_key(spec, settings.design_model, settings.model), prompt)
    return prompt


def _render(spec: VoiceSpec, design: QwenTTS, wav: Path, transcript_path: Path) -> None:
    started = time.perf_counter()
    _LOGGER.info("Voice %s: rendering with the design model (once; cached in %s)", spec.name, wav.parent)
    samples = _render_samples(spec, design)
    _write_render(spec, samples, wav, transcript_path)
    _LOGGER.info("Voice %s: rendered %.1f s in %.1f s", spec.name, samples.size / SAMPLE_RATE,
                 time.perf_counter() - started)


def _render_samples(spec: VoiceSpec, design: QwenTTS) -> np.ndarray:
    """The design model speaking the voice's render sentence with its seed: what a frozen voice is cloned from."""
    max_frames = int(FROZEN_MAX_SECONDS * FRAMES_PER_SECOND)
    samples, codes = design.synthesize(spec.render_sentence, design.design_voice(spec.design),
                                       language=spec.render_language, seed=spec.seed, max_frames=max_frames)
    if codes.shape[0] >= max_frames:
        _LOGGER.warning("Voice %s: the rendering did not end within %.0f s and was cut; if the voice sounds "
                        "off, give it another 'seed'", spec.name, FROZEN_MAX_SECONDS)
    return samples


def _write_render(spec: VoiceSpec, samples: np.ndarray, wav: Path, transcript_path: Path) -> None:
    import soundfile as sf

    wav.parent.mkdir(parents=True, exist_ok=True)
    partial = wav.with_name(wav.stem + ".partial.wav")
    sf.write(str(partial), samples.clip(-1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")
    transcript_path.write_text(spec.render_sentence + "\n", encoding="utf-8")
    partial.replace(wav)  # last: a WAV next to its transcript means a complete rendering

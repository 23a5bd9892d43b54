"""The server's only door to the engine: holds the models (ModelPool, loaded by role on first need),
has every voice prepared at start-up (voice_kinds.workshop, as at run time), and runs generation
through the engine's batch scheduler (one per loaded model), handing 16-bit PCM
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
from collections.abc import AsyncIterator, Callable, Container
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audio import SAMPLE_RATE, SpeedChanger, pcm16_seconds, to_pcm16
from .engine.options import SpeechOptions
from .voice_kinds import clone, frozen, live, workshop
from .voice_kinds.base import MODEL_ROLES, ReadyVoice, VoiceSetupError, VoiceSpec
from .voice_kinds.cache import VoiceCache
from .voice_kinds.registry import kind_of
from .voice_kinds.resources import Workshop
from .voices import VoiceCatalog

if TYPE_CHECKING:
    import numpy as np

    from .engine import QwenTTS

__all__ = ["EngineSettings", "ModelPool", "ReadyVoice", "Synthesizer", "VoiceSetupError"]

_LOGGER = logging.getLogger(__name__)
# Audio chunks (80-640 ms each) per request that may wait for a slow client.
PENDING_CHUNKS = 16
# Before a model has finished a sentence, its speech is taken to last this long per text token (a
# speaking pace of about four tokens a second); each finished sentence then moves the estimate.
SECONDS_PER_TOKEN = 0.25
PACE_WEIGHT = 0.3  # of the newest chunk in a model's speed: follows load changes within a few chunks
LENGTH_WEIGHT = 0.2  # of the newest sentence in the seconds-per-token estimate
# The first request through a batch makes it: on a GPU that includes capturing (and compiling) its
# CUDA graphs. A warm-up that takes longer than this is stuck: fail start-up instead of waiting.
WARM_UP_TIMEOUT_S = 900
_DONE = object()


@dataclass(frozen=True)
class EngineSettings:
    model: str  # Base checkpoint: directory or hub id
    design_model: str | None  # VoiceDesign checkpoint, None to run without
    data_dir: Path
    custom_model: str | None = None  # CustomVoice checkpoint, loaded only when a voice uses it
    device: str = "auto"
    dtype: str = "auto"
    quantize: str = "auto"  # "int8" or "none": weights of the talker and code predictor; auto: int8 on a CPU
    int8_prompts: str = "auto"  # "off": prompts on dequantized weights; auto: the CPU's integer matmul
    compile: str = "auto"  # "true"/"false": frame steps through torch.compile; auto: off (start-up time)
    local_files_only: bool = False
    max_batch: int = 8  # sentences generated together per model
    threads: str = "auto"  # a CPU batch's intra-op threads: a number, or auto (the CPUs other work leaves free)


    def model_for(self, role: str) -> str | None:
        """The checkpoint configured for a model role (voice_kinds.base.MODEL_ROLES), None when none is."""
        return {"base": self.model, "design": self.design_model, "custom": self.custom_model}[role]

class ModelPool:
    """The models by role: each loads on first need, then stays (release_unused frees the ones no
    voice speaks with, after start-up)."""

    def __init__(self, settings: EngineSettings) -> None:
        self._settings = settings
        self._models: dict[str, QwenTTS] = {}
        self._loading = threading.Lock()  # held while a model loads (seconds)

    def configured(self, role: str) -> bool:
        return self._settings.model_for(role) is not None

    def source(self, role: str) -> str:
        model = self._settings.model_for(role)
        if model is None:
            raise VoiceSetupError(f"this needs {MODEL_ROLES[role].missing()}")
        return model

    def get(self, role: str) -> QwenTTS:
        source = self.source(role)
        if (model := self._models.get(role)) is not None:  # no waiting while another role's model loads
            return model
        with self._loading:
            if role not in self._models:
                self._models[role] = _load_model(self._settings, source, MODEL_ROLES[role])
            return self._models[role]

    def loaded(self, role: str) -> QwenTTS | None:
        return self._models.get(role)

    def devices(self) -> dict[str, str]:
        """The loaded models' devices by role."""
        return {role: str(model.device) for role, model in self._models.items()}

    def release_all(self) -> None:
        """Drop every model (idle unload); the next get() loads its role again."""
        with self._loading:
            self._models.clear()

    def release_unused(self, voices: dict[str, ReadyVoice], keep: str = "base") -> None:
        """Free every loaded model but `keep` that no voice speaks with (it was needed only to prepare them)."""
        speaking = {id(voice.model) for voice in voices.values()}
        unused = [role for role, model in self._models.items() if role != keep and id(model) not in speaking]
        for role in unused:
            device = self._models.pop(role).device
            _LOGGER.info("Voices prepared; releasing the %s model (no voice speaks with it)", role)
            _free_memory(device)

    def log_unloaded(self, catalog: VoiceCatalog) -> None:
        """Say which models the voices could have needed but did not (their prepared voices were cached)."""
        for role in sorted(catalog.models_needed()):
            if self.configured(role) and role not in self._models:
                _LOGGER.info("Every voice needing the %s model came from the cache: not loading the %s model "
                             "(saves its memory)", MODEL_ROLES[role].title, role)


class Synthesizer:
    def __init__(self, voices: dict[str, ReadyVoice], max_batch: int = 8, *, settings: EngineSettings | None = None,
                 models: ModelPool | None = None) -> None:
        self.voices = voices
        self._max_batch = max_batch
        self._settings = settings  # None: no voices can be added (tests of the batch alone)
        self._workshop = None
        if settings is not None:
            self._workshop = Workshop(models or ModelPool(settings), VoiceCache(settings.data_dir))
        self._models_lock = threading.Lock()  # held briefly: the event loop takes it too
        self._schedulers: dict[int, Any] = {}
        self._progress: dict[int, Progress] = {}  # per model, as its scheduler
        for voice in voices.values():
            self._scheduler(voice.model)
        # One thread per request in flight: each waits for its chunks, converts them and hands them over.
        self._executor = ThreadPoolExecutor(max_workers=8 * max_batch, thread_name_prefix="synthesis")

    @classmethod
    def load(cls, settings: EngineSettings, catalog: VoiceCatalog) -> Synthesizer:
        """Load the models and prepare every voice of the catalog; raises VoiceSetupError."""
        synthesizer = cls({}, settings.max_batch, settings=settings)
        synthesizer.load_voices(catalog)
        return synthesizer

    def load_voices(self, catalog: VoiceCatalog, optional: Container[str] = frozenset()) -> dict[str, str]:
        """Load the models and prepare every voice of the catalog (from the cache when it holds
        them), then warm up; at start-up and again after an unload. Raises VoiceSetupError, but for
        a voice named in `optional` (one created over HTTP, not the user's configuration): that one
        is skipped with a warning, and returned by name with the reason, so that one voice made on
        the web page never keeps the server from serving the others."""
        from .engine import CheckpointError

        shop = self._ready_workshop()
        models = shop.models
        specs = list(catalog.voices.values())
        voices = {}
        skipped = {}
        try:
            _warn_on_cpu(self._settings, models.get("base"))
            for number, spec in enumerate(specs, 1):
                try:
                    voices[spec.name] = workshop.prepare_voice(spec, shop)
                except (VoiceSetupError, CheckpointError) as err:
                    if spec.name not in optional:
                        raise
                    skipped[spec.name] = str(err)
                    _LOGGER.warning("Voice %s (created over HTTP) is skipped: it cannot be prepared: %s "
                                    "(it stays in the managed voices; it is offered again once a start "
                                    "can prepare it)", spec.name, err)
                    continue
                _LOGGER.info("Voice %s ready (%d of %d)", spec.name, number, len(specs))
        except CheckpointError as err:
            raise VoiceSetupError(str(err)) from err
        models.log_unloaded(catalog)
        models.release_unused(voices)
        for voice in voices.values():
            self._scheduler(voice.model)
        self.voices.update(voices)
        self.warm_up()
        _release_thread_team()  # this thread loaded the models: from now on the batch threads compute
        return skipped

    def unload(self) -> None:
        """Free every model and what was made for it (batches, caches, CUDA graphs, codec state);
        call with no request in flight. The voices are prepared again by load_voices, from the cache."""
        devices = self._devices()
        before = _memory_held(devices)
        self._close_schedulers()
        self.voices.clear()
        if self._workshop is not None:
            self._workshop.models.release_all()
        for device in devices or [None]:
            _free_memory(device)
        _LOGGER.info("Models unloaded: %s -> %s", before, _memory_held(devices))

    def _close_schedulers(self) -> None:
        """In a function of its own: no variable of unload's frame may still hold a model when it measures."""
        with self._models_lock:
            schedulers = list(self._schedulers.values())
            self._schedulers.clear()
            self._progress.clear()
        for scheduler in schedulers:
            scheduler.close()

    def _devices(self) -> list[Any]:
        return list({str(voice.model.device): voice.model.device for voice in self.voices.values()}.values())

    def devices(self) -> dict[str, str]:
        """The loaded models' devices by role (what /health shows)."""
        return self._workshop.models.devices() if self._workshop is not None else {}

    def batch_rows(self) -> dict[str, Any]:
        """Rows generating and sentences waiting in each loaded model's batch, by role."""
        from .metrics import BatchRows

        role_of = {id(model): role for role, model in self._loaded_models().items()}
        with self._models_lock:
            schedulers = dict(self._schedulers)
        return {role_of.get(model_id, "other"): BatchRows(scheduler.active, scheduler.waiting)
                for model_id, scheduler in schedulers.items()}

    def _loaded_models(self) -> dict[str, Any]:
        if self._workshop is None:
            return {}
        pool = self._workshop.models
        return {role: model for role in MODEL_ROLES if (model := pool.loaded(role)) is not None}

    def gpu_memory(self) -> tuple[int, int]:
        """(allocated, reserved) bytes on the GPU the models are on; (0, 0) on a CPU."""
        devices = [device for device in self._devices() if device.type == "cuda"]
        if not devices:
            return 0, 0
        import torch

        return torch.cuda.memory_allocated(devices[0]), torch.cuda.memory_reserved(devices[0])

    def languages(self, voice_name: str) -> list[str]:
        return self.voices[voice_name].languages

    def voice(self, name: str) -> ReadyVoice | None:
        return self.voices.get(name)

    def speed(self, voice: ReadyVoice) -> float | None:
        """Seconds of audio per second the model speaking this voice makes per stream lately (None
        before it has made any)."""
        progress = self._progress.get(id(voice.model))
        return progress.speed if progress is not None else None

    def expected_seconds(self, voice: ReadyVoice, text: str) -> float:
        """How long the model will speak the sentence (before any speed change), estimated from its
        text tokens and the model's pace so far."""
        progress = self._progress.get(id(voice.model))
        per_token = progress.seconds_per_token if progress is not None else SECONDS_PER_TOKEN
        return len(voice.model.prompts.tokenize(text)[0]) * per_token

    def last_progress(self, voice: ReadyVoice) -> float | None:
        """time.monotonic() when the model speaking this voice last made audio, for any request
        (None before the first): a request waiting for a batch row is not stalled while it works."""
        progress = self._progress.get(id(voice.model))
        return progress.last if progress is not None else None

    @property
    def can_design(self) -> bool:
        return self.can_use("design")

    def can_use(self, role: str) -> bool:
        """Whether a model role is configured (voices of kinds that need it can be made)."""
        return self._workshop is not None and self._workshop.models.configured(role)

    def _scheduler(self, model: QwenTTS) -> Any:
        from .engine.scheduler import BatchScheduler

        with self._models_lock:
            scheduler = self._schedulers.get(id(model))
            if scheduler is None:
                progress = self._progress[id(model)] = Progress()
                scheduler = self._schedulers[id(model)] = BatchScheduler(
                    model, max_rows=self._max_batch, before_step=self._before_step(model, progress))
            return scheduler

    def _before_step(self, model: QwenTTS, progress: Progress) -> Callable[[], None]:
        """What the model's batch thread (or the thread of a sentence generated alone) does before
        each step: count the step before as progress (the stall rule's; a chunk of up to 8 frames
        takes far longer on a CPU shared with other work), and on a CPU set its thread count (its
        own ThreadShare: torch's count is per thread)."""
        if model.device.type != "cpu":
            return progress.tick
        from .engine.threads import thread_policy

        set_threads = thread_policy(self._settings.threads if self._settings is not None else "auto")

        def before_step() -> None:
            progress.tick()
            set_threads()

        return before_step

    # -- voices at run time (blocking: call from a worker thread) ------------------------------------

    def _ready_workshop(self) -> Workshop:
        if self._workshop is None:
            raise VoiceSetupError("this synthesizer cannot prepare voices")
        return self._workshop

    def add_voice(self, spec: VoiceSpec) -> None:
        """Prepare a voice (as at start-up: its kind clones, renders or loads what it needs) and make it speakable."""
        self.voices[spec.name] = workshop.prepare_voice(spec, self._ready_workshop())

    def remove_voice(self, name: str) -> None:
        self.voices.pop(name, None)

    def preview(self, design: str, language: str, seeds: list[int]) -> tuple[str, list[np.ndarray]]:
        """What frozen voices of this design and language would be rendered from, one per seed:
        (the sentence, 24 kHz float samples per seed)."""
        return frozen.preview(design, language, seeds, self._ready_workshop())

    def cloned_voice(self, label: str, samples: np.ndarray, rate: int, transcript: str | None) -> ReadyVoice:
        """A voice for one request, cloned from a recording (ICL with a transcript, else x-vector only)."""
        return clone.voice_from_recording(label, samples, rate, transcript, self._ready_workshop())

    def designed_voice(self, label: str, instructions: str) -> ReadyVoice:
        """A voice for one request, spoken by the VoiceDesign model as described."""
        spec = live.LiveSpec(name=label, description=label, design=instructions)
        return live.designed_voice(spec, self._ready_workshop())

    def styled_voice(self, voice: ReadyVoice, instructions: str) -> ReadyVoice:
        """The voice in another style for one request (a custom voice's instructions); raises
        VoiceSetupError for a kind that takes no style."""
        return kind_of(voice.spec).styled(voice, instructions, self._ready_workshop())

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
        progress = self._progress[id(voice.model)]
        self._executor.submit(_generate, voice, scheduler, text, language, handoff, progress, options,
                              lambda: self._before_step(voice.model, progress))
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
                 options: SpeechOptions, alone_step: Callable[[], Callable[[], None]]):
    """The batch scheduler's stream; a sentence too long for a batch row runs on its own instead,
    on this thread, which then steps as a batch thread does (alone_step() makes its before-step call)."""
    from .engine.scheduler import PromptTooLong

    try:
        return scheduler.stream(text, voice.prompt, language=language, cancel=cancel, options=options)
    except PromptTooLong as err:
        _LOGGER.debug("Sentence too long for a batch row, generating it alone: %s", err)
        return voice.model.stream(text, voice.prompt, language=language, cancel=cancel, options=options,
                                  before_step=alone_step())


class Progress:
    """When a model last produced audio, how fast its streams run now, and how long its speech is per
    text token: written by the generation threads, read by the requests."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.speed: float | None = None  # seconds of audio per second, per stream, lately (None: not yet known)
        self.seconds_per_token = SECONDS_PER_TOKEN

    def tick(self) -> None:
        self.last = time.monotonic()

    def pace(self, audio_seconds: float, took_seconds: float) -> None:
        """A chunk after a stream's first one: audio_seconds made in took_seconds since the last."""
        if took_seconds > 0 and audio_seconds > 0:
            speed = audio_seconds / took_seconds
            self.speed = speed if self.speed is None else (1 - PACE_WEIGHT) * self.speed + PACE_WEIGHT * speed

    def spoke(self, audio_seconds: float, text_tokens: int) -> None:
        """A whole sentence: how long its text took to say."""
        if audio_seconds > 0 and text_tokens > 0:
            self.seconds_per_token = ((1 - LENGTH_WEIGHT) * self.seconds_per_token
                                      + LENGTH_WEIGHT * audio_seconds / text_tokens)


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
              progress: Progress, options: SpeechOptions, alone_step: Callable[[], Callable[[], None]]) -> None:
    """Runs on a worker thread, one per request."""
    try:
        if handoff.abandoned:
            return
        started = time.perf_counter()
        first_audio = None
        audio_seconds = 0.0
        stretch = SpeedChanger(voice.speed_with(options))
        model_seconds = 0.0  # of audio as the model made it, before the speed change
        with closing(_open_stream(voice, scheduler, text, language, handoff.cancel, options, alone_step)) as chunks:
            last_chunk_at = None
            for chunk in chunks:
                progress.tick()
                now = time.perf_counter()
                chunk_seconds = chunk.samples.size / SAMPLE_RATE
                if last_chunk_at is not None:  # the first chunk's time is the prompt's, not the pace's
                    progress.pace(chunk_seconds, now - last_chunk_at)
                last_chunk_at = now
                model_seconds += chunk_seconds
                pcm = to_pcm16(stretch.process(chunk.samples))
                first_audio = first_audio or now - started
                audio_seconds += pcm16_seconds(pcm, SAMPLE_RATE)
                if pcm and not handoff.put_audio(pcm):
                    break
        if handoff.abandoned:
            _LOGGER.debug("Cancelled %s after %.2f s of audio: %r", voice.spec.name, audio_seconds, text[:60])
            return
        progress.spoke(model_seconds, len(voice.model.prompts.tokenize(text)[0]))
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


# -- models ----------------------------------------------------------------------------------------------


def _warn_on_cpu(settings: EngineSettings, base: QwenTTS) -> None:
    if base.device.type == "cpu":
        why = "as asked" if settings.device == "cpu" else "PyTorch sees no CUDA GPU"
        _LOGGER.warning("Running on the CPU (%s): speech will come slower than real time", why)


def _load_model(settings: EngineSettings, model: str, role) -> QwenTTS:
    from safetensors import SafetensorError

    from .engine import CheckpointError, QwenTTS

    option, expected_type = role.option, role.model_type
    started = time.perf_counter()
    _LOGGER.info("Loading %s (%s) ...", model, option)
    try:
        tts = QwenTTS(model, device=settings.device, dtype=settings.dtype, quantize=settings.quantize,
                      int8_prompts=settings.int8_prompts, compile=settings.compile,
                      local_files_only=settings.local_files_only)
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

    from .engine.devices import release_cached_memory

    gc.collect()
    if device is not None and device.type == "cuda":
        # cuBLAS keeps a workspace per (thread's handle, stream) it ran on until told otherwise: one
        # for each request thread's prompt stream, the batch thread's, and the one the first graph
        # capture allocated in the graphs' own memory pool (which then cannot be freed either).
        clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear_workspaces is not None:
            clear_workspaces()
        release_cached_memory(device)
    else:
        _return_heap_to_system()


def _return_heap_to_system() -> None:
    """glibc keeps freed heap memory for reuse: give it back, so that the RSS shows what was freed."""
    import ctypes
    import ctypes.util

    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    try:
        ctypes.CDLL(libc_name).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        pass


def _memory_held(devices: list[Any]) -> str:
    """What the process holds: GPU allocated/reserved on CUDA, else its resident memory."""
    cuda = [device for device in devices if device.type == "cuda"]
    if cuda:
        import torch

        gib = 2**30
        return (f"GPU {torch.cuda.memory_allocated(cuda[0]) / gib:.2f} GiB allocated, "
                f"{torch.cuda.memory_reserved(cuda[0]) / gib:.2f} GiB reserved")
    return f"RSS {resident_bytes() / 2**20:.0f} MiB"


def resident_bytes() -> int:
    """The process's resident memory now (Linux /proc; 0 where there is none)."""
    import os

    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0

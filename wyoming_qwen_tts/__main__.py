"""wyoming-qwen-tts: the Wyoming text-to-speech server (python -m wyoming_qwen_tts).

Every option can also come from an environment variable (QWEN_TTS_<OPTION>, e.g. QWEN_TTS_MODEL),
which is how the Docker image is configured; a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

from . import __version__
from .model_lifecycle import ModelState

_LOGGER = logging.getLogger("wyoming_qwen_tts")

DEFAULT_URI = "tcp://0.0.0.0:10200"
HTTP_PORT = 10201  # the documented one (docker-compose.yml); --http is off unless given
DEFAULT_MODEL = "Qwen/Qwen3-TTS-12Hz-1.7B-Base"
DEFAULT_DESIGN_MODEL = "Qwen/Qwen3-TTS-12Hz-1.7B-VoiceDesign"
DEFAULT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PROGRAM_NAME = "qwen-tts"
PROGRAM_DESCRIPTION = "Qwen3-TTS: cloned and designed voices, streamed while generated"
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"", "0", "false", "no", "off"}


class ConfigError(ValueError):
    pass


def env(option: str) -> str:
    return "QWEN_TTS_" + option.lstrip("-").replace("-", "_").upper()


def env_value(option: str, default: str | None = None) -> str | None:
    return os.environ.get(env(option), default)


def env_flag(option: str) -> bool:
    value = os.environ.get(env(option), "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(f"{env(option)}={value!r}: use true or false")


def env_zeroconf() -> str | None:
    """QWEN_TTS_ZEROCONF: a service name, true for the default name, unset/false for no zeroconf."""
    value = os.environ.get(env("--zeroconf"), "").strip()
    if value.lower() in FALSE_WORDS:
        return None
    return PROGRAM_NAME if value.lower() in TRUE_WORDS else value


def batch_size(value: str) -> int:
    size = int(value)
    if not 1 <= size <= 256:
        raise ValueError(value)
    return size


batch_size.__name__ = "batch size (1-256)"  # how argparse names it in its error message


def positive_seconds(value: str) -> float:
    seconds = float(value)
    if not 0 < seconds < float("inf"):
        raise ValueError(value)
    return seconds


positive_seconds.__name__ = "number of seconds (> 0)"


def text_chars(value: str) -> int:
    chars = int(value)
    if chars < 1:
        raise ValueError(value)
    return chars


text_chars.__name__ = "number of characters (>= 1)"


def idle_seconds(value: str) -> float:
    seconds = float(value)
    if not 0 <= seconds < float("inf"):
        raise ValueError(value)
    return seconds


idle_seconds.__name__ = "number of seconds (>= 0)"


def thread_count(value: str) -> str:
    value = value.strip().lower()
    if value != "auto" and not (value.isdigit() and 1 <= int(value) <= 1024):
        raise ValueError(value)
    return value


thread_count.__name__ = "thread count (auto or 1-1024)"


def default_data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "wyoming-qwen-tts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wyoming-qwen-tts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)

    def option(name: str, help_text: str, **kwargs) -> None:
        parser.add_argument(name, help=f"{help_text} [env {env(name)}]", **kwargs)

    option("--uri", f"where to listen: tcp://HOST:PORT or unix://PATH (default {DEFAULT_URI})",
           default=env_value("--uri", DEFAULT_URI))
    option("--model", f"Base checkpoint (voice cloning): hub id or directory (default {DEFAULT_MODEL})",
           default=env_value("--model", DEFAULT_MODEL))
    option("--design-model", f"VoiceDesign checkpoint, or none (default {DEFAULT_DESIGN_MODEL})",
           default=env_value("--design-model", DEFAULT_DESIGN_MODEL))
    option("--custom-model", "CustomVoice checkpoint (built-in speakers, e.g. Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice): "
           "hub id or directory; loaded only when a voice uses it (default: none)",
           default=env_value("--custom-model"))
    option("--voices", "voices file (YAML); without it, four built-in designed voices", metavar="FILE",
           default=env_value("--voices"))
    option("--data-dir", f"caches and frozen voices (default {default_data_dir()})",
           default=env_value("--data-dir", default_data_dir()))
    option("--default-voice", "voice for requests that name none (default: the voices file's 'default')",
           default=env_value("--default-voice"))
    option("--zeroconf", f"announce the server over zeroconf/mDNS, optionally under NAME (default {PROGRAM_NAME})",
           nargs="?", const=PROGRAM_NAME, metavar="NAME", default=env_zeroconf())
    option("--zeroconf-host", "address to announce, and the interface to announce on "
           "(default: the --uri host, or this machine's LAN address when that is 0.0.0.0)",
           default=env_value("--zeroconf-host"))
    option("--device", "auto, cpu or cuda (default auto: the GPU when there is one; pick another GPU with CUDA_VISIBLE_DEVICES)",
           default=env_value("--device", "auto"))
    option("--dtype", "model weights: auto (bfloat16 on a GPU and on CPUs with native bf16 (AVX512-BF16/AMX), "
           "float32 on other CPUs), float32, bfloat16, float16",
           choices=["auto", "float32", "bfloat16", "float16"], default=env_value("--dtype", "auto"))
    option("--quantize", "auto, none or int8: int8 weights for the talker and code predictor (half the memory "
           "of bfloat16, faster where memory bandwidth bounds a step) (default auto: int8 on a CPU with native bf16 "
           "or AVX2, none elsewhere)",
           choices=["auto", "none", "int8"], default=env_value("--quantize", "auto"))
    option("--int8-prompts", "auto or off: with int8 weights on a CPU, run each prompt through the CPU's integer "
           "matmul (int8 activations, a scale per row; first audio comes sooner). On CPUs with AVX2 but no VNNI it "
           "keeps a 7-bit copy of the talker's weights (about 0.4 GB for the 0.6B, 1.4 GB for the 1.7B); off saves "
           "that memory and runs prompts on dequantized weights (default auto)",
           choices=["auto", "off"], default=env_value("--int8-prompts", "auto"))
    option("--compile", "auto, true or false: compile each frame step with torch.compile (fewer, fused kernels; "
           "costs minutes at start-up, longer on a first start without Inductor's cache) (default auto: off)",
           choices=["auto", "true", "false"], default=env_value("--compile", "auto"))
    option("--max-batch", "sentences generated together (continuous batching; memory grows with it) (default 8)",
           type=batch_size, default=env_value("--max-batch", "8"))
    option("--threads", "auto or N: threads a CPU batch computes with; auto follows the CPUs that other work on "
           "the machine leaves free, up to OMP_NUM_THREADS or the cores, so that a shared CPU slows speech "
           "in proportion instead of stalling it (default auto)",
           type=thread_count, default=env_value("--threads", "auto"))
    option("--max-text-chars", "characters spoken per request; the rest is skipped, with an error event "
           "(default 5000)", type=text_chars, default=env_value("--max-text-chars", "5000"))
    option("--stall-timeout", "seconds a sentence may go without new audio while its model makes no progress "
           "for any request either; then its audio so far is kept and the request ends. A slow but steady "
           "sentence is never cut (the engine's frame budget bounds its length) (default 30)",
           type=positive_seconds, dest="stall_timeout", metavar="SECONDS",
           default=env_value("--stall-timeout") or env_value("--max-seconds-per-sentence") or "30")
    option("--max-seconds-per-sentence", "former name of --stall-timeout, still accepted",
           type=positive_seconds, dest="stall_timeout", metavar="SECONDS", default=argparse.SUPPRESS)
    option("--idle-timeout", "seconds a connection may send no event while nothing is being spoken; then it "
           "is closed (an open stream first ends properly) (default 60)",
           type=positive_seconds, default=env_value("--idle-timeout", "60"))
    option("--write-timeout", "seconds a client may take to accept one event; a client that stops reading is "
           "dropped and its generation cancelled (default 30)",
           type=positive_seconds, default=env_value("--write-timeout", "30"))
    option("--smooth", "auto, on or off: when speech comes slower than real time (a slow CPU), hold each sentence's "
           "audio back just long enough that it then plays to its end without a gap (later first audio); on "
           "holds more, for a CPU shared with other work; off never holds (default auto)",
           choices=["auto", "on", "off"], default=env_value("--smooth", "auto"))
    option("--unload-after", "seconds without a request (on any transport) after which every model is unloaded "
           "from memory; the next request loads them again from local files (the prepared voices are cached) "
           "(default 0: never)", type=idle_seconds, metavar="SECONDS", default=env_value("--unload-after", "0"))
    option("--http", f"also serve the HTTP API (OpenAI-style speech, voices) on [HOST:]PORT, e.g. {HTTP_PORT} "
           "(HOST default 0.0.0.0; default: off)", metavar="[HOST:]PORT", default=env_value("--http"))
    option("--http-token", "a token every HTTP API call must bring as 'Authorization: Bearer TOKEN' "
           "(default: none)", metavar="TOKEN", default=env_value("--http-token"))
    option("--no-streaming", "do not advertise streaming synthesis (Home Assistant then sends whole texts)",
           action="store_true", default=env_flag("--no-streaming"))
    option("--no-markdown", "read text as it is: no markdown handling of LLM replies (emphasis, lists, links, "
           "URLs, code)", action="store_true", default=env_flag("--no-markdown"))
    option("--local-files-only", "never download checkpoints; use the Hugging Face cache only",
           action="store_true", default=env_flag("--local-files-only"))
    option("--debug", "log DEBUG messages", action="store_true", default=env_flag("--debug"))
    option("--log-format", "Python logging format", default=env_value("--log-format", DEFAULT_LOG_FORMAT))
    parser.add_argument("--version", action="version", version=__version__)
    return parser


@dataclass(frozen=True)
class Listen:
    uri: str
    scheme: str
    host: str | None
    port: int | None


def parse_uri(uri: str) -> Listen:
    parsed = urlparse(uri)
    if parsed.scheme == "tcp":
        try:
            port = parsed.port
        except ValueError:
            port = None
        if parsed.hostname is None or port is None:
            raise ConfigError(f"--uri {uri}: give a host and a port, e.g. {DEFAULT_URI}")
        return Listen(uri, "tcp", parsed.hostname, port)
    if parsed.scheme == "unix" and parsed.path:
        return Listen(uri, "unix", None, None)
    raise ConfigError(f"--uri {uri}: use tcp://HOST:PORT or unix://PATH")


@dataclass(frozen=True)
class HttpListen:
    host: str
    port: int


def parse_http(value: str | None) -> HttpListen | None:
    """--http [HOST:]PORT; None when off."""
    if value is None or value.strip().lower() in FALSE_WORDS:
        return None
    host, _, port = value.strip().rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--http {value}: give [HOST:]PORT, e.g. {HTTP_PORT} or 127.0.0.1:{HTTP_PORT}")
    return HttpListen(host, int(port))


def check_config(args: argparse.Namespace):
    """Everything that can be checked before a model loads; returns (listen, catalog, engine settings)."""
    from .synthesis import EngineSettings
    from .voices import builtin_catalog, load_voices_file

    listen = parse_uri(args.uri)
    parse_http(args.http)
    if args.http_token is not None and not args.http_token.strip():
        raise ConfigError("--http-token is empty: give a token, or leave the option out")
    if not DEVICE.match(args.device):
        raise ConfigError(f"--device {args.device}: use auto, cpu, cuda or cuda:0")
    if args.device.startswith("cuda:") and int(args.device[5:]) != 0:
        # The engine's streams, events and graph captures use each thread's current GPU, which is
        # the first one: another GPU is chosen by making it the only one the process sees.
        raise ConfigError(f"--device {args.device}: choose the GPU with CUDA_VISIBLE_DEVICES={args.device[5:]} "
                          "(docker compose: the device's device_ids) and --device cuda")
    design_model = optional_model(args.design_model)
    if args.zeroconf:
        if listen.scheme != "tcp":
            raise ConfigError("--zeroconf needs a tcp:// --uri")
        from .discovery import check_instance_name

        check_instance_name(args.zeroconf)
    catalog = load_voices_file(args.voices) if args.voices else builtin_catalog()
    catalog = catalog.with_default(args.default_voice)
    if design_model is None and not args.voices:
        raise ConfigError("the built-in voices are designed: with --design-model none, give a --voices file "
                          "of cloned voices")
    settings = EngineSettings(model=args.model, design_model=design_model,
                              custom_model=optional_model(args.custom_model), data_dir=Path(args.data_dir).expanduser(), device=args.device, dtype=args.dtype,
                              quantize=args.quantize, int8_prompts=args.int8_prompts, compile=args.compile,
                              local_files_only=args.local_files_only,
                              max_batch=args.max_batch, threads=args.threads)
    for spec in catalog.voices.values():
        if problem := missing_model(spec, settings):
            raise ConfigError(f"{catalog.source}: voice {spec.name!r}: {problem}")
    return listen, catalog, settings


def optional_model(value: str | None) -> str | None:
    """A model option's checkpoint; None for none (or empty, or not given)."""
    return None if value is None or value.strip().lower() in ("", "none") else value


def missing_model(spec, settings) -> str | None:
    """What keeps a voice from being prepared with these settings: a model its kind needs that is not configured."""
    from .voice_kinds.base import MODEL_ROLES
    from .voice_kinds.registry import kind_of

    kind = kind_of(spec)
    for role in sorted(kind.models_needed):
        if settings.model_for(role) is None:
            return f"field {kind.marker!r}: a {kind.label} voice needs {MODEL_ROLES[role].missing()}"
    return None


def build_info(catalog, languages_of, streaming: bool):
    from wyoming.info import Info, TtsProgram

    from .voices import QWEN_ATTRIBUTION, tts_voices

    program = TtsProgram(name=PROGRAM_NAME, description=PROGRAM_DESCRIPTION, attribution=QWEN_ATTRIBUTION,
                         installed=True, version=__version__, voices=tts_voices(catalog, languages_of),
                         supports_synthesize_streaming=streaming)
    return Info(tts=[program])


async def serve(listen: Listen, service, describe, zeroconf_name: str | None, zeroconf_host: str | None,
                http=None) -> bool:
    """Listen at once, load the models meanwhile, and serve until SIGINT/SIGTERM; http: (HttpListen,
    HTTP app) to serve beside, in this event loop. False when the models could not be loaded at
    start-up (the requests that waited for them are answered with the error first)."""
    from wyoming.server import AsyncServer

    from .discovery import Announcement, advertised_address
    from .handler import TtsEventHandler

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    server = AsyncServer.from_uri(listen.uri)
    await server.start(partial(TtsEventHandler, service=service, describe=describe))
    announcement = None
    http_server = http_task = None
    lifecycle = service.lifecycle
    unloading = asyncio.create_task(lifecycle.unload_when_idle(), name="unload when idle")
    try:
        if http is not None:
            http_server, http_task = await start_http(*http)
        if zeroconf_name:
            announcement = Announcement(zeroconf_name, advertised_address(listen.host, zeroconf_host), listen.port)
            await announcement.start()
        catalog = service.catalog
        _LOGGER.info("Listening on %s: %d voices (default %s); loading the models", listen.uri, len(catalog.voices),
                     catalog.default)
        loading = lifecycle.start_loading()
        await asyncio.wait({loading, asyncio.ensure_future(stopping.wait())}, return_when=asyncio.FIRST_COMPLETED)
        if lifecycle.state is ModelState.FAILED:
            await _answer_waiting(lifecycle)
            return False
        if lifecycle.state is ModelState.READY:
            _LOGGER.info("Ready: %d voices on %s", len(service.catalog.voices), listen.uri)
        await stopping.wait()
        _LOGGER.info("Stopping")
        return True
    finally:
        unloading.cancel()
        if announcement is not None:
            await announcement.stop()
        if http_server is not None:
            http_server.should_exit = True
            await http_task
        await server.stop()
        if stopping.is_set() and lifecycle.state is ModelState.LOADING:
            _exit_without_the_load()


def _exit_without_the_load() -> None:
    """Stopped while the models load: exit now, not when the load's thread is done (asyncio.run and
    the interpreter would join it, and Docker kills a container that takes over 10 s to stop).
    Nothing is left half-written: cached voices are written to a temporary file and renamed."""
    _LOGGER.info("Stopped while the models were loading: not waiting for the load to finish")
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


async def _answer_waiting(lifecycle, seconds: float = 2.0) -> None:
    """Give the requests that waited for a failed load a moment to write its error and their closing events."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while lifecycle.in_flight and loop.time() < deadline:
        await asyncio.sleep(0.05)


async def start_http(where: HttpListen, app):
    """uvicorn serving the app as a task of this event loop; raises OSError when it cannot listen."""
    import contextlib
    import socket

    import uvicorn

    class EmbeddedServer(uvicorn.Server):
        def capture_signals(self):  # our signal handlers stop both servers
            return contextlib.nullcontext()

    config = uvicorn.Config(app, host=where.host, port=where.port, log_config=None, lifespan="off",
                            access_log=False, timeout_graceful_shutdown=5)
    http_server = EmbeddedServer(config)
    # Bound here, so that a port in use is an OSError to report (uvicorn would exit the process).
    try:
        listening = socket.create_server((where.host, where.port),
                                         family=socket.AF_INET6 if ":" in where.host else socket.AF_INET)
    except OSError as err:
        raise OSError(f"--http {where.host}:{where.port}: cannot listen there: {err.strerror or err}") from None
    task = asyncio.create_task(http_server.serve(sockets=[listening]), name="http api")
    while not http_server.started:
        if task.done():
            task.result()
            raise OSError(f"--http {where.host}:{where.port}: the HTTP server stopped at its start")
        await asyncio.sleep(0.02)
    _LOGGER.info("HTTP API on http://%s:%d", where.host, where.port)
    return http_server, task


def configure_logging(debug: bool, log_format: str) -> None:
    """Logs at INFO; --debug raises this package's loggers to DEBUG and no one else's: markdown-it
    alone logs thousands of parser lines per streamed reply at DEBUG, and other libraries' debug
    would bury ours."""
    logging.basicConfig(level=logging.INFO, format=log_format)
    logging.getLogger("wyoming_qwen_tts").setLevel(logging.DEBUG if debug else logging.NOTSET)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
    except ConfigError as err:  # a bad environment variable
        print(f"error: {err}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    configure_logging(args.debug, args.log_format)
    from .discovery import DiscoveryError
    from .voices import VoicesFileError

    try:
        listen, catalog, settings = check_config(args)
    except (ConfigError, VoicesFileError, DiscoveryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return run_server(args, listen, catalog, settings)


def limits_of(args: argparse.Namespace):
    from .speech import Limits

    return Limits(max_text_chars=args.max_text_chars, stall_seconds=args.stall_timeout,
                  idle_seconds=args.idle_timeout, write_seconds=args.write_timeout, markdown=not args.no_markdown)


class Describer:
    """The Wyoming info answer for the voices as they are now: made again when they change."""

    def __init__(self, service, streaming: bool) -> None:
        self._service = service
        self._streaming = streaming
        self._info = self._make(service.catalog)
        service.on_catalog_change(self._changed)

    def __call__(self):
        return self._info

    def _changed(self, catalog) -> None:
        self._info = self._make(catalog)

    def _make(self, catalog):
        return build_info(catalog, self._service.languages, self._streaming)


def run_server(args: argparse.Namespace, listen: Listen, catalog, settings) -> int:
    """Listen before any model loads (describe answers, requests wait for the models); a model or
    voice that cannot be prepared at start-up ends the server (exit 1), as a Docker restart
    policy expects, but for a voice created over HTTP, which is skipped (VoiceLoading)."""
    from .discovery import DiscoveryError
    from .model_lifecycle import ModelLifecycle
    from .request_text import LanguageDetector
    from .speech import Smoothing, SpeechService
    from .synthesis import Synthesizer
    from .voice_store import VoiceStore, merged_catalog

    detector = LanguageDetector()
    detector.load()
    store = VoiceStore(settings.data_dir)
    user_voices = frozenset(catalog.voices)
    catalog = merged_catalog(catalog, usable_managed_voices(store, settings))
    synthesizer = Synthesizer({}, settings.max_batch, settings=settings)
    service = SpeechService(catalog=catalog, speaker=synthesizer, detector=detector, limits=limits_of(args),
                            smoothing=Smoothing(args.smooth))
    loading = VoiceLoading(service, synthesizer, user_voices)
    service.lifecycle = ModelLifecycle(load=loading.load, unload=synthesizer.unload, unload_after=args.unload_after)
    service.lifecycle.on_ready(loading.publish)  # describe: the voices' real languages, none skipped
    service.metrics.watch(service.lifecycle, engine_gauges(synthesizer))
    try:
        describe = Describer(service, streaming=not args.no_streaming)
        http = http_app(args, service, store, synthesizer)
        loaded = asyncio.run(serve(listen, service, describe, args.zeroconf, args.zeroconf_host, http))
    except (OSError, DiscoveryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        synthesizer.close()
    if not loaded:
        print(f"error: {service.lifecycle.error}", file=sys.stderr)
        return 1
    return 0


class VoiceLoading:
    """What a load of the models (at start-up, and again after an idle unload) prepares: every voice
    of the catalog. A voice of the user's voices file (or a built-in one) that cannot be prepared
    fails the load, as a configuration error; a managed one (created over HTTP) is skipped instead
    (Synthesizer.load_voices warns), and taken out of the catalog once the models are ready: not
    described, not listed, asked for as an unknown voice. It stays in the managed voices file: a
    later start that can prepare it (e.g. with the model it was made for) offers it again."""

    def __init__(self, service, synthesizer, user_voices: frozenset[str]) -> None:
        self._service = service
        self._synthesizer = synthesizer
        self._user_voices = user_voices
        self._skipped: dict[str, str] = {}

    def load(self) -> None:
        """Blocking (the lifecycle's worker thread)."""
        catalog = self._service.catalog
        managed = catalog.voices.keys() - self._user_voices
        self._skipped = self._synthesizer.load_voices(catalog, optional=managed)

    def publish(self) -> None:
        """Once the models are ready (the event loop): the catalog without the voices skipped."""
        from .voices import VoiceCatalog

        catalog = self._service.catalog
        voices = {name: spec for name, spec in catalog.voices.items() if name not in self._skipped}
        self._service.publish(VoiceCatalog(voices, catalog.default, catalog.source))


def engine_gauges(synthesizer):
    from .metrics import EngineGauges

    return EngineGauges(batch_rows=synthesizer.batch_rows, gpu_memory=synthesizer.gpu_memory)


def usable_managed_voices(store, settings) -> dict:
    """The voices created over HTTP, but for those whose kind needs a model that is not configured."""
    managed = store.load()
    for name, spec in list(managed.items()):
        if problem := missing_model(spec, settings):
            _LOGGER.warning("Voice %s (created over HTTP) is skipped: %s", name, problem)
            del managed[name]
    return managed


def http_app(args: argparse.Namespace, service, store, synthesizer):
    """(where, the HTTP app) for --http, None without; voice changes made over HTTP reach the
    Wyoming side (its catalog and describe answer) as they happen."""
    where = parse_http(args.http)
    if where is None:
        return None
    from .http_api import HttpService, create_app
    from .voice_store import VoiceLibrary

    library = VoiceLibrary(service.catalog, store, synthesizer, service.publish)
    service.on_catalog_change(library.follow)  # a load's skipped voices are gone from the list too
    return where, create_app(HttpService(service, library, synthesizer, args.http_token, health=synthesizer.devices))


def run() -> None:
    """Console script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()

"""The HTTP API, in the Wyoming server's process and event loop, on the same Synthesizer and batch:

    POST   /v1/audio/speech          OpenAI-compatible speech, plus extensions (language, instructions,
                                     reference audio, seed, max_new_tokens, sample_rate, bitrate,
                                     channels, n variations)
    GET    /v1/audio/voices          the voices, and the kinds (label, whether one can be created now)
    POST   /v1/audio/voices          create a voice: designed or custom (JSON), cloned (upload or JSON)
    POST   /v1/audio/voices/preview  takes of a designed voice, to listen to before keeping one
    DELETE /v1/audio/voices/{name}   delete a voice created over HTTP
    GET    /health                   the models' state (loading, ready, unloaded; 503: failed) and devices
    GET    /metrics                  Prometheus text format

Errors are JSON in OpenAI's shape, {"error": {"message", "type", "code"}}, never a traceback. With a
token, every route but /health needs `Authorization: Bearer TOKEN`. While the models load, a
request waits for them up to the stall timeout, then gets a 503 with Retry-After. Engine work runs in worker threads; the
event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from .audio import SAMPLE_RATE, pcm16_seconds
from .audio_formats import (
    FORMAT_NAMES,
    FormatError,
    OutputFormat,
    StreamEncoder,
    UnsupportedAudio,
    UploadTooLarge,
    decode_upload,
    encode,
    output_format,
)
from .engine.options import MAX_SEED, OptionError, SamplingOverrides, SpeechOptions, next_seeds
from .http_page import register_page
from .protocol import shorten
from .model_lifecycle import ModelState
from .speech import (LanguageAsk, Limits, ModelsNotReady, SentenceStalled, SpeechError, SpeechService, SpokenRequest,
                     TextLimit, Voice, VoiceLookup)
from .request_text import AUTO, language_codes, normalize_language
from .voice_kinds.base import MODEL_ROLES, VoiceKind, VoiceSetupError
from .voice_kinds.registry import KINDS, creatable, kind_for_request, kind_of
from .voice_store import UnknownVoice, VoiceConflict, VoiceLibrary
from .voices import VoicesFileError, VoiceSpec

if TYPE_CHECKING:
    from .synthesis import Synthesizer

_LOGGER = logging.getLogger(__name__)
MAX_VARIATIONS = 4
LOGGED_CHARS = 80
DATA_URI = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.I)


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind
        self.headers = headers
        # how the request ended, as the metrics count it: the speech layer's code, else by status
        self.outcome = code or ("cancelled" if status == 499 else f"http-{status}")

    @classmethod
    def of(cls, err: SpeechError) -> ApiError:
        """The speech layer's error as this API answers it."""
        if isinstance(err, SentenceStalled):
            return cls(504, f"{err.message}: the speech engine is stuck", "server_error", err.code)
        if isinstance(err, ModelsNotReady):
            return cls(503, err.message, "server_error", err.code,
                       headers={"Retry-After": str(max(1, math.ceil(err.retry_after)))})
        return cls(STATUS_OF_CODE.get(err.code, 400), err.message, code=err.code)


# The speech layer's error codes (speech.SpeechError) as HTTP statuses; any other code is a 400.
STATUS_OF_CODE = {"timeout": 504, "loading": 503, "load-failed": 503}


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def error_response(status: int, message: str, kind: str = "invalid_request_error",
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


class BodyLimit:
    """ASGI middleware: a body larger than the limit is refused, by its Content-Length at once, or
    when the bytes received pass the limit (chunked uploads), before it is all read."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            error = BodyTooLarge(self.max_bytes)
            await error_response(error.status, error.message)(scope, receive, send)
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


# -- request bodies --------------------------------------------------------------------------------


class SpeechRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None  # any: this server speaks with its own models
    input: str
    voice: str | dict | None = None
    response_format: Literal[FORMAT_NAMES] = "mp3"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    stream_format: Literal["audio", "sse"] | None = None
    instructions: str | None = Field(None, max_length=2000)
    language: str | None = None
    reference_audio: str | None = None
    reference_text: str | None = None
    x_vector_only: bool = False
    max_new_tokens: int | None = Field(None, ge=1, le=8192)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    temperature: float | None = None  # the talker's sampling, as the official generate() takes it
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    sample_rate: int | None = None
    bitrate: int | None = None  # kbit/s
    channels: int = 1
    n: int = Field(1, ge=1, le=MAX_VARIATIONS)


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    design: str = Field(min_length=1, max_length=2000)
    language: str = AUTO
    n: int = Field(1, ge=1, le=MAX_VARIATIONS)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)


# -- the app ---------------------------------------------------------------------------------------


@dataclass
class HttpService:
    speech: SpeechService
    library: VoiceLibrary
    synthesizer: Synthesizer  # voices made for one request (cloned, designed), design previews
    token: str | None = None
    health: Callable[[], dict[str, str]] = dict  # the loaded models' devices by role

    @property
    def limits(self) -> Limits:
        return self.speech.limits


def create_app(service: HttpService) -> FastAPI:
    app = FastAPI(title="wyoming-qwen-tts", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    _add_error_handlers(app)
    router = APIRouter(prefix="/v1", dependencies=[Depends(_authorized)])
    router.add_api_route("/audio/speech", speech, methods=["POST"])
    router.add_api_route("/audio/voices", list_voices, methods=["GET"])
    router.add_api_route("/audio/voices", create_voice, methods=["POST"])
    router.add_api_route("/audio/voices/preview", preview_voice, methods=["POST"])
    router.add_api_route("/audio/voices/{name}", delete_voice, methods=["DELETE"])
    app.include_router(router)
    app.add_api_route("/metrics", metrics, methods=["GET"], dependencies=[Depends(_authorized)])
    app.add_api_route("/health", health, methods=["GET"])
    register_page(app)
    app.add_middleware(BodyLimit, max_bytes=service.limits.body_bytes)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        if err.status >= 500:
            _LOGGER.error("%s %s: %s", request.method, request.url.path, err.message)
        else:
            _LOGGER.info("%s %s: %d %s", request.method, request.url.path, err.status, err.message)
        return error_response(err.status, err.message, err.kind, err.headers)

    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), "invalid_request_error")

    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(err.errors()))

    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        _LOGGER.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(err).__name__}", "server_error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)


def _service(request: Request) -> HttpService:
    return request.app.state.service


async def _authorized(request: Request) -> None:
    token = _service(request).token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(401, "a valid 'Authorization: Bearer TOKEN' header is needed (--http-token)",
                       "authentication_error")


def _validation_message(errors: list[dict]) -> str:
    problems = []
    for error in errors[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()) if part not in ("body",))
        problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(problems) or "invalid request"


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ApiError(422, _validation_message(err.errors())) from None


def _media_kind(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return "json"
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return "form"
    raise ApiError(415, f"send application/json or a form (multipart/form-data), not "
                        f"{shorten(content_type, LOGGED_CHARS) or 'no content type'}")


async def _json_body(request: Request) -> dict:
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


async def _form_body(request: Request) -> tuple[dict[str, str], dict[str, UploadFile]]:
    form = await request.form(max_files=2, max_fields=32)
    fields, files = {}, {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            files[key] = value
        else:
            fields[key] = value
    return fields, files


def _language(value: str | None) -> str:
    try:
        return normalize_language(value or AUTO)
    except ValueError as err:
        raise ApiError(400, f"language: {err}") from None


def _flag(value: str | None, field: str) -> bool:
    if value is None or value.strip().lower() in ("", "false", "0", "no", "off"):
        return False
    if value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    raise ApiError(422, f"{field}: use true or false, not {shorten(repr(value), LOGGED_CHARS)}")


def _first_seed(seed: int | None) -> int:
    return secrets.randbits(31) if seed is None else seed


async def _recording_of_upload(upload: UploadFile, limits: Limits):
    data = await upload.read(limits.upload_bytes + 1)
    return _decoded(data, limits)


def _recording_of_base64(text: str, limits: Limits):
    payload = DATA_URI.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ApiError(400, f"reference_audio: not base64 (plain or a data: URI): {err}") from None
    return _decoded(data, limits)


def _decoded(data: bytes, limits: Limits):
    try:
        return decode_upload(data, limits.upload_bytes, limits.upload_seconds)
    except UploadTooLarge as err:
        raise ApiError(413, str(err)) from None
    except UnsupportedAudio as err:
        raise ApiError(415, str(err)) from None


def _wav_base64(samples) -> str:
    """As a frozen voice's rendering is stored (soundfile's 16-bit WAV), so a kept take is what was heard."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples.clip(-1.0, 1.0), SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


async def _engine(work, *args):
    """Engine work in a worker thread; a voice that cannot be prepared is the client's 400."""
    try:
        return await asyncio.to_thread(work, *args)
    except (VoiceSetupError, ValueError) as err:
        raise ApiError(400, str(err)) from None


# -- health and metrics ----------------------------------------------------------------------------


async def health(request: Request) -> JSONResponse:
    """The models' state and devices; 503 while they cannot be loaded (the error says why)."""
    service = _service(request)
    lifecycle = service.speech.lifecycle
    body = {"state": lifecycle.state.value, "models": service.health(), "requests_in_flight": lifecycle.in_flight}
    if lifecycle.state is ModelState.FAILED:
        body["error"] = lifecycle.error
    return JSONResponse(body, status_code=503 if lifecycle.state is ModelState.FAILED else 200)


async def metrics(request: Request) -> Response:
    text, content_type = _service(request).speech.metrics.exposition()
    return Response(text, media_type=content_type)


@asynccontextmanager
async def _models(service: HttpService):
    """The models loaded for work that is not speech (making a voice, a preview); a 503 when they are not there."""
    try:
        async with service.speech.using_models():
            yield
    except SpeechError as err:
        raise ApiError.of(err) from None


# -- voices ----------------------------------------------------------------------------------------


def voice_object(service: HttpService, spec: VoiceSpec) -> dict:
    languages = service.speech.languages(spec.name)
    common = {"name": spec.name, "description": spec.description, "kind": spec.kind,
              "languages": language_codes(languages), "seed": None, "managed": service.library.is_managed(spec.name)}
    return {**common, **kind_of(spec).details(spec)}


def kind_object(service: HttpService, kind: VoiceKind) -> dict:
    """What the page shows of a kind: its label, and whether POST /v1/audio/voices can make one now."""
    return {"label": kind.label, "creatable": kind.creation is not None and _missing_model(service, kind) is None}


async def list_voices(request: Request) -> dict:
    service = _service(request)
    catalog = service.library.catalog
    return {"default": catalog.default, "voices": [voice_object(service, spec) for spec in catalog.voices.values()],
            "kinds": {kind.name: kind_object(service, kind) for kind in KINDS}}


async def preview_voice(request: Request) -> dict:
    service = _service(request)
    if _media_kind(request) != "json":
        raise ApiError(415, "send the preview request as application/json")
    asked = _parse(PreviewRequest, await _json_body(request))
    language = _language(asked.language)
    seeds = next_seeds(_first_seed(asked.seed), asked.n)
    async with _models(service):
        sentence, takes = await _engine(service.synthesizer.preview, asked.design.strip(), language, seeds)
    return {"sentence": sentence,
            "takes": [{"seed": seed, "duration": round(samples.size / SAMPLE_RATE, 3), "audio": _wav_base64(samples)}
                      for seed, samples in zip(seeds, takes, strict=True)]}


async def create_voice(request: Request) -> JSONResponse:
    """JSON names its kind by a field (design, speaker, reference_audio); a form uploads a recording to clone."""
    service = _service(request)
    try:
        async with _models(service):
            if _media_kind(request) == "json":
                spec = await _create_from_json(service, await _json_body(request))
            else:
                spec = await _create_from_form(service, request)
    except VoiceConflict as err:
        raise ApiError(409, str(err)) from None
    except VoicesFileError as err:
        raise ApiError(400, str(err)) from None
    except VoiceSetupError as err:
        raise ApiError(400, str(err)) from None
    return JSONResponse(voice_object(service, spec), status_code=201)


async def _create_from_json(service: HttpService, body: dict) -> VoiceSpec:
    kind = kind_for_request(body)
    if kind is None:
        choices = " or ".join(f"{kind.request_marker!r} ({kind.marker_meaning})" for kind in creatable())
        raise ApiError(422, f"give exactly one of {choices}")
    _check_models(service, kind)
    if kind.takes_recording:
        samples, rate = _recording_of_base64(str(body.pop(kind.request_marker)), service.limits)
        asked = _parse(kind.creation, body)
        return await service.library.create_with_recording(asked.name, _entry(kind, asked), samples, rate)
    asked = _parse(kind.creation, body)
    return await service.library.create(asked.name, _entry(kind, asked))


async def _create_from_form(service: HttpService, request: Request) -> VoiceSpec:
    kind = next(kind for kind in creatable() if kind.takes_recording)
    fields, files = await _form_body(request)
    upload = files.get("reference")
    if upload is None:
        raise ApiError(400, "reference: upload the recording to clone as the form's 'reference' file")
    asked = _parse(kind.creation, {**fields, "x_vector_only": _flag(fields.get("x_vector_only"), "x_vector_only")})
    samples, rate = await _recording_of_upload(upload, service.limits)
    return await service.library.create_with_recording(asked.name, _entry(kind, asked), samples, rate)


def _entry(kind: VoiceKind, asked: BaseModel) -> dict:
    """The voices-file entry of a creation request, its language checked (a 400 naming the language)."""
    entry = kind.entry_of(asked)
    entry["language"] = _language(entry.get("language"))
    return entry


def _missing_model(service: HttpService, kind: VoiceKind) -> str | None:
    missing = [role for role in sorted(kind.models_needed) if not service.synthesizer.can_use(role)]
    return MODEL_ROLES[missing[0]].missing() if missing else None


def _check_models(service: HttpService, kind: VoiceKind) -> None:
    if problem := _missing_model(service, kind):
        raise ApiError(400, f"a {kind.label} voice needs {problem}")


def _clean(text: str | None) -> str | None:
    return text.strip() if text and text.strip() else None


async def delete_voice(name: str, request: Request) -> Response:
    try:
        await _service(request).library.delete(name)
    except UnknownVoice:
        raise ApiError(404, f"no voice named {shorten(repr(name), LOGGED_CHARS)}") from None
    except VoiceConflict as err:
        raise ApiError(409, str(err)) from None
    return Response(status_code=204)


# -- speech ----------------------------------------------------------------------------------------


@dataclass
class SpeechJob:
    """One speech request, checked: who speaks what, how, in which format; one take per seed."""

    voice: Voice
    sentences: list[str]
    languages: list[str]
    fmt: OutputFormat
    options: SpeechOptions
    seeds: list[int]
    spoken: SpokenRequest  # the request as the speech layer counts it


async def speech(request: Request) -> Response:
    """The request is counted from here to the end of its answer (a streamed one: the stream's end)."""
    service = _service(request)
    spoken = service.speech.begin("http")
    streaming = False
    try:
        asked, recording = await _speech_request(request, service.limits)
        job = await _prepare_speech(service, asked, recording, spoken)
        if len(job.seeds) > 1:
            return JSONResponse(await _until_disconnected(request, _variations(service, job)))
        headers = {"X-Seed": str(job.seeds[0])}
        if asked.stream_format == "sse":
            streaming = True
            return StreamingResponse(_counted(spoken, _sse(service, job)), media_type="text/event-stream",
                                     headers=headers)
        if job.fmt.name == "pcm" or (asked.stream_format == "audio" and job.fmt.streamable):
            streaming = True
            return StreamingResponse(_counted(spoken, _streamed(service, job)), media_type=job.fmt.media_type,
                                     headers=headers)
        audio = await _until_disconnected(request, _whole(service, job, job.seeds[0]))
        return Response(audio, media_type=job.fmt.media_type, headers=headers)
    except ApiError as err:
        spoken.failed(err.outcome)
        raise
    except asyncio.CancelledError:
        spoken.end(cancelled=True)
        raise
    except Exception:
        spoken.failed("internal")
        raise
    finally:
        if not streaming:
            spoken.end()


async def _counted(spoken: SpokenRequest, stream: AsyncIterator) -> AsyncIterator:
    """A streamed answer, whose end ends the request (a client that goes away: cancelled)."""
    cancelled = True
    try:
        async with aclosing(stream) as chunks:
            async for chunk in chunks:
                yield chunk
        cancelled = False
    finally:
        spoken.end(cancelled)


async def _speech_request(request: Request, limits: Limits):
    """The request's fields and its reference recording (samples, rate) if it gives one."""
    if _media_kind(request) == "json":
        body = await _json_body(request)
        asked = _parse(SpeechRequest, body)
        recording = _recording_of_base64(asked.reference_audio, limits) if asked.reference_audio else None
        return asked, recording
    fields, files = await _form_body(request)
    data: dict[str, Any] = dict(fields)
    if "x_vector_only" in data:
        data["x_vector_only"] = _flag(data["x_vector_only"], "x_vector_only")
    asked = _parse(SpeechRequest, data)
    upload = files.get("reference")
    if upload is not None:
        return asked, await _recording_of_upload(upload, limits)
    recording = _recording_of_base64(asked.reference_audio, limits) if asked.reference_audio else None
    return asked, recording


async def _prepare_speech(service: HttpService, asked: SpeechRequest, recording, spoken: SpokenRequest) -> SpeechJob:
    try:
        fmt = output_format(asked.response_format, asked.sample_rate, asked.channels, asked.bitrate)
    except FormatError as err:
        raise ApiError(400, str(err)) from None
    options = _options(asked)
    speech_service = service.speech
    try:
        sentences, _ = speech_service.sentences(asked.input, TextLimit.REFUSE)
        language = _language(asked.language)
        await spoken.ready()  # the request is checked: now it may wait for the models
        voice = await _voice_for(service, asked, recording)
        languages = [speech_service.language(voice, language, sentence, LanguageAsk.EXPLICIT)
                     for sentence in sentences]
    except SpeechError as err:
        raise ApiError.of(err) from None
    return SpeechJob(voice, sentences, languages, fmt, options, next_seeds(_first_seed(asked.seed), asked.n), spoken)


def _options(asked: SpeechRequest) -> SpeechOptions:
    """The request's generation options (its seed is set per take)."""
    try:
        sampling = SamplingOverrides(temperature=asked.temperature, top_k=asked.top_k, top_p=asked.top_p,
                                     repetition_penalty=asked.repetition_penalty)
        return SpeechOptions(max_frames=asked.max_new_tokens, speed=asked.speed, sampling=sampling)
    except OptionError as err:
        raise ApiError(400, str(err)) from None


def _voice_label(voice: str | dict | None) -> str | None:
    if isinstance(voice, dict):  # newer OpenAI clients may send {"id": ...} for custom voices
        voice = voice.get("id") or voice.get("name")
    return voice if isinstance(voice, str) and voice else None


async def _voice_for(service: HttpService, asked: SpeechRequest, recording) -> Voice:
    """The voice a speech request asks for: a voice of this server (restyled by `instructions` when
    its kind takes a style: custom voices), else one made for this request: designed from
    `instructions`, or cloned from a reference recording."""
    synthesizer = service.synthesizer
    label = _voice_label(asked.voice)
    if asked.instructions and asked.instructions.strip():
        if recording is not None:
            raise ApiError(400, "give either instructions (a designed voice) or a reference recording, not both")
        named = synthesizer.voice(label) if label in service.speech.catalog.voices else None
        if named is not None and kind_of(named.spec).takes_style:
            return await _engine(synthesizer.styled_voice, named, asked.instructions.strip())
        return await _engine(synthesizer.designed_voice, label or "designed", asked.instructions.strip())
    if recording is not None:
        samples, rate = recording
        transcript = None if asked.x_vector_only else _clean(asked.reference_text)
        return await _engine(synthesizer.cloned_voice, label or "reference", samples, rate, transcript)
    try:
        voice, _ = service.speech.voice(label, VoiceLookup.STRICT)
    except SpeechError as err:
        raise ApiError(400, f"{err.message}; GET /v1/audio/voices lists them") from None
    return voice


async def _pcm(service: HttpService, job: SpeechJob, seed: int) -> AsyncIterator[bytes]:
    """The engine's PCM, sentence after sentence; closing this cancels the generation. A sentence
    that stalls raises SentenceStalled: a stuck device never holds a request for ever."""
    options = job.options.with_seed(seed)
    for sentence, language in zip(job.sentences, job.languages, strict=True):
        async with aclosing(job.spoken.speak(job.voice, sentence, language, options)) as audio:
            async for pcm in audio:
                yield pcm


async def _whole_pcm(service: HttpService, job: SpeechJob, seed: int) -> bytes:
    parts = []
    try:
        async with aclosing(_pcm(service, job, seed)) as pcm_stream:
            async for pcm in pcm_stream:
                parts.append(pcm)
    except SpeechError as err:
        raise ApiError.of(err) from None
    except ValueError as err:  # e.g. max_new_tokens beyond what the engine allows for this text
        raise ApiError(400, str(err)) from None
    return b"".join(parts)
async def _whole(service: HttpService, job: SpeechJob, seed: int) -> bytes:
    pcm = await _whole_pcm(service, job, seed)
    return await asyncio.to_thread(encode, pcm, job.fmt)


async def _variations(service: HttpService, job: SpeechJob) -> dict:
    """Every seed's take at once: they share the batch."""
    async def take(seed: int) -> dict:
        pcm = await _whole_pcm(service, job, seed)
        audio = await asyncio.to_thread(encode, pcm, job.fmt)
        return {"seed": seed, "duration": round(pcm16_seconds(pcm), 3), "format": job.fmt.name,
                "audio": base64.b64encode(audio).decode("ascii")}

    return {"results": list(await asyncio.gather(*(take(seed) for seed in job.seeds)))}


async def _streamed(service: HttpService, job: SpeechJob) -> AsyncIterator[bytes]:
    """pcm or wav as it is generated; the client going away closes this, which cancels the generation."""
    encoder = StreamEncoder(job.fmt)
    try:
        async with aclosing(_pcm(service, job, job.seeds[0])) as pcm_stream:
            async for pcm in pcm_stream:
                if chunk := encoder.add(pcm):
                    yield chunk
    except Exception as err:  # noqa: BLE001 - the status is sent already: end the stream, say why in the log
        _LOGGER.error("Speech stream ended early: %s", err)
        job.spoken.failed(err.code if isinstance(err, SpeechError) else "synthesis-failed")
    if tail := encoder.finish():
        yield tail


async def _sse(service: HttpService, job: SpeechJob) -> AsyncIterator[str]:
    """OpenAI's speech events: speech.audio.delta with base64 audio as generated, then speech.audio.done."""
    def event(data: dict) -> str:
        return f"data: {json.dumps(data)}\n\n"

    def delta(audio: bytes) -> str:
        return event({"type": "speech.audio.delta", "audio": base64.b64encode(audio).decode("ascii")})

    if job.fmt.streamable:
        async for chunk in _streamed(service, job):
            yield delta(chunk)
    else:
        try:
            yield delta(await _whole(service, job, job.seeds[0]))
        except ApiError as err:
            job.spoken.failed(err.outcome)
            yield event({"type": "error", "error": {"message": err.message, "code": err.status}})
            return
    yield event({"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})


async def _until_disconnected(request: Request, work: Awaitable) -> Any:
    """The work's result; if the client goes away first, the work is cancelled (its generation too)."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            _LOGGER.info("Client went away: speech cancelled")
    if task.cancelled():
        raise ApiError(499, "the client went away")
    return task.result()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass

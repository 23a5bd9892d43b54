"""Custom voices (the built-in speakers of a CustomVoice checkpoint) in the real server, on the tiny
Base and CustomVoice checkpoints without a design model: listed and spoken over Wyoming and HTTP,
created and deleted over HTTP; a speaker the checkpoint lacks stops the start-up. On a 0.6B
CustomVoice (tiny-custom posing as one), which takes no instructions, a voice's stop the start-up
and a request's are a 400."""

import asyncio
from types import SimpleNamespace

import httpx2 as httpx
import pytest

from wyoming_qwen_tts.http_api import HttpService, create_app
from wyoming_qwen_tts.speech import SpeechService
from wyoming_qwen_tts.request_text import LanguageDetector
from wyoming_qwen_tts.voices import VoiceCatalog

from .conftest import make_custom_0b6
from .server_harness import FIXTURES, REFERENCE, ServerProcess, describe, run_cli, running_server, synthesize

TINY_CUSTOM = FIXTURES / "tiny-custom"
VOICES_YAML = f"""\
default: alice
voices:
  alice:
    reference: {REFERENCE}
  serena:
    description: Serena, cheerful
    speaker: serena
    instructions: cheerful
    language: en
  ryan:
    speaker: Ryan
"""
SPEAKERS = "aiden, dylan, eric, ryan, serena"


def server_args(tmp, voices: str = VOICES_YAML, custom_model=TINY_CUSTOM) -> list[str]:
    (tmp / "voices.yaml").write_text(voices)
    return ["--model", str(FIXTURES / "tiny-base"), "--design-model", "none", "--custom-model", str(custom_model),
            "--device", "cpu", "--dtype", "float32", "--voices", str(tmp / "voices.yaml"), "--data-dir",
            str(tmp / "data")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("custom")
    process = ServerProcess(server_args(tmp), tmp / "server.log", http=True)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_url, timeout=180.0) as client:
        yield client


def described(server) -> dict:
    (program,) = asyncio.run(describe(server.port)).tts
    return {voice.name: voice for voice in program.voices}


def test_describe_lists_custom_voices_with_their_languages(server):
    voices = described(server)
    assert list(voices) == ["alice", "serena", "ryan"]
    assert voices["serena"].languages == ["en"] and voices["serena"].description == "Serena, cheerful"
    assert len(voices["ryan"].languages) == 10
    assert "(--custom-model)" in server.log and "(--design-model)" not in server.log


@pytest.mark.parametrize("voice", ["serena", "ryan"])
def test_a_custom_voice_speaks_through_wyoming(server, voice):
    answer = asyncio.run(synthesize(server.port, "Hi there.", voice=voice))
    assert answer.types[0] == "audio-start" and "audio-chunk" in answer.types
    assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm
    assert f"Speaking with {voice} " in server.log


def test_voices_list_custom_voices_and_which_kinds_can_be_created(http):
    answer = http.get("/v1/audio/voices").json()
    serena = next(voice for voice in answer["voices"] if voice["name"] == "serena")
    assert serena == {"name": "serena", "description": "Serena, cheerful", "kind": "custom", "languages": ["en"],
                      "seed": None, "managed": False, "speaker": "serena", "instructions": "cheerful"}
    kinds = answer["kinds"]
    assert list(kinds) == ["clone", "frozen", "live", "custom"]
    assert kinds["custom"] == {"label": "built-in speaker", "creatable": True}
    assert kinds["clone"]["creatable"] and not kinds["frozen"]["creatable"] and not kinds["live"]["creatable"]


def test_a_custom_voice_speaks_through_http(http):
    response = http.post("/v1/audio/speech", json={"input": "Hello there.", "voice": "ryan", "response_format": "pcm",
                                                   "seed": 3})
    assert response.status_code == 200, response.text
    assert len(response.content) > 0 and len(response.content) % 2 == 0


def test_instructions_restyle_a_custom_voice_for_one_request(http):
    def pcm(**body) -> bytes:
        response = http.post("/v1/audio/speech", json={"input": "Hello there.", "voice": "serena", "seed": 3,
                                                       "response_format": "pcm", "max_new_tokens": 6, **body})
        assert response.status_code == 200, response.text
        return response.content

    own_style = pcm()
    assert pcm(instructions="cheerful") == own_style  # serena's own instructions, given by the request
    assert pcm(instructions="sad and very slow") != own_style
    assert pcm() == own_style  # the voice itself is unchanged


def test_a_custom_voice_is_created_spoken_and_deleted_over_http(server, http):
    created = http.post("/v1/audio/voices", json={"name": "aiden", "speaker": "Aiden", "instructions": " slowly ",
                                                  "language": "de"})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "aiden", "description": "aiden", "kind": "custom", "languages": ["de"],
                              "seed": None, "managed": True, "speaker": "Aiden", "instructions": "slowly"}
    assert "aiden" in described(server)
    answer = asyncio.run(synthesize(server.port, "Hallo.", voice="aiden"))
    assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm
    assert http.delete("/v1/audio/voices/aiden").status_code == 204
    assert "aiden" not in described(server)


def test_custom_voice_creation_errors(http):
    unknown = http.post("/v1/audio/voices", json={"name": "vivian", "speaker": "vivian"})
    assert unknown.status_code == 400 and "'vivian' is not a speaker of" in unknown.text and SPEAKERS in unknown.text
    designed = http.post("/v1/audio/voices", json={"name": "narrator", "design": "A calm voice."})
    assert designed.status_code == 400
    assert "needs the VoiceDesign model, but --design-model is none" in designed.json()["error"]["message"]
    assert http.post("/v1/audio/voices", json={"name": "x", "speaker": ""}).status_code == 422
    both = http.post("/v1/audio/voices", json={"name": "x", "speaker": "ryan", "design": "A voice."})
    assert both.status_code == 422 and "give exactly one of" in both.text
    names = [voice["name"] for voice in http.get("/v1/audio/voices").json()["voices"]]
    assert names == ["alice", "serena", "ryan"]


def test_a_speaker_the_checkpoint_lacks_stops_the_start_up(tmp_path):
    result = run_cli(*server_args(tmp_path, "voices:\n  vivian:\n    speaker: vivian\n"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "voice 'vivian': field 'speaker': 'vivian' is not a speaker of" in result.stderr
    assert SPEAKERS in result.stderr


def test_without_custom_model_creating_a_custom_voice_is_a_clear_400():
    synthesizer = SimpleNamespace(voices={}, can_use=lambda role: role == "base")
    catalog = VoiceCatalog({}, default="none")
    library = SimpleNamespace(catalog=catalog, is_managed=lambda name: False)
    app = create_app(HttpService(SpeechService(catalog, synthesizer, LanguageDetector()), library, synthesizer))

    async def create() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post("/v1/audio/voices", json={"name": "ryan", "speaker": "ryan"})

    response = asyncio.run(create())
    assert response.status_code == 400
    assert response.json()["error"]["message"] == ("a built-in speaker voice needs the CustomVoice model, but "
                                                    "--custom-model is not given")


# -- the 0.6B CustomVoice takes no instructions -----------------------------------------------------------


def test_instructions_for_a_0b6_custom_voice_stop_the_start_up(tmp_path):
    voices = "voices:\n  vivian:\n    speaker: serena\n    instructions: cheerful\n"
    result = run_cli(*server_args(tmp_path, voices, make_custom_0b6(tmp_path / "tiny-custom-0b6")))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "voice 'vivian': field 'instructions': " in result.stderr
    assert "is a 0.6B CustomVoice model, which takes no instructions" in result.stderr


@pytest.fixture(scope="module")
def http_0b6(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("custom-0b6")
    args = server_args(tmp, "voices:\n  serena:\n    speaker: serena\n", make_custom_0b6(tmp / "tiny-custom-0b6"))
    process = ServerProcess(args, tmp / "server.log", http=True)
    try:
        process.wait_ready()
        with httpx.Client(base_url=process.http_url, timeout=180.0) as client:
            yield client
    finally:
        process.stop()


def test_a_0b6_custom_voice_refuses_instructions_over_http_and_keeps_serving(http_0b6):
    def speech(**body) -> httpx.Response:
        return http_0b6.post("/v1/audio/speech", json={"input": "Hello there.", "voice": "serena", "seed": 3,
                                                       "response_format": "pcm", "max_new_tokens": 6, **body})

    refused = speech(instructions="sad and very slow")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"] == ("voice 'serena' is a built-in speaker of a 0.6B CustomVoice model, "
                                                  "which takes no instructions: ask without them")
    plain = speech()
    assert plain.status_code == 200 and plain.content
    blank = speech(instructions="   ")  # none
    assert blank.status_code == 200 and blank.content == plain.content
    created = http_0b6.post("/v1/audio/voices", json={"name": "aiden", "speaker": "aiden", "instructions": "slowly"})
    assert created.status_code == 400, created.text
    message = created.json()["error"]["message"]
    assert "voice 'aiden': field 'instructions': " in message and "takes no instructions" in message
    assert [voice["name"] for voice in http_0b6.get("/v1/audio/voices").json()["voices"]] == ["serena"]


# -- a voice created over HTTP that the model configured now cannot prepare ------------------------------


def test_a_managed_voice_that_can_no_longer_be_prepared_is_skipped_and_kept(tmp_path):
    voices = "voices:\n  serena:\n    speaker: serena\n"
    with running_server(server_args(tmp_path, voices), tmp_path / "first.log", http=True) as first:
        created = httpx.post(f"{first.http_url}/v1/audio/voices", timeout=180.0,
                             json={"name": "cheery", "speaker": "aiden", "instructions": "cheerful"})
        assert created.status_code == 201, created.text
    managed = tmp_path / "data" / "voices" / "managed" / "voices.yaml"
    kept = managed.read_text()
    assert "cheery" in kept
    # The same data dir on a 0.6B CustomVoice, which takes no instructions: the server starts and serves.
    args = server_args(tmp_path, voices, make_custom_0b6(tmp_path / "tiny-custom-0b6"))
    with running_server(args, tmp_path / "second.log", http=True) as second:
        assert ("Voice cheery (created over HTTP) is skipped: it cannot be prepared: voice 'cheery': field "
                "'instructions': ") in second.log
        assert list(described(second)) == ["serena"]
        with httpx.Client(base_url=second.http_url, timeout=180.0) as client:
            assert [voice["name"] for voice in client.get("/v1/audio/voices").json()["voices"]] == ["serena"]

            def speech(voice: str) -> httpx.Response:
                return client.post("/v1/audio/speech", json={"input": "Hello there.", "voice": voice, "seed": 3,
                                                             "response_format": "pcm", "max_new_tokens": 6})

            skipped, unknown = speech("cheery"), speech("nobody")
            assert skipped.status_code == unknown.status_code == 400, skipped.text
            assert skipped.json() == {**unknown.json(), "error": {
                **unknown.json()["error"], "message": unknown.json()["error"]["message"].replace("nobody", "cheery")}}
            assert speech("serena").status_code == 200
        # Wyoming: as for any unknown name, the default voice answers, closed by audio-stop.
        for name in ("cheery", "nobody"):
            answer = asyncio.run(synthesize(second.port, "Hi there.", voice=name))
            assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm
        assert managed.read_text() == kept
        # Not offered, yet its owner can still delete it; a name never stored stays unknown.
        assert httpx.delete(f"{second.http_url}/v1/audio/voices/nobody", timeout=30.0).status_code == 404
        assert httpx.delete(f"{second.http_url}/v1/audio/voices/cheery", timeout=30.0).status_code == 204
        assert "cheery" not in managed.read_text()
        assert httpx.delete(f"{second.http_url}/v1/audio/voices/cheery", timeout=30.0).status_code == 404

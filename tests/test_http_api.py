"""The HTTP API of the real server (tiny checkpoints, --http), driven by the official `openai` client
for speech and by plain HTTP (httpx2, the client the openai package is built on) for the extensions,
the voices and the errors.

The Base checkpoint never chooses end-of-speech (server_harness.long_speaking_checkpoint): every
request runs to its length budget, so durations are known whatever the seed, and a long generation
is guaranteed where streaming and cancellation are checked."""

import asyncio
import base64
import io
import json
import re
import shutil
import socket
import subprocess
import sys

import httpx2 as httpx
import numpy as np
import pytest
import soundfile as sf
from openai import OpenAI

from .server_harness import (FIXTURES, REPO, ServerProcess, describe, free_port, long_speaking_checkpoint, run_cli,
                             synthesize)

FRAME = 1920  # samples of one 80 ms frame at 24 kHz
VOICES_YAML = """\
default: alice
voices:
  alice:
    description: Alice (cloned with transcript)
    reference: ref.wav
    transcript: The quick brown fox.
  clara:
    description: Clara (the README's examples speak with her)
    reference: ref.wav
"""
TEXT = "Hello there."
TIMEOUT = 180.0


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    folder = tmp_path_factory.mktemp("http")
    (folder / "ref.wav").write_bytes((FIXTURES / "ref_16k_stereo.wav").read_bytes())
    (folder / "voices.yaml").write_text(VOICES_YAML)
    long_speaking_checkpoint(FIXTURES / "tiny-base", folder / "tiny-base-long")
    return folder


def server_args(tmp, data_dir: str = "data") -> list[str]:
    # float32: a seed's take is then the same whatever else shares the batch (tested below); in
    # bfloat16, the default on CPUs with native bf16, a near tie may go the other way (README).
    return ["--model", str(tmp / "tiny-base-long"), "--design-model", str(FIXTURES / "tiny-design"),
            "--device", "cpu", "--dtype", "float32", "--voices", str(tmp / "voices.yaml"),
            "--data-dir", str(tmp / data_dir)]


@pytest.fixture(scope="module")
def server(tmp):
    process = ServerProcess(server_args(tmp), tmp / "server.log", http=True)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def openai_client(server):
    return OpenAI(base_url=server.http_url + "/v1", api_key="not-needed", timeout=TIMEOUT, max_retries=0)


def speech(http, **body) -> httpx.Response:
    return http.post("/v1/audio/speech", json={"model": "qwen3-tts", "input": TEXT, "voice": "alice", **body})


def decoded(audio: bytes) -> tuple[np.ndarray, int]:
    samples, rate = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
    return samples, rate


def pcm_samples(audio: bytes) -> int:
    return len(audio) // 2


def assert_same_audio(first: bytes, second: bytes) -> None:
    """Equal but for float rounding: the codec decodes batches of different sizes in different kernel
    orders, which may move a sample by a few 16-bit steps; another seed moves them by thousands."""
    first_samples, second_samples = (np.frombuffer(audio, dtype="<i2").astype(np.int32) for audio in (first, second))
    assert first_samples.shape == second_samples.shape
    assert np.abs(first_samples - second_samples).max() <= 16


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == status and error["type"] and error["message"]
    assert "Traceback" not in response.text
    for word in words:
        assert word in error["message"]


@pytest.fixture(scope="module")
def reference_pcm(http) -> bytes:
    """The text with seed 7 as raw PCM: what every other format must decode back to."""
    response = speech(http, response_format="pcm", seed=7)
    assert response.status_code == 200 and response.headers["x-seed"] == "7"
    assert response.content and pcm_samples(response.content) % FRAME == 0  # whole frames at speed 1
    return response.content


# -- speech, OpenAI's way ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp3", "opus", "flac", "wav"])
def test_openai_client_gets_every_format_back_decodable_at_the_right_rate_and_length(openai_client, reference_pcm,
                                                                                       fmt):
    audio = openai_client.audio.speech.create(model="qwen3-tts", voice="alice", input=TEXT, response_format=fmt,
                                              extra_body={"seed": 7}).content
    samples, rate = decoded(audio)
    assert rate == 24000 and samples.shape[1] == 1
    # mp3 frames pad the end by up to a frame of its own (1152 samples)
    assert abs(samples.shape[0] - pcm_samples(reference_pcm)) <= (1152 if fmt == "mp3" else 0)
    if fmt in ("wav", "flac"):  # lossless: the very samples of the pcm answer
        expected = np.frombuffer(reference_pcm, dtype="<i2")
        assert np.array_equal(np.round(samples[:, 0] * 32768).astype(np.int16), expected)


def test_openai_client_default_format_is_mp3_and_pcm_is_raw_24khz(openai_client, reference_pcm):
    mp3 = openai_client.audio.speech.create(model="qwen3-tts", voice="alice", input=TEXT, extra_body={"seed": 7})
    assert mp3.response.headers["content-type"] == "audio/mpeg"
    pcm = openai_client.audio.speech.create(model="qwen3-tts", voice="alice", input=TEXT, response_format="pcm",
                                            extra_body={"seed": 7}).content
    assert pcm == reference_pcm


def test_aac_is_a_clear_400(http):
    assert_error(speech(http, response_format="aac"), 400, "aac", "mp3")


@pytest.mark.parametrize(("fmt", "rate", "channels"), [("wav", 16000, 2), ("flac", 48000, 2), ("mp3", 44100, 2),
                                                       ("opus", 48000, 1), ("pcm", 8000, 2)])
def test_sample_rate_and_channels(http, reference_pcm, fmt, rate, channels):
    response = speech(http, response_format=fmt, seed=7, sample_rate=rate, channels=channels)
    assert response.status_code == 200, response.text
    expected_frames = pcm_samples(reference_pcm) * rate / 24000
    if fmt == "pcm":
        frames = len(response.content) / (2 * channels)
    else:
        samples, got_rate = decoded(response.content)
        assert (got_rate, samples.shape[1]) == (rate, channels)
        frames = samples.shape[0]
    assert frames == pytest.approx(expected_frames, abs=1152 if fmt == "mp3" else 2)


@pytest.mark.parametrize("fmt", ["mp3", "opus"])
def test_bitrate_sets_the_size_of_compressed_audio(http, fmt):
    sizes = {kbps: len(speech(http, response_format=fmt, seed=7, bitrate=kbps).content) for kbps in (32, 128)}
    seconds = decoded(speech(http, response_format="wav", seed=7).content)[0].shape[0] / 24000
    for kbps, size in sizes.items():
        assert size * 8 / seconds / 1000 == pytest.approx(kbps, rel=0.35)


@pytest.mark.parametrize("fmt", ["wav", "opus"])
def test_streamed_audio_from_the_openai_client_decodes(openai_client, reference_pcm, fmt):
    with openai_client.audio.speech.with_streaming_response.create(
            model="qwen3-tts", voice="alice", input=TEXT, response_format=fmt, stream_format="audio",
            extra_body={"seed": 7, "sample_rate": 48000, "channels": 2}) as response:
        assert response.headers.get("content-length") is None  # sent as generated, not as a whole
        audio = b"".join(response.iter_bytes())
    samples, rate = decoded(audio)
    assert (rate, samples.shape[1], samples.shape[0]) == (48000, 2, 2 * pcm_samples(reference_pcm))


def test_streamed_audio_leaves_before_the_generation_ends_and_a_client_leaving_cancels_it(server, http):
    frames = 1000  # 80 s of audio: the tiny model takes seconds to make it
    since = len(server.log)
    with http.stream("POST", "/v1/audio/speech", json={"input": "Streaming now.", "voice": "alice",
                                                        "response_format": "pcm", "max_new_tokens": frames}) as response:
        assert response.status_code == 200
        first = next(response.iter_bytes())
        assert first and "Spoke " not in server.log[since:]  # the sentence is still being generated
    log = server.wait_for_log("Cancelled alice after", since=since)
    cancelled_at = float(log.split("Cancelled alice after ")[1].split(" s")[0])
    assert cancelled_at < frames * 0.08 / 2


def test_a_client_leaving_before_a_whole_answer_cancels_its_generation(server):
    since = len(server.log)
    with httpx.Client(base_url=server.http_url, timeout=1.0) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v1/audio/speech", json={"input": "Never mind.", "voice": "alice", "response_format": "flac",
                                                 "max_new_tokens": 1000})
    log = server.wait_for_log("Cancelled alice after", since=since)
    assert "Client went away: speech cancelled" in log


def test_sse_streams_openai_speech_events(http, reference_pcm):
    with http.stream("POST", "/v1/audio/speech", json={"input": TEXT, "voice": "alice", "response_format": "pcm",
                                                        "stream_format": "sse", "seed": 7}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line.removeprefix("data: ")) for line in response.iter_lines() if line]
    deltas = [event for event in events if event["type"] == "speech.audio.delta"]
    assert events[-1]["type"] == "speech.audio.done" and len(deltas) >= 2
    assert b"".join(base64.b64decode(event["audio"]) for event in deltas) == reference_pcm


# -- extensions ----------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_audio_whatever_else_is_generated(http):
    alone = speech(http, response_format="pcm", seed=1234).content

    async def together():
        async with httpx.AsyncClient(base_url=str(http.base_url), timeout=TIMEOUT) as client:
            bodies = [{"input": TEXT, "voice": "alice", "response_format": "pcm", "seed": 1234},
                      {"input": "Something else entirely, said at length.", "response_format": "pcm", "seed": 5},
                      {"input": TEXT, "response_format": "pcm", "seed": 99}]
            return await asyncio.gather(*(client.post("/v1/audio/speech", json=body) for body in bodies))

    same, other_text, other_seed = asyncio.run(together())
    assert_same_audio(same.content, alone)
    with pytest.raises(AssertionError):  # the seed matters
        assert_same_audio(other_seed.content, alone)


def test_n_variations_each_with_its_seed_reproducible_alone(http):
    response = speech(http, response_format="pcm", seed=40, n=3)
    results = response.json()["results"]
    assert [result["seed"] for result in results] == [40, 41, 42]
    audios = [base64.b64decode(result["audio"]) for result in results]
    assert len(set(audios)) == 3
    for result, audio in zip(results, audios):
        assert result["format"] == "pcm" and result["duration"] == pytest.approx(pcm_samples(audio) / 24000, abs=1e-3)
    assert_same_audio(speech(http, response_format="pcm", seed=41).content, audios[1])


def test_max_new_tokens_caps_the_frames(http):
    audio = speech(http, response_format="pcm", max_new_tokens=10).content
    assert pcm_samples(audio) == 10 * FRAME


def test_speed_two_halves_the_duration(http, reference_pcm):
    audio = speech(http, response_format="pcm", seed=7, speed=2.0).content
    assert pcm_samples(audio) == pytest.approx(pcm_samples(reference_pcm) / 2, rel=0.05)


def test_instructions_speak_in_a_designed_voice(server, http):
    since = len(server.log)
    response = speech(http, voice="narrator", instructions="A deep, calm male voice.", response_format="pcm",
                      language="en", max_new_tokens=12)
    assert response.status_code == 200 and pcm_samples(response.content) > 0
    assert "Spoke " in server.wait_for_log("with narrator (english)", since=since)


@pytest.mark.parametrize("encoding", ["base64", "data-uri", "multipart"])
def test_a_reference_recording_clones_a_voice_for_the_request(server, http, encoding):
    recording = (FIXTURES / "ref_16k_stereo.wav").read_bytes()
    since = len(server.log)
    fields = {"input": TEXT, "voice": "guest", "response_format": "wav", "reference_text": "The quick brown fox."}
    if encoding == "multipart":
        response = http.post("/v1/audio/speech", data=fields, files={"reference": ("anything.txt", recording)})
    else:
        prefix = "data:audio/wav;base64," if encoding == "data-uri" else ""
        response = http.post("/v1/audio/speech",
                             json={**fields, "reference_audio": prefix + base64.b64encode(recording).decode()})
    assert response.status_code == 200, response.text
    assert decoded(response.content)[0].shape[0] > 0
    assert "Spoke " in server.wait_for_log("with guest (", since=since)


def test_x_vector_only_needs_no_transcript(http):
    recording = base64.b64encode((FIXTURES / "ref_16k_stereo.wav").read_bytes()).decode()
    response = speech(http, response_format="pcm", reference_audio=recording, x_vector_only=True, max_new_tokens=5)
    assert response.status_code == 200 and pcm_samples(response.content) == 5 * FRAME


def test_sampling_options_are_checked_and_a_seed_still_fixes_the_take(http):
    assert_error(speech(http, temperature=0), 400, "temperature")
    assert_error(speech(http, top_p=1.5), 400, "top_p")
    assert_error(speech(http, repetition_penalty=0.5), 400, "repetition_penalty")
    asked = dict(response_format="pcm", seed=7, temperature=0.3, top_k=5, top_p=0.8, max_new_tokens=6)
    first, again = speech(http, **asked), speech(http, **asked)
    assert first.status_code == 200 and pcm_samples(first.content) == 6 * FRAME
    assert_same_audio(first.content, again.content)


# -- errors --------------------------------------------------------------------------------------------


def test_bad_requests_get_json_errors(http):
    assert_error(speech(http, input=""), 400, "input is empty")
    assert_error(speech(http, input="   "), 400, "input is empty")
    assert_error(speech(http, voice="alloy"), 400, "alloy", "alice")
    assert_error(speech(http, speed=9), 422, "speed")
    assert_error(speech(http, n=5), 422, "n")
    assert_error(speech(http, response_format="ogg"), 422, "response_format")
    assert_error(speech(http, sample_rate=1000), 400, "sample_rate")
    assert_error(speech(http, response_format="opus", sample_rate=44100), 400, "opus")
    assert_error(speech(http, language="klingon"), 400, "language")
    assert_error(speech(http, input="x" * 5001), 400, "5000")
    assert_error(speech(http, reference_audio="not base64!"), 400, "base64")
    assert_error(http.post("/v1/audio/speech", content=b"hello", headers={"content-type": "text/plain"}), 415)
    assert_error(http.post("/v1/audio/speech", content=b"{", headers={"content-type": "application/json"}), 400)
    assert_error(http.get("/v1/nothing-here"), 404)
    assert_error(http.delete("/v1/audio/voices/nobody"), 404, "nobody")


def test_uploads_are_capped_and_decoded_by_content(http):
    not_audio = http.post("/v1/audio/speech", data={"input": TEXT}, files={"reference": ("voice.wav", b"RIFF" * 100)})
    assert_error(not_audio, 415, "not audio")
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(61 * 8000, dtype=np.float32), 8000, format="WAV", subtype="PCM_16")
    too_long = http.post("/v1/audio/speech", data={"input": TEXT}, files={"reference": ("a.wav", buffer.getvalue())})
    assert_error(too_long, 413, "60")
    too_big = http.post("/v1/audio/speech", data={"input": TEXT},
                        files={"reference": ("a.wav", b"\0" * (20 * 1024 * 1024 + 1))})
    assert_error(too_big, 413)


# -- voices --------------------------------------------------------------------------------------------


def voices_of(http) -> dict:
    answer = http.get("/v1/audio/voices").json()
    return {voice["name"]: voice for voice in answer["voices"]}


def described_voices(server) -> list[str]:
    (program,) = asyncio.run(describe(server.port)).tts
    return [voice.name for voice in program.voices]


def test_voices_are_listed_with_kind_languages_and_whether_they_are_managed(http):
    answer = http.get("/v1/audio/voices").json()
    assert answer["default"] == "alice"
    alice = voices_of(http)["alice"]
    assert alice == {"name": "alice", "description": "Alice (cloned with transcript)", "kind": "clone",
                     "languages": alice["languages"], "seed": None, "managed": False}
    assert "en" in alice["languages"] and len(alice["languages"]) == 10


def test_a_cloned_voice_is_created_spoken_described_and_deleted(server, http, tmp):
    recording = (FIXTURES / "ref_16k_stereo.wav").read_bytes()
    created = http.post("/v1/audio/voices", data={"name": "bob", "description": "Bob <script>", "language": "de",
                                                   "reference_text": "The quick brown fox."},
                        files={"reference": ("../../etc/passwd", recording)})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "bob", "description": "Bob <script>", "kind": "clone", "languages": ["de"],
                              "seed": None, "managed": True}
    assert "bob" in described_voices(server)
    since = len(server.log)
    assert asyncio.run(synthesize(server.port, "Hallo.", voice="bob")).pcm  # Home Assistant can use it at once
    assert "Speaking with bob (german)" in server.log[since:]
    stored = list((tmp / "data" / "voices" / "managed" / "references").iterdir())
    assert len(stored) == 1 and stored[0].suffix == ".wav" and "passwd" not in stored[0].name
    assert speech(http, voice="bob", response_format="pcm", max_new_tokens=3).status_code == 200

    again = http.post("/v1/audio/voices", data={"name": "bob"}, files={"reference": ("x.wav", recording)})
    assert_error(again, 409, "bob")
    assert http.delete("/v1/audio/voices/bob").status_code == 204
    assert "bob" not in voices_of(http) and "bob" not in described_voices(server)
    assert not list((tmp / "data" / "voices" / "managed" / "references").iterdir())
    assert_error(speech(http, voice="bob"), 400, "bob")


def test_a_designed_take_previewed_then_kept_is_the_voice_heard(server, http, tmp):
    preview = http.post("/v1/audio/voices/preview", json={"design": "A bright, cheerful voice.", "language": "en",
                                                          "n": 2, "seed": 500})
    assert preview.status_code == 200, preview.text
    answer = preview.json()
    assert answer["sentence"].startswith("Hello, it's nice to meet you.")
    assert [take["seed"] for take in answer["takes"]] == [500, 501]
    kept = answer["takes"][1]
    take_samples, rate = decoded(base64.b64decode(kept["audio"]))
    assert rate == 24000 and kept["duration"] == pytest.approx(take_samples.shape[0] / 24000, abs=1e-3)

    renders_before = set((tmp / "data" / "voices" / "designed").glob("*.wav"))
    created = http.post("/v1/audio/voices", json={"name": "sunny", "description": "Sunny", "language": "en",
                                                  "design": "A bright, cheerful voice.", "seed": kept["seed"]})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "sunny", "description": "Sunny", "kind": "frozen", "languages": ["en"],
                              "seed": 501, "managed": True}
    renders = list(set((tmp / "data" / "voices" / "designed").glob("*.wav")) - renders_before)
    assert len(renders) == 1  # the voice was cloned from the take, not from another rendering
    assert np.array_equal(sf.read(renders[0], dtype="int16")[0],
                          sf.read(io.BytesIO(base64.b64decode(kept["audio"])), dtype="int16")[0])
    assert "sunny" in described_voices(server)
    assert speech(http, voice="sunny", response_format="pcm", max_new_tokens=3).status_code == 200
    assert http.delete("/v1/audio/voices/sunny").status_code == 204


def test_voice_creation_errors(http):
    assert_error(http.post("/v1/audio/voices", json={"name": "../evil", "design": "A voice."}), 400, "voice name")
    assert_error(http.post("/v1/audio/voices", json={"name": "alice", "design": "A voice."}), 409, "alice")
    assert_error(http.post("/v1/audio/voices", json={"name": "x", "design": ""}), 422, "design")
    assert_error(http.post("/v1/audio/voices", json={"name": "x", "design": "A voice.", "language": "xx"}), 400)
    assert_error(http.post("/v1/audio/voices", data={"name": "x"}), 400, "reference")
    assert_error(http.post("/v1/audio/voices", data={"name": "x"}, files={"reference": ("a.wav", b"nope")}), 415)
    assert_error(http.post("/v1/audio/voices", content=b"x", headers={"content-type": "text/plain"}), 415)
    assert_error(http.delete("/v1/audio/voices/alice"), 409, "read-only")
    assert_error(http.post("/v1/audio/voices/preview", json={"design": "A voice.", "n": 9}), 422, "n")
    assert "x" not in voices_of(http)


# -- the README's examples ------------------------------------------------------------------------------


def readme_examples(language: str) -> list[str]:
    """The code blocks of the README's HTTP API section in a language (sh or python)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## HTTP API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_readme_examples_run_as_written(server, http, tmp_path):
    shutil.copy(FIXTURES / "ref_16k_stereo.wav", tmp_path / "grandpa.wav")
    blocks = {"sh": readme_examples("sh"), "python": readme_examples("python")}
    assert len(blocks["sh"]) == 1 and len(blocks["python"]) == 1
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the README's examples")
    outputs = []
    for language, (code,) in blocks.items():
        code = code.replace("http://localhost:10201", server.http_url)
        outputs += re.findall(r"-o (\S+\.(?:mp3|wav|flac|ogg))|_to_file\(\"([^\"]+)\"\)", code)
        command = ["bash", "-euo", "pipefail", "-c", code] if language == "sh" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert '"error"' not in result.stdout, result.stdout
    files = [name for pair in outputs for name in pair if name]
    assert len(files) == 6
    for name in files:
        samples, rate = decoded((tmp_path / name).read_bytes())
        assert samples.shape[0] > 0, name
    assert decoded((tmp_path / "morning.wav").read_bytes())[1] == 16000
    takes = json.loads((tmp_path / "takes.json").read_text())["takes"]
    assert [take["seed"] for take in takes] == [1234, 1235]
    voices = voices_of(http)
    assert "grandpa" not in voices and voices["night"]["seed"] == 1235
    assert http.delete("/v1/audio/voices/night").status_code == 204


# -- a token, and voices across a restart ---------------------------------------------------------------


def test_with_a_token_every_call_needs_it_and_voices_survive_a_restart(tmp):
    token = "s3cret-token"
    args = [*server_args(tmp, "data-restart"), "--http-token", token]
    first = ServerProcess(args, tmp / "first.log", http=True)
    try:
        first.wait_ready()
        with httpx.Client(base_url=first.http_url, timeout=TIMEOUT) as client:
            assert_error(client.get("/v1/audio/voices"), 401, "Bearer")
            wrong = {"Authorization": "Bearer wrong"}
            assert_error(client.post("/v1/audio/speech", json={"input": TEXT}, headers=wrong), 401)
            assert_error(client.delete("/v1/audio/voices/alice", headers=wrong), 401)
            auth = {"Authorization": f"Bearer {token}"}
            recording = (FIXTURES / "ref_16k_stereo.wav").read_bytes()
            created = client.post("/v1/audio/voices", data={"name": "kept", "x_vector_only": "true"},
                                  files={"reference": ("r.wav", recording)}, headers=auth)
            assert created.status_code == 201, created.text
        openai_client = OpenAI(base_url=first.http_url + "/v1", api_key=token, max_retries=0)
        assert openai_client.audio.speech.create(model="m", voice="kept", input=TEXT, response_format="wav").content
    finally:
        first.stop()

    second = ServerProcess(args, tmp / "second.log", http=True)
    try:
        second.wait_ready()
        assert "kept" in described_voices(second)
        with httpx.Client(base_url=second.http_url, timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            voices = {voice["name"]: voice for voice in client.get("/v1/audio/voices").json()["voices"]}
            assert voices["kept"]["managed"] is True and voices["alice"]["managed"] is False
            assert client.delete("/v1/audio/voices/kept").status_code == 204
        assert "kept" not in described_voices(second)
    finally:
        second.stop()


def test_an_http_port_in_use_is_a_startup_error(tmp):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--model", str(FIXTURES / "tiny-base"), "--design-model", "none", "--device", "cpu",
                         "--voices", str(tmp / "voices.yaml"), "--data-dir", str(tmp / "data-port"),
                         "--uri", f"tcp://127.0.0.1:{free_port()}", "--http", f"127.0.0.1:{port}")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--http 127.0.0.1:{port}: cannot listen there" in result.stderr

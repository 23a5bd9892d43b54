"""Living on a home server, on the real server (tiny checkpoints): it answers while its models load
(describe at once, a request once they are loaded, an error and its closing events / a 503 with
Retry-After past the stall timeout), --unload-after frees the models' memory and the next request
loads them again, /health reports each state and /metrics counts the requests of both transports."""

import asyncio
import re
import shutil
import signal
import time
from pathlib import Path

import httpx2 as httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from safetensors.torch import load_file, save_file
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from .server_harness import (FIXTURES, TINY_MODELS, ServerProcess, cloned_voice_file, describe, read_until,
                             server_env, stream, synthesize)

TOKEN = "a-test-token"
EXTRA_TEXT_ROWS = 2_000_000  # x 40 bfloat16 values: 160 MB of weights, well above the RSS's noise
TIMEOUT = 120.0


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024


def heavy_checkpoint(target: Path) -> tuple[Path, int]:
    """tiny-base with a text embedding of EXTRA_TEXT_ROWS more rows (token ids that are never used):
    (the checkpoint, the bytes its weights grew by)."""
    import json

    shutil.copytree(FIXTURES / "tiny-base", target)
    config = json.loads((target / "config.json").read_text())
    config["talker_config"]["text_vocab_size"] += EXTRA_TEXT_ROWS
    (target / "config.json").write_text(json.dumps(config))
    weights = load_file(target / "model.safetensors")
    key = "talker.model.text_embedding.weight"
    extra = torch.randn(EXTRA_TEXT_ROWS, weights[key].shape[1]).to(weights[key].dtype)
    weights[key] = torch.cat([weights[key], extra])
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target, extra.numel() * extra.element_size()


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of the exposition by (name, sorted labels); parsing it is part of the test."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def requests_counted(values: dict, transport: str, outcome: str) -> float:
    return values.get(("qwen_tts_requests_total", (("outcome", outcome), ("transport", transport))), 0.0)


def health(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.http_url}/health", timeout=TIMEOUT)  # no token: /health is open


def wait_for_state(server: ServerProcess, state: str, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = health(server).json()
        if body["state"] == state:
            return body
        time.sleep(0.1)
    raise TimeoutError(f"/health never said {state}:\n{server.log}")


def slow_server(tmp_path: Path, load_seconds: float, *extra: str) -> ServerProcess:
    args = [*TINY_MODELS, "--voices", str(cloned_voice_file(tmp_path)), "--data-dir", str(tmp_path / "data"), *extra]
    return ServerProcess(args, tmp_path / "server.log", module="tests.slow_loading_server", http=True,
                         env=server_env(SLOW_LOAD_SECONDS=str(load_seconds)))


def wait_listening(server: ServerProcess, timeout: float = 60.0) -> None:
    """Until the HTTP port answers (the models still loading)."""
    server.wait_for_log("HTTP API on", timeout=timeout)


async def synthesize_all(port: int, text: str) -> list[str]:
    """Event types of a synthesize's answer, audio chunks aside."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text).event())
        answer = await read_until(client, "audio-stop")
    return answer.closing_types()


def test_describe_answers_while_loading_and_a_request_then_waits_for_the_models(tmp_path):
    server = slow_server(tmp_path, 8.0)  # the stall timeout (30 s) outlasts the load
    try:
        wait_listening(server)
        started = time.monotonic()
        info = asyncio.run(describe(server.port, timeout=10))
        assert time.monotonic() - started < 5
        (voice,) = info.tts[0].voices
        assert voice.name == "alice" and len(voice.languages) == 10  # an auto voice: the ten languages
        assert health(server).json()["state"] == "loading" and "Models ready" not in server.log

        answer = asyncio.run(synthesize(server.port, "Hello there."))
        assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.seconds > 0
        assert "Models ready" in server.log
        body = health(server).json()
        assert body["state"] == "ready" and body["models"] == {"base": "cpu"}
        log = server.log
        assert log.index("Listening on") < log.index("Loading") < log.index("Voice alice ready (1 of 1)")
    finally:
        assert server.stop() == 0


def test_a_request_past_the_stall_timeout_while_loading_gets_an_error_and_its_closing_events(tmp_path):
    server = slow_server(tmp_path, 20.0, "--stall-timeout", "1")
    try:
        wait_listening(server)
        events = asyncio.run(synthesize_all(server.port, "Hello there."))
        assert events == ["error", "audio-start", "audio-stop"]
        streamed = asyncio.run(stream(server.port, ["Hello ", "there."]))
        assert streamed.closing_types() == ["error", "audio-start", "audio-stop", "synthesize-stopped"]
        error = next(event for _, event in streamed.events if event.type == "error")
        assert error.data["code"] == "loading" and "still loading" in error.data["text"]

        response = httpx.post(f"{server.http_url}/v1/audio/speech", json={"input": "Hello there."}, timeout=TIMEOUT)
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert "still loading" in response.json()["error"]["message"]
        bad = httpx.post(f"{server.http_url}/v1/audio/speech", json={"input": ""}, timeout=TIMEOUT)
        assert bad.status_code == 400  # a bad request is refused at once, loading or not
        values = metric_values(httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT).text)
        assert requests_counted(values, "wyoming", "loading") == 2 and requests_counted(values, "http", "loading") == 1
    finally:
        server.stop()


@pytest.fixture(scope="module")
def heavy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("heavy")
    return (folder, *heavy_checkpoint(folder / "heavy-base"))


def test_idle_unload_frees_the_models_and_the_next_request_loads_them_again(heavy):
    folder, checkpoint, weight_bytes = heavy
    # float32: every weight is copied into the process's memory (bfloat16 ones may stay mapped from the
    # file, resident only where read)
    args = ["--model", str(checkpoint), "--design-model", "none", "--device", "cpu", "--dtype", "float32", "--voices",
            str(cloned_voice_file(folder)), "--data-dir", str(folder / "data"), "--unload-after", "3",
            "--http-token", TOKEN]
    server = ServerProcess(args, folder / "server.log", http=True)
    try:
        server.wait_ready()
        wait_for_state(server, "ready")
        first = asyncio.run(synthesize(server.port, "Hello there."))
        assert first.seconds > 0
        loaded = rss_bytes(server.process.pid)
        assert wait_for_state(server, "unloaded")["models"] == {}
        server.wait_for_log("Models unloaded: RSS")
        unloaded = rss_bytes(server.process.pid)
        assert loaded - unloaded >= weight_bytes, (loaded, unloaded, weight_bytes)
        assert len(asyncio.run(describe(server.port)).tts[0].voices) == 1  # describe needs no model

        since = len(server.log)
        answers = asyncio.run(_together(server.port, 3))  # arriving during the reload: one reload for all
        assert all(answer.seconds > 0 for answer in answers)
        reload_log = server.log[since:]
        assert reload_log.count("Loading ") == 1 and "cloned from" not in reload_log  # the prompt came from the cache
        assert health(server).json()["state"] == "ready"

        headers = {"Authorization": f"Bearer {TOKEN}"}
        speech = httpx.post(f"{server.http_url}/v1/audio/speech", json={"input": "Hello there.", "response_format": "wav"},
                            headers=headers, timeout=TIMEOUT)
        assert speech.status_code == 200
        assert httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT).status_code == 401
        values = metric_values(httpx.get(f"{server.http_url}/metrics", headers=headers, timeout=TIMEOUT).text)
        assert requests_counted(values, "wyoming", "ok") == 4 and requests_counted(values, "http", "ok") == 1
        assert values[("qwen_tts_first_audio_seconds_count", (("transport", "wyoming"),))] == 4
        assert values[("qwen_tts_real_time_factor_count", (("transport", "http"),))] == 1
        assert values[("qwen_tts_model_loads_total", ())] == 2 and values[("qwen_tts_model_unloads_total", ())] == 1
        assert values[("qwen_tts_batch_rows_active", (("model", "base"),))] == 0
        assert values[("qwen_tts_gpu_memory_allocated_bytes", ())] == 0
    finally:
        assert server.stop() == 0


async def _together(port: int, count: int):
    return await asyncio.gather(*(synthesize(port, f"Hello number {number}.") for number in range(count)))


def test_a_reload_that_fails_is_answered_and_shown_and_the_next_request_tries_again(tmp_path):
    checkpoint = tmp_path / "base"
    shutil.copytree(FIXTURES / "tiny-base", checkpoint)
    args = ["--model", str(checkpoint), "--design-model", "none", "--device", "cpu", "--voices",
            str(cloned_voice_file(tmp_path)), "--data-dir", str(tmp_path / "data"), "--unload-after", "1"]
    server = ServerProcess(args, tmp_path / "server.log", http=True)
    try:
        server.wait_ready()
        wait_for_state(server, "unloaded")
        checkpoint.rename(tmp_path / "moved")  # e.g. a disk gone: the reload fails
        events = asyncio.run(synthesize_all(server.port, "Hello there."))
        assert events == ["error", "audio-start", "audio-stop"]
        failed = health(server)
        assert failed.status_code == 503 and failed.json()["state"] == "failed"
        assert str(checkpoint) in failed.json()["error"]
        speech = httpx.post(f"{server.http_url}/v1/audio/speech", json={"input": "Hello."}, timeout=TIMEOUT)
        assert speech.status_code == 503 and "retry-after" in speech.headers

        (tmp_path / "moved").rename(checkpoint)
        assert asyncio.run(synthesize(server.port, "Hello again.")).seconds > 0
        assert health(server).json()["state"] == "ready"
    finally:
        assert server.stop() == 0


def test_a_model_that_fails_to_load_at_start_up_answers_the_waiting_request_then_exits(tmp_path):
    missing = tmp_path / "no-such-model"
    args = ["--model", str(missing), "--design-model", "none", "--device", "cpu", "--voices",
            str(cloned_voice_file(tmp_path)), "--data-dir", str(tmp_path / "data")]
    server = ServerProcess(args, tmp_path / "server.log", module="tests.slow_loading_server",
                           env=server_env(SLOW_LOAD_SECONDS="3"))
    try:
        server.wait_for_log("Listening on")
        events = asyncio.run(synthesize_all(server.port, "Hello there."))
        assert events == ["error", "audio-start", "audio-stop"]
        assert server.process.wait(timeout=60) == 1
        assert f"error: --model: model '{missing}' is neither" in server.log
    finally:
        server.stop()


def test_a_managed_voice_that_fails_at_a_reload_is_skipped_and_the_others_keep_speaking(tmp_path):
    args = ["--model", str(FIXTURES / "tiny-base"), "--design-model", "none", "--device", "cpu", "--voices",
            str(cloned_voice_file(tmp_path)), "--data-dir", str(tmp_path / "data"), "--unload-after", "1"]
    server = ServerProcess(args, tmp_path / "server.log", http=True)
    try:
        server.wait_ready()
        recording = (FIXTURES / "ref_16k_stereo.wav").read_bytes()
        created = httpx.post(f"{server.http_url}/v1/audio/voices", data={"name": "bob"},
                             files={"reference": ("bob.wav", recording)}, timeout=TIMEOUT)
        assert created.status_code == 201, created.text
        wait_for_state(server, "unloaded")
        managed = tmp_path / "data" / "voices" / "managed"
        (reference,) = (managed / "references").iterdir()
        reference.write_bytes(b"no longer audio")  # its cached prompt no longer matches: it is cloned again, and fails
        kept = (managed / "voices.yaml").read_text()
        since = len(server.log)
        answer = asyncio.run(synthesize(server.port, "Hello again.", voice="alice"))
        assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm
        assert ("Voice bob (created over HTTP) is skipped: it cannot be prepared: voice 'bob': field 'reference': "
                in server.log[since:])
        assert health(server).json()["state"] == "ready"
        (program,) = asyncio.run(describe(server.port)).tts
        assert [voice.name for voice in program.voices] == ["alice"]
        voices = httpx.get(f"{server.http_url}/v1/audio/voices", timeout=TIMEOUT).json()["voices"]
        assert [voice["name"] for voice in voices] == ["alice"]
        speech = httpx.post(f"{server.http_url}/v1/audio/speech", json={"input": "Hello.", "voice": "bob"},
                            timeout=TIMEOUT)
        assert speech.status_code == 400 and "'bob' is not one of this server's voices" in speech.text
        assert (managed / "voices.yaml").read_text() == kept and reference.is_file()
    finally:
        assert server.stop() == 0


def test_a_stop_while_the_models_load_exits_at_once(tmp_path):
    """docker stop sends SIGTERM and kills after 10 s: a server stopped during a long load exits
    then, cleanly, instead of waiting for the load to finish."""
    server = slow_server(tmp_path, 120)
    try:
        wait_listening(server)
        stopped = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(timeout=60)
        took = time.monotonic() - stopped
        assert code == 0 and took < 10, (code, took, server.log)
        assert "Stopped while the models were loading" in server.log
    finally:
        server.stop()

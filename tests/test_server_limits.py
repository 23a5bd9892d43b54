"""The real server's limits on a tiny Base checkpoint that never ends speech by itself (so every
sentence runs to its frame budget unless something stops it): the wall-clock limit per sentence,
the text limit, clients that send junk, nothing, or stop reading."""

import asyncio
import re
import socket
import time

import pytest

from .server_harness import FIXTURES, ServerProcess, describe, long_speaking_checkpoint, synthesize

LONG_TEXT = "Hello there, how are you today"  # ~250 frames (20 s of audio) without an end of speech
SECONDS_PER_SENTENCE = 2


def voices_file(tmp, speed: float = 1.0):
    path = tmp / "voices.yaml"
    path.write_text(f"voices:\n  alice:\n    reference: {FIXTURES / 'ref_16k_stereo.wav'}\n"
                    f"    transcript: The quick brown fox.\n    speed: {speed}\n")
    return path


def start(tmp, checkpoint, voices, *options) -> ServerProcess:
    process = ServerProcess(["--model", str(checkpoint), "--design-model", "none", "--device", "cpu",
                             "--voices", str(voices), "--data-dir", str(tmp / "data"), *options], tmp / "server.log")
    try:
        process.wait_ready()
    except BaseException:
        process.stop()  # a server that never got ready must not outlive the test
        raise
    return process


@pytest.fixture(scope="module")
def never_ending(tmp_path_factory):
    return long_speaking_checkpoint(FIXTURES / "tiny-base", tmp_path_factory.mktemp("checkpoint") / "tiny-base-long")


@pytest.fixture(scope="module")
def limited(tmp_path_factory, never_ending):
    tmp = tmp_path_factory.mktemp("limited")
    process = start(tmp, never_ending, voices_file(tmp), "--max-seconds-per-sentence", str(SECONDS_PER_SENTENCE),
                    "--idle-timeout", "2")
    try:
        yield process
    finally:
        process.stop()


def audio_seconds_logged(log: str, pattern: str) -> float:
    return float(re.search(pattern, log).group(1))


def test_a_sentence_past_its_time_limit_keeps_its_audio_and_the_request_ends(limited):
    since = len(limited.log)
    started = time.monotonic()
    answer = asyncio.run(synthesize(limited.port, LONG_TEXT + ". This is never spoken."))
    took = time.monotonic() - started
    assert answer.closing_types() == ["audio-start", "error", "audio-stop"]
    error = next(event for _, event in answer.events if event.type == "error")
    assert error.data["code"] == "timeout" and f"longer than {SECONDS_PER_SENTENCE} s" in error.data["text"]
    assert 0 < answer.seconds < 19  # some audio was made and kept, not the whole 20 s budget
    assert took < SECONDS_PER_SENTENCE + 10
    log = limited.wait_for_log("Cancelled alice after", since=since)
    cut = audio_seconds_logged(log, rf"Sentence cut at the {SECONDS_PER_SENTENCE} s limit after ([\d.]+) s of audio")
    assert cut == pytest.approx(answer.seconds, abs=0.01)
    assert "This is never spoken" not in log.split("Sentence cut", 1)[1]
    assert "Skipped the last 1 sentences" in log
    after = asyncio.run(synthesize(limited.port, "Hi."))  # ~50 frames: on a busy machine it may be cut too
    assert after.closing_types() in (["audio-start", "audio-stop"], ["audio-start", "error", "audio-stop"])
    assert after.pcm


def test_a_hundred_thousand_characters_end_with_the_first_sentence_over_time(limited):
    text = "Hello there, how are you today, my friend, " * 2326  # 100,018 characters, no sentence end
    started = time.monotonic()
    answer = asyncio.run(synthesize(limited.port, text))
    assert time.monotonic() - started < SECONDS_PER_SENTENCE + 20
    assert answer.closing_types() == ["error", "audio-start", "error", "audio-stop"]
    codes = [event.data["code"] for _, event in answer.events if event.type == "error"]
    assert codes == ["text-too-long", "timeout"] and answer.pcm


async def _junk_then_describe(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(bytes(range(256)) * 8 + b"\n")
    await writer.drain()
    said = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return said, await describe(port)


def test_binary_junk_gets_an_error_and_the_server_serves_on(limited):
    said, info = asyncio.run(_junk_then_describe(limited.port))
    assert said.startswith(b'{"type": "error"') and b"bad-event" in said and info.tts
    assert "unreadable event: header is not JSON" in limited.log


async def _silent_connection(port: int):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    said = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return said, time.monotonic() - started


def test_a_connection_that_sends_nothing_is_closed(limited):
    said, took = asyncio.run(_silent_connection(limited.port))
    assert b"idle-timeout" in said and 1.5 < took < 15
    assert "idle for 2 s" in limited.log


async def _never_reading(port: int, text: str):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    _, writer = await asyncio.open_connection(sock=sock)
    writer.write(b'{"type": "synthesize", "data": {"text": "' + text.encode() + b'"}}\n')
    await writer.drain()
    return writer


def test_a_client_that_stops_reading_is_dropped_and_its_generation_cancelled(tmp_path, never_ending):
    # A quarter speed voice makes audio 4x faster than frames: it soon fills the kernel's socket buffers.
    server = start(tmp_path, never_ending, voices_file(tmp_path, speed=0.25), "--write-timeout", "2")
    try:
        async def scenario():
            writer = await _never_reading(server.port, ", ".join([LONG_TEXT] * 3))
            await asyncio.to_thread(server.wait_for_log, "it accepted nothing for 2 s (not reading)", 120)
            log = await asyncio.to_thread(server.wait_for_log, "Cancelled alice after", 30)
            answer = await synthesize(server.port, "Hi.")
            writer.close()
            return log, answer

        log, answer = asyncio.run(scenario())
    finally:
        server.stop()
    made = audio_seconds_logged(log, r"Cancelled alice after ([\d.]+) s of audio")
    assert made < 200  # stopped early: the whole budget (~700 frames) is ~220 s of audio at a quarter speed
    assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm

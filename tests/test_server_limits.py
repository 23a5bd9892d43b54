"""The real server's limits on a tiny Base checkpoint that never ends speech by itself (so every
sentence runs to its frame budget unless something stops it): the stall detector that never cuts
a slow but steady sentence, the text limit, clients that send junk, nothing, or stop reading.
(Cutting a sentence that does stall is tested with a stand-in speaker: test_server_hardening.py.)"""

import asyncio
import re
import socket
import time

import pytest

from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from .server_harness import (FIXTURES, Answer, cloned_voice_file, describe, long_speaking_checkpoint, read_until,
                             running_server, synthesize)

LONG_TEXT = "Hello there, how are you today"  # ~250 frames (20 s of audio) without an end of speech
SPOKE = r"Spoke ([\d.]+) s with alice \(\w+\) in ([\d.]+) s"  # audio made, and in how long
STALL_SECONDS = 2  # a chunk (8 frames) takes ~0.2 s here: a busy machine is far from a stall


def limited_server(tmp, checkpoint, *options, speed: float = 1.0):
    return running_server(["--model", str(checkpoint), "--design-model", "none", "--device", "cpu", "--voices",
                           str(cloned_voice_file(tmp, speed=speed)), "--data-dir", str(tmp / "data"), *options],
                          tmp / "server.log")


@pytest.fixture(scope="module")
def never_ending(tmp_path_factory):
    return long_speaking_checkpoint(FIXTURES / "tiny-base", tmp_path_factory.mktemp("checkpoint") / "tiny-base-long")


@pytest.fixture(scope="module")
def limited(tmp_path_factory, never_ending):
    with limited_server(tmp_path_factory.mktemp("limited"), never_ending, "--stall-timeout", str(STALL_SECONDS),
                        "--idle-timeout", "2") as process:
        yield process


def audio_seconds_logged(log: str, pattern: str) -> float:
    return float(re.search(pattern, log).group(1))


def test_a_sentence_longer_than_the_stall_timeout_is_spoken_whole_while_frames_keep_coming(limited):
    since = len(limited.log)
    answer = asyncio.run(synthesize(limited.port, LONG_TEXT + ". " + LONG_TEXT + "."))
    assert answer.closing_types() == ["audio-start", "audio-stop"]
    log = limited.wait_for_log("Spoke ", since=since)
    spoken = [(float(audio), float(took)) for audio, took in re.findall(SPOKE, log)]
    assert len(spoken) == 2 and sum(audio for audio, _ in spoken) == pytest.approx(answer.seconds, abs=0.02)
    assert answer.seconds > 30  # both sentences ran to their frame budget (~20 s of audio each)
    assert max(took for _, took in spoken) > STALL_SECONDS  # a wall clock per sentence would have cut it
    assert "Sentence cut" not in log


async def _first_audio_then_hang_up(port: int, text: str) -> Answer:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text).event())
        return await read_until(client, "audio-chunk", timeout=30)


def test_a_hundred_thousand_characters_are_cut_to_the_text_limit_at_once(limited):
    # Spoken whole, the 5000 characters left would take minutes here (random weights never end a
    # sentence: each runs to its frame budget); the client hangs up at the first audio.
    text = "Hello there, how are you today, my friend, " * 2326  # 100,018 characters, no sentence end
    since = len(limited.log)
    answer = asyncio.run(_first_audio_then_hang_up(limited.port, text))
    assert answer.types == ["error", "audio-start", "audio-chunk"]
    assert answer.events[0][1].data["code"] == "text-too-long"
    limited.wait_for_log("Cancelled alice after", since=since)
    assert asyncio.run(synthesize(limited.port, "Hi.")).closing_types() == ["audio-start", "audio-stop"]


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
    with limited_server(tmp_path, never_ending, "--write-timeout", "2", speed=0.25) as server:
        async def scenario():
            writer = await _never_reading(server.port, ", ".join([LONG_TEXT] * 3))
            await asyncio.to_thread(server.wait_for_log, "it accepted nothing for 2 s (not reading)", 120)
            log = await asyncio.to_thread(server.wait_for_log, "Cancelled alice after", 30)
            answer = await synthesize(server.port, "Hi.")
            writer.close()
            return log, answer

        log, answer = asyncio.run(scenario())
    made = audio_seconds_logged(log, r"Cancelled alice after ([\d.]+) s of audio")
    assert made < 200  # stopped early: the whole budget (~700 frames) is ~220 s of audio at a quarter speed
    assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm

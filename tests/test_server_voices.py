"""The real server with a voices file (cloned, designed, live, faster) on tiny Base and VoiceDesign
checkpoints that never end speech early, so every request runs exactly to the engine's length budget: durations are
known, a long synthesis is guaranteed, and cancellation shows in the amount of audio made."""

import asyncio
import time

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart

from .server_harness import (FIXTURES, describe, long_speaking_checkpoint, read_until, running_server, stream,
                             synthesize)

# Long enough for ~250 frames (the tiny tokenizer spends about a token per character).
LONG_TEXT = "Hello there, how are you today"
VOICES_YAML = """\
default: alice
voices:
  alice:
    description: Alice (cloned with transcript)
    reference: ref.wav
    transcript: The quick brown fox.
  bob:
    description: Bob (x-vector, German)
    reference: {ref}
    language: de
  quick:
    description: Alice, twice as fast
    reference: ref.wav
    transcript: The quick brown fox.
    speed: 2.0
  narrator:
    description: Narrator (frozen design)
    design: A deep male voice with a calm, authoritative presence.
  live:
    description: Live design
    design: A cheerful young voice.
    mode: live
    language: english
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("voices-server")
    (tmp / "ref.wav").write_bytes((FIXTURES / "ref_16k_stereo.wav").read_bytes())
    voices = tmp / "voices.yaml"
    voices.write_text(VOICES_YAML.format(ref=FIXTURES / "ref_16k_stereo.wav"))
    base = long_speaking_checkpoint(FIXTURES / "tiny-base", tmp / "tiny-base-long")
    # The live voice speaks with the design model: it must not end early either (it did, by chance)
    design = long_speaking_checkpoint(FIXTURES / "tiny-design", tmp / "tiny-design-long")
    with running_server(["--model", str(base), "--design-model", str(design), "--device", "cpu",
                         "--voices", str(voices), "--data-dir", str(tmp / "data")], tmp / "server.log") as process:
        yield process


def test_describe_lists_each_voice_with_its_languages(server):
    (program,) = asyncio.run(describe(server.port)).tts
    voices = {voice.name: voice for voice in program.voices}
    assert list(voices) == ["alice", "bob", "quick", "narrator", "live"]
    assert voices["bob"].languages == ["de"] and voices["live"].languages == ["en"]
    assert len(voices["alice"].languages) == 10 and "en" in voices["narrator"].languages
    assert voices["alice"].description == "Alice (cloned with transcript)"


@pytest.mark.parametrize("voice", ["alice", "bob", "narrator", "live"])
def test_every_kind_of_voice_speaks(server, voice):
    answer = asyncio.run(synthesize(server.port, "Hi.", voice=voice))
    assert answer.closing_types() == ["audio-start", "audio-stop"]
    assert answer.seconds >= 1.0  # the budget of a short text is at least 24 frames (1.92 s)
    assert f"Speaking with {voice} " in server.log


def test_speed_two_halves_the_duration_and_one_is_untouched(server):
    normal = asyncio.run(synthesize(server.port, "Hi.", voice="alice"))
    quick = asyncio.run(synthesize(server.port, "Hi.", voice="quick"))
    assert len(normal.pcm) % (1920 * 2) == 0  # whole 80 ms frames: speed 1.0 passes audio through
    assert quick.seconds == pytest.approx(normal.seconds / 2, rel=0.1)


async def _describe_during_synthesis(port: int):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=LONG_TEXT).event())
        await read_until(client, "audio-chunk")  # generating now, and for a while
        started = time.monotonic()
        await describe(port)
        took = time.monotonic() - started
    return took


def test_describe_answers_at_once_while_a_long_synthesis_runs(server):
    assert asyncio.run(_describe_during_synthesis(server.port)) < 1.0


async def _disconnect_mid_stream(port: int):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart().event())
        await client.write_event(SynthesizeChunk(text=LONG_TEXT + ". And more.").event())
        await read_until(client, "audio-chunk")
    # The connection is closed without synthesize-stop; the next request must not wait behind it.
    return await synthesize(port, "Hi.")


def test_disconnect_mid_stream_cancels_the_generation(server):
    since = len(server.log)
    answer = asyncio.run(_disconnect_mid_stream(server.port))
    assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm
    log = server.wait_for_log("Cancelled alice after", since=since)
    cancelled = log.split("Cancelled alice after ", 1)[1]
    made = float(cancelled.split(" s of audio", 1)[0])
    # The whole sentence would be ~20 s of audio (its frame budget); generation stopped early.
    assert made < 10.0, cancelled[:200]


def test_several_clients_streaming_at_once_all_finish(server):
    async def run_all():
        return await asyncio.gather(*(stream(server.port, ["H", "i."], voice=name)
                                      for name in ("alice", "bob", "narrator")))

    for answer in asyncio.run(run_all()):
        assert answer.closing_types() == ["audio-start", "audio-stop", "synthesize-stopped"] and answer.pcm


async def _short_request_during_a_long_one(port: int):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=LONG_TEXT + ".").event())
        long_answer = await read_until(client, "audio-chunk")
        short_answer = await synthesize(port, "Hi.", voice="bob")
        await read_until(client, "audio-stop", long_answer)
    return long_answer, short_answer


def test_a_request_joins_a_running_one_instead_of_waiting_for_it(server):
    """Continuous batching: a short sentence arriving mid-way through a long one is spoken at
    once, alongside it, not after it."""
    long_answer, short_answer = asyncio.run(_short_request_during_a_long_one(server.port))
    assert short_answer.closing_types() == ["audio-start", "audio-stop"] and short_answer.pcm
    assert short_answer.first_time("audio-stop") < long_answer.first_time("audio-stop")
    assert long_answer.seconds > 2 * short_answer.seconds  # so the ordering above is not a tie

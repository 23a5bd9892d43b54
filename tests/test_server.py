"""The real server with zero configuration (built-in designed voices) on the tiny checkpoints,
driven as Home Assistant drives it."""

import asyncio
import io
import time
import wave

import pytest
from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

from .server_harness import TINY_MODELS, describe, read_until, running_server, stream, synthesize

ZEROCONF_NAME = "qwen-tts-test"
HA_CHUNKS = ["The weather", " today is sun", "ny. Tomorrow it", " will rain", "."]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    with running_server([*TINY_MODELS, "--data-dir", str(tmp / "data"), "--zeroconf", ZEROCONF_NAME,
                         "--zeroconf-host", "127.0.0.1"], tmp / "server.log") as process:
        yield process


def test_describe_lists_the_builtin_voices_with_language_codes(server):
    info = asyncio.run(describe(server.port))
    (program,) = info.tts
    assert program.installed and program.supports_synthesize_streaming
    assert program.attribution.url == "https://github.com/QwenLM/Qwen3-TTS"
    from wyoming_qwen_tts import __version__

    assert program.version == __version__
    assert [voice.name for voice in program.voices] == ["clara", "maya", "james", "leo"]
    for voice in program.voices:
        assert voice.installed and voice.description
        assert set(voice.languages) == {"zh", "en", "ja", "ko", "de", "fr", "ru", "pt", "es", "it"}


def test_synthesize_answers_a_playable_wav(server):
    answer = asyncio.run(synthesize(server.port, "Hello there. How are you today?"))
    assert answer.closing_types() == ["audio-start", "audio-stop"]
    assert answer.types.count("audio-chunk") >= 2
    with wave.open(io.BytesIO(answer.wav())) as wav:
        assert (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) == (24000, 2, 1)
        assert wav.getnframes() >= 2 * 1920  # two sentences, at least a frame each
    start = answer.audio_start
    assert (start.rate, start.width, start.channels) == (24000, 2, 1)


def test_unknown_voice_speaks_with_the_default_voice(server):
    answer = asyncio.run(synthesize(server.port, "Hello.", voice="no-such-voice"))
    assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm
    log = server.wait_for_log("Unknown voice 'no-such-voice'")
    assert "using the default voice clara" in log


@pytest.mark.parametrize("text", ["", "   ", "... !? —", "\n\n"])
def test_nothing_to_say_still_opens_and_closes_the_audio(server, text):
    answer = asyncio.run(synthesize(server.port, text))
    assert answer.types == ["audio-start", "audio-stop"]


def test_empty_stream_still_ends_with_synthesize_stopped(server):
    answer = asyncio.run(stream(server.port, ["...", " "]))
    assert answer.types == ["audio-start", "audio-stop", "synthesize-stopped"]


def test_stream_speaks_mid_word_chunks_once_with_one_audio_format(server):
    answer = asyncio.run(stream(server.port, HA_CHUNKS, voice="james"))
    assert answer.closing_types() == ["audio-start", "audio-stop", "synthesize-stopped"]
    assert answer.types.count("audio-chunk") >= 2
    assert "Speaking with james (english): 'The weather today is sunny.'" in server.log
    assert "Speaking with james (english): 'Tomorrow it will rain.'" in server.log


async def _stream_then_empty_request(port: int):
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart().event())
        for chunk in HA_CHUNKS:
            await client.write_event(SynthesizeChunk(text=chunk).event())
        await client.write_event(Synthesize(text="".join(HA_CHUNKS)).event())
        await client.write_event(SynthesizeStop().event())
        streamed = await read_until(client, "synthesize-stopped")
        await client.write_event(Synthesize(text="").event())
        after = await read_until(client, "audio-stop")
        return streamed, after


def test_full_text_synthesize_inside_a_stream_is_not_spoken_again(server):
    streamed, after = asyncio.run(_stream_then_empty_request(server.port))
    assert streamed.closing_types() == ["audio-start", "audio-stop", "synthesize-stopped"]
    # Had the repeated text been queued, its audio would come before the empty request's answer.
    assert after.types == ["audio-start", "audio-stop"]


async def _stream_with_pause(port: int):
    """Home Assistant's timing: the first sentence completes, the rest of the text comes later."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart().event())
        for chunk in HA_CHUNKS[:3]:
            await client.write_event(SynthesizeChunk(text=chunk).event())
        answer = await read_until(client, "audio-chunk")
        stop_sent = time.monotonic()
        for chunk in HA_CHUNKS[3:]:
            await client.write_event(SynthesizeChunk(text=chunk).event())
        await client.write_event(SynthesizeStop().event())
        await read_until(client, "synthesize-stopped", answer)
        return answer, stop_sent


def test_stream_audio_begins_before_the_text_ends(server):
    answer, stop_sent = asyncio.run(_stream_with_pause(server.port))
    assert answer.first_time("audio-chunk") < stop_sent
    assert answer.closing_types() == ["audio-start", "audio-stop", "synthesize-stopped"]


async def _many_at_once(port: int, count: int):
    voices = ["clara", "maya", "james", "leo"][:count]
    return await asyncio.gather(*(synthesize(port, f"Request number {i}.", voice=voice)
                                  for i, voice in enumerate(voices)))


def test_concurrent_clients_are_all_answered(server):
    answers = asyncio.run(_many_at_once(server.port, 4))
    for answer in answers:
        assert answer.closing_types() == ["audio-start", "audio-stop"] and answer.pcm


def test_zeroconf_announces_the_server_on_loopback(server):
    from zeroconf import IPVersion, ServiceBrowser, Zeroconf

    found = {}
    browser_zeroconf = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        def record(zeroconf, service_type, name, state_change):
            found.setdefault(name, state_change)

        ServiceBrowser(browser_zeroconf, "_wyoming._tcp.local.", handlers=[record])
        name = f"{ZEROCONF_NAME}._wyoming._tcp.local."
        deadline = time.monotonic() + 20
        while name not in found and time.monotonic() < deadline:
            time.sleep(0.05)
        assert name in found, f"not announced; saw {list(found)}"
        info = browser_zeroconf.get_service_info("_wyoming._tcp.local.", name, timeout=5000)
        assert info is not None
        assert info.port == server.port and info.parsed_addresses() == ["127.0.0.1"]
    finally:
        browser_zeroconf.close()


def test_healthcheck_passes_against_a_serving_server(server):
    from wyoming_qwen_tts.healthcheck import main

    assert main(["--uri", f"tcp://127.0.0.1:{server.port}", "--timeout", "30"]) == 0

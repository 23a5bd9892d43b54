"""Run the real server as a subprocess and talk to it with the wyoming client."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.audio import AudioChunk, AudioStart
from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.info import Describe, Info
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeVoice

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent
TINY_MODELS = ["--model", str(FIXTURES / "tiny-base"), "--design-model", str(FIXTURES / "tiny-design"),
               "--device", "cpu"]
REFERENCE = FIXTURES / "ref_16k_stereo.wav"
REFERENCE_TRANSCRIPT = "The quick brown fox."
# Generous: a shared 2-core CI machine may run other torch work at the same time.
READ_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("QWEN_TTS_")}
    # One thread per process: tiny models gain nothing from more, and two torch processes spinning
    # on two cores slow each other down many times over.
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wyoming_qwen_tts", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or server_env(), cwd=REPO)


class ServerProcess:
    """`python -m wyoming_qwen_tts ...` on 127.0.0.1, its log in a file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None,
                 module: str = "wyoming_qwen_tts", debug: bool = True, http: bool = False) -> None:
        self.port = free_port()
        self.http_port = free_port() if http else None
        self.log_path = log_path
        self.args = ["--uri", f"tcp://127.0.0.1:{self.port}", *(["--debug"] if debug else []), *args]
        if http:
            self.args += ["--http", f"127.0.0.1:{self.http_port}"]
        self._log = open(log_path, "w")  # noqa: SIM115 - open for the life of the process, closed by stop()
        self.process = subprocess.Popen([sys.executable, "-m", module, *self.args], cwd=REPO,
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env or server_env())

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 300.0) -> Info:
        """The describe answer once the models are loaded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log}")
            try:
                info = asyncio.run(describe(self.port, timeout=5))
                # Describe answers while the models load: ready is once they are loaded ("Ready:", logged
                # after the HTTP API started)
                if "Ready: " in self.log:
                    return info
            except (TimeoutError, OSError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready after {timeout} s:\n{self.log}")

    def wait_for_log(self, text: str, timeout: float = 60.0, since: int = 0) -> str:
        """The log from offset `since` (a len(self.log) taken earlier) once it holds text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log[since:]
            if text in log:
                return log
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not logged within {timeout} s:\n{self.log}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@contextmanager
def running_server(args: list[str], log_path: Path, ready_timeout: float = 300.0, **options) -> Iterator[ServerProcess]:
    """A ServerProcess once it answers, stopped at the end (also when it never got ready)."""
    process = ServerProcess(args, log_path, **options)
    try:
        process.wait_ready(ready_timeout)
        yield process
    finally:
        process.stop()


def cloned_voice_file(folder: Path, name: str = "alice", speed: float = 1.0) -> Path:
    """folder/voices.yaml with one voice cloned from the reference fixture and its transcript."""
    path = folder / "voices.yaml"
    path.write_text(f"voices:\n  {name}:\n    reference: {REFERENCE}\n    transcript: {REFERENCE_TRANSCRIPT}\n"
                    f"    speed: {speed}\n")
    return path


async def describe(port: int, timeout: float = READ_TIMEOUT) -> Info:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), timeout)
            if event is None:
                raise ConnectionError("closed without info")
            if Info.is_type(event.type):
                return Info.from_event(event)


@dataclass
class Answer:
    events: list[tuple[float, Event]] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [event.type for _, event in self.events]

    def closing_types(self) -> list[str]:
        """Event types without the audio chunks."""
        return [kind for kind in self.types if kind != "audio-chunk"]

    @property
    def pcm(self) -> bytes:
        return b"".join(AudioChunk.from_event(event).audio for _, event in self.events
                        if AudioChunk.is_type(event.type))

    @property
    def seconds(self) -> float:
        start = self.audio_start
        return len(self.pcm) / (start.rate * start.width * start.channels)

    @property
    def audio_start(self) -> AudioStart:
        return next(AudioStart.from_event(event) for _, event in self.events if AudioStart.is_type(event.type))

    def first_time(self, event_type: str) -> float:
        return next(at for at, event in self.events if event.type == event_type)

    def wav(self) -> bytes:
        """The answer assembled as Home Assistant does: a WAV from the chunks' format and audio."""
        chunks = [AudioChunk.from_event(event) for _, event in self.events if AudioChunk.is_type(event.type)]
        with io.BytesIO() as buffer:
            with wave.open(buffer, "wb") as wav:
                wav.setframerate(chunks[0].rate)
                wav.setsampwidth(chunks[0].width)
                wav.setnchannels(chunks[0].channels)
                for chunk in chunks:
                    wav.writeframes(chunk.audio)
            return buffer.getvalue()


async def read_until(client: AsyncTcpClient, last_type: str, answer: Answer | None = None,
                     timeout: float = READ_TIMEOUT) -> Answer:
    answer = answer or Answer()
    while True:
        event = await asyncio.wait_for(client.read_event(), timeout)
        if event is None:
            raise ConnectionError(f"closed before {last_type}; got {answer.types}")
        answer.events.append((time.monotonic(), event))
        if event.type == last_type:
            return answer


def voice_of(name: str | None) -> SynthesizeVoice | None:
    return SynthesizeVoice(name=name) if name is not None else None


async def synthesize(port: int, text: str, voice: str | None = None) -> Answer:
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(Synthesize(text=text, voice=voice_of(voice)).event())
        return await read_until(client, "audio-stop")


async def stream(port: int, chunks: list[str], voice: str | None = None, repeat_full_text: bool = True) -> Answer:
    """A stream as Home Assistant sends it: start, chunks, the whole text again, stop."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        await client.write_event(SynthesizeStart(voice=voice_of(voice)).event())
        for chunk in chunks:
            await client.write_event(SynthesizeChunk(text=chunk).event())
        if repeat_full_text:
            await client.write_event(Synthesize(text="".join(chunks), voice=voice_of(voice)).event())
        await client.write_event(SynthesizeStop().event())
        return await read_until(client, "synthesize-stopped")


def long_speaking_checkpoint(source: Path, target: Path) -> Path:
    """A copy of a tiny checkpoint that never chooses end-of-speech (its EOS row of the codec head
    is zeroed, so EOS loses to the other codes), so every request runs to the engine's length budget."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    eos = json.loads((target / "config.json").read_text())["talker_config"]["codec_eos_token_id"]
    weights = load_file(target / "model.safetensors")
    weights["talker.codec_head.weight"][eos] = 0
    save_file(weights, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target

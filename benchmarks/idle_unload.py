"""Idle unload on the real server: the memory held before and after --unload-after frees the models,
how long the reload takes, and the first audio of the request that triggers it.

    python -m benchmarks.idle_unload --model bench-checkpoints/0.6B-Base [--unload-after 5]

Runs the server (one cloned voice, no design model, CPU) with the test harness, speaks once, waits
for the unload, speaks again; prints the figures as JSON (README, "Living on a home server")."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import tempfile
import time
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.tts import Synthesize

from tests.server_harness import ServerProcess, cloned_voice_file, server_env

TEXT = "Good morning."  # short: random weights may not end a sentence before its frame budget


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


async def first_audio(port: int) -> tuple[float, float]:
    """(seconds to the first audio chunk, seconds to audio-stop)."""
    async with AsyncTcpClient("127.0.0.1", port) as client:
        started = time.monotonic()
        await client.write_event(Synthesize(text=TEXT).event())
        first = None
        while (event := await client.read_event()) is not None:
            if event.type == "audio-chunk" and first is None:
                first = time.monotonic() - started
            if event.type == "audio-stop":
                return first or float("nan"), time.monotonic() - started
    raise ConnectionError("closed before audio-stop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--unload-after", type=float, default=5.0)
    parser.add_argument("--threads", default="2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        server = ServerProcess(["--model", args.model, "--design-model", "none", "--device", "cpu",
                                "--voices", str(cloned_voice_file(tmp)), "--data-dir", str(tmp / "data"),
                                "--unload-after", str(args.unload_after),
                                "--stall-timeout", "1800"],  # the request after the unload waits for the whole reload
                               tmp / "server.log",
                               env={**server_env(), "OMP_NUM_THREADS": args.threads}, debug=False)
        try:
            server.wait_ready(900)
            server.wait_for_log("Ready:", timeout=900)
            figures = {"rss_listening_mib": None}
            cold = asyncio.run(first_audio(server.port))
            figures["first_audio_loaded_s"], figures["request_loaded_s"] = cold
            figures["rss_loaded_mib"] = rss_mib(server.process.pid)
            log_before = len(server.log)
            server.wait_for_log("Models unloaded", timeout=args.unload_after + 120, since=log_before)
            figures["rss_unloaded_mib"] = rss_mib(server.process.pid)
            figures["unloaded_log"] = re.search(r"Models unloaded: (.*)", server.log).group(1)
            figures["first_audio_after_unload_s"], figures["request_after_unload_s"] = asyncio.run(
                first_audio(server.port))
            figures["load_then_reload_s"] = re.findall(r"Models ready \(loaded in ([\d.]+) s\)", server.log)
            figures["load_average"] = Path("/proc/loadavg").read_text().split()[:3]
            figures["rss_reloaded_mib"] = rss_mib(server.process.pid)
            figures.pop("rss_listening_mib")
        finally:
            server.stop()
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()

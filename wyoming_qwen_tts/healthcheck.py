"""Health check: a describe round trip. Exit 0 when the server answers with its voices, else 1.

    python -m wyoming_qwen_tts.healthcheck [--uri tcp://127.0.0.1:10200] [--timeout 5]

Without --uri it checks the server that QWEN_TTS_URI configures, on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from urllib.parse import urlparse

from wyoming.client import AsyncClient
from wyoming.info import Describe, Info


def local_uri() -> str:
    """QWEN_TTS_URI as seen from this machine: a server bound to every address is reached on loopback."""
    uri = os.environ.get("QWEN_TTS_URI", "tcp://0.0.0.0:10200")
    parsed = urlparse(uri)
    if parsed.scheme == "tcp" and parsed.hostname in ("0.0.0.0", "::"):
        host = "127.0.0.1" if parsed.hostname == "0.0.0.0" else "[::1]"
        return f"tcp://{host}:{parsed.port}"
    return uri


async def describe(uri: str) -> Info:
    async with AsyncClient.from_uri(uri) as client:
        await client.write_event(Describe().event())
        while True:
            event = await client.read_event()
            if event is None:
                raise ConnectionError("the server closed the connection without answering")
            if Info.is_type(event.type):
                return Info.from_event(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wyoming_qwen_tts.healthcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uri", default=local_uri(), help="server to check (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        info = asyncio.run(asyncio.wait_for(describe(args.uri), args.timeout))
    except (TimeoutError, OSError, ValueError) as err:
        print(f"unhealthy: {args.uri}: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    voices = [voice.name for program in info.tts if program.installed for voice in program.voices if voice.installed]
    if not voices:
        print(f"unhealthy: {args.uri} offers no text-to-speech voices", file=sys.stderr)
        return 1
    print(f"healthy: {args.uri}: {len(voices)} voices")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real server on a CPU shared with other work (issue 17 item 2): one stream, then N concurrent
streams, quiet and with 1, 2, 4 busy processes beside the server (each a Python busy loop, started
and stopped here, bounded in time).

    python benchmarks/shared_cpu_bench.py --model /tmp/avx2-ckpt/0.6B-Base --json shared-cpu.json \
        [--frames 24] [--busy 0,1,2,4] [--concurrency 8] [--server-env OMP_NUM_THREADS=2 ...]

The server is `python -m wyoming_qwen_tts` with its defaults for this CPU (--threads auto, unless
--server-arg says otherwise); the streams are HTTP /v1/audio/speech requests, PCM as generated,
max_new_tokens capped (random weights never say end-of-speech). Per stream: first audio, speed (x
real time: audio seconds over the request's seconds), completed (all frames came); per scenario the
stall cuts (the server's /metrics) and the load average when it began.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.server_harness import REPO, ServerProcess, cloned_voice_file

TEXT = "The kitchen lights are on, the front door is locked and the washing machine has finished."
BYTES_PER_FRAME = 1920 * 2  # 80 ms of 24 kHz 16-bit PCM
SECONDS_PER_FRAME = 0.08


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def cpu_flags(wanted: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")) -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in wanted if flag in present]
    return []


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def start_busy(count: int, seconds: float) -> list[subprocess.Popen]:
    """Busy loops that end by themselves after `seconds` if nobody stops them."""
    loop = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", loop]) for _ in range(count)]


def stop_busy(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
    for process in processes:
        process.wait()


def server_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment (its thread settings left as they are) for the server, plus `extra`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("QWEN_TTS_")}
    env.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO), **extra)
    return env


def stall_cuts(server: ServerProcess) -> float:
    text = httpx.get(f"{server.http_url}/metrics", timeout=60).text
    return sum(float(value) for value in re.findall(r'^qwen_tts_stall_cuts_total\{[^}]*\} (\S+)', text, re.MULTILINE))


async def one_stream(client: httpx.AsyncClient, frames: int, seed: int, deadline: float) -> dict:
    body = {"input": TEXT, "voice": "alice", "language": "English", "response_format": "pcm",
            "max_new_tokens": frames, "seed": seed}
    started, first, received = time.perf_counter(), None, 0
    try:
        async with client.stream("POST", "/v1/audio/speech", json=body) as response:
            async for data in response.aiter_bytes():
                if first is None and data:
                    first = time.perf_counter() - started
                received += len(data)
                if time.perf_counter() > deadline:
                    break
    except httpx.HTTPError as err:
        return {"error": repr(err), "frames": received / BYTES_PER_FRAME}
    took = time.perf_counter() - started
    audio = received / 2 / 24000
    return {"first_audio_s": None if first is None else round(first, 3), "seconds": round(took, 2),
            "frames": round(received / BYTES_PER_FRAME, 1), "completed": received >= frames * BYTES_PER_FRAME,
            "x_real_time": round(audio / took, 3) if took > 0 else None}


async def streams_at_once(url: str, count: int, frames: int, timeout: float) -> list[dict]:
    deadline = time.perf_counter() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=timeout) as client:
        return await asyncio.gather(*(one_stream(client, frames, seed, deadline) for seed in range(count)))


def summary(streams: list[dict]) -> dict:
    def median(key: str):
        values = [stream[key] for stream in streams if stream.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    return {"streams": len(streams), "completed": sum(bool(stream.get("completed")) for stream in streams),
            "with_audio": sum(stream.get("frames", 0) > 0 for stream in streams),
            "first_audio_s_p50": median("first_audio_s"),
            "first_audio_s_max": max((s["first_audio_s"] for s in streams if s.get("first_audio_s")), default=None),
            "x_real_time_p50": median("x_real_time"), "seconds_max": max(s.get("seconds", 0) for s in streams)}


def scenario(server: ServerProcess, busy: int, args: argparse.Namespace) -> dict:
    result = {"busy": busy, "load_before": load_average()}
    processes = start_busy(busy, seconds=2 * args.scenario_timeout + 30)
    try:
        time.sleep(1.0)
        for label, count in (("one", 1), ("concurrent", args.concurrency)):
            cuts_before = stall_cuts(server)
            streams = asyncio.run(streams_at_once(server.http_url, count, args.frames, args.scenario_timeout))
            result[label] = {**summary(streams), "stall_cuts": stall_cuts(server) - cuts_before, "each": streams}
            print(f"busy {busy} {label}: {json.dumps({k: v for k, v in result[label].items() if k != 'each'})}",
                  flush=True)
    finally:
        stop_busy(processes)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--busy", default="0,1,2,4", help="busy processes beside the server, per scenario")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--stall-timeout", type=float, default=30.0)
    parser.add_argument("--scenario-timeout", type=float, default=300.0, help="seconds a set of streams may take")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--server-arg", action="append", default=[], help="an extra server option (repeatable)")
    parser.add_argument("--label", default="")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the server and the busy loops on the way out
    extra_env = dict(item.split("=", 1) for item in args.server_env)
    report = {"label": args.label, "cpu": cpu_model(), "flags": cpu_flags(), "cpus": os.cpu_count(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit(),
              "model": args.model, "frames": args.frames, "server_env": extra_env, "server_args": args.server_arg,
              "stall_timeout": args.stall_timeout, "scenarios": []}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        server = ServerProcess(["--model", args.model, "--design-model", "none", "--device", "cpu",
                                "--voices", str(cloned_voice_file(folder)), "--data-dir", str(folder / "data"),
                                "--stall-timeout", str(args.stall_timeout), *args.server_arg],
                               folder / "server.log", env=server_env(extra_env), debug=False, http=True)
        try:
            server.wait_ready(timeout=600)
            asyncio.run(streams_at_once(server.http_url, 1, 4, 120))  # warm-up
            for busy in (int(value) for value in args.busy.split(",")):
                report["scenarios"].append(scenario(server, busy, args))
        finally:
            server.stop()
            report["server_log_tail"] = server.log[-3000:]
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=REPO, check=False).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()

"""First audio at the Wyoming socket: what Home Assistant waits for.

Starts the real server (python -m wyoming_qwen_tts) on a checkpoint with one ICL voice, then times
`synthesize` requests from a wyoming client on loopback: request sent -> first audio-chunk
received, and -> audio-stop, one client at a time and then N at once.

    python benchmarks/socket_bench.py --checkpoint bench-checkpoints/1.7B-Base --device cuda \
        --runs 20 --concurrency 1,8,32 [--json out.json]

Random weights speak noise and rarely say end-of-speech: with --frames N the client hangs up once
N frames of audio have come (the server then frees the row), so a request costs N frames, not its
text's whole budget. First-audio figures are what this measures.

On a GPU it also reads, while the server still runs (after the concurrent requests), the GPU memory
nvidia-smi sees the server process hold (its CUDA context and allocator pool included) and the
server's own log line of its memory after warm-up. With --json the report is rewritten as each part
ends, so a run cut short keeps what it finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_engine import REF_TEXT, TEXT, git_commit, write_reference  # noqa: E402
from benchmarks.stats import percentile  # noqa: E402
from tests.server_harness import ServerProcess  # noqa: E402 - the tests' server runner


SAMPLES_PER_FRAME = 1920


async def one_request(port: int, text: str, frames: int | None = None) -> tuple[float, float]:
    """(first audio, end) in seconds; the end is audio-stop, or the moment `frames` frames came."""
    from wyoming.audio import AudioChunk
    from wyoming.client import AsyncTcpClient
    from wyoming.tts import Synthesize

    async with AsyncTcpClient("127.0.0.1", port) as client:
        start = time.perf_counter()
        await client.write_event(Synthesize(text=text).event())
        first, samples = None, 0
        while True:
            event = await client.read_event()
            if event is None:
                raise ConnectionError("server closed the connection")
            if event.type == "audio-chunk":
                first = first if first is not None else time.perf_counter() - start
                chunk = AudioChunk.from_event(event)
                samples += len(chunk.audio) // (chunk.width * chunk.channels)
                if frames is not None and samples >= frames * SAMPLES_PER_FRAME:
                    return first, time.perf_counter() - start  # hanging up frees the row
            if event.type == "audio-stop":
                return first if first is not None else float("nan"), time.perf_counter() - start


async def measure(port: int, runs: int, levels: list[int], frames: int | None, report: dict,
                  save=lambda: None) -> dict:
    """The figures into `report`, save() called after each part."""
    await one_request(port, TEXT, frames)  # warm-up
    sequential = [await one_request(port, TEXT, frames) for _ in range(runs)]
    report["sequential"] = {"first_audio_ms_p50": 1000 * percentile([f for f, _ in sequential], 50),
                            "first_audio_ms_p95": 1000 * percentile([f for f, _ in sequential], 95),
                            "runs": runs}
    save()
    report["concurrent"] = []
    for level in levels:
        answers = await asyncio.gather(*(one_request(port, TEXT, frames) for _ in range(level)))
        firsts = [f for f, _ in answers]
        report["concurrent"].append({"clients": level, "first_audio_ms_p50": 1000 * percentile(firsts, 50),
                                     "first_audio_ms_p95": 1000 * percentile(firsts, 95)})
        save()
    return report


def gpu_memory_of(pid: int) -> dict:
    """What nvidia-smi sees: the process's GPU memory (MiB) and the whole GPU's used memory; {} where
    there is no nvidia-smi (or it fails)."""
    import subprocess

    def query(*args: str) -> list[list[str]]:
        done = subprocess.run(["nvidia-smi", *args, "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=20, check=True)
        return [[field.strip() for field in line.split(",")] for line in done.stdout.splitlines() if line.strip()]

    found: dict = {}
    try:
        found["gpu_used_mib"] = int(query("--query-gpu=memory.used")[0][0])
        for app_pid, used in query("--query-compute-apps=pid,used_memory"):
            if app_pid == str(pid):
                found["server_process_mib"] = int(used)
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        found["error"] = str(err)
    return found


def logged_memory(log: str) -> list[str]:
    """The server's log lines that report its GPU memory (synthesis.py logs it after warm-up)."""
    return [line.strip() for line in log.splitlines() if "GiB allocated" in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--frames", type=int, help="hang up after this many frames of audio (random weights)")
    parser.add_argument("--server-log", type=Path, help="keep the server's log here")
    parser.add_argument("--json", type=Path, help="the report, rewritten as each part ends")
    args = parser.parse_args()
    levels = [int(v) for v in args.concurrency.split(",") if v]
    report = {"checkpoint": args.checkpoint.name, "device": args.device, "max_batch": args.max_batch,
              "frames": args.frames, "commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
              "command": " ".join(sys.argv)}

    def save() -> None:
        if args.json:
            partial = args.json.with_name(args.json.name + ".partial")
            partial.write_text(json.dumps(report, indent=2))
            partial.replace(args.json)

    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.wav"
        write_reference(ref)
        voices = Path(tmp) / "voices.yaml"
        voices.write_text(f"default: ref\nvoices:\n  ref:\n    description: bench\n    reference: {ref}\n"
                          f"    transcript: \"{REF_TEXT}\"\n    language: english\n")
        options = ["--model", str(args.checkpoint), "--design-model", "none", "--voices", str(voices),
                   "--data-dir", str(Path(tmp) / "data"), "--device", args.device, "--dtype", args.dtype,
                   "--max-batch", str(args.max_batch)]
        # The machine's own threads and settings, not the tests' one-thread environment; no debug log.
        server = ServerProcess(options, args.server_log or Path(tmp) / "server.log", env=dict(os.environ), debug=False)
        try:
            started = time.perf_counter()
            server.wait_ready(timeout=900)
            report["server_ready_s"] = time.perf_counter() - started
            save()
            asyncio.run(measure(server.port, args.runs, levels, args.frames, report, save))
            if args.device != "cpu":
                report["gpu_memory"] = gpu_memory_of(server.process.pid)
                report["gpu_memory"]["server_log"] = logged_memory(server.log)
                save()
        finally:
            server.stop()
    print(json.dumps(report, indent=2))
    save()


if __name__ == "__main__":
    main()

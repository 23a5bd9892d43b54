#!/usr/bin/env python3
"""Load and soak the real server: many connections at once, then many requests in a row, with the
server's memory (RSS) sampled after every request. Prints the figures RELIABILITY.md records.

    python tools/soak.py --json                # tiny test checkpoint, 64 at once, 300 + 500 requests
    python tools/soak.py --model DIR --device cuda --max-batch 16 -- --write-timeout 10  # server options after --

Starts the server with the tests' runner (tests/server_harness.py: a free loopback port, --debug,
OMP_NUM_THREADS=1, offline) with one cloned voice, and stops it at the end. The requests cycle
through whole texts, Home Assistant-style streams, clients that hang up after the first audio, and
malformed requests; every answered request must end with its closing events.

Memory: after --warmup requests the RSS is sampled after every request of the soak, and its growth
is the least-squares slope of the RSS floor (the lowest sample of each 10 requests: in-flight
requests' memory comes and goes) against the request count, in KB per request. Comparing two
readings instead took one allocator step for a leak. The server runs with glibc's mmap threshold
pinned (MALLOC_MMAP_THRESHOLD_, see SERVER_ENV): left dynamic, tensors of each new batch shape
raise the heap's high-water mark in steps of up to ~30 MB for hundreds of requests while the
server holds nothing more (Python's objects stay flat). A leak, of any size, still stays resident.
Even so the heap keeps rising a few KB per request for at least 800 requests under batching
(RELIABILITY.md has the figures), which bounds the smallest leak the RSS can tell.

So the Python heap is measured too, exactly: the server runs through tests/traced_server.py
(tracemalloc, its traced bytes written to a file every 20 ms; --server-module), and after each
request of the soak the heap reading is the lowest sample since the request before; its growth is
the slope of its floor, as for the RSS. No allocator or native cache is in it, so a healthy
server's stays flat after the warm-up and a leak of 1 KB per request of Python objects shows as
1 KB. Exit status 0 when every request was answered, both slopes stayed under their bounds
(--max-slope-kb, --max-heap-growth-kb) and the server stopped cleanly. Linux only (RSS from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wyoming.client import AsyncTcpClient
from wyoming.event import Event
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.stats import percentile, slope  # noqa: E402
from tests.server_harness import (FIXTURES, ServerProcess, cloned_voice_file, running_server,  # noqa: E402
                                  server_env)

READ_TIMEOUT = 300.0
TEXTS = [
    "Hi.",
    "The front door has been open for ten minutes.",
    "Good morning! It is sunny today. Tomorrow it will rain.",
    "Dinner is ready. 🍝",
    "Guten Morgen, wie geht es dir?",
]
# One cycle of request kinds: mostly whole texts, some streams, a hang-up and a malformed request.
KINDS = ["whole"] * 6 + ["stream"] * 2 + ["hang-up", "malformed"]
# The healthy server's floor still rises ~4 KB per request after the default warm-up on the tiny
# checkpoint (native heap, not Python's; RELIABILITY.md), so a leak of 1 KB per request cannot be
# told from it yet; this bound passes the healthy server with margin and fails a leak of 16 KB.
MAX_SLOPE_KB = 16.0
# Freed tensors go back to the system instead of raising the heap's high-water mark (see above).
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072"}
FLOOR_BLOCK = 10  # requests per RSS floor (see growth_kb_per_request)
# A healthy server's Python heap floor moves well under this after the warm-up (RELIABILITY.md);
# a leak of 1 KB per request fails it.
MAX_HEAP_GROWTH_KB = 0.5
HEAP_TRACED_BY = "tests.traced_server"  # the server, with its Python heap sampled to $HEAP_TRACE_FILE


@dataclass
class Outcome:
    kind: str
    ok: bool
    seconds: float
    first_audio: float | None = None
    problem: str = ""


@dataclass
class Report:
    load: list[Outcome] = field(default_factory=list)
    load_seconds: float = 0.0
    soak: list[Outcome] = field(default_factory=list)
    soak_seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_after_warmup_mb: float = 0.0
    rss_samples_mb: list[float] = field(default_factory=list)  # after each request of the soak, in order
    rss_end_mb: float = 0.0
    heap_trace: list[tuple[float, float]] = field(default_factory=list)  # (time, traced MB), the whole run
    soak_started: float = 0.0  # time.time() when the soak (after the warm-up) began
    finish_times: list[float] = field(default_factory=list)  # time.time() after each request of the soak

    @property
    def growth_kb_per_request(self) -> float:
        return growth_kb_per_request(self.rss_samples_mb)

    @property
    def heap_samples_mb(self) -> list[float]:
        return heap_after_each(self.heap_trace, self.soak_started, self.finish_times)


def growth_kb_per_request(rss_samples_mb: list[float], block: int = FLOOR_BLOCK) -> float:
    """Least-squares slope, in KB per request, of the RSS floor against the request count. The RSS is
    sampled after every request; the floor is the lowest sample of each block of `block` requests,
    because the memory of the requests still in flight comes and goes, while a leak stays."""
    floors = [min(rss_samples_mb[start:start + block]) for start in range(0, len(rss_samples_mb) - block + 1, block)]
    centres = [start + (block - 1) / 2 for start in range(0, block * len(floors), block)]
    return 1024 * slope(centres, floors)


def read_heap_trace(path: Path) -> list[tuple[float, float]]:
    """The (time, traced MB) samples tests/traced_server.py wrote, in order; a last line still
    being written is left out."""
    if not path.exists():
        return []
    samples = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 2:
            samples.append((float(fields[0]), int(fields[1]) / 2**20))
    return samples


def heap_after_each(trace: list[tuple[float, float]], start: float, finish_times: list[float]) -> list[float]:
    """The heap after each request, in MB: the lowest sample since the request before finished (or
    since `start`), or when none fell in between, the last one before it finished. Like the RSS
    floor, the lowest of many samples leaves out what the requests in flight hold."""
    times = [moment for moment, _ in trace]
    readings = []
    for finished in finish_times:
        first, last = bisect.bisect_right(times, start), bisect.bisect_right(times, finished)
        between = [megabytes for _, megabytes in trace[first:last]]
        if between:
            readings.append(min(between))
        elif last:
            readings.append(trace[last - 1][1])
        start = finished
    return readings


def heap_at(trace: list[tuple[float, float]], moment: float) -> float:
    """The last heap sample at or before moment (the first one if none was), in MB; NaN for no trace."""
    if not trace:
        return math.nan
    index = bisect.bisect_right([sampled for sampled, _ in trace], moment)
    return trace[max(index - 1, 0)][1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def serving(args: argparse.Namespace, workdir: Path):
    """The server with one cloned voice, once ready; OMP_NUM_THREADS=1 and offline, as in the tests."""
    options = ["--model", args.model, "--design-model", "none", "--voices", str(cloned_voice_file(workdir, "soak")),
               "--data-dir", str(workdir / "data"), "--device", args.device, "--max-batch", str(args.max_batch),
               *args.server_args]
    env = server_env(**SERVER_ENV, HEAP_TRACE_FILE=str(heap_trace_file(workdir)))
    return running_server(options, workdir / "server.log", ready_timeout=600, env=env, module=args.server_module)


def heap_trace_file(workdir: Path) -> Path:
    return workdir / "heap-trace.txt"


def request_events(kind: str, text: str) -> tuple[list[Event], list[str]]:
    """What a request of this kind sends, and the closing events it must get (in order)."""
    if kind == "stream":
        words = text.split(" ")
        chunks = [SynthesizeChunk(text=word + " ").event() for word in words]
        return ([SynthesizeStart().event(), *chunks, Synthesize(text=text).event(), SynthesizeStop().event()],
                ["audio-start", "audio-stop", "synthesize-stopped"])
    if kind == "malformed":
        return [Event("synthesize", {"text": ["not", "a", "string"]})], ["error", "audio-start", "audio-stop"]
    return [Synthesize(text=text).event()], ["audio-start", "audio-stop"]


async def one_request(port: int, number: int, kind: str | None = None) -> Outcome:
    kind = kind or KINDS[number % len(KINDS)]
    text = TEXTS[number % len(TEXTS)]
    events, closing = request_events(kind, text)
    last = closing[-1]
    started = time.monotonic()
    first_audio = None
    seen: list[str] = []
    try:
        async with AsyncTcpClient("127.0.0.1", port) as client:
            for event in events:
                await client.write_event(event)
            while True:
                event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
                if event is None:
                    return Outcome(kind, False, time.monotonic() - started, first_audio, f"closed after {seen}")
                if event.type == "audio-chunk":
                    first_audio = first_audio or time.monotonic() - started
                    if kind == "hang-up":
                        return Outcome(kind, True, time.monotonic() - started, first_audio)
                    continue
                seen.append(event.type)
                if event.type == last:
                    break
    except (OSError, TimeoutError) as err:
        return Outcome(kind, False, time.monotonic() - started, first_audio, f"{type(err).__name__}: {err}")
    wanted = [kind for kind in seen if kind != "error"] == [kind for kind in closing if kind != "error"]
    ok = wanted and (("error" in seen) == ("error" in closing))
    return Outcome(kind, ok, time.monotonic() - started, first_audio, "" if ok else f"got {seen}")


async def many_at_once(port: int, connections: int) -> list[Outcome]:
    return list(await asyncio.gather(*(one_request(port, number, "whole") for number in range(connections))))


async def in_a_row(port: int, count: int, concurrency: int, finished) -> None:
    """count requests, concurrency at a time; finished(outcome) after each of them."""
    numbers = iter(range(count))

    async def worker() -> None:
        for number in numbers:
            finished(await one_request(port, number))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def soak(args: argparse.Namespace, server: ServerProcess, heap_file: Path) -> Report:
    """The load, then the warm-up, the soak and `concurrency` more requests as one unbroken run: the
    soak starts and ends with as many requests in flight as it keeps throughout (a pause before it, or
    its last requests finishing alone, would leave the Python heap's readings low at its ends)."""
    pid = server.process.pid
    report = Report(rss_start_mb=rss_mb(pid))
    started = time.monotonic()
    report.load = asyncio.run(many_at_once(server.port, args.connections))
    report.load_seconds = time.monotonic() - started
    warmed = 0
    report.rss_after_warmup_mb, report.soak_started = rss_mb(pid), time.time()  # with no warm-up

    def finished(outcome: Outcome) -> None:
        nonlocal warmed
        if warmed < args.warmup:
            warmed += 1
            if warmed == args.warmup:
                report.rss_after_warmup_mb, report.soak_started = rss_mb(pid), time.time()
            return
        if len(report.soak) < args.requests:
            report.soak.append(outcome)
            report.rss_samples_mb.append(rss_mb(pid))
            report.finish_times.append(time.time())

    asyncio.run(in_a_row(server.port, args.warmup + args.requests + args.concurrency, args.concurrency, finished))
    report.soak_seconds = report.finish_times[-1] - report.soak_started if report.finish_times else 0.0
    report.rss_end_mb = rss_mb(pid)
    time.sleep(0.1)  # the last requests' heap samples reach the file
    report.heap_trace = read_heap_trace(heap_file)
    return report


def summary(report: Report) -> dict:
    def phase(outcomes: list[Outcome], seconds: float) -> dict:
        failed = [outcome for outcome in outcomes if not outcome.ok]
        firsts = [outcome.first_audio for outcome in outcomes if outcome.first_audio is not None]
        totals = [outcome.seconds for outcome in outcomes if outcome.kind in ("whole", "stream")]
        return {"requests": len(outcomes), "failed": len(failed), "failures": [o.problem for o in failed[:5]],
                "seconds": round(seconds, 1), "first_audio_p50_s": round(percentile(firsts, 50), 3),
                "first_audio_p95_s": round(percentile(firsts, 95), 3),
                "total_p50_s": round(percentile(totals, 50), 3), "total_p95_s": round(percentile(totals, 95), 3)}

    return {"load": phase(report.load, report.load_seconds), "soak": phase(report.soak, report.soak_seconds),
            "kinds": {kind: sum(outcome.kind == kind for outcome in report.soak) for kind in dict.fromkeys(KINDS)},
            "rss_mb": {"start": round(report.rss_start_mb, 1), "after_warmup": round(report.rss_after_warmup_mb, 1),
                       "end": round(report.rss_end_mb, 1),
                       "max": round(max(report.rss_samples_mb + [report.rss_end_mb]), 1),
                       "samples": [round(value, 2) for value in report.rss_samples_mb]},
            "rss_growth_kb_per_request": round(report.growth_kb_per_request, 3),
            "heap_mb": heap_figures(report),
            "heap_growth_kb_per_request": heap_growth(report)}


def heap_figures(report: Report) -> dict | None:
    """The traced Python heap, in MB; None when the server was not traced."""
    if not report.heap_trace:
        return None
    trace = report.heap_trace
    return {"start": round(trace[0][1], 3), "after_warmup": round(heap_at(trace, report.soak_started), 3),
            "end": round(trace[-1][1], 3), "max": round(max(megabytes for _, megabytes in trace), 3),
            "samples": [round(value, 4) for value in report.heap_samples_mb]}


def heap_growth(report: Report) -> float | None:
    if not report.heap_trace:
        return None
    return round(growth_kb_per_request(report.heap_samples_mb), 3)


def print_summary(figures: dict, args: argparse.Namespace) -> None:
    load, soaked, rss = figures["load"], figures["soak"], figures["rss_mb"]
    print(f"load: {load['requests']} connections at once, {load['failed']} failed, {load['seconds']} s "
          f"(first audio p50 {load['first_audio_p50_s']} s, p95 {load['first_audio_p95_s']} s)")
    print(f"soak: {soaked['requests']} requests after {args.warmup} warm-up, {args.concurrency} at a time, "
          f"{soaked['failed']} failed, {soaked['seconds']} s; kinds {figures['kinds']}")
    print(f"      request p50 {soaked['total_p50_s']} s, p95 {soaked['total_p95_s']} s; "
          f"first audio p50 {soaked['first_audio_p50_s']} s, p95 {soaked['first_audio_p95_s']} s")
    print(f"rss: start {rss['start']} MB, after warm-up {rss['after_warmup']} MB, end {rss['end']} MB, "
          f"max {rss['max']} MB; growth after warm-up {figures['rss_growth_kb_per_request']} KB per request "
          f"(least squares over {len(rss['samples'])} samples; fails from {args.max_slope_kb} KB)")
    every = max(1, len(rss["samples"]) // 20)
    print(f"rss samples (every {every} requests): {rss['samples'][::every]}")
    heap = figures["heap_mb"]
    if heap is None:
        print(f"python heap: not traced (--server-module {args.server_module} writes no heap samples)")
    else:
        print(f"python heap: start {heap['start']} MB, after warm-up {heap['after_warmup']} MB, end {heap['end']} MB, "
              f"max {heap['max']} MB; growth after warm-up {figures['heap_growth_kb_per_request']} KB per request "
              f"(least squares over {len(heap['samples'])} samples; fails from {args.max_heap_growth_kb} KB)")
        print(f"heap samples (every {every} requests): {heap['samples'][::every]}")
    for problem in load["failures"] + soaked["failures"]:
        print(f"failure: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(FIXTURES / "tiny-base"), help="Base checkpoint (default: tiny test one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64, help="load: connections at once (default 64)")
    parser.add_argument("--warmup", type=int, default=300,
                        help="requests before memory is sampled, in the same run: the allocator settles "
                             "(default 300)")
    parser.add_argument("--requests", type=int, default=500, help="soak: requests after the warm-up (default 500)")
    parser.add_argument("--concurrency", type=int, default=4, help="soak: requests in flight (default 4)")
    parser.add_argument("--max-slope-kb", type=float, default=MAX_SLOPE_KB,
                        help=f"RSS growth per request that fails the run, in KB (default {MAX_SLOPE_KB})")
    parser.add_argument("--max-heap-growth-kb", type=float, default=MAX_HEAP_GROWTH_KB,
                        help=f"Python heap growth per request that fails the run, in KB (default {MAX_HEAP_GROWTH_KB})")
    parser.add_argument("--server-module", default=HEAP_TRACED_BY,
                        help=f"python -m MODULE to run (default {HEAP_TRACED_BY}: the server, its heap traced; "
                             "tests.leaky_server injects a leak; wyoming_qwen_tts: untraced, no heap figures)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    parser.add_argument("server_args", nargs="*", help="more server options, after --")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qwen-tts-soak-") as workdir:
        with serving(args, Path(workdir)) as server:
            figures = summary(soak(args, server, heap_trace_file(Path(workdir))))
        code = server.process.returncode
        log = server.log
    print_summary(figures, args)
    tracebacks = log.count("Traceback")
    print(f"server: exit code {code}, {tracebacks} tracebacks in its log")
    if args.json:
        print(json.dumps({**figures, "server_exit_code": code, "server_tracebacks": tracebacks}))
    failed = figures["load"]["failed"] + figures["soak"]["failed"]
    return 0 if not failed and memory_bounded(figures, args) and code == 0 and not tracebacks else 1


def memory_bounded(figures: dict, args: argparse.Namespace) -> bool:
    """Both growths under their bounds (the heap's only when it was traced)."""
    heap = figures["heap_growth_kb_per_request"]
    return figures["rss_growth_kb_per_request"] < args.max_slope_kb and (heap is None or heap < args.max_heap_growth_kb)


if __name__ == "__main__":
    sys.exit(main())

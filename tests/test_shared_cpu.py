"""A CPU shared with other work (issue 17 item 2), on the real server: with 2 busy processes beside
it, 8 concurrent requests all finish with audio and none is cut by the stall rule. The server runs
with the thread count it picks by itself (no OMP_NUM_THREADS=1, unlike the other server tests): a
batch that kept a team of spinning threads on CPUs it no longer had stalled here. Speed under
load is measured by benchmarks/shared_cpu_bench.py (BENCHMARKS.md), not here."""

import asyncio
import subprocess
import sys

import pytest

from .server_harness import FIXTURES, ServerProcess, cloned_voice_file, long_speaking_checkpoint, server_env, synthesize

pytestmark = pytest.mark.load
BUSY_PROCESSES = 2
REQUESTS = 8
STALL_SECONDS = 10  # a batch that collapses goes far longer without audio; a steady one, well under a second
BUSY_LOOP = "import time\nend = time.monotonic() + 900\nwhile time.monotonic() < end:\n    pass\n"
TEXT = "The front door is locked."  # with the never-ending checkpoint, a few seconds of audio each


@pytest.fixture
def busy_processes():
    """Busy loops beside the server, killed at the end (and ending by themselves after 15 minutes)."""
    processes = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(BUSY_PROCESSES)]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.fixture
def server(tmp_path):
    model = long_speaking_checkpoint(FIXTURES / "tiny-base", tmp_path / "long-base")  # every request runs long
    env = server_env()
    del env["OMP_NUM_THREADS"]  # the thread count the server picks by itself, as deployed
    process = ServerProcess(["--model", str(model), "--design-model", "none", "--device", "cpu",
                             "--voices", str(cloned_voice_file(tmp_path)), "--data-dir", str(tmp_path / "data"),
                             "--stall-timeout", str(STALL_SECONDS)], tmp_path / "server.log", env=env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


async def requests_at_once(port: int) -> list:
    return await asyncio.gather(*(synthesize(port, TEXT) for _ in range(REQUESTS)))


def test_8_concurrent_requests_beside_2_busy_processes_all_finish_with_audio(server, busy_processes):
    answers = asyncio.run(requests_at_once(server.port))
    assert all(process.poll() is None for process in busy_processes)  # the CPUs were shared throughout
    assert [answer.closing_types() for answer in answers] == [["audio-start", "audio-stop"]] * REQUESTS, server.log
    assert all(answer.seconds > 1.0 for answer in answers), [answer.seconds for answer in answers]
    assert "stalled" not in server.log

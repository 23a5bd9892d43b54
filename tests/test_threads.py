"""A thread that computed briefly gives its OpenMP team back (engine/threads.py), so the batch
thread's team is the only one and its workers keep spinning between the small kernels of a step."""

import os
import threading
import time

import pytest
import torch

from wyoming_qwen_tts.engine.threads import _find_pause, release_thread_team

needs_team = pytest.mark.skipif(torch.get_num_threads() < 2 or _find_pause() is None,
                                reason="needs libgomp and at least 2 intra-op threads (a team with a worker)")


def process_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def compute() -> None:
    torch.ones(512, 512) @ torch.ones(512, 512)  # a parallel region: this thread gets its team


def settled_threads(expected_below: int, seconds: float = 5.0) -> int:
    deadline = time.monotonic() + seconds
    while (count := process_threads()) >= expected_below and time.monotonic() < deadline:
        time.sleep(0.01)
    return count


@needs_team
def test_releasing_ends_the_calling_threads_team_workers():
    counts = {}

    def work():
        compute()
        counts["with team"] = process_threads()
        assert release_thread_team()
        counts["released"] = settled_threads(counts["with team"])
        compute()  # computing again makes a new team
        counts["again"] = process_threads()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=30)
    assert counts["released"] <= counts["with team"] - (torch.get_num_threads() - 1)
    assert counts["again"] == counts["with team"]


@needs_team
def test_the_scheduler_leaves_no_team_in_the_thread_that_asked(base_tts, icl_voice):
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=256)
    counts = {}

    def request():
        compute()
        counts["before"] = process_threads()
        chunks = scheduler.stream("Hello there.", icl_voice, max_frames=3, min_frames=3)  # builds the prompt here
        counts["after"] = settled_threads(counts["before"])
        list(chunks)

    try:
        thread = threading.Thread(target=request)
        thread.start()
        thread.join(timeout=60)
    finally:
        scheduler.close()
    assert counts["after"] < counts["before"]

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


def thread_ids() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/task")}


def compute() -> None:
    torch.ones(512, 512) @ torch.ones(512, 512)  # a parallel region: this thread gets its team


def team_made_by(work) -> set[int]:
    """The threads that appeared while `work` ran on the calling thread: its OpenMP team's workers.
    (Ids, not a count: other tests' threads may come and go meanwhile.)"""
    before = thread_ids()
    work()
    return thread_ids() - before


def all_gone(ids: set[int], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while ids & thread_ids() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not ids & thread_ids()


def run_in_thread(work) -> None:
    errors = []

    def target():
        try:
            work()
        except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(err)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    if errors:
        raise errors[0]


@needs_team
def test_releasing_ends_the_calling_threads_team_workers():
    def work():
        workers = team_made_by(compute)
        assert len(workers) >= torch.get_num_threads() - 1
        assert release_thread_team()
        assert all_gone(workers)
        assert len(team_made_by(compute)) >= torch.get_num_threads() - 1  # computing again makes a new team

    run_in_thread(work)


@needs_team
def test_the_scheduler_leaves_no_team_in_the_thread_that_asked(base_tts, icl_voice):
    from wyoming_qwen_tts.engine.scheduler import BatchScheduler

    scheduler = BatchScheduler(base_tts, max_rows=2, max_len=256)

    def request():
        workers = team_made_by(compute)
        assert len(workers) >= torch.get_num_threads() - 1
        chunks = scheduler.stream("Hello there.", icl_voice, max_frames=3, min_frames=3)  # builds the prompt here
        assert all_gone(workers)
        assert len(list(chunks)) > 0

    try:
        list(scheduler.stream("Hello.", icl_voice, max_frames=2, min_frames=2))  # the batch thread's team, made now
        run_in_thread(request)
    finally:
        scheduler.close()

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


class FakeMachine:
    """A clock and a count of the other work running, both set by the test."""

    def __init__(self, elsewhere: int = 0) -> None:
        from wyoming_qwen_tts.engine.threads import Sharers

        self.now, self.elsewhere, self.set_to = 0.0, elsewhere, []
        self.sharers = Sharers()  # this machine's process: its computing threads

    def share(self, most: int = 2, cpus: int = 2, set_to: list | None = None):
        from wyoming_qwen_tts.engine.threads import ThreadShare

        return ThreadShare(most=most, cpus=cpus, count_elsewhere=lambda: self.elsewhere,
                           set_threads=(self.set_to if set_to is None else set_to).append, clock=lambda: self.now,
                           sharers=self.sharers)

    def steps(self, share, seconds: float, step_s: float = 0.1) -> None:
        for _ in range(round(seconds / step_s)):
            share.before_step()
            self.now += step_s


def test_the_batch_computes_with_every_thread_on_a_quiet_machine():
    machine = FakeMachine(elsewhere=0)
    share = machine.share()
    machine.steps(share, 5)
    assert machine.set_to == [2] and share.threads == 2


def test_other_work_takes_threads_away_and_gives_them_back_when_it_ends():
    machine = FakeMachine(elsewhere=0)
    share = machine.share(most=4, cpus=4)
    machine.steps(share, 2)
    machine.elsewhere = 2
    machine.steps(share, 2.5)
    assert share.threads == 2
    machine.elsewhere = 9  # more work than CPUs: one thread, never none
    machine.steps(share, 2.5)
    assert share.threads == 1
    machine.elsewhere = 0
    machine.steps(share, 2.5)
    assert machine.set_to == [4, 2, 1, 4]


def test_the_first_step_already_leaves_busy_cpus_alone():
    machine = FakeMachine(elsewhere=2)
    share = machine.share()
    share.before_step()
    assert machine.set_to == [1]


def test_a_moment_of_other_work_changes_nothing():
    machine = FakeMachine(elsewhere=0)
    share = machine.share()
    machine.steps(share, 1.5)
    machine.elsewhere = 2
    share.before_step()  # one sample in a window of five
    machine.now += 0.2
    machine.elsewhere = 0
    machine.steps(share, 3)
    assert machine.set_to == [2]


def test_two_computing_threads_of_one_process_share_the_cpus_and_the_survivor_takes_them_back():
    """E.g. the batch and a sentence too long for a batch row, or two models' batches: the other-work
    count leaves this process out, so each must leave out the other's threads itself."""
    machine = FakeMachine(elsewhere=0)
    batch_set, alone_set = [], []
    batch, alone = machine.share(set_to=batch_set), machine.share(set_to=alone_set)
    machine.steps(batch, 2)
    assert batch.threads == 2
    for _ in range(20):  # both step for 2 s
        batch.before_step()
        alone.before_step()
        machine.now += 0.1
    assert alone_set == [1] and batch.threads == 1
    machine.steps(batch, 2 + 1.5)  # the sentence ended: once its last step is old, the batch takes both
    assert batch_set == [2, 1, 2]


def test_a_fixed_thread_count_is_set_on_the_batch_thread_and_kept():
    from wyoming_qwen_tts.engine.threads import thread_policy

    seen, threads_now = [], torch.get_num_threads()

    def work():
        before_step = thread_policy("1")
        before_step()
        seen.append(torch.get_num_threads())
        torch.set_num_threads(threads_now)  # torch keeps the count for threads made later too

    run_in_thread(work)
    assert seen == [1]


def test_the_other_work_count_leaves_this_process_out():
    from wyoming_qwen_tts.engine.threads import running_elsewhere

    elsewhere = running_elsewhere()
    assert elsewhere is not None and elsewhere >= 0


def test_the_server_takes_threads_from_option_and_environment(monkeypatch, tmp_path):
    from wyoming_qwen_tts.__main__ import build_parser, check_config

    from .server_harness import FIXTURES, cloned_voice_file

    base = ["--model", str(FIXTURES / "tiny-base"), "--design-model", "none",
            "--voices", str(cloned_voice_file(tmp_path)), "--data-dir", str(tmp_path)]
    assert check_config(build_parser().parse_args(base))[2].threads == "auto"
    assert check_config(build_parser().parse_args([*base, "--threads", "3"]))[2].threads == "3"
    monkeypatch.setenv("QWEN_TTS_THREADS", "1")
    assert check_config(build_parser().parse_args(base))[2].threads == "1"
    for wrong in ("0", "many", "-2"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, "--threads", wrong])


def test_a_stream_generated_alone_steps_like_a_batch_thread(base_tts, icl_voice):
    """Its thread calls before_step before the prompt and before each frame step, as the batch
    thread does (its thread count and the stall rule's progress)."""
    calls = []
    chunks = list(base_tts.stream("Hello there.", icl_voice, max_frames=3, min_frames=3,
                                  before_step=lambda: calls.append(threading.get_ident())))
    assert sum(chunk.codes.shape[0] for chunk in chunks) == 3
    assert calls == [threading.get_ident()] * 4  # the prompt, then 3 steps


def test_a_sentence_too_long_for_a_batch_row_gets_a_before_step_of_its_own(base_tts, icl_voice):
    from types import SimpleNamespace

    from wyoming_qwen_tts.engine.options import SpeechOptions
    from wyoming_qwen_tts.engine.scheduler import PromptTooLong
    from wyoming_qwen_tts.synthesis import _open_stream

    class FullScheduler:
        def stream(self, *args, **kwargs):
            raise PromptTooLong("the prompt and text take more positions than a batch row holds: split the text")

    made, steps = [], []

    def alone_step():
        made.append(threading.get_ident())
        return lambda: steps.append(threading.get_ident())

    voice = SimpleNamespace(model=base_tts, prompt=icl_voice)
    chunks = list(_open_stream(voice, FullScheduler(), "Hello there.", "auto", threading.Event(),
                               SpeechOptions(max_frames=2), alone_step))
    assert sum(chunk.codes.shape[0] for chunk in chunks) >= 1
    assert len(made) == 1 and len(steps) >= 2 and set(steps) == {threading.get_ident()}

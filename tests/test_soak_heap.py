"""The soak's Python heap measure (tools/soak.py, tests/traced_server.py) on synthetic traces, and
the tracing wrappers' own start-up; the soak against the real server is tests/test_server_load.py."""

import subprocess
import sys

import numpy as np
import pytest

from tools.soak import heap_after_each, heap_at, read_heap_trace

from .server_harness import REPO, server_env


def test_the_trace_file_is_read_in_megabytes_without_a_half_written_last_line(tmp_path):
    path = tmp_path / "heap.txt"
    path.write_text("100.0000 1048576\n100.0200 2097152\n100.04")
    assert read_heap_trace(path) == [(100.0, 1.0), (100.02, 2.0)]
    assert read_heap_trace(tmp_path / "never-written.txt") == []


def test_the_heap_after_a_request_is_the_lowest_sample_since_the_request_before():
    trace = [(1.0, 5.0), (2.0, 3.0), (3.0, 4.0), (4.0, 9.0), (5.0, 7.0)]
    assert heap_after_each(trace, 0.5, [2.5, 4.5, 5.5]) == [3.0, 4.0, 7.0]


def test_with_no_sample_in_between_the_last_one_before_counts():
    trace = [(1.0, 5.0), (2.0, 3.0)]
    assert heap_after_each(trace, 0.5, [2.2, 2.4, 2.6]) == [3.0, 3.0, 3.0]
    assert heap_after_each(trace, 0.0, [0.5]) == []  # nothing sampled yet: no reading


def test_the_heap_at_a_moment_is_the_last_sample_up_to_it():
    trace = [(1.0, 5.0), (2.0, 3.0)]
    assert (heap_at(trace, 1.5), heap_at(trace, 2.0), heap_at(trace, 0.1)) == (5.0, 3.0, 5.0)
    assert np.isnan(heap_at([], 1.0))


def heap_run(requests: int, leak_kb: float, seed: int, in_flight_mb: float = 0.06):
    """A traced heap as the soak sees it: 8 requests in flight, finishing every 0.1 s or so, each
    holding up to `in_flight_mb` while it runs (the real server's 8 hold ~300 KB), sampled every
    20 ms, over a flat floor plus any leak."""
    rng = np.random.default_rng(seed)
    finish_times = list(np.cumsum(rng.uniform(0.02, 0.18, requests)))
    sample_times = np.arange(0.0, finish_times[-1] + 0.02, 0.02)
    finished_before = np.searchsorted(finish_times, sample_times)
    in_flight = rng.uniform(0, in_flight_mb, (sample_times.size, 8)).sum(axis=1)
    heap = 150 + in_flight + finished_before * leak_kb / 1024
    return list(zip(sample_times, heap)), finish_times


@pytest.mark.parametrize("seed", range(20))
def test_the_heap_slope_tells_a_1_kb_leak_from_a_flat_heap_in_the_ci_soaks_180_requests(seed):
    from tools.soak import growth_kb_per_request

    trace, finish_times = heap_run(180, 0.0, seed)
    assert abs(growth_kb_per_request(heap_after_each(trace, 0.0, finish_times))) < 0.25
    trace, finish_times = heap_run(180, 1.0, seed)
    assert growth_kb_per_request(heap_after_each(trace, 0.0, finish_times)) > 0.75


@pytest.mark.parametrize("module", ["tests.traced_server", "tests.leaky_server"])
def test_the_wrappers_trace_the_real_server_and_sample_its_heap_to_the_file(module, tmp_path):
    path = tmp_path / "heap.txt"
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120,
                            cwd=REPO, env=server_env(HEAP_TRACE_FILE=str(path), HEAP_TRACE_INTERVAL="0.001"))
    assert result.returncode == 0 and "--max-batch" in result.stdout, result.stderr  # the server's own options
    trace = read_heap_trace(path)
    assert trace and all(megabytes > 0 for _, megabytes in trace)

"""One OpenMP thread team at a time on a CPU.

PyTorch's CPU kernels run on OpenMP (libgomp in the Linux wheels), which gives every thread that
computes a team of its own and keeps it after use. Worker threads of a team spin between
parallel regions, and a decode step is thousands of small regions, so it is only fast while they
spin. libgomp spins only while the threads of all teams fit the CPUs; once a second thread has a
team (the main thread that loaded the model, a request's worker thread that built its prompt, a
codec thread), every team nearly stops spinning: each small product takes far longer, and
a stream through the server ran well slower than the same stream on the main thread (BENCHMARKS.md,
"Through the server's batch: one OpenMP team at a time").

So threads that compute only briefly release their team when done (`release_thread_team`), and the
batch thread keeps the only one.

The same holds across processes: a team is only fast while each of its threads has a CPU, and on a
CPU shared with other work it stalled outright (issue 17 item 2). So the batch thread's team is
sized to the CPUs other work leaves free (`ThreadShare`, --threads auto)."""

from __future__ import annotations

import ctypes
import glob
import logging
import math
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch

_LOGGER = logging.getLogger(__name__)
_OMP_PAUSE_SOFT = 1
_lock = threading.Lock()
_pause = None  # omp_pause_resource_all of the OpenMP runtime PyTorch uses, once found
_looked = False


def _find_pause():
    """libgomp's omp_pause_resource_all (OpenMP 5.0), from the copy PyTorch ships, else the system's."""
    candidates = sorted(glob.glob(os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp*.so*")))
    for name in [*candidates, "libgomp.so.1"]:
        try:
            function = ctypes.CDLL(name).omp_pause_resource_all
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
        return function
    return None


def release_thread_team() -> bool:
    """Frees the calling thread's OpenMP team (its worker threads exit; a later computation on this
    thread makes a new one). True if released; False where PyTorch does not use libgomp (nothing
    to do there) or inside a parallel region."""
    global _pause, _looked
    with _lock:
        if not _looked:
            _pause, _looked = _find_pause(), True
            if _pause is None:
                _LOGGER.debug("No libgomp found: OpenMP thread teams are left as they are")
    return _pause is not None and _pause(_OMP_PAUSE_SOFT) == 0


# -- how many threads the batch computes with, on a CPU shared with other work ----------------------

SAMPLE_EVERY_S = 0.2  # not every step: a sample reads /proc once per thread of this process
DECIDE_EVERY_S = 1.0


def usable_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup CPU quota (a container's --cpus)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else cpus


def _cgroup_quota() -> float | None:
    """CPUs' worth of time a cgroup lets this process have; None without a limit."""
    try:
        quota, period = _read("/sys/fs/cgroup/cpu.max").split()[:2]  # cgroup v2
    except (OSError, ValueError):
        try:
            quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").strip()  # cgroup v1
            period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us").strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def running_elsewhere() -> int | None:
    """Threads running or ready to run on this machine now, this process's own left out: the other
    work the CPUs are shared with. None where /proc cannot tell."""
    try:
        running, _ = _read("/proc/loadavg").split()[3].split("/")
        return max(0, int(running) - _running_here())
    except (OSError, ValueError, IndexError):
        return None


def _read(path: str) -> str:
    with open(path) as file:
        return file.read()


def _running_here() -> int:
    count = 0
    for task in os.listdir("/proc/self/task"):
        try:
            stat = _read(f"/proc/self/task/{task}/stat")
        except OSError:  # it ended meanwhile
            continue
        count += stat[stat.rindex(")") + 2] == "R"
    return count


# A computing thread counts as active for the others this long after its last step.
ACTIVE_FOR_S = 2.0


class Sharers:
    """The computing threads of this process (a batch per model, a sentence generated alone) with
    the thread counts they set: the other-work count leaves this process out, so each ThreadShare
    also leaves out the threads of the others that computed lately."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[int, tuple[float, int]] = {}  # id -> (when it last stepped, its threads)

    def report(self, key: int, now: float, threads: int) -> None:
        with self._lock:
            self._last[key] = (now, threads)
            for stale in [k for k, (at, _) in self._last.items() if now - at > 10 * ACTIVE_FOR_S]:
                del self._last[stale]

    def others(self, key: int, now: float) -> int:
        with self._lock:
            return sum(threads for k, (at, threads) in self._last.items() if k != key and now - at <= ACTIVE_FOR_S)


PROCESS_SHARERS = Sharers()


class ThreadShare:
    """The batch thread's intra-op threads follow the CPUs other work leaves free (from `most` down to
    one). An OpenMP team is only fast while each of its threads has a CPU to itself: the threads meet
    at a barrier after every small parallel region, so one that waits for a CPU holds the others, and
    under other work a team ran many times slower than one thread (BENCHMARKS.md, "CPU shared with
    other work"). A thread alone just gets its share.

    Call `before_step` on the computing thread (torch's thread count is per thread): every
    SAMPLE_EVERY_S it counts the other work running, every DECIDE_EVERY_S it sets the thread count
    to the CPUs the median count leaves free, less the threads of this process's other computing
    threads (Sharers)."""

    def __init__(self, most: int, cpus: int | None = None, count_elsewhere=running_elsewhere,
                 set_threads=None, clock=time.monotonic, sharers: Sharers = PROCESS_SHARERS) -> None:
        self.most, self.cpus = most, cpus or os.cpu_count() or 1
        self._count_elsewhere, self._clock, self._sharers = count_elsewhere, clock, sharers
        self._set_threads = set_threads or torch.set_num_threads
        self.threads: int | None = None  # as last set here
        self._samples: list[int] = []
        self._sampled_at = self._decided_at = -float("inf")

    def before_step(self) -> None:
        now = self._clock()
        if now - self._sampled_at >= SAMPLE_EVERY_S:
            self._sampled_at = now
            elsewhere = self._count_elsewhere()
            if elsewhere is not None:
                self._samples.append(elsewhere)
        if self.threads is None:  # the first step: from one sample, as a team on busy CPUs stalls at once
            self._use(self.threads_for(self._samples[0] if self._samples else 0, now), now)
        elif now - self._decided_at >= DECIDE_EVERY_S and self._samples:
            self._use(self.threads_for(statistics.median_low(self._samples), now), now)
        self._sharers.report(id(self), now, self.threads)

    def threads_for(self, elsewhere: int, now: float) -> int:
        """The threads to compute with beside `elsewhere` runnable threads of other processes and the
        threads of this process's other computing threads (as of `now`)."""
        ours = self._sharers.others(id(self), now)
        return max(1, min(self.most, self.cpus - elsewhere - ours))

    def _use(self, threads: int, now: float) -> None:
        self._samples.clear()
        self._decided_at = now
        if threads != self.threads:
            if self.threads is not None:
                _LOGGER.debug("Computing with %d thread(s): %s", threads,
                              "other work shares the CPUs" if threads < self.most else "the CPUs are free again")
            self._set_threads(threads)
            self.threads = threads


def thread_policy(threads: str) -> Callable[[], None]:
    """The batch thread's before-step call for --threads: "auto" follows the free CPUs (ThreadShare,
    at most the threads torch starts with: OMP_NUM_THREADS or the cores), a number keeps to it."""
    if threads == "auto":
        return ThreadShare(most=min(torch.get_num_threads(), usable_cpus())).before_step
    fixed = int(threads)

    def keep_fixed() -> None:
        if torch.get_num_threads() != fixed:
            torch.set_num_threads(fixed)

    return keep_fixed

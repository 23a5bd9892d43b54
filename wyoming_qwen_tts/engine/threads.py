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
batch thread keeps the only one."""

from __future__ import annotations

import ctypes
import glob
import logging
import os
import threading

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

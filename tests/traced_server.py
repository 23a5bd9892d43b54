"""The real server with its Python heap traced, for the soak: tracemalloc runs from before the
server is imported, and a daemon thread appends `TIME BYTES` (time.time(), the traced bytes now)
to the file named by $HEAP_TRACE_FILE every $HEAP_TRACE_INTERVAL seconds (default 0.02), and runs
a full garbage collection every $HEAP_TRACE_COLLECT seconds (default 1). The server itself gains no
hook. Run as `python -m tests.traced_server SERVER-OPTIONS` (tools/soak.py runs it by default);
tests/leaky_server.py builds on it.

Python's heap, unlike the RSS, has no allocator high-water mark or native caches in it (torch's CPU
tensors are not traced; numpy's arrays are), so a leak of Python objects shows in it byte for byte.
What else moves it: the requests in flight (the soak takes the lowest sample), and garbage in
reference cycles, which the server's own collections free only now and then (a saw-tooth of
~300 KB over ~20 requests, 8 at a time); the collections here free it every second instead."""

import gc
import os
import threading
import time
import tracemalloc

DEFAULT_INTERVAL = 0.02
DEFAULT_COLLECT = 1.0


def _write_heap(path: str, interval: float, collect_every: float) -> None:
    collected = time.monotonic()
    with open(path, "a", buffering=1) as out:  # a line at a time: the soak reads it while we run
        while True:
            if time.monotonic() - collected >= collect_every:
                gc.collect()
                collected = time.monotonic()
            out.write(f"{time.time():.4f} {tracemalloc.get_traced_memory()[0]}\n")
            time.sleep(interval)


def start_tracing() -> None:
    """Trace from now on; sample into $HEAP_TRACE_FILE when it is set."""
    tracemalloc.start()
    path = os.environ.get("HEAP_TRACE_FILE")
    if path:
        interval = float(os.environ.get("HEAP_TRACE_INTERVAL", DEFAULT_INTERVAL))
        collect_every = float(os.environ.get("HEAP_TRACE_COLLECT", DEFAULT_COLLECT))
        threading.Thread(target=_write_heap, args=(path, interval, collect_every), name="heap-trace",
                         daemon=True).start()


start_tracing()

from wyoming_qwen_tts import __main__ as server  # noqa: E402 - traced from its first import

if __name__ == "__main__":
    server.run()

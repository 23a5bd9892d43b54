"""Copies from host memory to the device the model runs on, the process's side streams, and the
lock CUDA graph captures take."""

from __future__ import annotations

import threading

import torch

# Held around every CUDA graph capture and the device-wide synchronisation before it (the step's
# graphs in runners.py, the codec's in codec_slots.py). torch.cuda.graph captures on one side
# stream shared by the whole process, and a stream already capturing cannot begin another capture
# (cudaStreamBeginCapture), nor may a device be synchronised while a stream of it is capturing: the
# batch thread, the codec thread and a single stream's thread each capture graphs of their own.
CAPTURE_LOCK = threading.Lock()


def release_cached_memory(device: torch.device) -> None:
    """The caching allocator's unused blocks on a GPU handed back, never while another thread
    captures a graph: emptying the cache synchronises, which PyTorch asserts no capture is under
    way for (CUDACachingAllocator's synchronize_and_free_events)."""
    if torch.device(device).type == "cuda":
        with CAPTURE_LOCK:
            torch.cuda.empty_cache()


# The side streams of each device, one per purpose for the whole process: torch.cuda.Stream() hands
# out PyTorch's pool of 32 streams in turn, so a stream made per model load (again after every idle
# unload) would in time be the very stream torch.cuda.graph captures on.
_SIDE_STREAMS: dict[tuple[str, torch.device], torch.cuda.Stream] = {}
_SIDE_STREAMS_LOCK = threading.Lock()


def side_stream(purpose: str, device: torch.device) -> torch.cuda.Stream:
    """The process's CUDA stream for `purpose` ("prompts", "codec") on `device`, made once."""
    key = (purpose, torch.device(device))
    with _SIDE_STREAMS_LOCK:
        if key not in _SIDE_STREAMS:
            _SIDE_STREAMS[key] = torch.cuda.Stream(device=device)
        return _SIDE_STREAMS[key]


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`. From host to a GPU through pinned memory, asynchronously: a pageable
    copy would make the host wait until the stream has run everything queued before it (the caching
    host allocator keeps the pinned block until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)

"""Copies from host memory to the device the model runs on."""

from __future__ import annotations

import torch


def to_device(tensor: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`tensor` on `device`. From host to a GPU through pinned memory, asynchronously: a pageable
    copy would make the host wait until the stream has run everything queued before it (the caching
    host allocator keeps the pinned block until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)

"""Audio out: float samples -> 16-bit PCM, and speed changes that keep the pitch (streamable WSOLA)."""

from __future__ import annotations

import numpy as np

from .engine import SAMPLE_RATE  # torch-free constant
from .engine.options import MAX_SPEED, MIN_SPEED  # noqa: F401 (re-exported)

SAMPLE_WIDTH = 2  # bytes: 16-bit PCM
CHANNELS = 1


def to_pcm16(samples: np.ndarray) -> bytes:
    """Little-endian signed 16-bit PCM of float samples in [-1, 1] (clipped, rounded)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    return np.round(clipped * 32767.0).astype("<i2").tobytes()


def pcm16_seconds(pcm: bytes, rate: int = SAMPLE_RATE) -> float:
    return len(pcm) / (SAMPLE_WIDTH * CHANNELS * rate)


class SpeedChanger:
    """Time-stretches a mono stream chunk by chunk; speed > 1 is faster. Pitch is kept (WSOLA).

    speed 1.0 passes the samples through untouched. Otherwise the output lags the input by about
    one analysis frame (43 ms at 24 kHz), which flush() releases at the end of the stream."""

    def __init__(self, speed: float = 1.0) -> None:
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ValueError(f"speed must be between {MIN_SPEED} and {MAX_SPEED}, not {speed}")
        self.speed = float(speed)
        self._tsm = None
        if self.speed != 1.0:
            from audiotsm import wsola

            self._tsm = wsola(channels=CHANNELS, speed=self.speed)

    @property
    def passthrough(self) -> bool:
        return self._tsm is None

    def process(self, samples: np.ndarray) -> np.ndarray:
        if self._tsm is None:
            return samples
        from audiotsm.io.array import ArrayReader, ArrayWriter

        reader = ArrayReader(np.asarray(samples, dtype=np.float64)[np.newaxis, :])
        writer = ArrayWriter(channels=CHANNELS)
        # The loop of audiotsm's TSM.run without the final flush: consume everything that was
        # given, emit everything that is ready, keep the tail for the next chunk.
        finished = False
        while not (finished and reader.empty):
            self._tsm.read_from(reader)
            _, finished = self._tsm.write_to(writer)
        return writer.data[0].astype(np.float32)

    def flush(self) -> np.ndarray:
        if self._tsm is None:
            return np.zeros(0, dtype=np.float32)
        from audiotsm.io.array import ArrayWriter

        writer = ArrayWriter(channels=CHANNELS)
        finished = False
        while not finished:
            _, finished = self._tsm.flush_to(writer)
        return writer.data[0].astype(np.float32)

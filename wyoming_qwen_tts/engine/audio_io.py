"""Reference audio in: any file soundfile reads, any sample rate, mixed down to mono."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MIN_REFERENCE_SECONDS = 0.25
MAX_REFERENCE_SECONDS = 60.0



class ReferenceAudioError(ValueError):
    """Reference audio that cannot be used, with a message naming the file and the problem."""


def read_audio(source: str | os.PathLike | tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) from a path or an (array, rate) pair.

    Stereo and multichannel audio is averaged, as the official loader does.
    """
    if isinstance(source, tuple):
        samples, rate = np.asarray(source[0], dtype=np.float32), int(source[1])
        name = "reference array"
        if samples.ndim == 2:  # (samples, channels), as soundfile returns it
            samples = samples.mean(axis=-1)
    else:
        import soundfile as sf

        name = str(source)
        if not Path(source).is_file():
            raise ReferenceAudioError(f"reference audio {name} does not exist")
        try:
            data, rate = sf.read(str(source), dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise ReferenceAudioError(f"reference audio {name} is not a readable audio file: {err}") from err
        samples = data.mean(axis=1)
    if samples.ndim != 1:
        raise ReferenceAudioError(f"{name}: expected mono or multichannel audio, got shape {samples.shape}")
    if rate <= 0:
        raise ReferenceAudioError(f"{name}: invalid sample rate {rate}")
    if not np.all(np.isfinite(samples)):
        raise ReferenceAudioError(f"{name}: contains NaN or infinite samples")
    seconds = samples.size / rate
    if seconds < MIN_REFERENCE_SECONDS:
        raise ReferenceAudioError(f"{name}: {seconds:.2f} s is too short for a voice reference "
                                  f"(at least {MIN_REFERENCE_SECONDS} s, 3-15 s recommended)")
    if seconds > MAX_REFERENCE_SECONDS:
        raise ReferenceAudioError(f"{name}: {seconds:.1f} s is too long for a voice reference "
                                  f"(at most {MAX_REFERENCE_SECONDS:.0f} s, 3-15 s recommended)")
    if float(np.max(np.abs(samples))) == 0.0:
        raise ReferenceAudioError(f"{name}: the recording is silent")
    return samples.astype(np.float32, copy=False), rate


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """soxr high quality, the resampler librosa (and so the official code) uses by default."""
    if rate == target:
        return samples
    import soxr

    return soxr.resample(samples, rate, target, quality="HQ").astype(np.float32, copy=False)

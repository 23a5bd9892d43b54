"""PCM conversion and pitch-keeping speed changes."""

import numpy as np
import pytest

from wyoming_qwen_tts.audio import SpeedChanger, pcm16_seconds, to_pcm16

RATE = 24000


def tone(seconds: float, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / RATE)[np.argmax(spectrum)])


def stretch_in_chunks(samples: np.ndarray, speed: float, chunk: int = 1920 * 3) -> np.ndarray:
    changer = SpeedChanger(speed)
    parts = [changer.process(samples[start:start + chunk]) for start in range(0, samples.size, chunk)]
    return np.concatenate([*parts, changer.flush()])


def test_pcm16_is_little_endian_clipped_and_rounded():
    pcm = to_pcm16(np.array([0.0, 1.0, -1.0, 2.0, -3.0, 0.5, 1e-6], dtype=np.float32))
    values = np.frombuffer(pcm, dtype="<i2")
    assert values.tolist() == [0, 32767, -32767, 32767, -32767, 16384, 0]
    assert pcm[2:4] == b"\xff\x7f"
    assert pcm16_seconds(to_pcm16(np.zeros(RATE))) == 1.0


def test_speed_one_passes_samples_through_untouched():
    samples = tone(0.5)
    changer = SpeedChanger(1.0)
    assert changer.passthrough and changer.process(samples) is samples and changer.flush().size == 0


@pytest.mark.parametrize("speed", [0.5, 1.5, 2.0])
def test_speed_changes_duration_but_keeps_pitch(speed):
    samples = tone(2.0)
    stretched = stretch_in_chunks(samples, speed)
    assert stretched.size / RATE == pytest.approx(2.0 / speed, rel=0.06)
    assert dominant_frequency(stretched) == pytest.approx(440.0, abs=5.0)
    assert np.abs(stretched).max() <= 0.55  # no overlap-add blow-up


def test_streaming_in_chunks_equals_stretching_the_whole_signal():
    samples = tone(1.0, 300.0)
    whole = SpeedChanger(1.5)
    expected = np.concatenate([whole.process(samples), whole.flush()])
    np.testing.assert_allclose(stretch_in_chunks(samples, 1.5, chunk=1920), expected, atol=1e-6)


@pytest.mark.parametrize("speed", [0.1, 0.0, 5.0])
def test_speed_outside_the_supported_range_is_refused(speed):
    with pytest.raises(ValueError, match="between 0.25 and 4.0"):
        SpeedChanger(speed)

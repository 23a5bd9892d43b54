"""Audio for HTTP clients: the engine's 16-bit mono PCM at 24 kHz -> wav, pcm, flac, mp3 or opus at
the asked sample rate, channels and bitrate (libsndfile through soundfile, soxr to resample); and
uploaded recordings decoded by their content, within limits of bytes and seconds.

pcm, wav and opus can leave while they are generated (a streamed WAV has an open-ended header, as
a live stream must; Ogg pages are written in order); mp3 and flac are encoded when the audio is
complete (libsndfile goes back to their first bytes at the end to write lengths).
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np

from .audio import SAMPLE_RATE

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
STREAMABLE = ("pcm", "wav", "opus")
MIN_RATE, MAX_RATE = 8000, 48000
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
MIN_KBPS, MAX_KBPS = 8, 320
# What libsndfile's MP3 and Opus encoders take as a compression level in 0..1 maps onto these
# bitrates linearly (per channel for Opus); bitrate asks are turned into that level.
MP3_KBPS = {"mpeg1": (32, 320), "mpeg2": (8, 160), "mpeg2.5": (8, 64)}
OPUS_KBPS_PER_CHANNEL = (6, 256)
OPEN_ENDED = 0xFFFFFFFF


class FormatError(ValueError):
    """An output format that cannot be made (a 400 for the client)."""


class UploadTooLarge(ValueError):
    """Too many bytes or seconds of audio (a 413)."""


class UnsupportedAudio(ValueError):
    """Not audio that libsndfile can decode (a 415)."""


@dataclass(frozen=True)
class OutputFormat:
    name: str = "wav"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    kbps: int | None = None  # mp3 and opus only; None: the encoder's default

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.name]

    @property
    def streamable(self) -> bool:
        return self.name in STREAMABLE


def output_format(name: str, sample_rate: int | None = None, channels: int = 1, kbps: int | None = None) -> OutputFormat:
    """The format asked for, checked: raises FormatError with what can be asked instead."""
    if name not in FORMATS:
        raise FormatError(f"response_format {name!r} is not one of {', '.join(FORMATS)}")
    if name == "aac":
        raise FormatError("response_format 'aac' cannot be made: no AAC encoder is installed in this server; "
                          "use mp3, opus, flac, wav or pcm")
    rate = SAMPLE_RATE if sample_rate is None else sample_rate
    if not MIN_RATE <= rate <= MAX_RATE:
        raise FormatError(f"sample_rate must be from {MIN_RATE} to {MAX_RATE} Hz, not {rate}")
    if name == "opus" and rate not in OPUS_RATES:
        raise FormatError(f"opus is made at {', '.join(map(str, OPUS_RATES))} Hz, not {rate}")
    if name == "mp3" and rate not in MP3_RATES:
        raise FormatError(f"mp3 is made at {', '.join(map(str, MP3_RATES))} Hz, not {rate}")
    if channels not in (1, 2):
        raise FormatError(f"channels must be 1 or 2, not {channels}")
    if kbps is not None:
        if name not in ("mp3", "opus"):
            raise FormatError(f"bitrate applies to mp3 and opus, not {name}")
        if not MIN_KBPS <= kbps <= MAX_KBPS:
            raise FormatError(f"bitrate must be from {MIN_KBPS} to {MAX_KBPS} kbit/s, not {kbps}")
    return OutputFormat(name, rate, channels, kbps)


class Resampler:
    """24 kHz float samples -> the output rate, chunk by chunk (soxr keeps the filter state)."""

    def __init__(self, rate: int) -> None:
        self._stream = None
        if rate != SAMPLE_RATE:
            import soxr

            self._stream = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="float32")

    def process(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=last)


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_int16(samples: np.ndarray, channels: int) -> np.ndarray:
    """(frames, channels) 16-bit samples; the inverse of pcm16_to_float, so 24 kHz PCM passes unchanged."""
    ints = np.clip(np.round(samples * 32768.0), -32768, 32767).astype("<i2")
    return np.repeat(ints[:, None], channels, axis=1)


def float_to_pcm16(samples: np.ndarray, channels: int) -> bytes:
    return float_to_int16(samples, channels).tobytes()


def wav_header(rate: int, channels: int, data_bytes: int = OPEN_ENDED) -> bytes:
    """A 16-bit PCM WAV header; with no size, open-ended (sizes 0xFFFFFFFF) for a live stream."""
    riff_size = OPEN_ENDED if data_bytes == OPEN_ENDED else 36 + data_bytes
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


class StreamEncoder:
    """Audio while generated: add() the engine's PCM, send what comes back; finish() at the end."""

    def __init__(self, fmt: OutputFormat) -> None:
        if not fmt.streamable:
            raise FormatError(f"{fmt.name} cannot be streamed")
        self.fmt = fmt
        self._resampler = Resampler(fmt.sample_rate)
        self._header = wav_header(fmt.sample_rate, fmt.channels) if fmt.name == "wav" else b""
        self._ogg = _OggStream(fmt) if fmt.name == "opus" else None

    def add(self, pcm: bytes) -> bytes:
        return self._encoded(self._resampler.process(pcm16_to_float(pcm)), last=False)

    def finish(self) -> bytes:
        return self._encoded(self._resampler.process(np.zeros(0, dtype=np.float32), last=True), last=True)

    def _encoded(self, samples: np.ndarray, last: bool) -> bytes:
        if self._ogg is not None:
            return self._ogg.encode(float_to_int16(samples, self.fmt.channels), last)
        header, self._header = self._header, b""
        return header + float_to_pcm16(samples, self.fmt.channels)


class _Sink:
    """A write-only file for libsndfile whose bytes are taken away as they come: what was taken is
    gone (a late rewrite of it is dropped); what was not is still patched in place."""

    def __init__(self) -> None:
        self.taken = 0  # bytes handed out
        self.pending = bytearray()
        self.position = 0

    def write(self, data) -> int:
        data = bytes(data)
        offset = self.position - self.taken
        if offset >= 0:
            self.pending[offset:offset + len(data)] = data
        self.position += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self.position, self.taken + len(self.pending))[whence]
        self.position = base + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def read(self, size: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        data, self.pending = bytes(self.pending), bytearray()
        self.taken += len(data)
        return data


class _OggStream:
    """Ogg Opus through libsndfile, page by page as the encoder fills them."""

    def __init__(self, fmt: OutputFormat) -> None:
        import soundfile as sf

        self._sink = _Sink()
        options = {"compression_level": _compression_level(fmt)} if fmt.kbps is not None else {}
        self._file = sf.SoundFile(self._sink, "w", fmt.sample_rate, fmt.channels, "OPUS", format="OGG", **options)

    def encode(self, frames: np.ndarray, last: bool) -> bytes:
        if len(frames):
            self._file.write(frames)
        if last:
            self._file.close()
        return self._sink.take()


def encode(pcm: bytes, fmt: OutputFormat) -> bytes:
    """A whole utterance (the engine's PCM) in the format, with exact sizes in its header."""
    samples = Resampler(fmt.sample_rate).process(pcm16_to_float(pcm), last=True)
    if fmt.name == "pcm":
        return float_to_pcm16(samples, fmt.channels)
    if fmt.name == "wav":
        data = float_to_pcm16(samples, fmt.channels)
        return wav_header(fmt.sample_rate, fmt.channels, len(data)) + data
    return _encode_with_libsndfile(samples, fmt)


def _encode_with_libsndfile(samples: np.ndarray, fmt: OutputFormat) -> bytes:
    import soundfile as sf

    container, subtype = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"),
                          "opus": ("OGG", "OPUS")}[fmt.name]
    frames = float_to_int16(samples, fmt.channels)
    options = {}
    if fmt.kbps is not None:
        options = {"compression_level": _compression_level(fmt)}
        if fmt.name == "mp3":
            options["bitrate_mode"] = "CONSTANT"
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", fmt.sample_rate, fmt.channels, subtype, format=container, **options) as out:
        out.write(frames)
    return buffer.getvalue()


def _compression_level(fmt: OutputFormat) -> float:
    if fmt.name == "opus":
        low, high = OPUS_KBPS_PER_CHANNEL
        wanted = fmt.kbps / fmt.channels
    else:
        low, high = MP3_KBPS[_mpeg_version(fmt.sample_rate)]
        wanted = fmt.kbps
    return float(np.clip((high - wanted) / (high - low), 0.0, 1.0))


def _mpeg_version(rate: int) -> str:
    if rate >= 32000:
        return "mpeg1"
    return "mpeg2" if rate >= 16000 else "mpeg2.5"


def decode_upload(data: bytes, max_bytes: int, max_seconds: float) -> tuple[np.ndarray, int]:
    """(float32 mono samples, rate) of an uploaded recording, decoded by its content, never its name."""
    import soundfile as sf

    if len(data) > max_bytes:
        raise UploadTooLarge(f"the recording has {len(data)} bytes; at most {max_bytes} are accepted")
    if not data:
        raise UnsupportedAudio("the recording is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as recording:
            seconds = recording.frames / recording.samplerate
            if seconds > max_seconds:
                raise UploadTooLarge(f"the recording lasts {seconds:.1f} s; at most {max_seconds:g} s are accepted")
            samples = recording.read(dtype="float32", always_2d=True)
            rate = recording.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        why = err.error_string if isinstance(err, sf.LibsndfileError) else str(err)
        raise UnsupportedAudio(f"the recording is not audio this server can read (wav, flac, mp3, ogg...): {why}"
                               ) from None
    if samples.shape[0] == 0:
        raise UnsupportedAudio("the recording holds no audio")
    if not np.all(np.isfinite(samples)):
        raise UnsupportedAudio("the recording holds invalid samples")
    return samples.mean(axis=1), rate

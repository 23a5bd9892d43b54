"""Audio for HTTP clients: the engine's 16-bit mono PCM at 24 kHz -> wav, pcm, flac, mp3 or opus at
the asked sample rate, channels and bitrate (libsndfile through soundfile, soxr to resample); and
uploaded recordings decoded by their content, within limits of bytes and seconds.

Every output format is one FormatSpec in REGISTRY, and everything else (the checks of
output_format, OutputFormat's media type, encode, StreamEncoder, FORMAT_NAMES for the HTTP model)
reads it from there. Adding a format is adding its entry (and its encoder, if none here fits).

pcm, wav and opus can leave while they are generated (a streamed WAV has an open-ended header, as
a live stream must; Ogg pages are written in order); mp3 and flac are encoded when the audio is
complete (libsndfile goes back to their first bytes at the end to write lengths).
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .audio import SAMPLE_RATE

MIN_RATE, MAX_RATE = 8000, 48000  # what the resampler is asked for at all, whatever the format
ANY_RATE = range(MIN_RATE, MAX_RATE + 1)
OPEN_ENDED = 0xFFFFFFFF


class FormatError(ValueError):
    """An output format that cannot be made (a 400 for the client)."""


class UploadTooLarge(ValueError):
    """Too many bytes or seconds of audio (a 413)."""


class UnsupportedAudio(ValueError):
    """Not audio that libsndfile can decode (a 415)."""


class Stream(Protocol):
    """One stream's encoder state: 16-bit (frames, channels) in, the bytes ready to send out."""

    def encode(self, frames: np.ndarray, last: bool) -> bytes: ...


# A whole utterance's 16-bit (frames, channels) samples -> the file's bytes.
WholeEncoder = Callable[[np.ndarray, "OutputFormat"], bytes]
# A fresh Stream for one response.
StreamFactory = Callable[["OutputFormat"], Stream]


@dataclass(frozen=True)
class FormatSpec:
    """One output format: what it is called and served as, what it can be asked for, how it is made."""

    name: str
    media_type: str
    encoder: WholeEncoder | None  # None only for a format this server cannot make
    stream: StreamFactory | None = None  # None: made when the audio is complete, never streamed
    rates: tuple[int, ...] | range = ANY_RATE  # the sample rates it is made at
    default_rate: int = SAMPLE_RATE
    kbps: tuple[int, int] | None = None  # (lowest, highest) bitrate asked in kbit/s; None: no bitrate
    default_kbps: int | None = None  # None: the encoder's own choice
    channels: tuple[int, ...] = (1, 2)
    unavailable: str | None = None  # why this server cannot make it; None: it can

    def __post_init__(self) -> None:
        if self.available != (self.encoder is not None):
            raise ValueError(f"{self.name}: a format is unavailable (with its reason) exactly when it has no encoder")
        if self.stream is not None and not self.available:
            raise ValueError(f"{self.name}: an unavailable format has no stream encoder")
        if self.default_rate not in self.rates or not all(MIN_RATE <= rate <= MAX_RATE for rate in self.rates):
            raise ValueError(f"{self.name}: its rates and default rate must lie from {MIN_RATE} to {MAX_RATE} Hz")
        if self.default_kbps is not None and not (self.kbps and self.kbps[0] <= self.default_kbps <= self.kbps[1]):
            raise ValueError(f"{self.name}: its default bitrate must lie in its bitrates")
        if 1 not in self.channels:
            raise ValueError(f"{self.name}: it must allow mono, the channels asked when none are")

    @property
    def available(self) -> bool:
        return self.unavailable is None

    @property
    def streamable(self) -> bool:
        return self.stream is not None

    def check_rate(self, rate: int) -> None:
        if not MIN_RATE <= rate <= MAX_RATE:
            raise FormatError(f"sample_rate must be from {MIN_RATE} to {MAX_RATE} Hz, not {rate}")
        if rate not in self.rates:
            raise FormatError(f"{self.name} is made at {_listed(self.rates)} Hz, not {rate}")

    def check_channels(self, channels: int) -> None:
        if channels not in self.channels:
            raise FormatError(f"channels must be {_either(self.channels)}, not {channels}")

    def check_kbps(self, kbps: int | None) -> None:
        if kbps is None:
            return
        if self.kbps is None:
            with_bitrate = [spec.name for spec in REGISTRY.values() if spec.available and spec.kbps is not None]
            raise FormatError(f"bitrate applies to {_joined(with_bitrate, 'and')}, not {self.name}")
        low, high = self.kbps
        if not low <= kbps <= high:
            raise FormatError(f"bitrate must be from {low} to {high} kbit/s, not {kbps}")


def _joined(words, last: str) -> str:
    words = [str(word) for word in words]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


def _either(values) -> str:
    return _joined(values, "or")


def _listed(rates: tuple[int, ...] | range) -> str:
    if isinstance(rates, range):
        return f"{rates.start} to {rates[-1]}"
    return ", ".join(map(str, rates))


@dataclass(frozen=True)
class OutputFormat:
    name: str = "wav"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    kbps: int | None = None  # formats with bitrates only; None: the format's default_kbps

    @property
    def spec(self) -> FormatSpec:
        return REGISTRY[self.name]

    @property
    def media_type(self) -> str:
        return self.spec.media_type

    @property
    def streamable(self) -> bool:
        return self.spec.streamable


def output_format(name: str, sample_rate: int | None = None, channels: int = 1, kbps: int | None = None) -> OutputFormat:
    """The format asked for, checked: raises FormatError with what can be asked instead."""
    spec = _available(name)
    rate = spec.default_rate if sample_rate is None else sample_rate
    spec.check_rate(rate)
    spec.check_channels(channels)
    spec.check_kbps(kbps)
    return OutputFormat(name, rate, channels, spec.default_kbps if kbps is None else kbps)


def _available(name: str) -> FormatSpec:
    """The entry of a format this server can make, or a FormatError naming what it can."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise FormatError(f"response_format {name!r} is not one of {', '.join(REGISTRY)}")
    if not spec.available:
        made = [other.name for other in REGISTRY.values() if other.available]
        raise FormatError(f"response_format {name!r} cannot be made: {spec.unavailable}; use {_either(made)}")
    return spec


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


def wav_header(rate: int, channels: int, data_bytes: int = OPEN_ENDED) -> bytes:
    """A 16-bit PCM WAV header; with no size, open-ended (sizes 0xFFFFFFFF) for a live stream."""
    riff_size = OPEN_ENDED if data_bytes == OPEN_ENDED else 36 + data_bytes
    block = 2 * channels
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
            + b"data" + struct.pack("<I", data_bytes))


# -- encoders: whole files and streams -------------------------------------------------------------


def _encode_pcm(frames: np.ndarray, fmt: OutputFormat) -> bytes:
    return frames.tobytes()


def _encode_wav(frames: np.ndarray, fmt: OutputFormat) -> bytes:
    data = frames.tobytes()
    return wav_header(fmt.sample_rate, fmt.channels, len(data)) + data


class _RawStream:
    """Interleaved 16-bit samples as they come, after a header (if any) that leaves with the first."""

    def __init__(self, header: bytes = b"") -> None:
        self._header = header

    def encode(self, frames: np.ndarray, last: bool) -> bytes:
        header, self._header = self._header, b""
        return header + frames.tobytes()


def _pcm_stream(fmt: OutputFormat) -> Stream:
    return _RawStream()


def _wav_stream(fmt: OutputFormat) -> Stream:
    return _RawStream(wav_header(fmt.sample_rate, fmt.channels))


Options = Callable[[OutputFormat], dict]


def _libsndfile(container: str, subtype: str, options: Options = lambda fmt: {},
                as_float: bool = False) -> WholeEncoder:
    """A whole-file encoder through libsndfile: its container and subtype, and SoundFile's options;
    as_float writes the samples as floats (the same values / 32768) where 16-bit writes are broken."""

    def encode_file(frames: np.ndarray, fmt: OutputFormat) -> bytes:
        import soundfile as sf

        buffer = io.BytesIO()
        with sf.SoundFile(buffer, "w", fmt.sample_rate, fmt.channels, subtype, format=container,
                          **options(fmt)) as out:
            out.write(frames.astype(np.float32) / 32768.0 if as_float else frames)
        return buffer.getvalue()

    return encode_file


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


class _LibsndfileStream:
    """A libsndfile container whose bytes leave as the encoder writes them (Ogg: page by page);
    only for containers that never go back to bytes already written."""

    def __init__(self, fmt: OutputFormat, container: str, subtype: str, options: dict) -> None:
        import soundfile as sf

        self._sink = _Sink()
        self._file = sf.SoundFile(self._sink, "w", fmt.sample_rate, fmt.channels, subtype, format=container,
                                  **options)

    def encode(self, frames: np.ndarray, last: bool) -> bytes:
        if len(frames):
            self._file.write(frames)
        if last:
            self._file.close()
        return self._sink.take()


def _libsndfile_stream(container: str, subtype: str, options: Options = lambda fmt: {}) -> StreamFactory:
    return lambda fmt: _LibsndfileStream(fmt, container, subtype, options(fmt))


# libsndfile's MP3 and Opus encoders take a compression level in 0..1 that maps onto these bitrates
# linearly (per channel for Opus); a bitrate asked is turned into that level. libsndfile (1.2.2)
# refuses an MP3 level of exactly 1.0, so the lowest bitrate is asked at MP3_TOP_LEVEL.
MP3_KBPS = {"mpeg1": (32, 320), "mpeg2": (8, 160), "mpeg2.5": (8, 64)}
MP3_TOP_LEVEL = 0.999
OPUS_KBPS_PER_CHANNEL = (6, 256)


def _level(wanted: float, low: int, high: int) -> float:
    return float(np.clip((high - wanted) / (high - low), 0.0, 1.0))


def _mp3_options(fmt: OutputFormat) -> dict:
    if fmt.kbps is None:
        return {}
    version = "mpeg1" if fmt.sample_rate >= 32000 else "mpeg2" if fmt.sample_rate >= 16000 else "mpeg2.5"
    level = min(_level(fmt.kbps, *MP3_KBPS[version]), MP3_TOP_LEVEL)
    return {"compression_level": level, "bitrate_mode": "CONSTANT"}


def _opus_options(fmt: OutputFormat) -> dict:
    if fmt.kbps is None:
        return {}
    return {"compression_level": _level(fmt.kbps / fmt.channels, *OPUS_KBPS_PER_CHANNEL)}


# -- the registry ----------------------------------------------------------------------------------

REGISTRY: dict[str, FormatSpec] = {spec.name: spec for spec in (  # in the order OpenAI's API lists them
    # as_float: libsndfile's 16-bit stereo MP3 write copies half the bytes it should and the rest is
    # noise (libsndfile/libsndfile#1106); its float write is sound.
    FormatSpec("mp3", "audio/mpeg", _libsndfile("MP3", "MPEG_LAYER_III", _mp3_options, as_float=True),
               rates=(8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000), kbps=(8, 320)),
    FormatSpec("opus", "audio/ogg", _libsndfile("OGG", "OPUS", _opus_options),
               stream=_libsndfile_stream("OGG", "OPUS", _opus_options),
               rates=(8000, 12000, 16000, 24000, 48000), kbps=(8, 320)),
    FormatSpec("aac", "audio/aac", None, unavailable="no AAC encoder is installed in this server"),
    FormatSpec("flac", "audio/flac", _libsndfile("FLAC", "PCM_16")),
    FormatSpec("wav", "audio/wav", _encode_wav, stream=_wav_stream),
    FormatSpec("pcm", "audio/pcm", _encode_pcm, stream=_pcm_stream),
)}
FORMAT_NAMES: tuple[str, ...] = tuple(REGISTRY)  # for the HTTP model's Literal[FORMAT_NAMES]


class StreamEncoder:
    """Audio while generated: add() the engine's PCM, send what comes back; finish() at the end."""

    def __init__(self, fmt: OutputFormat) -> None:
        spec = _available(fmt.name)  # refused however the OutputFormat was built
        if spec.stream is None:
            raise FormatError(f"{fmt.name} cannot be streamed")
        self.fmt = fmt
        self._resampler = Resampler(fmt.sample_rate)
        self._stream = spec.stream(fmt)

    def add(self, pcm: bytes) -> bytes:
        return self._encoded(self._resampler.process(pcm16_to_float(pcm)), last=False)

    def finish(self) -> bytes:
        return self._encoded(self._resampler.process(np.zeros(0, dtype=np.float32), last=True), last=True)

    def _encoded(self, samples: np.ndarray, last: bool) -> bytes:
        return self._stream.encode(float_to_int16(samples, self.fmt.channels), last)


def encode(pcm: bytes, fmt: OutputFormat) -> bytes:
    """A whole utterance (the engine's PCM) in the format, with exact sizes in its header."""
    spec = _available(fmt.name)  # refused however the OutputFormat was built
    samples = Resampler(fmt.sample_rate).process(pcm16_to_float(pcm), last=True)
    return spec.encoder(float_to_int16(samples, fmt.channels), fmt)


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

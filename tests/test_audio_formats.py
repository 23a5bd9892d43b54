"""audio_formats on its own: every format and stream decodes back (libsndfile) to the asked rate,
channels and length; the limits on uploads hold; what cannot be made is a FormatError; the registry
alone decides what a format is and how it is made."""

import io
from typing import Literal, get_args

import numpy as np
import pytest
import soundfile as sf

from wyoming_qwen_tts.audio_formats import (
    FORMAT_NAMES,
    REGISTRY,
    FormatError,
    FormatSpec,
    OutputFormat,
    StreamEncoder,
    UnsupportedAudio,
    UploadTooLarge,
    decode_upload,
    encode,
    output_format,
    wav_header,
)
from wyoming_qwen_tts.audio_formats import _libsndfile as libsndfile_encoder

SECONDS = 2
TONE = (np.sin(2 * np.pi * 220 * np.arange(24000 * SECONDS) / 24000) * 0.3 * 32767).astype("<i2").tobytes()


def decoded(audio: bytes) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)


@pytest.mark.parametrize("name", ["wav", "flac", "mp3", "opus"])
@pytest.mark.parametrize(("rate", "channels"), [(24000, 1), (48000, 2), (16000, 1)])
def test_every_format_decodes_to_the_asked_rate_channels_and_length(name, rate, channels):
    samples, got_rate = decoded(encode(TONE, output_format(name, rate, channels)))
    assert (got_rate, samples.shape[1]) == (rate, channels)
    assert samples.shape[0] == pytest.approx(SECONDS * rate, abs=1152 if name == "mp3" else 0)
    assert np.sqrt(np.mean(samples ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)  # the tone, not silence


def test_lossless_formats_at_24khz_carry_the_samples_unchanged():
    noise = np.random.default_rng(0).integers(-32768, 32768, 24000, dtype=np.int64).astype("<i2").tobytes()
    assert encode(noise, output_format("pcm")) == noise
    for name in ("wav", "flac"):
        samples, _ = sf.read(io.BytesIO(encode(noise, output_format(name))), dtype="int16")
        assert samples.tobytes() == noise


@pytest.mark.parametrize("name", ["wav", "pcm", "opus"])
def test_streams_decode_like_the_whole(name):
    encoder = StreamEncoder(output_format(name, 48000, 2))
    pieces = [encoder.add(TONE[start:start + 3840]) for start in range(0, len(TONE), 3840)] + [encoder.finish()]
    audio = b"".join(pieces)
    if name == "pcm":
        assert len(audio) == SECONDS * 48000 * 2 * 2
        return
    samples, rate = decoded(audio)
    assert (rate, samples.shape[1], samples.shape[0]) == (48000, 2, SECONDS * 48000)
    assert pieces[0]  # the header leaves with the first audio


def test_a_streamed_wav_header_is_open_ended_and_a_whole_one_exact():
    assert wav_header(24000, 1)[4:8] == b"\xff\xff\xff\xff"
    whole = encode(TONE, output_format("wav"))
    assert int.from_bytes(whole[40:44], "little") == len(TONE)


@pytest.mark.parametrize("name", ["mp3", "opus"])
def test_bitrate_is_kept_roughly(name):
    for kbps in (32, 128):
        size = len(encode(TONE, output_format(name, kbps=kbps)))
        assert size * 8 / SECONDS / 1000 == pytest.approx(kbps, rel=0.35)


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 44100])
def test_stereo_mp3_is_the_same_tone_in_both_channels(rate):
    # libsndfile's 16-bit stereo MP3 write filled half of it with noise (peaks past 1.0, channels apart)
    samples, _ = decoded(encode(TONE, output_format("mp3", rate, 2)))
    assert np.abs(samples[:, 0] - samples[:, 1]).max() < 0.01 and np.abs(samples).max() < 0.4
    assert np.sqrt(np.mean(samples ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("rate", [8000, 24000, 48000])
def test_mp3_at_the_lowest_bitrates_is_made(rate):
    # at or below the lowest bitrate of its MPEG version, libsndfile refused the level (1.0) it was asked at
    for kbps in (8, 32):
        assert decoded(encode(TONE, output_format("mp3", rate, kbps=kbps)))[1] == rate


@pytest.mark.parametrize(("args", "problem"), [
    (("aac",), "no AAC encoder"),
    (("ogg",), "not one of"),
    (("wav", 4000), "sample_rate"),
    (("opus", 44100), "opus is made at"),
    (("mp3", 47000), "mp3 is made at"),
    (("wav", None, 3), "channels"),
    (("flac", None, 1, 64), "bitrate applies to mp3 and opus"),
    (("mp3", None, 1, 999), "bitrate must be"),
])
def test_what_cannot_be_made_says_why(args, problem):
    with pytest.raises(FormatError, match=problem):
        output_format(*args)


def test_uploads_are_decoded_by_content_within_limits():
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros((16000, 2), dtype=np.float32), 16000, format="FLAC")
    samples, rate = decode_upload(buffer.getvalue(), max_bytes=10**6, max_seconds=5)
    assert rate == 16000 and samples.shape == (16000,)
    with pytest.raises(UploadTooLarge, match="bytes"):
        decode_upload(buffer.getvalue(), max_bytes=100, max_seconds=5)
    with pytest.raises(UploadTooLarge, match="0.5 s"):
        decode_upload(buffer.getvalue(), max_bytes=10**6, max_seconds=0.5)
    for junk in (b"", b"RIFF" + b"\0" * 100, b"<html>not audio</html>"):
        with pytest.raises(UnsupportedAudio):
            decode_upload(junk, max_bytes=10**6, max_seconds=5)


# -- the registry drives it all ------------------------------------------------------------------

AVAILABLE = [spec for spec in REGISTRY.values() if spec.available]
HALF_SECOND = TONE[:24000]  # 0.5 s of 16-bit samples
RAW_SUBTYPES = {"pcm": "PCM_16"}  # headerless formats: how the test tells libsndfile to read them


def rates_of(spec: FormatSpec) -> list[int]:
    """Every rate a format lists; of a span, its ends, its default and the CD-family rates."""
    if isinstance(spec.rates, range):
        return sorted({spec.rates[0], spec.rates[-1], spec.default_rate, 22050, 44100})
    return list(spec.rates)


def decoded_as(audio: bytes, fmt: OutputFormat) -> np.ndarray:
    if fmt.name in RAW_SUBTYPES:
        samples, _ = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True, format="RAW",
                             subtype=RAW_SUBTYPES[fmt.name], samplerate=fmt.sample_rate, channels=fmt.channels)
        return samples
    samples, rate = decoded(audio)
    assert (rate, samples.shape[1]) == (fmt.sample_rate, fmt.channels)
    return samples


def test_format_names_are_the_registry_keys_in_openai_order():
    assert FORMAT_NAMES == tuple(REGISTRY) == ("mp3", "opus", "aac", "flac", "wav", "pcm")
    assert all(name == spec.name for name, spec in REGISTRY.items())
    assert get_args(Literal[FORMAT_NAMES]) == FORMAT_NAMES  # what the HTTP model declares


@pytest.mark.parametrize(("name", "rate", "channels"), [
    (spec.name, rate, channels) for spec in AVAILABLE for rate in rates_of(spec) for channels in spec.channels])
def test_every_available_format_round_trips_at_each_of_its_rates(name, rate, channels):
    spec = REGISTRY[name]
    fmt = output_format(name, rate, channels)
    samples = decoded_as(encode(HALF_SECOND, fmt), fmt)
    frames_per_mp3_frame = 1152 if rate >= 32000 else 576
    assert samples.shape[0] == pytest.approx(rate / 2, abs=frames_per_mp3_frame if name == "mp3" else 1)
    assert np.sqrt(np.mean(samples ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.15)  # the tone, not silence
    assert np.abs(samples - samples[:, :1]).max() < 0.01 and np.abs(samples).max() < 0.4  # alike channels, no noise
    assert (fmt.media_type, fmt.streamable) == (spec.media_type, spec.stream is not None)


@pytest.mark.parametrize("spec", AVAILABLE, ids=lambda spec: spec.name)
def test_defaults_come_from_the_registry(spec):
    fmt = output_format(spec.name)
    assert (fmt.sample_rate, fmt.channels, fmt.kbps) == (spec.default_rate, 1, spec.default_kbps)
    if spec.kbps is not None:
        low, high = spec.kbps
        for kbps in (low, high):
            fmt = output_format(spec.name, max(spec.rates), 2, kbps)
            assert fmt.kbps == kbps and decoded_as(encode(HALF_SECOND, fmt), fmt).shape[0]
        with pytest.raises(FormatError, match="bitrate must be"):
            output_format(spec.name, kbps=high + 1)
    else:
        with pytest.raises(FormatError, match=f"bitrate applies to mp3 and opus, not {spec.name}"):
            output_format(spec.name, kbps=64)


def test_an_unavailable_format_is_refused_with_its_reason_however_it_is_asked():
    unavailable = [spec for spec in REGISTRY.values() if not spec.available]
    assert [spec.name for spec in unavailable] == ["aac"]  # known to OpenAI's API, not made here
    for spec in unavailable:
        for refuse in (lambda: output_format(spec.name), lambda: encode(TONE, OutputFormat(spec.name)),
                       lambda: StreamEncoder(OutputFormat(spec.name))):
            with pytest.raises(FormatError) as refused:
                refuse()
            message = str(refused.value)
            assert spec.unavailable in message and all(other.name in message for other in AVAILABLE)


@pytest.mark.parametrize(("name", "rate"), [
    (spec.name, rate) for spec in AVAILABLE if spec.streamable for rate in (spec.default_rate, max(spec.rates))])
def test_a_streamed_format_decodes_equal_to_its_whole_file(name, rate):
    fmt = output_format(name, rate, 2)
    encoder = StreamEncoder(fmt)
    streamed = b"".join([encoder.add(TONE[start:start + 3840]) for start in range(0, len(TONE), 3840)]
                        + [encoder.finish()])
    assert np.array_equal(decoded_as(streamed, fmt), decoded_as(encode(TONE, fmt), fmt))


@pytest.mark.parametrize("spec", [spec for spec in AVAILABLE if not spec.streamable], ids=lambda spec: spec.name)
def test_a_format_without_a_stream_encoder_is_not_streamed(spec):
    with pytest.raises(FormatError, match=f"{spec.name} cannot be streamed"):
        StreamEncoder(output_format(spec.name))


def test_a_new_format_is_one_registry_entry(monkeypatch):
    monkeypatch.setitem(REGISTRY, "au", FormatSpec("au", "audio/basic", libsndfile_encoder("AU", "PCM_16"),
                                                   rates=(8000, 16000), default_rate=16000))
    fmt = output_format("au")
    assert (fmt.sample_rate, fmt.media_type, fmt.streamable) == (16000, "audio/basic", False)
    samples, rate = decoded(encode(HALF_SECOND, fmt))
    assert (rate, samples.shape) == (16000, (8000, 1))
    with pytest.raises(FormatError, match="au is made at 8000, 16000 Hz, not 24000"):
        output_format("au", 24000)
    with pytest.raises(FormatError, match="bitrate applies to mp3 and opus, not au"):
        output_format("au", kbps=64)


@pytest.mark.parametrize("fields", [
    {"encoder": None},  # no encoder, yet no reason it cannot be made
    {"unavailable": "no encoder"},  # a reason, yet an encoder
    {"rates": (8000, 16000)},  # a default rate (24 kHz) it is not made at
    {"rates": (4000, 24000)},  # a rate the resampler is never asked for
    {"kbps": (8, 64), "default_kbps": 128},
    {"channels": (2,)},  # no mono, which is asked when no channels are
])
def test_a_malformed_entry_is_refused_where_it_is_written(fields):
    with pytest.raises(ValueError):
        FormatSpec(**{"name": "x", "media_type": "audio/x", "encoder": libsndfile_encoder("AU", "PCM_16"), **fields})

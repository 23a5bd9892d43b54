"""audio_formats on its own: every format and stream decodes back (libsndfile) to the asked rate,
channels and length; the limits on uploads hold; what cannot be made is a FormatError."""

import io

import numpy as np
import pytest
import soundfile as sf

from wyoming_qwen_tts.audio_formats import (
    FormatError,
    StreamEncoder,
    UnsupportedAudio,
    UploadTooLarge,
    decode_upload,
    encode,
    output_format,
    wav_header,
)

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


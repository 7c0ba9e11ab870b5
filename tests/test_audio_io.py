"""Tests of the audio file adapter, run once per backend (tensorflow-io and soundfile)."""

from __future__ import annotations

import os
import struct
import sys
import types

import numpy as np
import pytest
import soundfile as sf

from mss_tf.audio import decode
from mss_tf.audio import io as audio_io
from mss_tf.errors import AudioError, ConfigError

SR = 44100
INT16_TOLERANCE = 2.0 / 32768


def _sine(frequency: float, seconds: float, sample_rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _stereo(seconds: float = 0.25, sample_rate: int = SR) -> np.ndarray:
    return np.stack(
        [_sine(440, seconds, sample_rate), _sine(660, seconds, sample_rate, 0.3)], axis=1
    )  # (samples, 2)


@pytest.fixture(params=["tfio", "fallback"])
def backend(request, monkeypatch):
    """Run the test with MSS_TF_AUDIO_BACKEND forced to each backend in turn."""
    monkeypatch.setenv(audio_io.BACKEND_ENV, request.param)
    audio_io.reset_backend()
    if request.param == "tfio":
        problem = decode._tfio_problem()
        if problem is not None:
            pytest.skip(f"tensorflow-io cannot load here: {problem}")
    name = audio_io.audio_backend()
    assert name == (audio_io.TFIO if request.param == "tfio" else audio_io.SOUNDFILE)
    yield name
    audio_io.reset_backend()


# --------------------------------------------------------------------------- backend choice


@pytest.mark.parametrize("problem, expected", [(None, "tensorflow-io"), ("ops built for TensorFlow 2.15", "soundfile")])
def test_auto_backend_prefers_tensorflow_io(monkeypatch, problem, expected):
    """Unforced, tensorflow-io decodes when its ops load, soundfile when they do not."""
    monkeypatch.delenv(audio_io.BACKEND_ENV, raising=False)
    monkeypatch.setattr(decode, "_tfio_problem", lambda: problem)
    audio_io.reset_backend()
    assert audio_io.audio_backend() == expected
    audio_io.reset_backend()


def test_backend_env_var_is_read_after_reset(monkeypatch):
    monkeypatch.setenv(audio_io.BACKEND_ENV, "soundfile")
    audio_io.reset_backend()
    assert audio_io.audio_backend() == audio_io.SOUNDFILE
    monkeypatch.setenv(audio_io.BACKEND_ENV, "nonsense")
    assert audio_io.audio_backend() == audio_io.SOUNDFILE  # cached until reset
    audio_io.reset_backend()
    with pytest.raises(ConfigError, match="nonsense"):
        audio_io.audio_backend()
    audio_io.reset_backend()


def test_forced_tfio_raises_when_ops_cannot_load(monkeypatch):
    monkeypatch.setenv(audio_io.BACKEND_ENV, "tfio")
    monkeypatch.setattr(decode, "_tfio_problem", lambda: "ops built for another TensorFlow")
    audio_io.reset_backend()
    with pytest.raises(ConfigError, match="another TensorFlow"):
        audio_io.audio_backend()
    audio_io.reset_backend()


# --------------------------------------------------------------------------- round trips


def test_wav_float_round_trip_stereo(backend, tmp_path):
    audio = _stereo()
    audio[100, 0] = 1.25  # float wav keeps peaks above full scale
    path = tmp_path / "mix.wav"
    audio_io.save_audio(path, audio, SR)
    assert sf.info(str(path)).subtype == "FLOAT"
    loaded, rate = audio_io.load_audio(path)
    assert rate == SR
    assert loaded.dtype == np.float32 and loaded.shape == audio.shape
    np.testing.assert_allclose(loaded, audio, atol=1e-4)


def test_flac_round_trip_is_16_bit_and_clipped(backend, tmp_path):
    audio = _stereo()
    audio[100, 1] = 1.5
    path = tmp_path / "mix.flac"
    audio_io.save_audio(path, audio, SR)
    assert sf.info(str(path)).subtype == "PCM_16"
    loaded, rate = audio_io.load_audio(str(path))
    assert rate == SR and loaded.dtype == np.float32 and loaded.shape == audio.shape
    np.testing.assert_allclose(loaded, np.clip(audio, -1, 1), atol=INT16_TOLERANCE)


@pytest.mark.parametrize("extension", [".wav", ".flac", ".ogg", ".mp3"])
def test_tfio_backend_decodes_without_soundfile(tmp_path, monkeypatch, extension):
    monkeypatch.setenv(audio_io.BACKEND_ENV, "tfio")
    audio_io.reset_backend()
    problem = decode._tfio_problem()
    if problem is not None:
        pytest.skip(f"tensorflow-io cannot load here: {problem}")
    if extension == ".mp3" and not sf.check_format("MP3", "MPEG_LAYER_III"):
        pytest.skip("libsndfile cannot encode mp3")
    path = tmp_path / f"mix{extension}"
    audio_io.save_audio(path, _stereo(0.5), SR)

    def no_soundfile(path):
        raise AssertionError(f"soundfile used for {path}")

    monkeypatch.setattr(decode, "_load_soundfile", no_soundfile)
    loaded, rate = audio_io.load_audio(path)
    assert rate == SR and loaded.shape[1] == 2 and loaded.dtype == np.float32
    assert 0.3 < np.abs(loaded).max() <= 1.0
    audio_io.reset_backend()


def test_unreadable_message_names_both_backends(backend, tmp_path):
    path = tmp_path / "x.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as caught:
        audio_io.load_audio(path)
    message = str(caught.value)
    assert message.count("not a readable audio file") == 1
    if backend == audio_io.TFIO:
        assert "tensorflow-io:" in message and "soundfile:" in message


def test_mono_file_shape(backend, tmp_path):
    path = tmp_path / "mono.wav"
    audio_io.save_audio(path, _sine(440, 0.1), SR)  # 1-D input
    loaded, _ = audio_io.load_audio(path)
    assert loaded.shape == (4410, 1)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "PCM_U8", "DOUBLE"])
def test_integer_and_double_wav_are_scaled(backend, tmp_path, subtype):
    # tensorflow-io misreads 32-bit int wav and rejects 64-bit float; both must still work.
    audio = _stereo(0.05)
    path = tmp_path / f"{subtype}.wav"
    sf.write(str(path), audio, SR, subtype=subtype)
    loaded, _ = audio_io.load_audio(path)
    tolerance = 1 / 64 if subtype == "PCM_U8" else INT16_TOLERANCE
    np.testing.assert_allclose(loaded, audio, atol=tolerance)


def test_load_mono_downmix_and_resample(backend, tmp_path):
    audio = _stereo(0.5)
    path = tmp_path / "mix.wav"
    audio_io.save_audio(path, audio, SR)
    loaded, rate = audio_io.load_audio(path, sample_rate=16000, mono=True)
    assert rate == 16000
    assert loaded.shape == (round(audio.shape[0] * 16000 / SR), 1)
    expected = audio_io.resample(audio.mean(axis=1, keepdims=True), SR, 16000)
    np.testing.assert_allclose(loaded, expected, atol=1e-5)


def test_same_rate_is_not_resampled(backend, tmp_path):
    path = tmp_path / "mix.wav"
    audio_io.save_audio(path, _stereo(0.05), SR)
    loaded, rate = audio_io.load_audio(path, sample_rate=SR)
    assert rate == SR and loaded.shape[0] == round(0.05 * SR)


def test_ogg_read(backend, tmp_path):
    path = tmp_path / "mix.ogg"
    audio_io.save_audio(path, _stereo(0.5), SR)
    loaded, rate = audio_io.load_audio(path)
    assert rate == SR and loaded.shape[1] == 2
    assert abs(loaded.shape[0] - round(0.5 * SR)) < 2048


def _write_mp3(path, audio: np.ndarray, sample_rate: int) -> None:
    if not sf.check_format("MP3", "MPEG_LAYER_III"):
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot encode mp3")
    sf.write(str(path), audio, sample_rate, format="MP3", subtype="MPEG_LAYER_III")


def test_mp3_read(backend, tmp_path):
    audio = _stereo(1.0)
    path = tmp_path / "song.mp3"
    _write_mp3(path, audio, SR)
    loaded, rate = audio_io.load_audio(path, mono=True)
    assert rate == SR and loaded.shape[1] == 1
    assert abs(loaded.shape[0] - audio.shape[0]) < 2 * 1152  # encoder padding
    # Lossy, and decoders differ in delay: compare the spectra, not the samples.
    spectrum = np.abs(np.fft.rfft(loaded[:, 0]))
    assert np.argmax(spectrum) * SR / loaded.shape[0] == pytest.approx(440, abs=2)


def test_save_mp3(backend, tmp_path):
    if not sf.check_format("MP3", "MPEG_LAYER_III"):
        pytest.skip("libsndfile cannot encode mp3")
    path = tmp_path / "out.mp3"
    audio_io.save_audio(path, _stereo(0.5), SR)
    loaded, rate = audio_io.load_audio(path)
    assert rate == SR and loaded.shape[1] == 2


# --------------------------------------------------------------------------- resampling


def test_resample_keeps_a_sine_a_sine():
    n = SR  # one second
    tone = _sine(440, 1.0)[:, None]  # (samples, 1)
    out = audio_io.resample(tone, SR, 16000)
    assert out.shape == (round(n * 16000 / SR), 1) and out.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(out[:, 0]))
    assert np.argmax(spectrum) * 16000 / out.shape[0] == pytest.approx(440, abs=1)
    reference = _sine(440, 1.0, 16000)
    np.testing.assert_allclose(out[500:-500, 0], reference[500:-500], atol=1e-3)


@pytest.mark.parametrize("n", [1, 44101, 12345])
def test_resample_length_and_identity(n):
    audio = np.random.default_rng(0).standard_normal((n, 2)).astype(np.float32)
    for target in (16000, 48000, 22050):
        assert audio_io.resample(audio, SR, target).shape == (round(n * target / SR), 2)
    assert audio_io.resample(audio, SR, SR) is audio


@pytest.mark.slow  # importing librosa takes 20 s of the default run; lengths and identity are tested above
@pytest.mark.parametrize("n, orig, target", [(44100 * 2 + 7, SR, 16000), (16000 + 3, 16000, 44100), (9, SR, 16000)])
def test_resample_gives_librosas_soxr_hq_samples(n, orig, target):
    # soxr called directly, without librosa's import: the same samples as librosa's "soxr_hq",
    # cut or zero-padded to round(n * target / orig)
    import librosa

    audio = np.random.default_rng(n).standard_normal((n, 2)).astype(np.float32)
    expected = librosa.resample(audio, orig_sr=orig, target_sr=target, res_type="soxr_hq", axis=0)
    expected = librosa.util.fix_length(expected, size=round(n * target / orig), axis=0)
    np.testing.assert_array_equal(audio_io.resample(audio, orig, target), expected)
    np.testing.assert_array_equal(audio_io.resample(audio[:, 0], orig, target), expected[:, 0])


def test_mono_keeps_two_dimensions():
    audio = np.array([[1.0, 0.0], [0.5, -0.5]], np.float32)
    np.testing.assert_array_equal(audio_io.mono(audio), [[0.5], [0.0]])
    assert audio_io.mono(audio[:, :1]).shape == (2, 1)


# --------------------------------------------------------------------------- atomic writes


def test_write_is_atomic_and_creates_folders(backend, tmp_path):
    path = tmp_path / "deep" / "er" / "vocals.wav"
    audio_io.save_audio(path, _stereo(0.05), SR)
    assert path.exists()
    assert sorted(os.listdir(path.parent)) == ["vocals.wav"]


def test_failed_write_keeps_the_existing_file(backend, tmp_path, monkeypatch):
    path = tmp_path / "vocals.wav"
    audio_io.save_audio(path, _stereo(0.05), SR)
    before = path.read_bytes()

    def write_half_then_fail(file, *args, **kwargs):
        with open(file, "wb") as handle:
            handle.write(b"RIFF")
        raise OSError("disk full")

    monkeypatch.setattr(sf, "write", write_half_then_fail)
    with pytest.raises(AudioError, match="disk full") as caught:
        audio_io.save_audio(path, np.zeros((10, 2), np.float32), SR)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["vocals.wav"]


@pytest.mark.parametrize("channels", [1, 2, 5])
def test_reproducible_wav_is_libsndfiles_file_without_the_peak_chunk(tmp_path, channels):
    # libsndfile's PEAK chunk holds the time of writing; the reproducible writer leaves a zero
    # PAD chunk of the same size in its place, so every other byte is libsndfile's.
    audio = np.random.default_rng(channels).uniform(-1.5, 1.5, (999, channels)).astype(np.float32)
    audio_io.save_audio(tmp_path / "ours.wav", audio, 22050, reproducible=True)
    sf.write(str(tmp_path / "libsndfile.wav"), audio, 22050, subtype="FLOAT")
    ours, theirs = (tmp_path / "ours.wav").read_bytes(), (tmp_path / "libsndfile.wav").read_bytes()
    peak = theirs.index(b"PEAK")
    size = struct.unpack("<I", theirs[peak + 4 : peak + 8])[0]
    assert size == 8 + 8 * channels
    assert ours == theirs[:peak] + b"PAD " + theirs[peak + 4 : peak + 8] + bytes(size) + theirs[peak + 8 + size :]
    loaded, rate = audio_io.load_audio(tmp_path / "ours.wav")
    assert rate == 22050 and np.array_equal(loaded, audio)
    with pytest.raises(AudioError, match="only"):
        audio_io.save_audio(tmp_path / "x.flac", audio, 22050, reproducible=True)
    assert sorted(os.listdir(tmp_path)) == ["libsndfile.wav", "ours.wav"]


@pytest.mark.parametrize(
    "name, audio",
    [
        ("x.mp4", np.zeros((10, 2), np.float32)),
        ("x.wav", np.zeros((2, 44100), np.float32)),  # (channels, samples) by mistake
        ("x.wav", np.full((10, 2), np.nan, np.float32)),
    ],
)
def test_bad_writes_raise_and_leave_nothing(tmp_path, name, audio):
    with pytest.raises(AudioError) as caught:
        audio_io.save_audio(tmp_path / name, audio, SR)
    assert str(tmp_path / name) in str(caught.value)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- bad files


def _assert_audio_error(path, match: str) -> None:
    with pytest.raises(AudioError, match=match) as caught:
        audio_io.load_audio(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message


def test_missing_file(backend, tmp_path):
    _assert_audio_error(tmp_path / "nope.wav", "no such file")


def test_text_file_named_wav(backend, tmp_path):
    path = tmp_path / "x.wav"
    path.write_text("this is not audio\n" * 20)
    _assert_audio_error(path, "not a readable audio file")


def test_text_file_named_mp3(backend, tmp_path):
    path = tmp_path / "x.mp3"
    path.write_text("this is not audio\n" * 20)
    _assert_audio_error(path, "not a readable audio file")


def test_empty_file(backend, tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    _assert_audio_error(path, "empty")


def test_directory(backend, tmp_path):
    _assert_audio_error(tmp_path, "directory")


@pytest.mark.parametrize("keep", [0.5, 0.0])
def test_truncated_wav(backend, tmp_path, keep):
    whole = tmp_path / "whole.wav"
    sf.write(str(whole), _stereo(0.25), SR, subtype="PCM_16")
    data = whole.read_bytes()
    header = 44
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: header + int((len(data) - header) * keep)])
    _assert_audio_error(path, "truncated")


def test_truncated_flac(backend, tmp_path):
    whole = tmp_path / "whole.flac"
    sf.write(str(whole), np.random.default_rng(0).uniform(-0.5, 0.5, (SR, 2)), SR, subtype="PCM_16")
    data = whole.read_bytes()
    path = tmp_path / "cut.flac"
    path.write_bytes(data[: len(data) // 2])
    _assert_audio_error(path, "truncated|corrupt")


def test_truncated_mp3(backend, tmp_path):
    whole = tmp_path / "whole.mp3"
    _write_mp3(whole, _stereo(2.0), SR)
    data = whole.read_bytes()
    path = tmp_path / "cut.mp3"
    path.write_bytes(data[: len(data) // 2])
    _assert_audio_error(path, "truncated|corrupt")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_samples(backend, tmp_path, bad):
    audio = _stereo(0.05)
    audio[7, 1] = bad
    path = tmp_path / "nan.wav"
    sf.write(str(path), audio, SR, subtype="FLOAT")
    _assert_audio_error(path, "NaN or infinite")


# The first audio_backend() call may come from inside a tf.function or a tf.data map: the
# tensorflow-io probe must still run eagerly there and choose what it chooses outside.


def test_backend_chosen_inside_a_traced_function_is_the_eager_choice(monkeypatch):
    import tensorflow as tf

    monkeypatch.delenv(audio_io.BACKEND_ENV, raising=False)
    audio_io.reset_backend()
    eager = audio_io.audio_backend()
    audio_io.reset_backend()
    seen = []

    @tf.function
    def traced(x):
        seen.append(audio_io.audio_backend())
        return x

    traced(tf.constant(1.0))
    audio_io.reset_backend()
    assert seen == [eager]


def test_tfio_probe_runs_eagerly_inside_a_traced_function(monkeypatch):
    # A stand-in tensorflow-io whose decoder works only eagerly, so this holds whether or not
    # the real package loads here.
    import tensorflow as tf

    def decode_wav(wav, dtype):
        if not tf.executing_eagerly():
            raise RuntimeError("decode_wav called while tracing a graph")
        return tf.zeros((4, 1), dtype)

    fake = types.SimpleNamespace(audio=types.SimpleNamespace(decode_wav=decode_wav))
    monkeypatch.setitem(sys.modules, "tensorflow_io", fake)
    problems = []

    @tf.function
    def traced(x):
        problems.append(decode._tfio_problem())
        return x

    traced(tf.constant(1.0))
    assert problems == [None]

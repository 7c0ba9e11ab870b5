"""Chunked separation (mss_tf.inference.Separator): which samples each model call sees (never
zero-padding), and that overlap-add leaves no trace in the output."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, stft
from mss_tf.inference import Separator
from mss_tf.models.bsrnn import BSRNN
from mss_tf.models.registry import BSRNN_STFT

STFT = SpectrogramConfig(16000, 1024, 256)
CHUNK, OVERLAP = 16000, 4000  # 1 s chunks, 0.25 s overlap at 16 kHz
STEP = CHUNK - OVERLAP


class Scale(keras.Model):
    """Returns the mixture scaled per target: overlap-add must give the scaled input back."""

    def __init__(self, scales):
        super().__init__()
        self.scales = scales

    def call(self, mixture, training=None):
        return tf.stack([s * mixture for s in self.scales], axis=1)  # (B, S, T, F, 2)


class RecordingScale(Scale):
    """Scale that remembers every input (run eagerly to see values)."""

    def __init__(self, scales):
        super().__init__(scales)
        self.calls = []

    def call(self, mixture, training=None):
        self.calls.append(mixture.numpy())
        return super().call(mixture)


@pytest.fixture
def eager():
    tf.config.run_functions_eagerly(True)
    yield
    tf.config.run_functions_eagerly(False)


def _separator(model):
    """1 s chunks, 0.25 s overlap, one target per scale."""
    targets = [f"t{i}" for i in range(len(model.scales))]
    return Separator(model, STFT, targets, chunk_seconds=CHUNK / 16000, overlap_seconds=OVERLAP / 16000)


def _record_chunks(separator):
    """Wrap the chunk call: every waveform chunk the model is run on."""
    seen, separate_chunk = [], separator._separate_chunk

    def recording(waves):
        seen.append(waves.numpy())
        return separate_chunk(waves)

    separator._separate_chunk = recording
    return seen


@pytest.mark.parametrize("n_samples", [CHUNK + 1, CHUNK + STEP - 1, CHUNK + 2 * STEP, 3 * CHUNK + 777])
def test_no_chunk_holds_padding_when_the_track_is_longer_than_a_chunk(n_samples):
    # sample i of the track is (i + 1) / n: never zero, and each chunk's first value names its start
    ramp = (np.arange(n_samples) + 1) / n_samples
    waves = np.stack([ramp, -ramp]).astype(np.float32)
    separator = _separator(Scale([1.0]))
    seen = _record_chunks(separator)
    separator.separate_model_rate(waves)
    starts = []
    for piece in seen:
        start = int(round(piece[0, 0] * n_samples)) - 1
        assert piece.shape == (2, CHUNK)
        np.testing.assert_array_equal(piece, waves[:, start : start + CHUNK])  # signal only, no zeros
        starts.append(start)
    assert starts[0] == 0 and starts[-1] + CHUNK == n_samples  # the last chunk ends at the track end
    assert all(0 < b - a <= STEP for a, b in zip(starts, starts[1:]))  # each overlap >= OVERLAP


@pytest.mark.parametrize(
    "n_samples",
    [1, 700, CHUNK - 1, CHUNK, CHUNK + 1, CHUNK + STEP - 1, CHUNK + STEP, CHUNK + STEP + 1, CHUNK + 3 * STEP, 50_001],
)
def test_overlap_add_gives_a_pointwise_model_its_straight_output(n_samples):
    waves = np.random.default_rng(n_samples).uniform(-0.5, 0.5, (2, n_samples)).astype(np.float32)
    out = _separator(Scale([1.0, -0.25])).separate_model_rate(waves)
    assert out.shape == (2, 2, n_samples)
    np.testing.assert_allclose(out[0], waves, atol=1e-5)
    np.testing.assert_allclose(out[1], -0.25 * waves, atol=1e-5)


@pytest.mark.parametrize("n_samples", [CHUNK // 3, CHUNK - 1])
def test_a_short_track_is_separated_at_its_own_length(eager, n_samples):
    model = RecordingScale([1.0])
    waves = np.random.default_rng(1).uniform(-0.5, 0.5, (2, n_samples)).astype(np.float32)
    out = _separator(model).separate_model_rate(waves)
    (mixture,) = model.calls
    unpadded = stft(tf.constant(waves), STFT).numpy()  # (C, frames, F)
    assert mixture.shape == (2, STFT.n_frames(n_samples), STFT.n_bins, 2)  # no padded frames
    np.testing.assert_allclose(mixture[..., 0], unpadded.real, atol=1e-4)
    np.testing.assert_allclose(mixture[..., 1], unpadded.imag, atol=1e-4)
    np.testing.assert_allclose(out[0], waves, atol=1e-5)


def _tiny_bsrnn_se():
    """N = 8, one module; SE weights x20, so the excitation swings with the squeeze as a trained
    one does (fresh, it stays near sigmoid(0) and what it squeezes barely matters)."""
    keras.utils.set_random_seed(0)
    model = BSRNN(band_scheme="coarse", feature_dim=8, num_modules=1, squeeze_excitation=True, se_reduction=4)
    model(tf.zeros([1, 4, model.n_bins, 2]), training=False)
    for block in model.se_blocks:
        for dense in (block.squeeze_dense, block.excite_dense):
            dense.kernel.assign(20.0 * dense.kernel)
    return model


def _tones(seconds, rate=BSRNN_STFT.sample_rate):
    t = np.arange(int(seconds * rate)) / rate
    noise = 0.02 * np.random.default_rng(3).standard_normal(t.size)
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 1760 * t) * (t > 0.4) + noise
    return wave.astype(np.float32)[None]  # (1, samples)


def _relative(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_bsrnn_se_separates_a_short_track_the_same_whatever_the_chunk_length():
    # 1 s in a 1 s chunk and in a 10 s chunk: the model sees the same frames (no padding), so the
    # SE squeeze and the time BLSTMs see only the track
    model, wave = _tiny_bsrnn_se(), _tones(1.0)
    rate = BSRNN_STFT.sample_rate
    short = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=1.0).separate_model_rate(wave)
    long = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=10.0).separate_model_rate(wave)
    assert short.shape == long.shape == (1, 1, rate)
    assert _relative(long, short) < 1e-5


def test_bsrnn_se_last_chunk_is_real_signal_not_padding():
    # 1.1 s in 1 s chunks with 0.25 s overlap: the last 0.1 s is separated only by the last chunk,
    # which must be the track's final second (before, it was [0.75 s, 1.75 s): 0.65 s of padding
    # averaged into the SE squeeze); so it equals a straight separation of that final second.
    model, wave = _tiny_bsrnn_se(), _tones(1.1)
    rate = BSRNN_STFT.sample_rate
    chunked = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=1.0, overlap_seconds=0.25)
    out = chunked.separate_model_rate(wave)
    last_second = Separator(model, BSRNN_STFT, ["vocals"], chunk_seconds=1.0).separate_model_rate(wave[:, -rate:])
    tail = wave.shape[1] - rate  # samples after the first chunk
    np.testing.assert_allclose(out[..., rate:], last_second[..., -tail:], rtol=0, atol=1e-5 * np.max(np.abs(out)))

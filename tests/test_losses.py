import numpy as np
import pytest
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.losses import get_loss, mag_phase_l1, mag_phase_l2


@pytest.mark.parametrize("loss, error", [(mag_phase_l1, np.abs), (mag_phase_l2, np.square)])
def test_mag_phase_losses_match_numpy_reference(loss, error):
    rng = np.random.default_rng(0)
    target = rng.standard_normal((2, 3, 5, 4, 2)).astype(np.float32)
    estimate = rng.standard_normal((2, 3, 5, 4, 2)).astype(np.float32)
    mag = lambda x: np.sqrt((x**2).sum(-1))  # noqa: E731
    for alpha in (0.0, 0.5, 1.0):
        ref = alpha * np.mean(error(mag(estimate) - mag(target))) + (1 - alpha) * np.mean(error(estimate - target))
        assert float(loss(target, estimate, alpha)) == pytest.approx(ref, rel=1e-5)
    assert float(loss(target, target)) == pytest.approx(0.0, abs=1e-5)


def test_loss_is_zero_for_perfect_estimate_and_float32_under_float16_inputs():
    x = tf.random.normal([1, 2, 3, 4, 2])
    assert float(mag_phase_l1(x, x)) == pytest.approx(0.0, abs=1e-4)
    loss = mag_phase_l1(tf.cast(x, tf.float16), tf.cast(x * 0.5, tf.float16))
    assert loss.dtype == tf.float32


def test_phase_term_sees_a_phase_error_that_the_magnitude_term_misses():
    target = tf.constant([[1.0, 0.0]])
    flipped = tf.constant([[-1.0, 0.0]])  # same magnitude, opposite phase
    assert float(mag_phase_l1(target, flipped, alpha=1.0)) == pytest.approx(0.0, abs=1e-4)
    assert float(mag_phase_l1(target, flipped, alpha=0.0)) == pytest.approx(1.0)


def test_get_loss_by_name():
    fn = get_loss("mag_phase_l1", alpha=1.0)
    x = tf.ones([1, 2, 2])
    assert float(fn(x, 2 * x)) > 0
    with pytest.raises(ConfigError, match="unknown loss"):
        get_loss("nope")


def test_get_loss_binds_only_the_arguments_a_loss_takes():
    target = tf.random.stateless_normal([1, 2, 3, 4, 2], seed=[1, 2])
    assert float(get_loss("mag_phase_l2", alpha=0.5, stft=None)(target, target)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss, silenced", [(mag_phase_l1, True), (mag_phase_l2, False)])
def test_the_best_blind_mask_for_a_sparse_source(loss, silenced):
    # The cause of issue 5 in one number: a network that cannot yet tell where a source is can
    # only give it one mask m for every bin. The source holds half of 30% of the bins and none
    # of the rest; the best m under an absolute error is the median share (0: silence), under a
    # squared error the energy-weighted mean share (0.5 * 0.3 = 0.15).
    rng = np.random.default_rng(2)
    mixture = rng.uniform(0.5, 1.5, (1, 4000)).astype(np.float32) * np.exp(1j * rng.uniform(0, 6.3, (1, 4000)))
    share = np.where(rng.uniform(size=(1, 4000)) < 0.3, 0.5, 0.0)
    to_ri = lambda x: tf.constant(np.stack([x.real, x.imag], -1), tf.float32)  # noqa: E731
    masks = np.linspace(0.0, 0.5, 51)
    values = [float(loss(to_ri(share * mixture), to_ri(m * mixture))) for m in masks]
    best = masks[int(np.argmin(values))]
    if silenced:
        assert best == 0.0
    else:
        assert best == pytest.approx(0.15, abs=0.02)


def _numpy_resolution_stft(waves, window, n_fft, hop):
    """torch.stft(center=True, pad_mode="constant", win_length=window, window=hann_window(window))
    written out: zero-pad n_fft / 2 each side, frames of n_fft every hop, the periodic Hann window
    of `window` samples centred in the frame, a real FFT."""
    padded = np.pad(waves, [(0, 0)] * (waves.ndim - 1) + [(n_fft // 2, n_fft // 2)])
    n_frames = 1 + (padded.shape[-1] - n_fft) // hop
    hann = np.zeros(n_fft)
    left = (n_fft - window) // 2
    hann[left : left + window] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)
    return np.fft.rfft(padded[..., index] * hann, axis=-1)  # (..., frames, bins)


def _numpy_roformer_paper(reference, estimate, n_fft, windows, hop):
    loss = np.mean(np.abs(estimate - reference))
    for window in windows:
        size = max(window, n_fft)
        difference = _numpy_resolution_stft(estimate, window, size, hop) - _numpy_resolution_stft(reference, window, size, hop)
        loss += np.mean(np.abs(difference))
    return loss


def test_multi_resolution_stft_l1_matches_numpy_reference():
    from mss_tf.losses import multi_resolution_stft_l1

    rng = np.random.default_rng(3)
    reference = rng.standard_normal((2, 3, 700))
    estimate = reference + 0.3 * rng.standard_normal((2, 3, 700))
    windows, hop = (128, 64, 32, 16), 7  # model n_fft 64: the 32 and 16 windows sit inside 64-point frames
    expected = _numpy_roformer_paper(reference, estimate, 64, windows, hop) - np.mean(np.abs(estimate - reference))
    got = float(multi_resolution_stft_l1(tf.constant(reference, tf.float32), tf.constant(estimate, tf.float32), 64, windows, hop))
    assert got == pytest.approx(expected, rel=1e-5)


def test_roformer_paper_loss_matches_numpy_reference_on_stereo_spectrograms():
    from mss_tf.audio.spectrogram import SpectrogramConfig, stft
    from mss_tf.losses import MULTI_STFT_HOP, MULTI_STFT_WINDOWS, roformer_paper

    config = SpectrogramConfig(8000, 256, 64)
    rng = np.random.default_rng(4)
    length = 40 * config.hop  # 41 frames; the inverse STFT gives these samples back
    reference = rng.standard_normal((2, 2, 2, length)).astype(np.float32)  # (B, S, C, samples)
    estimate = (0.5 * reference + 0.2 * rng.standard_normal(reference.shape)).astype(np.float32)
    to_spec = lambda x: tf.stack([tf.math.real(x), tf.math.imag(x)], -1)  # noqa: E731
    target_spec, estimate_spec = to_spec(stft(reference, config)), to_spec(stft(estimate, config))
    assert target_spec.shape == (2, 2, 2, 41, 129, 2)
    expected = _numpy_roformer_paper(reference.astype(np.float64), estimate.astype(np.float64), config.n_fft,
                                     MULTI_STFT_WINDOWS, MULTI_STFT_HOP)
    loss_fn = get_loss("roformer_paper", stft=config, alpha=0.5)  # alpha is not this loss's
    assert float(loss_fn(target_spec, estimate_spec)) == pytest.approx(expected, rel=1e-4)
    assert float(roformer_paper(target_spec, target_spec, config)) == pytest.approx(0.0, abs=1e-6)
    # a perfect estimate has a finite (zero) gradient: |0| is not differentiated through sqrt
    variable = tf.Variable(target_spec)
    with tf.GradientTape() as tape:
        loss = roformer_paper(target_spec, variable, config)
    assert np.all(np.isfinite(tape.gradient(loss, variable).numpy()))
    with pytest.raises(ConfigError, match="bins"):
        roformer_paper(target_spec, estimate_spec, SpectrogramConfig(8000, 512, 128))


def test_train_help_names_every_loss():
    from mss_tf.losses import LOSSES
    from tests.test_cli import parser_of

    help_text = " ".join(parser_of("train.py").format_help().split())
    for name in LOSSES:
        assert name in help_text, name

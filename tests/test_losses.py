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

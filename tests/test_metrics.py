"""uSDR (mss_tf.evaluation.metrics) against closed forms, and the training-time uSDR that shares it."""

import numpy as np
import pytest

from mss_tf.evaluation.metrics import EPS, usdr, usdr_from_energies
from mss_tf.training.health import TargetHealth


def _reference(samples=44100, seed=0):
    """A stereo tone with noise: (samples, 2) float64."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 44100
    wave = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(samples)
    return np.stack([wave, 0.5 * wave], axis=1)


def _at_snr(reference, snr_db, seed=1):
    """reference + noise whose energy is the reference's divided by 10^(snr/10)."""
    noise = np.random.default_rng(seed).standard_normal(reference.shape)
    noise *= np.sqrt(np.sum(reference**2) / 10 ** (snr_db / 10) / np.sum(noise**2))
    return reference + noise


@pytest.mark.parametrize("snr_db", [-20.0, 0.0, 7.5, 40.0])
def test_an_estimate_at_a_known_snr_scores_that_snr(snr_db):
    reference = _reference()
    assert usdr(reference, _at_snr(reference, snr_db)) == pytest.approx(snr_db, abs=1e-6)
    # float32 inputs (what the separators return) are scored in float64
    assert usdr(reference.astype(np.float32), _at_snr(reference, snr_db).astype(np.float32)) == pytest.approx(
        snr_db, abs=1e-3)


def test_a_silent_estimate_scores_exactly_0_db():
    reference = _reference()
    assert usdr(reference, np.zeros_like(reference)) == 0.0


def test_a_silent_reference_is_finite():
    estimate = _reference()
    silent = np.zeros_like(estimate)
    energy = np.sum(estimate**2)
    # any sound where there should be silence: 10 log10(EPS / (energy + EPS)), far below 0 dB
    assert usdr(silent, estimate) == pytest.approx(10 * np.log10(EPS / (energy + EPS)), abs=1e-9)
    assert usdr(silent, estimate) < -80
    assert usdr(silent, silent) == 0.0  # silence for silence


def test_a_perfect_estimate_is_finite():
    reference = _reference()
    assert usdr(reference, reference) == pytest.approx(10 * np.log10((np.sum(reference**2) + EPS) / EPS), abs=1e-9)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        usdr(np.zeros((10, 2)), np.zeros((10, 1)))


def test_training_validation_usdr_is_the_mean_of_the_same_definition():
    """TargetHealth (the loop's valid_usdr) from energies: the mean over crops of each crop's uSDR."""
    crops = [_reference(4000, seed=s) for s in range(3)]
    snrs = [3.0, 10.0, -5.0]
    estimates = {"noisy": [_at_snr(c, snr) for c, snr in zip(crops, snrs)], "silent": [np.zeros_like(c) for c in crops]}
    health = TargetHealth(["noisy", "silent"])
    for i, crop in enumerate(crops):  # one crop per batch: (3, B=1, S=2)
        energies = [[[np.sum(crop**2)] * 2], [[np.sum((crop - estimates[t][i]) ** 2) for t in estimates]],
                    [[np.sum(estimates[t][i] ** 2) for t in estimates]]]
        health.update(np.array(energies))
    summary = health.summary()
    assert summary["valid_usdr"]["noisy"] == pytest.approx(np.mean(snrs), abs=1e-6)
    assert summary["valid_usdr"]["noisy"] == pytest.approx(np.mean([usdr(c, e) for c, e in zip(crops, estimates["noisy"])]))
    assert summary["valid_usdr"]["silent"] == 0.0 and summary["energy_ratio"]["silent"] == 0.0
    np.testing.assert_array_equal(usdr_from_energies(np.array([0.0, 2.0]), np.array([0.0, 2.0])), [0.0, 0.0])

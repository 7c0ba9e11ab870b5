"""TensorBoard media for one validation example: audio per target and spectrogram images."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig, istft


def _complex(spec: tf.Tensor) -> tf.Tensor:
    spec = tf.cast(spec, tf.float32)
    return tf.complex(spec[..., 0], spec[..., 1])


def _log_image(spec: tf.Tensor) -> tf.Tensor:
    """(T, F) complex -> (F, T, 1) image in [0, 1]: log magnitude, low frequencies at the bottom."""
    db = 20.0 * tf.math.log(tf.abs(spec) + 1e-5) / tf.math.log(10.0)
    db = tf.clip_by_value(db, -80.0, 20.0)
    image = (db + 80.0) / 100.0
    return tf.reverse(tf.transpose(image), [0])[..., tf.newaxis]


def write_example(
    mixture: tf.Tensor, reference: tf.Tensor, estimate: tf.Tensor, targets: Sequence[str],
    stft: SpectrogramConfig, step: int,
) -> None:
    """Write audio (mixture, estimate and reference per target) and spectrogram images.

    Args:
        mixture: ([C,] T, F, 2) real/imaginary STFT of one validation example (C: stereo).
        reference, estimate: (S, [C,] T, F, 2) per target.
        step: the summary step (the epoch).
    Stereo examples give stereo clips; the images show the mid channel (the mean of the channels).
    Needs a default summary writer.
    """
    stereo = mixture.shape.rank == 4
    length = (int(mixture.shape[-3]) - 1) * stft.hop
    mix_wave = istft(_complex(mixture), stft, length)  # ([C,] samples)
    ref_wave = istft(_complex(reference), stft, length)  # (S, [C,] samples)
    est_wave = istft(_complex(estimate), stft, length)
    peak = tf.maximum(tf.reduce_max(tf.abs(mix_wave)), 1e-6)  # one gain for every clip: levels compare

    def audio(wave: tf.Tensor) -> tf.Tensor:  # ([C,] samples) -> (1, samples, C)
        wave = tf.transpose(wave) if stereo else wave[:, tf.newaxis]
        return tf.clip_by_value(wave / peak, -1.0, 1.0)[tf.newaxis]

    def image(spec: tf.Tensor) -> tf.Tensor:  # ([C,] T, F, 2) -> (F, T, 1)
        return _log_image(_complex(tf.reduce_mean(spec, axis=0) if stereo else spec))

    tf.summary.audio("audio/mixture", audio(mix_wave), stft.sample_rate, step=step)
    mix_image = image(mixture)
    for i, target in enumerate(targets):
        tf.summary.audio(f"audio/{target}/estimate", audio(est_wave[i]), stft.sample_rate, step=step)
        tf.summary.audio(f"audio/{target}/reference", audio(ref_wave[i]), stft.sample_rate, step=step)
        # mixture | estimate | reference side by side
        row = tf.concat([mix_image, image(estimate[i]), image(reference[i])], axis=1)
        tf.summary.image(f"spectrogram/{target} (mixture | estimate | reference)", row[tf.newaxis], step=step)

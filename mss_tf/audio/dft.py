"""The suite's STFT and inverse STFT at one static length, as matrix products with fixed bases:
what an export for LiteRT or ONNX runs, where there is no (inverse) FFT op to call.

`StaticSTFT(config, n_samples)` computes exactly `mss_tf.audio.spectrogram.stft` / `istft` of a
waveform of `n_samples` (the same centre padding, periodic Hann window, frames and least-squares
overlap-add), with only slices, concatenations, pads, reshapes, matrix products, adds and
multiplies: framing cuts the padded waveform into hop-sized blocks and concatenates n_fft / hop
neighbours (so `hop` must divide `n_fft`), the windowed DFT and inverse DFT are products with
(n_fft, 2 * bins) and (2 * bins, n_fft) bases, the overlap-add pads and adds the n_fft / hop
blocks of each frame, and the window-sum normalisation is one fixed vector for the static length.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import ConfigError


def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window of `tf.signal.hann_window(n_fft)` in float64."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)


def dft_bases(n_fft: int) -> tuple[np.ndarray, np.ndarray]:
    """(forward, inverse) float32 bases of the windowed one-sided DFT of `n_fft` points.

    forward (n_fft, 2F): frame @ forward = [real parts, imaginary parts] of rfft(frame * window);
    inverse (2F, n_fft): [real, imag] @ inverse = irfft(spectrum) * window, with the imaginary
    parts of the DC and Nyquist bins ignored as irfft ignores them. Phases are reduced modulo
    n_fft in integers before the cosines, so the bases are exact to float32 rounding.
    """
    n_bins = n_fft // 2 + 1
    k, n = np.arange(n_bins)[:, np.newaxis], np.arange(n_fft)[np.newaxis, :]
    angle = 2 * np.pi * ((k * n) % n_fft) / n_fft  # (F, n_fft)
    cos, sin = np.cos(angle), np.sin(angle)
    window = hann_window(n_fft)
    forward = np.concatenate([(cos * window).T, (-sin * window).T], axis=1)  # (n_fft, 2F)
    weight = np.full((n_bins, 1), 2.0)  # each bin but DC and Nyquist stands for its mirror too
    weight[0] = 1.0
    if n_fft % 2 == 0:
        weight[-1] = 1.0
    inverse = np.concatenate([weight * cos, -weight * sin], axis=0) * window / n_fft  # (2F, n_fft)
    return forward.astype(np.float32), inverse.astype(np.float32)


class StaticSTFT:
    """`stft` / `istft` of `config` for waveforms of exactly `n_samples` samples, in graph-friendly ops.

    Args:
        config: the model's STFT (its padding "zero" or "reflect" included).
        n_samples: the static waveform length (an export's chunk).
    Raises:
        ConfigError if `hop` does not divide `n_fft` (the framing is a reshape into hop blocks),
        or reflect padding meets a waveform of at most n_fft / 2 samples.
    """

    def __init__(self, config: SpectrogramConfig, n_samples: int) -> None:
        if config.n_fft % config.hop:
            raise ConfigError(f"STFT n_fft {config.n_fft} / hop {config.hop}: a static export frames by "
                              "hop-sized blocks, so hop must divide n_fft")
        if config.padding == "reflect" and n_samples <= config.n_fft // 2:
            raise ConfigError(f"reflect padding needs more than n_fft/2={config.n_fft // 2} samples, got {n_samples}")
        self.config = config
        self.n_samples = int(n_samples)
        self.n_frames = config.n_frames(self.n_samples)
        self.blocks_per_frame = config.n_fft // config.hop  # r
        self.left = config.n_fft // 2
        self.right = (self.n_frames - 1) * config.hop + config.n_fft - self.n_samples - self.left
        self.forward_basis, self.inverse_basis = dft_bases(config.n_fft)
        self.inverse_norm = self._inverse_norm()

    def _inverse_norm(self) -> np.ndarray:
        """1 / the overlap-added squared window on the output samples (`istft`'s divisor), (n_samples,)."""
        hop, r = self.config.hop, self.blocks_per_frame
        window_sq = hann_window(self.config.n_fft).astype(np.float32) ** 2
        norm = np.zeros((self.n_frames - 1 + r) * hop, np.float32)
        for t in range(self.n_frames):
            norm[t * hop : t * hop + self.config.n_fft] += window_sq
        norm = norm[self.left : self.left + self.n_samples]
        return (1.0 / np.maximum(norm, 1e-8)).astype(np.float32)

    def _pad(self, waveform: tf.Tensor) -> tf.Tensor:
        """(B, n) -> (B, left + n + right), zero or reflect centre padding."""
        left, right, n = self.left, self.right, self.n_samples
        if self.config.padding == "zero":
            return tf.pad(waveform, [[0, 0], [left, right]])  # (B, left + n + right)
        # reflect without repeating the edge sample: x[left], ..., x[1] | x | x[n-2], ... (cut to `right`)
        head = tf.reverse(waveform[:, 1 : left + 1], [1])  # (B, left)
        tail = tf.reverse(waveform[:, n - 1 - min(right, left) : n - 1], [1])  # (B, min(right, left))
        padded = tf.concat([head, waveform, tail], axis=1)  # (B, left + n + min(right, left))
        extra = right - min(right, left)
        return tf.pad(padded, [[0, 0], [0, extra]]) if extra > 0 else padded

    def stft(self, waveform: tf.Tensor) -> tf.Tensor:
        """(B, n_samples) float32 -> (B, frames, bins, 2) float32 [real, imag], the model's input layout."""
        hop, r, t = self.config.hop, self.blocks_per_frame, self.n_frames
        padded = self._pad(tf.convert_to_tensor(waveform, tf.float32))  # (B, (t - 1 + r) * hop)
        blocks = tf.reshape(padded, [-1, t - 1 + r, hop])  # (B, t - 1 + r, hop)
        frames = tf.concat([blocks[:, j : j + t] for j in range(r)], axis=-1)  # (B, t, n_fft)
        spectrum = tf.matmul(tf.reshape(frames, [-1, self.config.n_fft]), self.forward_basis)  # (B*t, 2F)
        spectrum = tf.reshape(spectrum, [-1, t, 2, self.config.n_bins])  # (B, t, 2, F)
        return tf.transpose(spectrum, [0, 1, 3, 2])  # (B, t, F, 2)

    def istft(self, spectrum: tf.Tensor) -> tf.Tensor:
        """(B, frames, bins, 2) float32 [real, imag] -> (B, n_samples) float32."""
        hop, r, t = self.config.hop, self.blocks_per_frame, self.n_frames
        halves = tf.transpose(spectrum, [0, 1, 3, 2])  # (B, t, 2, F)
        frames = tf.matmul(tf.reshape(halves, [-1, 2 * self.config.n_bins]), self.inverse_basis)  # (B*t, n_fft)
        frames = tf.reshape(frames, [-1, t, r, hop])  # (B, t, r, hop): frame t's block j lands on block t + j
        signal = tf.add_n([tf.pad(frames[:, :, j], [[0, 0], [j, r - 1 - j], [0, 0]]) for j in range(r)])  # (B, t-1+r, hop)
        signal = tf.reshape(signal, [-1, (t - 1 + r) * hop])[:, self.left : self.left + self.n_samples]  # (B, n)
        return signal * self.inverse_norm  # (B, n)

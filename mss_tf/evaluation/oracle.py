"""Oracle (ideal-mask) separations: the ceiling of a mask-based model at a given STFT.

As sigsep's oracle methods (sigsep-mus-oracle) compute them, but at the STFT of one of our
models (its sample rate, n_fft and hop), so a model's report shows how far it is from what any
mask on its own spectrogram could reach:

* ``irm1``: ratio mask of magnitudes, |S_j| / sum_k |S_k|
* ``irm2``: ratio mask of powers (the Wiener-like oracle), |S_j|^2 / sum_k |S_k|^2
* ``ibm``:  binary mask, 1 where |S_j| / sum_k |S_k| > 0.5 (sigsep's IBM with alpha=1, theta=0.5)

The masks use every stem of the track (the four MUSDB targets), apply to the mixture STFT
(mixture phase) and are inverted with the same iSTFT the models use; channels are processed
independently, as the models do. Audio is resampled to the STFT's rate and back, so a 16 kHz
model's oracle also carries the cost of its bandwidth.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from mss_tf.audio import io as audio_io
from mss_tf.audio.spectrogram import SpectrogramConfig, istft, stft
from mss_tf.audio.waveform import fit_length
from mss_tf.errors import ConfigError

KINDS = ("irm1", "irm2", "ibm")
EPS = 1e-10


class OracleSeparator:
    """Ideal masks from the references: `separate(mixture, rate, references)` -> estimates."""

    uses_references = True

    def __init__(self, kind: str, stft_config: SpectrogramConfig, targets: Sequence[str]) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown oracle {kind!r} (choose from {', '.join(KINDS)})")
        self.kind = kind
        self.stft_config = stft_config
        self.targets = list(targets)
        self.name = f"oracle-{kind}"

    def masks(self, magnitudes: np.ndarray) -> np.ndarray:
        """(sources, ...) magnitudes -> (sources, ...) masks."""
        power = 2.0 if self.kind == "irm2" else 1.0
        weights = magnitudes**power
        ratio = weights / (np.sum(weights, axis=0, keepdims=True) + EPS)
        return (ratio > 0.5).astype(np.float32) if self.kind == "ibm" else ratio.astype(np.float32)

    def separate(self, mixture: np.ndarray, sample_rate: int, references: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """(samples, channels) mixture and references -> {target: (samples, channels)} estimates."""
        config = self.stft_config
        sources = [name for name in references if name != "mixture"]
        missing = [t for t in self.targets if t not in sources]
        if missing:
            raise ConfigError(f"the oracle needs the reference of {', '.join(missing)}")
        to_model = lambda audio: audio_io.resample(np.asarray(audio, np.float32), sample_rate, config.sample_rate).T  # noqa: E731
        mix = to_model(mixture)  # (channels, samples)
        n = mix.shape[-1]
        mix_spec = stft(tf.constant(mix), config).numpy()  # (channels, frames, bins)
        magnitudes = np.stack([np.abs(stft(tf.constant(to_model(references[s])), config).numpy()) for s in sources])
        masks = self.masks(magnitudes)
        out = {}
        for target in self.targets:
            spec = masks[sources.index(target)] * mix_spec
            wave = istft(tf.constant(spec.astype(np.complex64)), config, n).numpy().T  # (samples, channels)
            back = audio_io.resample(wave, config.sample_rate, sample_rate)
            out[target] = fit_length(back, mixture.shape[0])
        return out

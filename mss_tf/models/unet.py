"""Lightweight U-Net on magnitude spectrograms (seed design, after TFC-TDF-UNet v3 scaled down).

Tensor layout used by every separator in mss_tf: the mixture STFT comes in as float32
(batch, frames, bins, 2) holding real and imaginary parts, and the estimates go out as
(batch, targets, frames, bins, 2). The U-Net only sees the magnitude and reuses the
mixture phase, so its estimate of target i is `ratio_i * mixture` with a real ratio.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import tensorflow as tf

from mss_tf import TARGETS
from mss_tf.errors import ConfigError
from mss_tf.models.search import HyperParameter, scaled_choices


class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization over the last axis of a 4-D tensor, computed by TensorFlow's fused
    kernel (`FusedBatchNormV3`: one pass for the statistics, the normalisation and its gradient;
    about 5x faster on CPU than the moments and arithmetic Keras 3 builds). The same variables
    (gamma, beta, moving mean and variance), the same biased batch variance in the moving average
    and the same outputs to float rounding, so checkpoints of either load into the other.
    """

    def call(self, inputs: tf.Tensor, training: bool | None = None, mask: Any = None) -> tf.Tensor:
        if mask is not None or inputs.shape.rank != 4 or self.axis not in (-1, 3) or not (self.scale and self.center):
            return super().call(inputs, training=training, mask=mask)
        dtype = inputs.dtype
        x = tf.cast(inputs, tf.float32)  # as Keras: statistics in float32 under mixed precision
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
            )
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            variance = variance * (count - 1.0) / tf.maximum(count, 2.0)  # the kernel's is unbiased
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, self.gamma, self.beta, mean=self.moving_mean, variance=self.moving_variance,
                epsilon=self.epsilon, is_training=False,
            )
        return tf.cast(y, dtype)


class EncoderBlock(keras.layers.Layer):
    """Conv2D -> BatchNorm -> ReLU -> MaxPool(2x2); returns (pooled, skip)."""

    def __init__(self, filters: int, kernel_size: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.conv = keras.layers.Conv2D(filters, kernel_size, padding="same", use_bias=False)
        self.norm = FusedBatchNormalization()
        self.pool = keras.layers.MaxPooling2D(2)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        skip = tf.nn.relu(self.norm(self.conv(x), training=training))  # (B, T, F, filters)
        return self.pool(skip), skip  # (B, T/2, F/2, filters), (B, T, F, filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


class DecoderBlock(keras.layers.Layer):
    """Conv2DTranspose (stride 2) + ReLU -> concatenate the encoder skip -> Dropout."""

    def __init__(self, filters: int, kernel_size: int = 3, dropout: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dropout_rate = dropout
        self.upsample = keras.layers.Conv2DTranspose(
            filters, kernel_size, strides=2, padding="same", activation="relu"
        )
        self.dropout = keras.layers.Dropout(dropout)

    def call(self, x: tf.Tensor, skip: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        x = self.upsample(x)  # (B, 2T, 2F, filters)
        x = tf.concat([x, tf.cast(skip, x.dtype)], axis=-1)  # (B, 2T, 2F, filters + skip filters)
        return self.dropout(x, training=training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dropout": self.dropout_rate,
        }


@keras.saving.register_keras_serializable(package="mss_tf")
class UNet(keras.Model):
    """Lightweight U-Net separating all targets from one mixture magnitude spectrogram.

    The input magnitude is zero-padded to a multiple of 8 in time and frequency (three 2x2
    poolings) and the output is cropped back. Encoder: 3 x [Conv2D 3x3 -> BatchNorm -> ReLU
    -> MaxPool 2x2] with `filters` (8, 16, 32); bottleneck: Conv2D 3x3 with
    `bottleneck_filters` (64) + ReLU + Dropout(0.3); decoder: 3 x [Conv2DTranspose 3x3
    stride 2 + ReLU -> concatenate skip -> Dropout(0.2)] with the encoder filters reversed;
    head: a 1x1 Conv2D with one channel per target.

    Args:
        targets: names of the estimated sources, one head channel each.
        filters: encoder filters per level (decoder mirrors them).
        bottleneck_filters: filters of the bottleneck convolution.
        kernel_size: kernel of every 3x3 convolution (seed leaves it open; 3 chosen).
        bottleneck_dropout: dropout after the bottleneck (seed: 0.3).
        decoder_dropout: dropout after each skip concatenation (seed: 0.2).
        output: "mask" (default) estimates sigmoid(head) * |mixture|; "magnitude" is the
            seed's direct non-negative magnitude, relu(head). Both reuse the mixture phase.
        input_scaling: "log1p" feeds log(1 + |X|) to the network (magnitudes span several
            decades; this keeps the first BatchNorm well conditioned), "none" feeds |X|.
    """

    def __init__(
        self,
        targets: Sequence[str] = TARGETS,
        filters: Sequence[int] = (8, 16, 32),
        bottleneck_filters: int = 64,
        kernel_size: int = 3,
        bottleneck_dropout: float = 0.3,
        decoder_dropout: float = 0.2,
        output: str = "mask",
        input_scaling: str = "log1p",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if output not in ("mask", "magnitude"):
            raise ConfigError(f"UNet output must be 'mask' or 'magnitude', got {output!r}")
        if input_scaling not in ("log1p", "none"):
            raise ConfigError(f"UNet input_scaling must be 'log1p' or 'none', got {input_scaling!r}")
        if len(filters) != 3:
            raise ConfigError(f"UNet has three levels; filters must have 3 entries, got {list(filters)}")
        self.targets = list(targets)
        self.filters = [int(f) for f in filters]
        self.bottleneck_filters = int(bottleneck_filters)
        self.kernel_size = int(kernel_size)
        self.bottleneck_dropout = float(bottleneck_dropout)
        self.decoder_dropout = float(decoder_dropout)
        self.output_mode = output
        self.input_scaling = input_scaling
        self.encoder = [EncoderBlock(f, kernel_size, name=f"encoder_{i}") for i, f in enumerate(self.filters)]
        self.bottleneck = keras.layers.Conv2D(
            self.bottleneck_filters, kernel_size, padding="same", activation="relu", name="bottleneck"
        )
        self.bottleneck_drop = keras.layers.Dropout(self.bottleneck_dropout)
        self.decoder = [
            DecoderBlock(f, kernel_size, self.decoder_dropout, name=f"decoder_{i}")
            for i, f in enumerate(reversed(self.filters))
        ]
        self.head = keras.layers.Conv2D(len(self.targets), 1, name="head")

    def call(self, mixture: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        mixture = tf.cast(mixture, tf.float32)  # (B, T, F, 2)
        mix_mag = tf.sqrt(tf.reduce_sum(tf.square(mixture), axis=-1) + 1e-12)  # (B, T, F)
        features = tf.math.log1p(mix_mag) if self.input_scaling == "log1p" else mix_mag
        n_frames, n_bins = tf.shape(mix_mag)[1], tf.shape(mix_mag)[2]
        pad_t = (-n_frames) % 8
        pad_f = (-n_bins) % 8
        x = tf.pad(features, [[0, 0], [0, pad_t], [0, pad_f]])[..., tf.newaxis]  # (B, T8, F8, 1)
        x = tf.cast(x, self.compute_dtype)
        skips = []
        for block in self.encoder:
            x, skip = block(x, training=training)  # x: (B, T8/2^l, F8/2^l, filters_l)
            skips.append(skip)
        x = self.bottleneck_drop(self.bottleneck(x), training=training)  # (B, T8/8, F8/8, 64)
        for block, skip in zip(self.decoder, reversed(skips)):
            x = block(x, skip, training=training)  # (B, 2x T, 2x F, filters + skip filters)
        head = tf.cast(self.head(x), tf.float32)[:, :n_frames, :n_bins, :]  # (B, T, F, targets)
        head = tf.transpose(head, [0, 3, 1, 2])  # (B, targets, T, F)
        if self.output_mode == "mask":
            ratio = tf.sigmoid(head)
        else:
            ratio = tf.nn.relu(head) / mix_mag[:, tf.newaxis]  # magnitude / |mixture|
        return ratio[..., tf.newaxis] * mixture[:, tf.newaxis]  # (B, targets, T, F, 2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "targets": self.targets,
            "filters": self.filters,
            "bottleneck_filters": self.bottleneck_filters,
            "kernel_size": self.kernel_size,
            "bottleneck_dropout": self.bottleneck_dropout,
            "decoder_dropout": self.decoder_dropout,
            "output": self.output_mode,
            "input_scaling": self.input_scaling,
        }


def search_space(kwargs: dict[str, Any]) -> list[HyperParameter]:
    """What `train.py --tune` searches for a U-Net preset with these arguments (beside the
    training settings of `mss_tf.models.search.training_space`)."""
    base = int(list(kwargs.get("filters", (8, 16, 32)))[0])
    return [
        HyperParameter("base_filters", "choice", values=scaled_choices(base, (0.5, 1, 2), minimum=2),
                       help="filters of the first level; the others are x2, x4 and the bottleneck keeps the preset's ratio"),
        HyperParameter("bottleneck_dropout", "float", 0.0, 0.5, help="dropout after the bottleneck"),
        HyperParameter("decoder_dropout", "float", 0.0, 0.5, help="dropout in each decoder block"),
    ]


def search_kwargs(values: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for chosen search values (`kwargs`: the preset's, for the ratios)."""
    out = {k: v for k, v in values.items() if k != "base_filters"}
    if "base_filters" in values:
        filters = [int(f) for f in kwargs.get("filters", (8, 16, 32))]
        ratio = int(kwargs.get("bottleneck_filters", 64)) / filters[0]
        base = int(values["base_filters"])
        out.update(filters=[base, 2 * base, 4 * base], bottleneck_filters=max(1, int(round(base * ratio))))
    return out

"""BS-RoFormer (Lu et al., "Music Source Separation with Band-Split RoPE Transformer", arXiv
2309.02612) and Mel-Band RoFormer (Wang et al., "Mel-Band RoFormer for Music Source Separation",
arXiv 2310.01809): band-split transformers with rotary position embeddings.

The semantics are those of the training code the public checkpoints come from
(ZFTurbo/Music-Source-Separation-Training, models/bs_roformer/, after lucidrains/BS-RoFormer), so
that converted weights give the same outputs; where that code differs from the papers (per-head
attention gates, where the RMSNorms sit, how the mask MLP's depth counts), the constructor names
the switch. In the reference's order, one block per class: norm, rotary embedding, attention,
feed-forward, transformer, (band split and mask estimator: `mss_tf.models.per_band`, shared with
BSRNN), the bands, the models.

    mixture -> band split (per band RMSNorm + Dense) -> depth x [time transformer per band,
            freq transformer per frame] -> [final RMSNorm] -> per target, per band MLP + GLU
            -> complex mask x mixture

Tensor layout: as BSRNN (the suite's convention): the mixture STFT comes in as float32 (batch,
frames, bins, 2) [real, imag], or (batch, 2, frames, bins, 2) with `channels=2`, and the
estimates go out as (batch, targets, [2,] frames, bins, 2) float32. Inside, features are
(B, T, K, D): batch, frames, bands, feature dim. The STFT itself stays outside the model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.models.per_band import BandSplit, MaskEstimator, normalize
from mss_tf.models.search import HyperParameter, scaled_choices

ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "dot_product_attention")
MASK_DEPTH_COUNTS = ("linear_layers", "hidden_layers")

# The reference's band layout for n_fft 2048 (1025 bins, 44.1 kHz): 24 bands of 2 bins, 12 of 4,
# 8 of 12, 8 of 24, 8 of 48, then 128 and 129 (62 bands; bs_roformer.py's DEFAULT_FREQS_PER_BANDS).
DEFAULT_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
DEFAULT_BANDS_STFT = (44100, 2048)  # the STFT those bins are counted at


def dot_product_attention_available() -> bool:
    """Whether this Keras has a correct `keras.ops.dot_product_attention`: Keras >= 3.7 (3.5 has
    none; 3.6.0's TensorFlow version multiplies the logits by themselves instead of the scale)."""
    major, minor = (int(part) for part in keras.__version__.split(".")[:2])
    return hasattr(keras.ops, "dot_product_attention") and (major, minor) >= (3, 7)


def resolve_attention_implementation(implementation: str) -> str:
    """"auto" -> "einsum"; other values unchanged. On TensorFlow, `keras.ops.dot_product_attention`
    (Keras >= 3.7) runs the same einsums and float32 softmax, with no fused kernel and no dropout;
    measured on 2 CPU cores with Keras 3.7, the two took turns being faster by 10-25% (the same
    ops; noise), and the pinned Keras 3.5 has no such op."""
    if implementation != "auto":
        return implementation
    return "einsum"


# --- norm -------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mss_tf")
class RMSNorm(keras.layers.Layer):
    """RMSNorm as the reference writes it: F.normalize(x) * sqrt(dim) * gamma, in float32.

    Args:
        dim: features (the last axis).
    """

    def __init__(self, dim: int, **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)  # gamma stays float32
        super().__init__(**kwargs)
        self.dim = int(dim)

    def build(self, input_shape: Any = None) -> None:
        self.gamma = self.add_weight(name="gamma", shape=(self.dim,), initializer="ones")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        out = normalize(tf.cast(x, tf.float32), "rms") * self.gamma  # (..., dim)
        return tf.cast(out, self.compute_dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim}


# --- rotary embedding -----------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mss_tf")
class RotaryEmbedding(keras.layers.Layer):
    """Rotary position embedding (RoPE) of rotary_embedding_torch's `RotaryEmbedding(dim)`, the
    reference's: feature pairs (2i, 2i + 1) of each head are rotated by the angle
    position * theta ** (-2i / dim), positions 0 .. n-1 along the sequence axis.

    The frequencies are a (dim / 2,) non-trainable weight `freqs` (a parameter of the reference's
    state dict). One instance serves every attention layer of one axis (time or bands).

    `call(x)`: x (B, n, heads, dim) -> the same shape, each position's pairs rotated; computed
    in float32 (as the reference, whose rotation runs outside autocast).

    Args:
        dim: features per head to rotate (all of them: dim_head).
        theta: the base of the frequencies.
    """

    def __init__(self, dim: int, theta: float = 10000.0, **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if dim % 2:
            raise ConfigError(f"rotary embedding needs an even dim_head, got {dim}")
        self.dim = int(dim)
        self.theta = float(theta)

    def build(self, input_shape: Any = None) -> None:
        exponents = np.arange(0, self.dim, 2, dtype=np.float32) / np.float32(self.dim)  # (dim / 2,)
        freqs = (1.0 / np.float32(self.theta) ** exponents).astype(np.float32)
        self.freqs = self.add_weight(name="freqs", shape=(self.dim // 2,), trainable=False,
                                     initializer=keras.initializers.Constant(freqs))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        positions = tf.range(shape[1], dtype=tf.float32)  # (n,)
        angles = positions[:, tf.newaxis] * self.freqs[tf.newaxis, :]  # (n, dim / 2)
        cos, sin = tf.cos(angles)[:, tf.newaxis], tf.sin(angles)[:, tf.newaxis]  # (n, 1, dim / 2)
        pairs = tf.reshape(tf.cast(x, tf.float32), tf.concat([shape[:-1], [self.dim // 2, 2]], axis=0))  # (B, n, H, dim/2, 2)
        even, odd = pairs[..., 0], pairs[..., 1]  # (B, n, H, dim / 2) each
        rotated = tf.stack([even * cos - odd * sin, odd * cos + even * sin], axis=-1)  # (B, n, H, dim / 2, 2)
        return tf.cast(tf.reshape(rotated, shape), x.dtype)  # (B, n, H, dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "theta": self.theta}


# --- attention --------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mss_tf")
class Attention(keras.layers.Layer):
    """Multi-head self-attention with rotary embeddings on queries and keys, as the reference:
    x -> RMSNorm -> to_qkv (no bias) -> q, k rotated -> softmax(q k^T / sqrt(dim_head)) v, per head
    [x sigmoid(to_gates(normed x)), one gate per head and position] -> to_out (no bias) -> dropout.

    Args:
        dim: features in and out.
        heads: attention heads.
        dim_head: features per head.
        dropout: dropout on the attention weights and on the output (training only).
        rotary_embed: the `RotaryEmbedding` of this axis (shared; not part of the config).
        gated: the per-head output gates of the reference code (not in the papers).
        implementation: "auto", "einsum" (einsum, softmax in float32, einsum) or
            "dot_product_attention" (`keras.ops.dot_product_attention`, Keras >= 3.7; training
            with dropout > 0 runs the einsum path, the op having no dropout).
    """

    def __init__(
        self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
        rotary_embed: RotaryEmbedding | None = None, gated: bool = True, implementation: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dim, self.heads, self.dim_head = int(dim), int(heads), int(dim_head)
        self.dropout = float(dropout)
        self.gated = bool(gated)
        self.implementation = implementation
        self.scale = self.dim_head ** -0.5
        self.rotary_embed = rotary_embed
        self.norm = RMSNorm(self.dim, name="norm")
        self.to_qkv = keras.layers.Dense(3 * self.heads * self.dim_head, use_bias=False, name="to_qkv")
        self.to_gates = keras.layers.Dense(self.heads, name="to_gates") if self.gated else None
        self.to_out = keras.layers.Dense(self.dim, use_bias=False, name="to_out")
        self.attention_dropout = keras.layers.Dropout(self.dropout)
        self.output_dropout = keras.layers.Dropout(self.dropout)

    def build(self, input_shape: Any = None) -> None:
        self.norm.build()
        self.to_qkv.build((None, None, self.dim))
        if self.to_gates is not None:
            self.to_gates.build((None, None, self.dim))
        self.to_out.build((None, None, self.heads * self.dim_head))
        if self.rotary_embed is not None and not self.rotary_embed.built:
            self.rotary_embed.build()

    def attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """q, k, v: (B, n, heads, dim_head) -> (B, n, heads, dim_head)."""
        implementation = resolve_attention_implementation(self.implementation)
        if implementation == "dot_product_attention" and not (training and self.dropout > 0):
            return keras.ops.dot_product_attention(q, k, v, scale=self.scale)
        sim = tf.einsum("bihd,bjhd->bhij", q, k) * tf.cast(self.scale, q.dtype)  # (B, heads, n, n)
        weights = tf.nn.softmax(tf.cast(sim, tf.float32), axis=-1)  # (B, heads, n, n), float32
        weights = self.attention_dropout(tf.cast(weights, v.dtype), training=training)
        return tf.einsum("bhij,bjhd->bihd", weights, v)  # (B, n, heads, dim_head)

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """x: (B, n, dim) -> (B, n, dim)."""
        x = self.norm(x)  # (B, n, dim)
        shape = tf.shape(x)
        qkv = tf.reshape(self.to_qkv(x), [shape[0], shape[1], 3, self.heads, self.dim_head])  # 'b n (qkv h d)'
        q, k, v = tf.unstack(qkv, axis=2)  # (B, n, heads, dim_head) each
        if self.rotary_embed is not None:
            q, k = self.rotary_embed(q), self.rotary_embed(k)
        out = self.attend(q, k, v, training=training)  # (B, n, heads, dim_head)
        if self.to_gates is not None:
            gates = tf.sigmoid(self.to_gates(x))  # (B, n, heads)
            out = out * gates[..., tf.newaxis]  # (B, n, heads, dim_head)
        out = tf.reshape(out, [shape[0], shape[1], self.heads * self.dim_head])  # 'b n (h d)'
        return self.output_dropout(self.to_out(out), training=training)  # (B, n, dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads, "dim_head": self.dim_head,
                "dropout": self.dropout, "gated": self.gated, "implementation": self.implementation}


# --- feed-forward -----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mss_tf")
class FeedForward(keras.layers.Layer):
    """RMSNorm -> Dense(mult * dim) -> GELU (exact) -> dropout -> Dense(dim) -> dropout.

    Args:
        dim: features in and out.
        mult: hidden size / dim.
        dropout: dropout rate (training only).
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.mult, self.dropout = int(dim), int(mult), float(dropout)
        self.norm = RMSNorm(self.dim, name="norm")
        self.proj_in = keras.layers.Dense(self.mult * self.dim, name="proj_in")
        self.proj_out = keras.layers.Dense(self.dim, name="proj_out")
        self.hidden_dropout = keras.layers.Dropout(self.dropout)
        self.output_dropout = keras.layers.Dropout(self.dropout)

    def build(self, input_shape: Any = None) -> None:
        self.norm.build()
        self.proj_in.build((None, None, self.dim))
        self.proj_out.build((None, None, self.mult * self.dim))

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """x: (B, n, dim) -> (B, n, dim)."""
        h = keras.activations.gelu(self.proj_in(self.norm(x)), approximate=False)  # (B, n, mult * dim)
        h = self.hidden_dropout(h, training=training)
        return self.output_dropout(self.proj_out(h), training=training)  # (B, n, dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "mult": self.mult, "dropout": self.dropout}


# --- transformer ------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mss_tf")
class Transformer(keras.layers.Layer):
    """`depth` layers of x = attention(x) + x; x = feed_forward(x) + x, then an RMSNorm when
    `norm_output` (the reference: Mel-Band RoFormer's transformers have it, BS-RoFormer's do not,
    the model ending with a final RMSNorm instead).

    Args:
        dim, heads, dim_head: as Attention.
        depth: attention + feed-forward layers.
        attn_dropout, ff_dropout: dropout rates of the attention and feed-forward blocks.
        norm_output: an RMSNorm after the last layer.
        rotary_embed: the shared `RotaryEmbedding` of this transformer's axis.
        gated_attention, attention_implementation: as Attention's `gated`, `implementation`.
    """

    def __init__(
        self, dim: int, depth: int, heads: int = 8, dim_head: int = 64, attn_dropout: float = 0.0,
        ff_dropout: float = 0.0, norm_output: bool = True, rotary_embed: RotaryEmbedding | None = None,
        gated_attention: bool = True, attention_implementation: str = "auto", **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dim, self.depth, self.heads, self.dim_head = int(dim), int(depth), int(heads), int(dim_head)
        self.attn_dropout, self.ff_dropout = float(attn_dropout), float(ff_dropout)
        self.norm_output = bool(norm_output)
        self.gated_attention = bool(gated_attention)
        self.attention_implementation = attention_implementation
        self.attention = [
            Attention(dim, heads, dim_head, attn_dropout, rotary_embed, gated_attention, attention_implementation,
                      name=f"attention_{i}")
            for i in range(self.depth)
        ]
        self.feed_forward = [FeedForward(dim, 4, ff_dropout, name=f"feed_forward_{i}") for i in range(self.depth)]
        self.norm = RMSNorm(dim, name="norm") if self.norm_output else None

    def build(self, input_shape: Any = None) -> None:
        for attention, feed_forward in zip(self.attention, self.feed_forward):
            attention.build()
            feed_forward.build()
        if self.norm is not None:
            self.norm.build()

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """x: (B, n, dim) -> (B, n, dim)."""
        for attention, feed_forward in zip(self.attention, self.feed_forward):
            x = attention(x, training=training) + x  # (B, n, dim)
            x = feed_forward(x, training=training) + x  # (B, n, dim)
        return self.norm(x) if self.norm is not None else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "depth": self.depth, "heads": self.heads,
                "dim_head": self.dim_head, "attn_dropout": self.attn_dropout, "ff_dropout": self.ff_dropout,
                "norm_output": self.norm_output, "gated_attention": self.gated_attention,
                "attention_implementation": self.attention_implementation}


# --- bands ------------------------------------------------------------------------------------


def bs_roformer_bands(sample_rate: int, n_fft: int) -> list[int]:
    """Bins per band of BS-RoFormer's default layout at an STFT: the reference's 62 bands at
    44.1 kHz / n_fft 2048 (`DEFAULT_FREQS_PER_BANDS`), elsewhere their edges in Hz mapped to this
    STFT's nearest bins and cut at Nyquist (bands left without bins merge with the next). At
    16 kHz / n_fft 1024: 52 bands, the last from 7.75 kHz to Nyquist."""
    n_bins = n_fft // 2 + 1
    reference_rate, reference_fft = DEFAULT_BANDS_STFT
    edges_hz = np.cumsum(DEFAULT_FREQS_PER_BANDS)[:-1] * reference_rate / reference_fft  # upper edges, last excluded
    edges = sorted({int(round(hz * n_fft / sample_rate)) for hz in edges_hz} - {0})
    edges = [e for e in edges if e < n_bins]
    return [int(w) for w in np.diff([0, *edges, n_bins])]


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels) with its defaults (Slaney
    mel scale and area normalisation, 0 Hz to Nyquist, float32), written out in NumPy with the same
    operations, so the model needs no librosa import: (n_mels, n_fft / 2 + 1)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def hz_to_mel(hz: float) -> float:
        return min_log_mel + np.log(hz / min_log_hz) / logstep if hz >= min_log_hz else hz / f_sp

    def mel_to_hz(mels: np.ndarray) -> np.ndarray:
        hz = f_sp * mels
        log = mels >= min_log_mel
        hz[log] = min_log_hz * np.exp(logstep * (mels[log] - min_log_mel))
        return hz

    fft_freqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)  # (F,)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(float(sample_rate) / 2), n_mels + 2))  # (n_mels + 2,)
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fft_freqs)  # (n_mels + 2, F)
    weights = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for i in range(n_mels):
        lower = -ramps[i] / fdiff[i]
        upper = ramps[i + 2] / fdiff[i + 1]
        weights[i] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def mel_band_bins(sample_rate: int, n_fft: int, num_bands: int) -> list[np.ndarray]:
    """The bins of each Mel-Band RoFormer band, as the reference derives them: the mel filter
    bank (`mel_filterbank`) with its first bin in the first band and its last bin in the last band
    (forced, as the reference does), binary (> 0). Bands overlap: a bin belongs to every band
    whose filter is nonzero there."""
    filters = mel_filterbank(sample_rate, n_fft, num_bands)
    filters[0, 0] = 1.0
    filters[-1, -1] = 1.0
    covered = filters > 0  # (bands, F)
    if not covered.any(axis=0).all():
        missing = np.flatnonzero(~covered.any(axis=0))
        raise ConfigError(f"{num_bands} mel bands at {sample_rate} Hz / n_fft {n_fft} leave bins {missing.tolist()[:5]} "
                          "in no band (use fewer bands)")
    if not covered.any(axis=1).all():
        raise ConfigError(f"{num_bands} mel bands at {sample_rate} Hz / n_fft {n_fft}: some bands hold no bin "
                          "(use fewer bands)")
    return [np.flatnonzero(row) for row in covered]


# --- the models -------------------------------------------------------------------------------


class _BandRoformer(keras.Model):
    """What BS-RoFormer and Mel-Band RoFormer share: band split, the axial transformers, the mask
    heads and the complex masking. Subclasses say which bins each band holds (`_bands`) and how
    the band-ordered values map to and from the spectrum (`split_values`, `merge_masks`)."""

    def __init__(
        self, targets: Sequence[str], sample_rate: int, n_fft: int, channels: int, dim: int, depth: int,
        time_transformer_depth: int, freq_transformer_depth: int, heads: int, dim_head: int,
        attn_dropout: float, ff_dropout: float, mask_estimator_depth: int, mlp_expansion_factor: int,
        zero_dc: bool, gated_attention: bool, final_norm: bool, transformer_norm_output: bool,
        mask_estimator_depth_counts: str, attention_implementation: str, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        name = type(self).__name__
        if not targets:
            raise ConfigError(f"{name} needs at least one target")
        if channels not in (1, 2):
            raise ConfigError(f"{name} channels must be 1 or 2, got {channels}")
        if min(dim, depth, heads, dim_head, time_transformer_depth, freq_transformer_depth) < 1:
            raise ConfigError(f"{name} dim, depth, heads, dim_head and the transformer depths must be positive")
        if attention_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise ConfigError(f"attention_implementation must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, "
                              f"got {attention_implementation!r}")
        if attention_implementation == "dot_product_attention" and not dot_product_attention_available():
            raise ConfigError(f"attention_implementation='dot_product_attention' needs keras.ops.dot_product_attention "
                              f"of Keras >= 3.7 (this is Keras {keras.__version__}); use 'einsum' or 'auto'")
        if mask_estimator_depth_counts not in MASK_DEPTH_COUNTS:
            raise ConfigError(f"mask_estimator_depth_counts must be one of {', '.join(MASK_DEPTH_COUNTS)}, "
                              f"got {mask_estimator_depth_counts!r}")
        if mask_estimator_depth < 1:
            raise ConfigError(f"{name} mask_estimator_depth must be >= 1, got {mask_estimator_depth}")
        self.targets = list(targets)
        self.sample_rate, self.n_fft, self.channels = int(sample_rate), int(n_fft), int(channels)
        self.dim, self.depth, self.heads, self.dim_head = int(dim), int(depth), int(heads), int(dim_head)
        self.time_transformer_depth = int(time_transformer_depth)
        self.freq_transformer_depth = int(freq_transformer_depth)
        self.attn_dropout, self.ff_dropout = float(attn_dropout), float(ff_dropout)
        self.mask_estimator_depth = int(mask_estimator_depth)
        self.mlp_expansion_factor = int(mlp_expansion_factor)
        self.zero_dc = bool(zero_dc)
        self.gated_attention = bool(gated_attention)
        self.final_norm_enabled = bool(final_norm)
        self.transformer_norm_output = bool(transformer_norm_output)
        self.mask_estimator_depth_counts = mask_estimator_depth_counts
        self.attention_implementation = attention_implementation
        self.n_bins = self.n_fft // 2 + 1
        self.band_widths = self._bands()  # bins per band
        values_per_bin = 2 * self.channels

        self.band_split = BandSplit(self.band_widths, self.dim, values_per_bin, norm="rms", name="band_split")
        # one rotary embedding per axis, shared by all its attention layers (as the reference)
        self.time_rotary_embed = RotaryEmbedding(self.dim_head, name="time_rotary_embed")
        self.freq_rotary_embed = RotaryEmbedding(self.dim_head, name="freq_rotary_embed")
        common = dict(heads=self.heads, dim_head=self.dim_head, attn_dropout=self.attn_dropout,
                      ff_dropout=self.ff_dropout, norm_output=self.transformer_norm_output,
                      gated_attention=self.gated_attention, attention_implementation=attention_implementation)
        self.time_transformers = [
            Transformer(self.dim, self.time_transformer_depth, rotary_embed=self.time_rotary_embed,
                        name=f"time_transformer_{i}", **common)
            for i in range(self.depth)
        ]
        self.freq_transformers = [
            Transformer(self.dim, self.freq_transformer_depth, rotary_embed=self.freq_rotary_embed,
                        name=f"freq_transformer_{i}", **common)
            for i in range(self.depth)
        ]
        self.final_norm = RMSNorm(self.dim, name="final_norm") if self.final_norm_enabled else None
        # bs_roformer.py's MLP has `depth` Linear layers, mel_band_roformer.py's `depth` hidden ones
        hidden_layers = self.mask_estimator_depth - (self.mask_estimator_depth_counts == "linear_layers")
        self.mask_estimators = [
            MaskEstimator(self.band_widths, self.dim, self.dim * self.mlp_expansion_factor, values_per_bin,
                          norm=None, hidden_layers=hidden_layers, activation="tanh", name=f"mask_{target}")
            for target in self.targets
        ]

    def _bands(self) -> list[int]:
        raise NotImplementedError

    def split_values(self, flat: tf.Tensor) -> tf.Tensor:
        """(B, T, F*C*2) spectrum values -> (B, T, total) in band order (the band split's input)."""
        return flat

    def merge_masks(self, mask: tf.Tensor) -> tf.Tensor:
        """(B, T, total) mask values in band order -> (B, T, F*C*2), one per spectrum value."""
        return mask

    def build(self, input_shape: Any) -> None:
        self.band_split.build(None)
        for transformer in (*self.time_transformers, *self.freq_transformers):
            transformer.build()
        if self.final_norm is not None:
            self.final_norm.build()
        for head in self.mask_estimators:
            head.build(None)
        self.built = True

    def call(self, mixture: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """mixture: (B, T, F, 2) or (B, C, T, F, 2) float32 STFT -> estimates (B, S, [C,] T, F, 2)."""
        mixture = tf.cast(mixture, tf.float32)
        expected_rank = 4 if self.channels == 1 else 5
        if mixture.shape.rank != expected_rank or (mixture.shape[-2] is not None and mixture.shape[-2] != self.n_bins):
            layout = "(batch, frames, bins, 2)" if self.channels == 1 else "(batch, channels, frames, bins, 2)"
            raise ConfigError(f"{type(self).__name__} expects {layout} with bins={self.n_bins}, got shape {mixture.shape}")
        if self.channels == 1:
            spec = mixture[:, :, :, tf.newaxis, :]  # (B, T, F, 1, 2)
        else:
            spec = tf.transpose(mixture, [0, 2, 3, 1, 4])  # (B, T, F, C, 2)
        shape = tf.shape(spec)
        b, t = shape[0], shape[1]
        flat = tf.reshape(spec, [b, t, -1])  # (B, T, F*C*2): per bin, per channel, real/imag ('b t (f s c)')
        x = tf.cast(self.band_split(self.split_values(flat)), self.compute_dtype)  # (B, T, K, D)
        k = len(self.band_widths)
        for time_transformer, freq_transformer in zip(self.time_transformers, self.freq_transformers):
            x = tf.reshape(tf.transpose(x, [0, 2, 1, 3]), [b * k, t, self.dim])  # (B*K, T, D): each band over time
            x = time_transformer(x, training=training)
            x = tf.transpose(tf.reshape(x, [b, k, t, self.dim]), [0, 2, 1, 3])  # (B, T, K, D)
            x = tf.reshape(x, [b * t, k, self.dim])  # (B*T, K, D): each frame over bands
            x = tf.reshape(freq_transformer(x, training=training), [b, t, k, self.dim])  # (B, T, K, D)
        if self.final_norm is not None:
            x = self.final_norm(x)
        estimates = []
        for head in self.mask_estimators:
            mask = tf.reshape(self.merge_masks(head(x)), shape)  # (B, T, total) -> (B, T, F, C, 2), float32
            real = mask[..., 0] * spec[..., 0] - mask[..., 1] * spec[..., 1]  # (B, T, F, C)
            imag = mask[..., 0] * spec[..., 1] + mask[..., 1] * spec[..., 0]  # (B, T, F, C)
            estimates.append(tf.stack([real, imag], axis=-1))  # (B, T, F, C, 2)
        out = tf.stack(estimates, axis=1)  # (B, S, T, F, C, 2)
        if self.zero_dc:
            out = tf.concat([tf.zeros_like(out[:, :, :, :1]), out[:, :, :, 1:]], axis=3)  # bin 0 of every estimate: 0
        if self.channels == 1:
            return out[:, :, :, :, 0, :]  # (B, S, T, F, 2)
        return tf.transpose(out, [0, 1, 4, 2, 3, 5])  # (B, S, C, T, F, 2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "targets": self.targets,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "channels": self.channels,
            "dim": self.dim,
            "depth": self.depth,
            "time_transformer_depth": self.time_transformer_depth,
            "freq_transformer_depth": self.freq_transformer_depth,
            "heads": self.heads,
            "dim_head": self.dim_head,
            "attn_dropout": self.attn_dropout,
            "ff_dropout": self.ff_dropout,
            "mask_estimator_depth": self.mask_estimator_depth,
            "mlp_expansion_factor": self.mlp_expansion_factor,
            "zero_dc": self.zero_dc,
            "gated_attention": self.gated_attention,
            "final_norm": self.final_norm_enabled,
            "transformer_norm_output": self.transformer_norm_output,
            "mask_estimator_depth_counts": self.mask_estimator_depth_counts,
            "attention_implementation": self.attention_implementation,
        }


@keras.saving.register_keras_serializable(package="mss_tf")
class BSRoformer(_BandRoformer):
    """Band-Split RoPE Transformer: non-overlapping bands of `freqs_per_bands` bins.

    Band split (per band RMSNorm + Dense to D), `depth` blocks of [time transformer over each
    band's frames, freq transformer over each frame's bands] (each `*_transformer_depth` layers of
    RMSNorm -> RoPE attention, RMSNorm -> GELU feed-forward, residuals), a final RMSNorm, then per
    target a mask estimator (per band MLP with tanh -> Dense -> GLU) giving a complex mask per bin
    and channel; the estimate is mask x mixture, bin 0 set to zero (`zero_dc`).

    Where the reference code (bs_roformer.py) differs from the paper, the switch is named:
      * gated_attention: per-head sigmoid gates on the attention output (reference: on).
      * final_norm / transformer_norm_output: BS-RoFormer's transformers end without a norm and
        the model has one RMSNorm after all blocks (reference: True / False).
      * mask_estimator_depth_counts: "linear_layers" (bs_roformer.py: `mask_estimator_depth`
        Linear layers, depth 2 = Linear, Tanh, Linear) or "hidden_layers" (mel_band_roformer.py).
      * zero_dc: the estimate's DC bin is zeroed (reference: on).

    Args:
        targets: names of the estimated sources; one mask head per target over a shared body.
        sample_rate, n_fft: the STFT (from the preset's SpectrogramConfig: `registry.build_model`);
            the input must have n_fft/2 + 1 bins.
        channels: 1 (mono) or 2 (stereo: both channels enter the band split together).
        dim: D, features per band (paper: 384).
        depth: L, time + freq transformer blocks (paper: 6 on MUSDB18, 12 with extra data).
        time_transformer_depth, freq_transformer_depth: layers of each transformer (paper: 1).
        heads, dim_head: attention heads and features per head (paper: 8, 64).
        attn_dropout, ff_dropout: dropout rates (training only; paper: 0.1).
        freqs_per_bands: bins per band, tiling all bins; None -> `bs_roformer_bands` (the
            reference's 62 bands at n_fft 2048).
        mask_estimator_depth: depth of the mask MLP (see mask_estimator_depth_counts).
        mlp_expansion_factor: the mask MLP's hidden size / D.
        zero_dc, gated_attention, final_norm, transformer_norm_output, mask_estimator_depth_counts:
            the reference's switches, above.
        attention_implementation: "auto", "einsum" or "dot_product_attention" (see Attention;
            "auto" picks einsum, `resolve_attention_implementation`).
    """

    def __init__(
        self,
        targets: Sequence[str] = ("vocals",),
        sample_rate: int = 44100,
        n_fft: int = 2048,
        channels: int = 1,
        dim: int = 384,
        depth: int = 6,
        time_transformer_depth: int = 1,
        freq_transformer_depth: int = 1,
        heads: int = 8,
        dim_head: int = 64,
        attn_dropout: float = 0.1,
        ff_dropout: float = 0.1,
        freqs_per_bands: Sequence[int] | None = None,
        mask_estimator_depth: int = 2,
        mlp_expansion_factor: int = 4,
        zero_dc: bool = True,
        gated_attention: bool = True,
        final_norm: bool = True,
        transformer_norm_output: bool = False,
        mask_estimator_depth_counts: str = "linear_layers",
        attention_implementation: str = "auto",
        **kwargs: Any,
    ) -> None:
        self.freqs_per_bands = None if freqs_per_bands is None else [int(w) for w in freqs_per_bands]
        super().__init__(
            targets, sample_rate, n_fft, channels, dim, depth, time_transformer_depth, freq_transformer_depth, heads,
            dim_head, attn_dropout, ff_dropout, mask_estimator_depth, mlp_expansion_factor, zero_dc, gated_attention,
            final_norm, transformer_norm_output, mask_estimator_depth_counts, attention_implementation, **kwargs,
        )

    def _bands(self) -> list[int]:
        widths = self.freqs_per_bands or bs_roformer_bands(self.sample_rate, self.n_fft)
        if sum(widths) != self.n_bins or min(widths) < 1 or len(widths) < 2:
            raise ConfigError(f"freqs_per_bands must be at least 2 positive band widths summing to the "
                              f"{self.n_bins} bins of n_fft {self.n_fft}, got {len(widths)} summing to {sum(widths)}")
        return list(widths)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "freqs_per_bands": self.freqs_per_bands}


@keras.saving.register_keras_serializable(package="mss_tf")
class MelBandRoformer(_BandRoformer):
    """Mel-Band RoFormer: the same body over `num_bands` overlapping mel bands.

    Band k holds the bins where the k-th filter of librosa's (Slaney) mel filter bank at this STFT
    is nonzero (`mel_band_bins`; the first and last bins forced into the first and last band, as
    the reference does); its values, gathered in order (per bin, per channel, real/imag), feed
    the band split. The mask heads give a mask for every value of every band; a bin covered by
    several bands gets the average of their masks (per channel, real and imaginary parts).

    Where the reference code (mel_band_roformer.py) differs from BS-RoFormer's, the switch is
    named: its transformers end with an RMSNorm (`transformer_norm_output=True`), the model has no
    final norm (`final_norm=False`), and its mask MLP has `mask_estimator_depth` hidden layers
    (`mask_estimator_depth_counts="hidden_layers"`: depth 2 = three Linear layers).

    Args:
        num_bands: mel bands (paper: 60).
        (the rest): as BSRoformer.
    """

    def __init__(
        self,
        targets: Sequence[str] = ("vocals",),
        sample_rate: int = 44100,
        n_fft: int = 2048,
        channels: int = 1,
        dim: int = 384,
        depth: int = 6,
        time_transformer_depth: int = 1,
        freq_transformer_depth: int = 1,
        heads: int = 8,
        dim_head: int = 64,
        attn_dropout: float = 0.1,
        ff_dropout: float = 0.1,
        num_bands: int = 60,
        mask_estimator_depth: int = 2,
        mlp_expansion_factor: int = 4,
        zero_dc: bool = True,
        gated_attention: bool = True,
        final_norm: bool = False,
        transformer_norm_output: bool = True,
        mask_estimator_depth_counts: str = "hidden_layers",
        attention_implementation: str = "auto",
        **kwargs: Any,
    ) -> None:
        if num_bands < 2:
            raise ConfigError(f"MelBandRoformer needs at least 2 bands, got {num_bands}")
        self.num_bands = int(num_bands)
        super().__init__(
            targets, sample_rate, n_fft, channels, dim, depth, time_transformer_depth, freq_transformer_depth, heads,
            dim_head, attn_dropout, ff_dropout, mask_estimator_depth, mlp_expansion_factor, zero_dc, gated_attention,
            final_norm, transformer_norm_output, mask_estimator_depth_counts, attention_implementation, **kwargs,
        )
        # spectrum value of each band value: bin f, channel s, part c at (f * C + s) * 2 + c, bands in order
        per_bin = 2 * self.channels
        bins = np.concatenate(self.band_bins)  # (sum of band widths,)
        value_index = (bins[:, None] * per_bin + np.arange(per_bin)).reshape(-1)  # (total,)
        self.value_index = tf.constant(value_index.astype(np.int32))
        # each spectrum value's places among the band values (padded with `total`, a zero appended)
        # and the number of bands holding its bin, for averaging the masks of overlapping bands
        total = value_index.size
        places = [[] for _ in range(self.n_bins * per_bin)]
        for j, v in enumerate(value_index):
            places[v].append(j)
        width = max(len(p) for p in places)
        self.merge_index = tf.constant(np.array([p + [total] * (width - len(p)) for p in places], np.int32))  # (F*C*2, m)
        self.bands_per_value = tf.constant(np.array([len(p) for p in places], np.float32))  # (F*C*2,)

    def _bands(self) -> list[int]:
        self.band_bins = mel_band_bins(self.sample_rate, self.n_fft, self.num_bands)
        return [len(b) for b in self.band_bins]

    def split_values(self, flat: tf.Tensor) -> tf.Tensor:
        return tf.gather(flat, self.value_index, axis=-1)  # (B, T, total): each band's bins, in order

    def merge_masks(self, mask: tf.Tensor) -> tf.Tensor:
        mask = tf.pad(mask, [[0, 0], [0, 0], [0, 1]])  # (B, T, total + 1), a zero last
        summed = tf.reduce_sum(tf.gather(mask, self.merge_index, axis=-1), axis=-1)  # (B, T, F*C*2)
        return summed / self.bands_per_value  # the average over the bands holding each bin

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_bands": self.num_bands}


# --- search spaces ----------------------------------------------------------------------------


def search_space(kwargs: dict[str, Any]) -> list[HyperParameter]:
    """What `train.py --tune` searches for a RoFormer preset with these arguments (beside the
    training settings), sized around the preset: D, L, the heads and the dropout."""
    dim = int(kwargs.get("dim", 384))
    depth = int(kwargs.get("depth", 6))
    heads = int(kwargs.get("heads", 8))
    return [
        HyperParameter("dim", "choice", values=scaled_choices(dim, (0.5, 1, 2), minimum=8),
                       help="D, the feature size of every band"),
        HyperParameter("depth", "int", max(1, depth // 2), depth + max(1, depth // 2),
                       help="blocks of (time transformer, band transformer)"),
        HyperParameter("heads", "choice", values=scaled_choices(heads, (0.5, 1, 2), minimum=1),
                       help="attention heads (each of dim_head features)"),
        HyperParameter("dropout", "choice", values=(0.0, 0.1, 0.2),
                       help="dropout of attention and feed-forward (attn_dropout = ff_dropout)"),
    ]


def search_kwargs(values: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for chosen search values: `dropout` sets both dropout rates."""
    out = {name: value for name, value in values.items() if name != "dropout"}
    if "dropout" in values:
        out["attn_dropout"] = out["ff_dropout"] = values["dropout"]
    return out

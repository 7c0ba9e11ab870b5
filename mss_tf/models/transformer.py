"""The transformer of the band-split RoFormers (BS-RoFormer, Mel-Band RoFormer), in the reference
code's order: RMSNorm, rotary position embedding, attention (with per-head gates), feed-forward,
transformer. The semantics are those of ZFTurbo/Music-Source-Separation-Training's
models/bs_roformer/ (after lucidrains/BS-RoFormer) and of rotary_embedding_torch, the code the
public checkpoints were trained with; `mss_tf.models.roformer` builds the models from them.

Sequences are (B, n, dim): B independent sequences (bands over time, or frames over bands) of n
steps; attention heads are laid out (B, n, heads, dim_head).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.models.per_band import normalize

ATTENTION_IMPLEMENTATIONS = ("auto", "einsum", "dot_product_attention")

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

"""The transformer of the band-split RoFormers (BS-RoFormer, Mel-Band RoFormer), in the reference
code's order: RMSNorm, rotary position embedding, attention (with per-head gates), feed-forward,
transformer. The semantics are those of ZFTurbo/Music-Source-Separation-Training's
models/bs_roformer/ (after lucidrains/BS-RoFormer) and of rotary_embedding_torch, the code the
public checkpoints were trained with; `mss_tf.models.roformer` builds the models from them.

Sequences are (B, n, dim): B independent sequences (bands over time, or frames over bands) of n
steps; attention heads are laid out (B, n, heads, dim_head).

Each block's `call` is the reference's computation layer by layer. With
`implementation="fused"` (what "auto" picks) the attention and feed-forward blocks run the same
maths on the same weights with fewer passes over memory (`fused_attention`,
`fused_feed_forward`, at the end of this file): the RMSNorm gain folded into the next kernel,
q, k, v and the gates in one matmul, the attention scale folded into q's kernel, the rotary
embedding on features laid out [even | odd] per head, and plain 2-D matmuls over all tokens.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.models.blocked_attention import blocked_attention
from mss_tf.models.per_band import normalize

ATTENTION_IMPLEMENTATIONS = ("auto", "blocked", "einsum", "dot_product_attention")
TRANSFORMER_IMPLEMENTATIONS = ("auto", "layers", "fused")

def dot_product_attention_available() -> bool:
    """Whether this Keras has a correct `keras.ops.dot_product_attention`: Keras >= 3.7 (3.5 has
    none; 3.6.0's TensorFlow version multiplies the logits by themselves instead of the scale)."""
    major, minor = (int(part) for part in keras.__version__.split(".")[:2])
    return hasattr(keras.ops, "dot_product_attention") and (major, minor) >= (3, 7)


def resolve_attention_implementation(implementation: str) -> str:
    """"auto" -> "blocked"; other values unchanged. `blocked_attention` (a few sequences' scores at
    a time, recomputed in the backward pass) measured about twice as fast as the einsums on 2 CPU
    cores for the time axis of an 8 s chunk (the scores of a group stay in cache), and holds one
    group's scores instead of all. On TensorFlow, `keras.ops.dot_product_attention` (Keras >= 3.7)
    runs the same einsums and float32 softmax as "einsum", with no fused kernel and no dropout;
    the pinned Keras 3.5 has no such op."""
    return "blocked" if implementation == "auto" else implementation


def resolve_transformer_implementation(implementation: str) -> str:
    """"auto" -> "fused"; other values unchanged. On 2 CPU cores the fused blocks take about 0.8x
    the layer-by-layer time of a paper-size forward pass (`benchmarks/roformer.py`)."""
    return "fused" if implementation == "auto" else implementation


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

    def tables(self, n: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """cos and sin of the angles of positions 0 .. n-1: (n, dim / 2) each, float32."""
        positions = tf.range(n, dtype=tf.float32)  # (n,)
        angles = positions[:, tf.newaxis] * tf.cast(self.freqs, tf.float32)[tf.newaxis, :]  # (n, dim / 2)
        return tf.cos(angles), tf.sin(angles)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        shape = tf.shape(x)
        cos, sin = (t[:, tf.newaxis] for t in self.tables(shape[1]))  # (n, 1, dim / 2)
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
        implementation: "auto", "blocked" (`blocked_attention`: a few sequences at a time, the
            scores recomputed in the backward pass), "einsum" (einsum, softmax in float32, einsum)
            or "dot_product_attention" (`keras.ops.dot_product_attention`, Keras >= 3.7; training
            with dropout > 0 runs the einsum path, the op having no dropout).
        transformer_implementation: "auto", "layers" (this `call`) or "fused" (`fused_attention`).
    """

    def __init__(
        self, dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0,
        rotary_embed: RotaryEmbedding | None = None, gated: bool = True, implementation: str = "auto",
        transformer_implementation: str = "auto", **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dim, self.heads, self.dim_head = int(dim), int(heads), int(dim_head)
        self.dropout = float(dropout)
        self.gated = bool(gated)
        self.implementation = implementation
        self.transformer_implementation = transformer_implementation
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

    def attend(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, training: bool | None = None,
               scale: float | None = None) -> tf.Tensor:
        """q, k, v: (B, n, heads, dim_head) -> (B, n, heads, dim_head); `scale` (default
        dim_head ** -0.5) multiplies the logits (1.0 when q already carries it)."""
        scale = self.scale if scale is None else scale
        implementation = resolve_attention_implementation(self.implementation)
        with tf.name_scope("attend"):
            if implementation == "blocked":
                return self.attend_blocked(q, k, v, training, scale)
            if implementation == "dot_product_attention" and not (training and self.dropout > 0):
                return keras.ops.dot_product_attention(q, k, v, scale=scale)
            sim = tf.einsum("bihd,bjhd->bhij", q, k)  # (B, heads, n, n)
            if scale != 1.0:
                sim = sim * tf.cast(scale, q.dtype)
            weights = tf.nn.softmax(tf.cast(sim, tf.float32), axis=-1)  # (B, heads, n, n), float32
            weights = self.attention_dropout(tf.cast(weights, v.dtype), training=training)
            return tf.einsum("bhij,bjhd->bihd", weights, v)  # (B, n, heads, dim_head)

    def attend_blocked(self, q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, training: bool | None, scale: float) -> tf.Tensor:
        """`attend` by `blocked_attention`, its dropout masks seeded by the attention dropout's seed
        generator (a new seed per call, as the layer draws one)."""
        shape = tf.shape(q)
        if scale != 1.0:
            q = q * tf.cast(scale, q.dtype)
        heads_first = [tf.reshape(tf.transpose(t, [0, 2, 1, 3]), [-1, shape[1], self.dim_head]) for t in (q, k, v)]
        rate = self.dropout if training else 0.0  # (B*heads, n, dim_head) each, above
        seed = self.attention_dropout.seed_generator.next() if rate > 0 else None
        out = blocked_attention(*heads_first, dropout=rate, seed=seed)  # (B*heads, n, dim_head)
        return tf.transpose(tf.reshape(out, [shape[0], self.heads, shape[1], self.dim_head]), [0, 2, 1, 3])

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """x: (B, n, dim) -> (B, n, dim)."""
        if resolve_transformer_implementation(self.transformer_implementation) == "fused":
            return fused_attention(self, x, training)
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
                "dropout": self.dropout, "gated": self.gated, "implementation": self.implementation,
                "transformer_implementation": self.transformer_implementation}


# --- feed-forward -----------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mss_tf")
class FeedForward(keras.layers.Layer):
    """RMSNorm -> Dense(mult * dim) -> GELU (exact) -> dropout -> Dense(dim) -> dropout.

    Args:
        dim: features in and out.
        mult: hidden size / dim.
        dropout: dropout rate (training only).
        implementation: "auto", "layers" (this `call`) or "fused" (`fused_feed_forward`).
    """

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0, implementation: str = "auto",
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.mult, self.dropout = int(dim), int(mult), float(dropout)
        self.implementation = implementation
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
        if resolve_transformer_implementation(self.implementation) == "fused":
            return fused_feed_forward(self, x, training)
        h = keras.activations.gelu(self.proj_in(self.norm(x)), approximate=False)  # (B, n, mult * dim)
        h = self.hidden_dropout(h, training=training)
        return self.output_dropout(self.proj_out(h), training=training)  # (B, n, dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "mult": self.mult, "dropout": self.dropout,
                "implementation": self.implementation}


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
        implementation: "auto", "layers" or "fused": how the attention and feed-forward blocks
            compute (the same maths; "auto" -> "fused", `resolve_transformer_implementation`).
        gradient_checkpointing: in training, keep only the input for the gradient and run the
            layers again in the backward pass (`recompute_in_backward`; the reference's
            `use_torch_checkpoint`): memory of one transformer's activations instead of all.
    """

    def __init__(
        self, dim: int, depth: int, heads: int = 8, dim_head: int = 64, attn_dropout: float = 0.0,
        ff_dropout: float = 0.0, norm_output: bool = True, rotary_embed: RotaryEmbedding | None = None,
        gated_attention: bool = True, attention_implementation: str = "auto", implementation: str = "auto",
        gradient_checkpointing: bool = False, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dim, self.depth, self.heads, self.dim_head = int(dim), int(depth), int(heads), int(dim_head)
        self.attn_dropout, self.ff_dropout = float(attn_dropout), float(ff_dropout)
        self.norm_output = bool(norm_output)
        self.gated_attention = bool(gated_attention)
        self.attention_implementation = attention_implementation
        self.implementation = implementation
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.attention = [
            Attention(dim, heads, dim_head, attn_dropout, rotary_embed, gated_attention, attention_implementation,
                      implementation, name=f"attention_{i}")
            for i in range(self.depth)
        ]
        self.feed_forward = [FeedForward(dim, 4, ff_dropout, implementation, name=f"feed_forward_{i}")
                             for i in range(self.depth)]
        self.norm = RMSNorm(dim, name="norm") if self.norm_output else None

    def build(self, input_shape: Any = None) -> None:
        for attention, feed_forward in zip(self.attention, self.feed_forward):
            attention.build()
            feed_forward.build()
        if self.norm is not None:
            self.norm.build()

    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """x: (B, n, dim) -> (B, n, dim)."""
        if self.gradient_checkpointing and training:
            return recompute_in_backward(self, x)
        return self.layers_call(x, training)

    def layers_call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        for attention, feed_forward in zip(self.attention, self.feed_forward):
            x = attention(x, training=training) + x  # (B, n, dim)
            x = feed_forward(x, training=training) + x  # (B, n, dim)
        return self.norm(x) if self.norm is not None else x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "depth": self.depth, "heads": self.heads,
                "dim_head": self.dim_head, "attn_dropout": self.attn_dropout, "ff_dropout": self.ff_dropout,
                "norm_output": self.norm_output, "gated_attention": self.gated_attention,
                "attention_implementation": self.attention_implementation, "implementation": self.implementation,
                "gradient_checkpointing": self.gradient_checkpointing}


def recompute_in_backward(layer: Transformer, x: tf.Tensor) -> tf.Tensor:
    """`layer.layers_call(x, training=True)` without keeping its activations for the gradient:
    `tf.recompute_grad` runs it again in the backward pass, the layer's dropout seeds set back to
    what the forward pass drew from, so the recomputed masks are the forward pass's."""
    states = [sub.seed_generator.state for sub in layer._flatten_layers()
              if isinstance(sub, keras.layers.Dropout) and getattr(sub, "seed_generator", None) is not None]
    seeds = [tf.identity(state.value) for state in states]  # before the forward pass draws

    def run(inputs: tf.Tensor) -> tf.Tensor:
        for state, seed in zip(states, seeds):
            state.assign(seed)
        return layer.layers_call(inputs, training=True)

    return tf.recompute_grad(run)(x)


# --- the fused blocks: the same maths in fewer passes over memory ------------------------------


def rms_scale(tokens: tf.Tensor, epsilon: float = 1e-12) -> tf.Tensor:
    """RMSNorm without its gain on (tokens, dim) float32: x * sqrt(dim) / max(||x||, epsilon)."""
    norm = tf.sqrt(tf.reduce_sum(tf.square(tokens), axis=-1, keepdims=True))  # (tokens, 1)
    return tokens * (float(tokens.shape[-1]) ** 0.5 / tf.maximum(norm, epsilon))


def halves_permutation(heads: int, dim_head: int) -> np.ndarray:
    """Column order putting each head's features [even | odd]: q and k in this order give the same
    q.k, and each rotary pair (2i, 2i + 1) becomes (i, i + dim_head / 2), two contiguous halves."""
    within = np.concatenate([np.arange(0, dim_head, 2), np.arange(1, dim_head, 2)])
    return (np.arange(heads)[:, None] * dim_head + within).reshape(-1)


def fused_attention(layer: Attention, x: tf.Tensor, training: bool | None) -> tf.Tensor:
    """`Attention.call` on the same weights: the RMSNorm gain, the 1/sqrt(dim_head) scale (on
    q's columns) and the rotary pair order (`halves_permutation`, on q's and k's columns) folded
    into one kernel that also holds the gates; one matmul over all tokens gives q, k, v and the
    gate logits. x: (B, n, dim) -> (B, n, dim)."""
    h, d, dtype = layer.heads, layer.dim_head, layer.compute_dtype
    shape = tf.shape(x)
    b, n = shape[0], shape[1]
    width = h * d
    qk_order = halves_permutation(h, d) if layer.rotary_embed is not None else np.arange(width)
    columns = np.concatenate([qk_order, width + qk_order, 2 * width + np.arange(width)])
    kernel = tf.gather(tf.cast(layer.to_qkv.kernel, tf.float32), columns, axis=1)  # (dim, 3 * h * d)
    scale = tf.concat([tf.fill([width], layer.scale), tf.ones([2 * width])], axis=0)  # (3 * h * d,)
    kernel = kernel * scale
    if layer.to_gates is not None:
        kernel = tf.concat([kernel, tf.cast(layer.to_gates.kernel, tf.float32)], axis=1)  # (dim, 3 * h * d + h)
    kernel = tf.cast(tf.cast(layer.norm.gamma, tf.float32)[:, tf.newaxis] * kernel, dtype)
    tokens = tf.cast(rms_scale(tf.reshape(tf.cast(x, tf.float32), [-1, layer.dim])), dtype)  # (B*n, dim)
    projected = tf.matmul(tokens, kernel)  # (B*n, 3 * h * d [+ h])
    qkv = tf.reshape(projected[:, : 3 * width], [b, n, 3, h, d])  # 'b n (qkv h d)', q and k in halves order
    if layer.rotary_embed is not None:
        with tf.name_scope("rotary_embed"):
            cos, sin = (t[:, tf.newaxis, tf.newaxis] for t in layer.rotary_embed.tables(n))  # (n, 1, 1, d / 2)
            even, odd = tf.split(tf.cast(qkv[:, :, :2], tf.float32), 2, axis=-1)  # (B, n, 2, h, d / 2) each
            qk = tf.concat([even * cos - odd * sin, odd * cos + even * sin], axis=-1)  # (B, n, 2, h, d)
            q, k = tf.unstack(tf.cast(qk, dtype), axis=2)  # (B, n, h, d) each
    else:
        q, k = qkv[:, :, 0], qkv[:, :, 1]
    out = layer.attend(q, k, qkv[:, :, 2], training=training, scale=1.0)  # (B, n, h, d)
    out = tf.reshape(out, [-1, h, d])  # (B*n, h, d)
    if layer.to_gates is not None:
        gates = tf.sigmoid(projected[:, 3 * width :] + tf.cast(layer.to_gates.bias, dtype))  # (B*n, h)
        out = out * gates[..., tf.newaxis]
    out = tf.matmul(tf.reshape(out, [-1, width]), tf.cast(layer.to_out.kernel, dtype))  # (B*n, dim)
    return layer.output_dropout(tf.reshape(out, [b, n, layer.dim]), training=training)  # (B, n, dim)


def fused_feed_forward(layer: FeedForward, x: tf.Tensor, training: bool | None) -> tf.Tensor:
    """`FeedForward.call` on the same weights: the RMSNorm gain folded into proj_in's kernel, 2-D
    matmuls over all tokens. x: (B, n, dim) -> (B, n, dim)."""
    dtype = layer.compute_dtype
    kernel_in = tf.cast(tf.cast(layer.norm.gamma, tf.float32)[:, tf.newaxis] * tf.cast(layer.proj_in.kernel, tf.float32),
                        dtype)  # (dim, mult * dim)
    tokens = tf.cast(rms_scale(tf.reshape(tf.cast(x, tf.float32), [-1, layer.dim])), dtype)  # (B*n, dim)
    hidden = tf.nn.bias_add(tf.matmul(tokens, kernel_in), tf.cast(layer.proj_in.bias, dtype))  # (B*n, mult * dim)
    hidden = layer.hidden_dropout(tf.nn.gelu(hidden, approximate=False), training=training)
    out = tf.nn.bias_add(tf.matmul(hidden, tf.cast(layer.proj_out.kernel, dtype)), tf.cast(layer.proj_out.bias, dtype))
    return layer.output_dropout(tf.reshape(out, tf.shape(x)), training=training)  # (B, n, dim)

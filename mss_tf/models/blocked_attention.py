"""Softmax attention over a few sequences at a time, with a backward pass that recomputes each
group's scores instead of keeping them: the memory of FlashAttention (Dao et al. 2022) at the
granularity of whole sequences, in TensorFlow ops. The (G, n, n) scores of all G sequences
(batch x heads) never exist at once, in the forward pass or the gradient: one group's at a time.

For the RoFormers' attention over time, whose scores grow with the square of a chunk's frames
(8 s at hop 512: 62 bands x 8 heads x 690 x 690 floats = 0.9 GB per layer and example, kept for
the gradient, with its dropout mask, in every layer), this is what lets a paper-size training
step fit in CPU memory. The arithmetic is that of softmax(q k^T) v; the backward pass computes
the scores and the softmax once more, as FlashAttention's does.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

GROUP_ELEMENTS = 1 << 22  # scores per group (16 MB in float32): how many sequences go at once


def blocked_attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, dropout: float = 0.0, seed: tf.Tensor | None = None,
                      group_elements: int = GROUP_ELEMENTS) -> tf.Tensor:
    """softmax(q k^T) v of each sequence, a group of sequences at a time, with dropout on the
    attention weights (after the softmax, as `torch.nn.functional.scaled_dot_product_attention`
    in the RoFormers' reference) when `dropout` > 0.

    Args:
        q, k, v: (G, n, d): G independent sequences (batch x heads) of n steps; q carries the
            1/sqrt(d) scale. The softmax is computed in float32.
        dropout: the rate of dropout on the attention weights (0: none).
        seed: (2,) integer tensor seeding the dropout masks (required when dropout > 0).
        group_elements: scores computed at once; a group holds max(1, group_elements // n^2)
            sequences.

    Returns:
        (G, n, d) in v's dtype.
    """
    if dropout > 0 and seed is None:
        raise ValueError("blocked_attention: dropout needs a seed")
    seed = tf.zeros([2], tf.int64) if seed is None else tf.cast(seed, tf.int64)
    rate, elements = float(dropout), int(group_elements)

    @tf.custom_gradient
    def attention(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, seed: tf.Tensor) -> Any:
        out = _forward(q, k, v, seed, rate, elements)

        def gradient(d_out: tf.Tensor) -> tuple[Any, ...]:
            return (*_backward(q, k, v, out, d_out, seed, rate, elements), None)

        return out, gradient

    return attention(q, k, v, seed)


def _groups(x: tf.Tensor, elements: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(G, n, ...) -> (groups, per group, n, ...), zero-padded to whole groups, and the groups."""
    shape = tf.shape(x)
    most = tf.maximum(1, elements // (shape[1] * shape[1]))  # sequences a group may hold
    groups = (shape[0] + most - 1) // most
    per = (shape[0] + groups - 1) // groups  # as even as can be: at most groups - 1 padded sequences
    padded = tf.pad(x, [[0, groups * per - shape[0]]] + [[0, 0]] * (x.shape.rank - 1))
    return tf.reshape(padded, tf.concat([[groups, per], shape[1:]], axis=0)), groups


def _ungroup(stacked: tf.Tensor, count: tf.Tensor) -> tf.Tensor:
    """(groups, per group, ...) -> (count, ...): the inverse of `_groups`."""
    shape = tf.shape(stacked)
    return tf.reshape(stacked, tf.concat([[shape[0] * shape[1]], shape[2:]], axis=0))[:count]


def _weights(q: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    return tf.nn.softmax(tf.cast(tf.matmul(q, k, transpose_b=True), tf.float32), axis=-1)  # (per, n, n)


def _keep_mask(seed: tf.Tensor, group: tf.Tensor, shape: tf.Tensor, rate: float) -> tf.Tensor:
    """Dropout's scaled keep mask of one group: 1 / (1 - rate) where kept, 0 where dropped; the
    same for the same seed and group (stateless), so the backward pass draws it again."""
    seed = tf.stack([seed[0], seed[1] + tf.cast(group, seed.dtype)])
    keep = tf.random.stateless_uniform(shape, seed=seed) >= rate
    return tf.cast(keep, tf.float32) / (1.0 - rate)


def _forward(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, seed: tf.Tensor, rate: float, elements: int) -> tf.Tensor:
    (qg, groups), (kg, _), (vg, _) = (_groups(x, elements) for x in (q, k, v))

    def step(i: tf.Tensor, outs: tf.TensorArray) -> tuple[Any, ...]:
        weights = _weights(qg[i], kg[i])  # (per, n, n)
        if rate > 0:
            weights = weights * _keep_mask(seed, i, tf.shape(weights), rate)
        return i + 1, outs.write(i, tf.matmul(tf.cast(weights, v.dtype), vg[i]))  # (per, n, d)

    outs = tf.TensorArray(v.dtype, size=groups)
    _, outs = tf.while_loop(lambda i, _: i < groups, step, (tf.constant(0), outs), parallel_iterations=1)
    return _ungroup(outs.stack(), tf.shape(q)[0])


def _backward(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, out: tf.Tensor, d_out: tf.Tensor, seed: tf.Tensor,
              rate: float, elements: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Gradients of q, k, v, group by group, the weights P = softmax(q k^T) recomputed:
    dV = P_d^T dO, dP_d = dO V^T, dS = P (dP - rowsum(dO * O)), dQ = dS K, dK = dS^T Q
    (P_d, dP_d: the weights after dropout and their gradient; dP = dP_d x the keep mask)."""
    (qg, groups), (kg, _), (vg, _), (dg, _) = (_groups(x, elements) for x in (q, k, v, d_out))
    row_dot, _ = _groups(tf.reduce_sum(tf.cast(d_out, tf.float32) * tf.cast(out, tf.float32), axis=-1), elements)

    def step(i: tf.Tensor, d_q: tf.TensorArray, d_k: tf.TensorArray, d_v: tf.TensorArray) -> tuple[Any, ...]:
        weights = _weights(qg[i], kg[i])  # (per, n, n)
        d_weights = tf.cast(tf.matmul(dg[i], vg[i], transpose_b=True), tf.float32)  # (per, n, n)
        dropped = weights
        if rate > 0:
            keep = _keep_mask(seed, i, tf.shape(weights), rate)
            dropped, d_weights = weights * keep, d_weights * keep
        d_scores = tf.cast(weights * (d_weights - row_dot[i][..., tf.newaxis]), q.dtype)  # (per, n, n)
        return (i + 1, d_q.write(i, tf.matmul(d_scores, kg[i])),
                d_k.write(i, tf.matmul(d_scores, qg[i], transpose_a=True)),
                d_v.write(i, tf.matmul(tf.cast(dropped, v.dtype), dg[i], transpose_a=True)))

    arrays = tuple(tf.TensorArray(x.dtype, size=groups) for x in (q, k, v))
    _, *grads = tf.while_loop(lambda i, *_: i < groups, step, (tf.constant(0), *arrays), parallel_iterations=1)
    count = tf.shape(q)[0]
    return tuple(_ungroup(g.stack(), count) for g in grads)  # type: ignore[return-value]

"""The bidirectional LSTM of BSRNN's band and sequence blocks, and its fused CPU path.

The weights always live in a `keras.layers.Bidirectional(LSTM)` (Keras layout, gate order i, f,
c, o), so checkpoints do not depend on how the layer runs. On CPU the "fused" path runs the
same weights through TensorFlow's `BlockLSTM` kernel, one op per direction for the whole
sequence: the gate blocks are reordered to BlockLSTM's (i, c, f, o), an affine map of the
input (a norm's gain and bias) can be folded into the input weights, and a Dense layer after
the BLSTM can be applied to each direction separately, so the two directions' states are never
concatenated. `BidirectionalLSTM.project` (norm -> BLSTM -> Dense) is the one interface of both
paths: a model calls it and never sees which one runs.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import keras
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.models.per_band import normalize

LSTM_IMPLEMENTATIONS = ("auto", "keras", "fused")
_BLOCK_LSTM_GATES = (0, 2, 1, 3)  # Keras gate blocks (i, f, c, o) in BlockLSTM's order (i, c, f, o)


def resolve_lstm_implementation(implementation: str) -> str:
    """"auto" -> "fused" when TensorFlow sees no GPU (there the fused kernel is faster than the
    Keras LSTM and needs far less training memory; benchmarks/RESULTS.md), else "keras" (cuDNN
    on a GPU); other values unchanged."""
    if implementation != "auto":
        return implementation
    return "keras" if tf.config.list_logical_devices("GPU") else "fused"


@keras.saving.register_keras_serializable(package="mss_tf")
@contextlib.contextmanager
def _no_object_sharing() -> Iterator[None]:
    """Keras' object sharing suspended. `Bidirectional` copies its layer by serializing and
    deserializing it; inside `keras.models.load_model`'s ObjectSharingScope, objects are matched
    by `id()`, and a fresh LSTM that reuses the id of a freed one is swapped for a layer built
    earlier (ValueError: both directions go backwards; a few constructions in a hundred). Our
    layers' configs hold no shared objects, so construction needs none."""
    from keras.src.backend.common import global_state

    keys = ("shared_objects/id_to_obj_map", "shared_objects/id_to_config_map")
    saved = [global_state.get_global_attribute(key) for key in keys]
    for key in keys:
        global_state.set_global_attribute(key, None)
    try:
        yield
    finally:
        for key, value in zip(keys, saved):
            global_state.set_global_attribute(key, value)


class BidirectionalLSTM(keras.layers.Layer):
    """Bidirectional LSTM over a time-major (steps, batch, features) sequence.

    The weights always live in a `keras.layers.Bidirectional(LSTM)` (Keras layout, gate order
    i, f, c, o), so checkpoints do not depend on how the layer is run:

      * `"keras"` runs that layer (cuDNN on a GPU, XLA-compilable);
      * `"fused"` runs the same weights through TensorFlow's fused LSTM kernel `BlockLSTM` (one
        op per direction for the whole sequence; computed in float32, not XLA-compilable);
      * `"auto"` (default) picks "fused" when TensorFlow sees no GPU, else "keras".

    `call` returns (steps, batch, 2 * units); `project(x, dense, norm)` computes
    dense(BLSTM(norm(x))) by either path (a residual block's body); `directions` (fused path)
    returns the forward states and the backward states in reversed time order.

    Args:
        units: hidden size per direction.
        implementation: "auto", "keras" or "fused".
    """

    def __init__(self, units: int, implementation: str = "auto", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if implementation not in LSTM_IMPLEMENTATIONS:
            raise ConfigError(f"lstm implementation must be one of {LSTM_IMPLEMENTATIONS}, got {implementation!r}")
        self.units = int(units)
        self.implementation = implementation
        with _no_object_sharing():
            self.rnn = keras.layers.Bidirectional(keras.layers.LSTM(self.units, return_sequences=True), name="blstm")

    @property
    def runs_fused(self) -> bool:
        return resolve_lstm_implementation(self.implementation) == "fused"

    def build(self, input_shape: Any) -> None:
        self.rnn.build((None, None, input_shape[-1]))

    def _fused_weights(
        self, cell: Any, scale: tf.Tensor | None = None, shift: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """`BlockLSTM`'s (w, b) for one direction's cell: w = [kernel; recurrent_kernel] (features
        + units, 4 * units) and the bias, float32, gate blocks reordered from Keras' (i, f, c, o)
        to BlockLSTM's (i, c, f, o).

        scale, shift: (features,) float32, an affine map of the input folded into the weights: the
        LSTM of x * scale + shift is the LSTM of x with kernel rows scaled by `scale` and
        `shift @ kernel` added to the bias (a LayerNorm's gain and bias).
        """
        u = self.units
        kernel = tf.cast(cell.kernel, tf.float32)  # (features, 4U)
        bias = tf.cast(cell.bias, tf.float32)  # (4U,)
        if shift is not None:
            bias = bias + tf.linalg.matvec(kernel, shift, transpose_a=True)  # + shift @ kernel
        if scale is not None:
            kernel = kernel * scale[:, tf.newaxis]
        w = tf.concat([kernel, tf.cast(cell.recurrent_kernel, tf.float32)], axis=0)  # (features + U, 4U)
        w = tf.reshape(tf.gather(tf.reshape(w, [-1, 4, u]), _BLOCK_LSTM_GATES, axis=1), [-1, 4 * u])
        b = tf.reshape(tf.gather(tf.reshape(bias, [4, u]), _BLOCK_LSTM_GATES), [4 * u])
        return w, b

    def _fused_direction(
        self, cell: Any, x: tf.Tensor, scale: tf.Tensor | None = None, shift: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """x: (steps, batch, features) float32 -> hidden states (steps, batch, units).

        Runs `BlockLSTM` (V1) with forget_bias 0 and no clipping, which computes exactly the Keras
        LSTM (of x * scale + shift, see `_fused_weights`). Not `BlockLSTMV2`: its forward pass
        matches, but its registered gradient is wrong in TensorFlow 2.16 (tests/test_bsrnn.py
        checks our gradients against the Keras LSTM's).
        """
        w, b = self._fused_weights(cell, scale, shift)
        zeros = tf.zeros([tf.shape(x)[1], self.units], tf.float32)
        peephole = tf.zeros([self.units], tf.float32)
        outputs = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.cast(tf.shape(x)[0], tf.int64), x=x, cs_prev=zeros, h_prev=zeros, w=w,
            wci=peephole, wcf=peephole, wco=peephole, b=b, forget_bias=0.0, cell_clip=-1.0, use_peephole=False,
        )
        return outputs[6]  # h for every step

    def directions(
        self, x: tf.Tensor, scale: tf.Tensor | None = None, shift: tf.Tensor | None = None,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """Fused path: x (steps, batch, features) -> (forward states, backward states in reversed
        time), each (steps, batch, units) float32. With `scale`/`shift` ((features,) each) the
        BLSTM runs on x * scale + shift, folded into its input weights (no pass over x)."""
        x = tf.cast(x, tf.float32)
        forward = self._fused_direction(self.rnn.forward_layer.cell, x, scale, shift)
        backward = self._fused_direction(self.rnn.backward_layer.cell, tf.reverse(x, [0]), scale, shift)
        return forward, backward

    def project(
        self, x: tf.Tensor, dense: keras.layers.Dense, norm: keras.layers.LayerNormalization | None = None,
    ) -> list[tf.Tensor]:
        """dense(BLSTM(norm(x))) for x (steps, batch, features), as a list of summands, each (steps,
        batch, dense.units) in dense's compute dtype: the one interface of both implementations.

          * "keras": [dense(BLSTM(norm(x)))], the Keras layers one after the other;
          * "fused": [forward part (with dense's bias), backward part]. The norm's standardisation
            is computed here (`mss_tf.models.per_band.normalize`) and its gain and bias are folded
            into the BLSTM's input weights (`_fused_weights`); the Dense kernel W (2 * units, out)
            is applied per direction (W = [W_fwd; W_bwd]), so the directions' states are never
            concatenated and the backward reversal runs on `out` rather than 2 * units features.

        A caller adds the summands (to its residual too, in one add).

        norm: a LayerNormalization over the features (its gamma, beta, epsilon), or None.
        """
        if not self.runs_fused:
            return [dense(self(norm(x) if norm is not None else x))]
        h, n = self.units, dense.units
        dtype = dense.compute_dtype
        steps = tf.shape(x)[0]
        scale = shift = None
        x = tf.cast(x, tf.float32)
        if norm is not None:
            x = normalize(x, "layer", norm.epsilon)  # (S, M, features), gain and bias still to apply
            scale, shift = tf.cast(norm.gamma, tf.float32), tf.cast(norm.beta, tf.float32)
        forward, backward = self.directions(x, scale=scale, shift=shift)  # (S, M, H) each, backward reversed
        kernel = tf.cast(dense.kernel, dtype)  # (2H, out)
        y_forward = tf.nn.bias_add(
            tf.matmul(tf.cast(tf.reshape(forward, [-1, h]), dtype), kernel[:h]), tf.cast(dense.bias, dtype),
        )  # (S*M, out)
        y_backward = tf.matmul(tf.cast(tf.reshape(backward, [-1, h]), dtype), kernel[h:])  # (S*M, out)
        y_forward = tf.reshape(y_forward, [steps, -1, n])  # (S, M, out)
        y_backward = tf.reverse(tf.reshape(y_backward, [steps, -1, n]), [0])  # (S, M, out), back in order
        return [y_forward, y_backward]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """x: (steps, batch, features) -> (steps, batch, 2 * units)."""
        if not self.runs_fused:
            return tf.transpose(self.rnn(tf.transpose(x, [1, 0, 2])), [1, 0, 2])
        forward, backward = self.directions(x)
        return tf.cast(tf.concat([forward, tf.reverse(backward, [0])], axis=-1), x.dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "implementation": self.implementation}

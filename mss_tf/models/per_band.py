"""The per-band ends of the band-split models (BSRNN, BS-RoFormer, Mel-Band RoFormer): the band
split (per band: a norm, then a Dense layer to N features) and the mask estimation (per band: an
MLP, then a Dense layer with a GLU), and the per-band layers they are built from.

Every band has weights of its own, and one side of each per-band Dense layer has the band's own
width. `PerBandDense` stores those weights exactly (concatenated along the varying side: no
padding in the parameter count) and computes them in a few runs of bands of similar width
(`band_runs`; BSRNN's v7: 5 runs for 41 bands): each run's bands are gathered into a layout
zero-padded to its widest band, with a padded kernel gathered the same way, for one batched
matmul per run. `PerBandNorm` normalises each band over its own values in the same layout
(LayerNorm for BSRNN, RMSNorm for the RoFormers). There is no Python loop over bands.

`BandLayout` holds the index maps between the flat band-ordered vector and the padded runs.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf.errors import ConfigError


def band_runs(sizes: Sequence[int], ratio: float = 1.5) -> list[tuple[int, int]]:
    """Runs of consecutive bands of similar size, as (first, stop) band indices: a run ends where
    the next band would make its largest size exceed `ratio` x its smallest. Each run is padded
    to its own widest band only (v7: 5 runs, 2100 padded values for 2050, where one layout
    padded to the widest band of all would hold 7872)."""
    groups, first = [], 0
    for k in range(1, len(sizes) + 1):
        if k == len(sizes) or max(sizes[first : k + 1]) > ratio * min(sizes[first : k + 1]):
            groups.append((first, k))
            first = k
    return groups


class BandLayout:
    """Index maps between a flat vector of bands of `sizes` values (in band order) and a layout
    zero-padded per run of similar bands (`band_runs`).

    A band's values can be split into `chunks` equal parts, each padded on its own (the value and
    gate halves of a GLU): a run's padded layout is then (bands, chunks, width) with width the
    run's widest chunk.

    Attributes:
        sizes: values per band.
        total: sum(sizes); the flat position `total` stands for a zero appended at the end.
        runs: per run, (first band, stop band, pad_index) where `pad_index[j, c, d]` (shape
            (bands, chunks, width), the chunk axis dropped when chunks == 1) is the flat position
            of value d of chunk c of band first + j, or `total` past that chunk's size.
        unpad_index: (total,) position of flat value i in the concatenation of the runs'
            flattened padded layouts (its inverse).
    """

    def __init__(self, sizes: Sequence[int], chunks: int = 1) -> None:
        self.sizes = [int(s) for s in sizes]
        self.chunks = int(chunks)
        if any(size % self.chunks for size in self.sizes):
            raise ConfigError(f"band sizes {self.sizes} do not split into {self.chunks} equal chunks")
        starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)
        self.total = int(sum(self.sizes))
        self.unpad_index = np.zeros(self.total, dtype=np.int32)
        self.runs: list[tuple[int, int, np.ndarray]] = []
        offset = 0
        for first, stop in band_runs(self.sizes):
            width = max(self.sizes[first:stop]) // self.chunks
            pad_index = np.full((stop - first, self.chunks, width), self.total, dtype=np.int32)
            for j, k in enumerate(range(first, stop)):
                chunk = self.sizes[k] // self.chunks
                for c in range(self.chunks):
                    flat = starts[k] + c * chunk + np.arange(chunk)
                    pad_index[j, c, :chunk] = flat
                    self.unpad_index[flat] = offset + (j * self.chunks + c) * width + np.arange(chunk)
            self.runs.append((first, stop, pad_index[:, 0] if self.chunks == 1 else pad_index))
            offset += pad_index.size


def glorot_blocks(shapes: Sequence[tuple[int, int]], axis: int, dtype: Any = None) -> tf.Tensor:
    """Per-band Dense kernels, each Glorot-initialised for its own fan-in/fan-out, joined on `axis`."""
    blocks = [keras.initializers.GlorotUniform()(shape) for shape in shapes]
    return tf.cast(tf.concat(blocks, axis=axis), dtype or "float32")


@keras.saving.register_keras_serializable(package="mss_tf")
class PerBandDense(keras.layers.Layer):
    """A Dense layer per band where one side has the band's own size: band k maps `sizes[k]`
    inputs to `units` outputs (`varying="inputs"`), or `units` inputs to `sizes[k]` outputs
    (`varying="outputs"`). Each band's Dense is Glorot-initialised for its own shape.

    Weights, concatenated along the varying side in band order:
      * inputs vary: kernel (sum(sizes), units), rows of band k at its flat values; bias (bands, units);
      * outputs vary: kernel (units, sum(sizes)), columns of band k at its flat values; bias (sum(sizes),).

    `call` takes a list with one tensor per run of bands of `self.layout` (`BandLayout(sizes,
    chunks)`), the varying side in the run's zero-padded layout:
      * inputs vary: per run (B, T, K_r, D_r) (values past each band's size meet zero rows)
        -> (B, T, bands, units), the runs joined on the band axis;
      * outputs vary: per run (K_r, M, units), band-major -> per run (K_r, M, chunks * D_r),
        each chunk of a band's outputs padded with zeros to D_r (the run's widest chunk).
    """

    def __init__(self, sizes: Sequence[int], units: int, varying: str = "inputs", chunks: int = 1,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if varying not in ("inputs", "outputs"):
            raise ConfigError(f"PerBandDense varying must be 'inputs' or 'outputs', got {varying!r}")
        if varying == "inputs" and chunks != 1:
            raise ConfigError("PerBandDense: chunks apply to varying outputs only")
        self.sizes = [int(s) for s in sizes]
        self.units = int(units)
        self.varying = varying
        self.chunks = int(chunks)
        self.layout = BandLayout(self.sizes, self.chunks)
        self.pad_indices = [tf.constant(index) for _, _, index in self.layout.runs]

    def build(self, input_shape: Any = None) -> None:
        k, total, units = len(self.sizes), self.layout.total, self.units
        if self.varying == "inputs":
            self.kernel = self.add_weight(name="kernel", shape=(total, units), initializer=self._kernel_init)
            self.bias = self.add_weight(name="bias", shape=(k, units), initializer="zeros")
        else:
            self.kernel = self.add_weight(name="kernel", shape=(units, total), initializer=self._kernel_init)
            self.bias = self.add_weight(name="bias", shape=(total,), initializer="zeros")

    def _kernel_init(self, shape: Any, dtype: Any = None) -> tf.Tensor:
        if self.varying == "inputs":
            return glorot_blocks([(size, self.units) for size in self.sizes], axis=0, dtype=dtype)
        return glorot_blocks([(self.units, size) for size in self.sizes], axis=1, dtype=dtype)

    def call(self, x: Any) -> Any:
        dtype = self.compute_dtype
        if self.varying == "inputs":
            kernel = tf.concat([self.kernel, tf.zeros_like(self.kernel[:1])], axis=0)  # (total + 1, units), a zero row last
            bias = tf.cast(self.bias, dtype)
            out = []
            for (first, stop, _), index, run in zip(self.layout.runs, self.pad_indices, x):  # run: (B, T, K_r, D_r)
                z = tf.einsum("btkd,kdn->btkn", tf.cast(run, dtype), tf.cast(tf.gather(kernel, index), dtype))  # (B, T, K_r, units)
                out.append(z + bias[first:stop])
            return tf.concat(out, axis=2) if len(out) > 1 else out[0]  # (B, T, K, units)
        kernel = tf.transpose(tf.concat([self.kernel, tf.zeros_like(self.kernel[:, :1])], axis=1))  # (total + 1, units)
        bias = tf.concat([self.bias, tf.zeros_like(self.bias[:1])], axis=0)  # (total + 1,)
        out = []
        for (first, stop, _), index, run in zip(self.layout.runs, self.pad_indices, x):  # run: (K_r, M, units)
            index = tf.reshape(index, [stop - first, -1])  # (K_r, chunks * D_r)
            y = tf.matmul(run, tf.cast(tf.gather(kernel, index), dtype), transpose_b=True)  # (K_r, M, chunks * D_r)
            out.append(y + tf.cast(tf.gather(bias, index), dtype)[:, tf.newaxis])
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sizes": self.sizes, "units": self.units, "varying": self.varying,
                "chunks": self.chunks}


NORMS = ("layer", "rms")
# the epsilon of each norm when none is given: LayerNorm's (added to the variance, as in BSRNN's
# PyTorch reference) and F.normalize's (the floor of the L2 norm, as in the RoFormers' RMSNorm)
DEFAULT_EPSILON = {"layer": 1e-5, "rms": 1e-12}


def normalize(
    x: tf.Tensor, kind: str = "layer", epsilon: float | None = None, size: Any = None, valid: Any = None,
) -> tf.Tensor:
    """x normalised over its last axis, without gain or bias (float32 in, float32 out).

    "layer": (x - mean) / sqrt(variance + epsilon), LayerNorm.
    "rms": x / max(||x||_2, epsilon) * sqrt(D), the RoFormers' RMSNorm (`F.normalize(x) * D ** 0.5`).

    For bands zero-padded to a common width D: `size` (..., 1) holds the number of real values of
    each band (its D) and `valid` (..., D) is 1 on them and 0 on the padding, which stays zero.
    """
    epsilon = DEFAULT_EPSILON[kind] if epsilon is None else epsilon
    if kind == "rms":
        norm = tf.sqrt(tf.reduce_sum(tf.square(x), axis=-1, keepdims=True))  # (..., 1); padding adds nothing
        scale = tf.sqrt(size) if size is not None else float(x.shape[-1]) ** 0.5
        return x / tf.maximum(norm, epsilon) * scale
    if size is None:
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)  # (..., 1)
        centred = x - mean
        variance = tf.reduce_mean(tf.square(centred), axis=-1, keepdims=True)  # (..., 1)
    else:
        mean = tf.reduce_sum(x, axis=-1, keepdims=True) / size  # (..., 1)
        centred = (x - mean) * valid  # (..., D), zero on the padding
        variance = tf.reduce_sum(tf.square(centred), axis=-1, keepdims=True) / size  # (..., 1)
    return centred * tf.math.rsqrt(variance + epsilon)


@keras.saving.register_keras_serializable(package="mss_tf")
class PerBandNorm(keras.layers.Layer):
    """A norm per band (LayerNorm or RMSNorm, `normalize`) over each band's own values, with a
    gain (and, for LayerNorm, a bias) per value, on bands of different sizes laid out in the
    zero-padded runs of `BandLayout(sizes)`.

    The gain and bias are the weights of the layer that owns the norm (`BandSplit`,
    `MaskEstimator`: `norm_gamma`, `norm_beta`, flat in band order), passed to `call`: so their
    checkpoint keys stay those of the owner.

    `call(runs, gamma, beta=None)`: runs, one (..., K_r, D_r) float32 tensor per run, zero past each
    band's size -> the same runs normalised, gain and bias applied, still zero past each band.

    Args:
        sizes: values per band.
        kind: "layer" or "rms".
        epsilon: see `normalize`; None -> DEFAULT_EPSILON[kind].
    """

    def __init__(self, sizes: Sequence[int], kind: str = "layer", epsilon: float | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if kind not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")
        self.sizes = [int(s) for s in sizes]
        self.kind = kind
        self.epsilon = DEFAULT_EPSILON[kind] if epsilon is None else float(epsilon)
        self.layout = BandLayout(self.sizes)
        sizes_array = np.array(self.sizes, np.float32)
        # per run of bands: (pad_index (K_r, D_r), valid (K_r, D_r) or None without padding, sizes (K_r, 1))
        self.runs = []
        for first, stop, pad in self.layout.runs:
            padded = bool(np.any(pad >= self.layout.total))
            valid = tf.constant((pad < self.layout.total).astype(np.float32)) if padded else None
            self.runs.append((tf.constant(pad), valid, tf.constant(sizes_array[first:stop, None])))

    def call(self, runs: Sequence[tf.Tensor], gamma: tf.Tensor, beta: tf.Tensor | None = None) -> list[tf.Tensor]:
        # (total + 1,) per-value gains and biases, a zero last (gathered past each band's size)
        gamma, beta = (None if w is None else tf.concat([tf.reshape(tf.cast(w, tf.float32), [-1]), [0.0]], axis=0)
                       for w in (gamma, beta))
        out = []
        for x, (pad_index, valid, sizes) in zip(runs, self.runs):  # x: (..., K_r, D_r)
            if valid is None:  # bands of one size: a plain norm over the last axis
                x = normalize(x, self.kind, self.epsilon)
            else:
                x = normalize(x, self.kind, self.epsilon, size=sizes, valid=valid)
            x = x * tf.gather(gamma, pad_index)  # (..., K_r, D_r)
            out.append(x if beta is None else x + tf.gather(beta, pad_index))
        return out

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "sizes": self.sizes, "kind": self.kind, "epsilon": self.epsilon}


class _PerBandLayer(keras.layers.Layer):
    """Shared set-up of the band split and the mask estimation: the band widths, N, the values
    per bin and the norm. Inputs stay float32: the normalisation runs in float32 and casts to the
    compute dtype itself."""

    def __init__(
        self, band_widths: Sequence[int], feature_dim: int, features_per_bin: int = 2,
        epsilon: float | None = None, norm: str | None = "layer", **kwargs: Any,
    ) -> None:
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if norm is not None and norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)} or None, got {norm!r}")
        self.band_widths = [int(w) for w in band_widths]
        self.feature_dim = int(feature_dim)
        self.features_per_bin = int(features_per_bin)
        self.norm_kind = norm
        self.epsilon = float(epsilon) if epsilon is not None else DEFAULT_EPSILON.get(norm or "layer")
        self.band_sizes = [w * self.features_per_bin for w in self.band_widths]  # values per band

    def _add_norm_weights(self, shape: tuple[int, ...]) -> None:
        """The norm's gain (and LayerNorm's bias): `norm_gamma`, `norm_beta`."""
        if self.norm_kind is None:
            return
        self.gamma = self.add_weight(name="norm_gamma", shape=shape, initializer="ones")
        self.beta = (self.add_weight(name="norm_beta", shape=shape, initializer="zeros")
                     if self.norm_kind == "layer" else None)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "band_widths": self.band_widths,
            "feature_dim": self.feature_dim,
            "features_per_bin": self.features_per_bin,
            "epsilon": self.epsilon,
            "norm": self.norm_kind,
        }


@keras.saving.register_keras_serializable(package="mss_tf")
class BandSplit(_PerBandLayer):
    """Band split module: per band, a norm over its 2*C*width values, then Dense to N.

    Each band has its own norm (gain, and for LayerNorm bias, per value) and its own Dense layer
    (`PerBandDense`): BSRNN's band split (LayerNorm) and the RoFormers' (RMSNorm). The bands are
    computed in runs of similar width (`BandLayout`), each run gathered into a layout zero-padded
    to its widest band.

    Args:
        band_widths: bins per band; band k's values are the next 2*C*width_k of the input (they
            tile the spectrum for BSRNN and BS-RoFormer; the Mel-Band RoFormer gathers its
            overlapping bands' bins into this order first).
        feature_dim: N, features per band.
        features_per_bin: values per bin, 2 * channels (real and imaginary part per channel).
        epsilon: the norm's epsilon (`normalize`); None -> the norm's default.
        norm: "layer" (BSRNN) or "rms" (RoFormers).
    """

    def __init__(
        self, band_widths: Sequence[int], feature_dim: int, features_per_bin: int = 2,
        epsilon: float | None = None, norm: str = "layer", **kwargs: Any,
    ) -> None:
        if norm not in NORMS:
            raise ConfigError(f"band split norm must be one of {', '.join(NORMS)}, got {norm!r}")
        super().__init__(band_widths, feature_dim, features_per_bin, epsilon, norm, **kwargs)
        self.layout = BandLayout(self.band_sizes)
        self.total = self.layout.total
        self.norm = PerBandNorm(self.band_sizes, norm, self.epsilon, name="norm")
        self.dense = PerBandDense(self.band_sizes, self.feature_dim, varying="inputs", name="dense")

    def build(self, input_shape: Any) -> None:
        self._add_norm_weights((self.total,))  # band k's gains at [start_k : start_k + 2*C*w_k]
        self.dense.build()  # band k's Dense: kernel rows [start_k : start_k + 2*C*w_k], Glorot for fan-in 2*C*w_k

    def call(self, spectrum: tf.Tensor) -> tf.Tensor:
        """spectrum: (B, T, total) float32, bands in order, each band's bins in order, each bin's
        (channel, real/imag) values -> (B, T, K, N)."""
        spectrum = tf.cast(spectrum, tf.float32)
        spectrum = tf.pad(spectrum, [[0, 0], [0, 0], [0, 1]])  # (B, T, total + 1), a zero for padding
        runs = [tf.gather(spectrum, pad_index, axis=-1) for pad_index, _, _ in self.norm.runs]  # (B, T, K_r, D_r) each
        return self.dense(self.norm(runs, self.gamma, self.beta))  # (B, T, K, N)


@keras.saving.register_keras_serializable(package="mss_tf")
class MaskEstimator(_PerBandLayer):
    """Mask estimation module of one target: per band, [norm(N) ->] MLP -> Dense(2 * 2*C*width)
    + GLU, giving the real and imaginary mask of every value of the band.

    The MLP has `hidden_layers` layers Dense(hidden) + activation (BSRNN: LayerNorm, then one
    layer of 4N with tanh; the RoFormers: no norm, `mask_estimator_depth` layers of the model's
    reading, tanh). Each band has its own norm and MLP. The bands are computed band-major, in runs
    of similar width (`BandLayout`): one batched matmul per run and layer, the last Dense a
    `PerBandDense` whose outputs, [value (D_k) | gate (D_k)] per band, are each zero-padded to the
    run's widest band. GLU: value * sigmoid(gate), the value being the first half of the band's
    Dense output, as torch.nn.GLU.

    Weights: `norm_gamma`, `norm_beta` (K, N) (with a norm); `hidden_kernel` (K, N, hidden) and
    `hidden_bias` (K, hidden) for the first hidden layer, `hidden_kernel_i`, `hidden_bias_i`
    (K, hidden, hidden), (K, hidden) for layer i >= 1; `glu/kernel` (in, 2 * total), band k's
    columns at [2*start_k : 2*(start_k + D_k)] as [value | gate], and `glu/bias` (2 * total,).

    Args:
        band_widths: bins per band.
        feature_dim: N.
        hidden_dim: MLP hidden size (BSRNN: 4N).
        features_per_bin: 2 * channels.
        epsilon: the norm's epsilon; None -> the norm's default.
        norm: "layer" (BSRNN), "rms" or None (the RoFormers: no norm).
        hidden_layers: Dense + activation layers before the GLU's Dense (0: the GLU's Dense on N).
        activation: a Keras activation name, of the hidden layers.
    """

    def __init__(
        self, band_widths: Sequence[int], feature_dim: int, hidden_dim: int, features_per_bin: int = 2,
        epsilon: float | None = None, norm: str | None = "layer", hidden_layers: int = 1, activation: str = "tanh",
        **kwargs: Any,
    ) -> None:
        super().__init__(band_widths, feature_dim, features_per_bin, epsilon, norm, **kwargs)
        if hidden_layers < 0:
            raise ConfigError(f"mask estimator hidden_layers must be >= 0, got {hidden_layers}")
        self.hidden_dim = int(hidden_dim)
        self.hidden_layers = int(hidden_layers)
        self.activation = activation
        self.activation_fn = keras.activations.get(activation)
        k = len(self.band_widths)
        self.norm = PerBandNorm([self.feature_dim] * k, norm, self.epsilon, name="norm") if norm else None
        self.layout = BandLayout(self.band_sizes)
        self.total = self.layout.total
        self.unpad_index = tf.constant(self.layout.unpad_index)
        glu_inputs = self.hidden_dim if self.hidden_layers else self.feature_dim
        self.glu = PerBandDense([2 * size for size in self.band_sizes], glu_inputs, varying="outputs", chunks=2,
                                name="glu")

    def build(self, input_shape: Any) -> None:
        k, n, h = len(self.band_widths), self.feature_dim, self.hidden_dim
        self._add_norm_weights((k, n))
        self.hidden_kernels, self.hidden_biases = [], []
        for i in range(self.hidden_layers):
            fan_in = n if i == 0 else h
            suffix = "" if i == 0 else f"_{i}"
            self.hidden_kernels.append(self.add_weight(
                name=f"hidden_kernel{suffix}", shape=(k, fan_in, h),
                initializer=lambda shape, dtype=None, f=fan_in: tf.stack(
                    [keras.initializers.GlorotUniform()((f, h)) for _ in range(k)]),
            ))
            self.hidden_biases.append(self.add_weight(name=f"hidden_bias{suffix}", shape=(k, h), initializer="zeros"))
        self.glu.build()  # band k's Dense: kernel columns [2*start_k : 2*(start_k + 2*C*w_k)], [value | gate]

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """x: (B, T, K, N) -> mask (B, T, total) float32 in the band split's value order."""
        dtype = self.compute_dtype
        shape = tf.shape(x)
        if self.norm is not None:
            # (the norm in this layout: written on (K, B*T, N) with gains (K, 1, N), the same expression
            # crashes TensorFlow 2.16's oneDNN graph rewrite when batch and frames are unknown)
            x = self.norm([tf.cast(x, tf.float32)], self.gamma, self.beta)[0]  # (B, T, K, N)
        x = tf.reshape(tf.transpose(tf.cast(x, dtype), [2, 0, 1, 3]), [shape[2], -1, self.feature_dim])  # (K, B*T, N)
        kernels = [tf.cast(w, dtype) for w in self.hidden_kernels]  # (K, N, H), then (K, H, H)
        biases = [tf.cast(b, dtype)[:, tf.newaxis] for b in self.hidden_biases]  # (K, 1, H)
        hidden = []
        for first, stop, _ in self.layout.runs:  # runs of similar bands, K_r of them, D_r values wide
            h = x[first:stop]  # (K_r, B*T, N)
            for kernel, bias in zip(kernels, biases):
                h = self.activation_fn(tf.matmul(h, kernel[first:stop]) + bias[first:stop])  # (K_r, B*T, H)
            hidden.append(h)
        masks = []
        for out in self.glu(hidden):  # (K_r, B*T, 2*D_r): [value | gate], each zero-padded to D_r
            value, gate = tf.split(tf.cast(out, tf.float32), 2, axis=-1)  # (K_r, B*T, D_r) each
            mask = tf.transpose(value * tf.sigmoid(gate), [1, 0, 2])  # (B*T, K_r, D_r), GLU
            masks.append(tf.reshape(mask, [shape[0], shape[1], -1]))  # (B, T, K_r*D_r)
        mask = tf.concat(masks, axis=-1) if len(masks) > 1 else masks[0]  # (B, T, sum of K_r*D_r)
        return tf.gather(mask, self.unpad_index, axis=-1)  # (B, T, total)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "hidden_layers": self.hidden_layers,
                "activation": self.activation}

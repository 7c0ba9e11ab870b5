"""Band-Split RNN (Luo & Yu, "Music Source Separation with Band-split RNN", IEEE/ACM TASLP 2023)
and its Squeeze-and-Excitation variant BSRNN-SE.

Tensor layout (the suite's convention, see unet.py): the mixture STFT comes in as float32
(batch, frames, bins, 2) [real, imag] and the estimates go out as (batch, targets, frames,
bins, 2) float32. With `channels=2` the input is (batch, 2, frames, bins, 2) and the output
(batch, targets, 2, frames, bins, 2). Inside, features are (B, T, K, N): batch, frames,
subbands, feature dim. The blocks follow figure 1 of the paper:

    mixture -> BandSplit -> 12 x BandSequenceModule (time BLSTM, band BLSTM) -> MaskEstimator
            -> complex mask x mixture                                           (BSRNN)

The two per-band ends, `BandSplit` (per band LayerNorm + Dense) and `MaskEstimator` (per band
LayerNorm + MLP + GLU), live in `mss_tf.models.per_band`, shared with the RoFormers; they run on
a few runs of bands of similar width at once (v7: 5 runs for 41 bands). This file holds the
middle, the band and sequence modules. Their BLSTMs (`mss_tf.models.lstm.BidirectionalLSTM`)
run on all bands (time path) or all frames (band path) as one batched sequence call; there is
no Python loop over bands.

Speed on CPU (benchmarks/models.py): the forward pass is almost all BLSTM recurrence (the
fused path runs each direction as one `BlockLSTM` op); the two directions of a block are
independent ops, so TensorFlow runs them side by side, and with 2 cores the pass is fastest
with one intra-op thread per op (`tf.config.threading.set_intra_op_parallelism_threads(1)`,
inter-op threads >= 2), which a process sets before TensorFlow starts.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import keras
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.models.bands import band_widths, resolve_scheme
from mss_tf.models.lstm import LSTM_IMPLEMENTATIONS, BidirectionalLSTM
from mss_tf.models.per_band import BandSplit, MaskEstimator
from mss_tf.models.search import HyperParameter, scaled_choices

SE_PLACEMENTS = ("blstm", "module")


@keras.saving.register_keras_serializable(package="mss_tf")
class BandSequenceModule(keras.layers.Layer):
    """Band and sequence modelling module: a residual time-axis BLSTM block, then a band-axis one.

    Args: as ResidualRNN (without axis).
    """

    def __init__(
        self, feature_dim: int, hidden_dim: int, squeeze_excitation: bool = False, se_reduction: int = 16,
        lstm_implementation: str = "auto", se_placement: str = "blstm", **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if se_placement not in SE_PLACEMENTS:
            raise ConfigError(f"se_placement must be one of {', '.join(SE_PLACEMENTS)}, got {se_placement!r}")
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.squeeze_excitation = bool(squeeze_excitation)
        self.se_reduction = int(se_reduction)
        self.lstm_implementation = lstm_implementation
        self.se_placement = se_placement
        common = dict(se_reduction=se_reduction, lstm_implementation=lstm_implementation)
        # "blstm": an SE block after each BLSTM; "module": one after each (time, band) pair
        time_se = self.squeeze_excitation and se_placement == "blstm"
        self.time_rnn = ResidualRNN(feature_dim, hidden_dim, axis="time", name="time_rnn", squeeze_excitation=time_se,
                                    **common)
        self.band_rnn = ResidualRNN(feature_dim, hidden_dim, axis="band", name="band_rnn",
                                    squeeze_excitation=self.squeeze_excitation, **common)

    def build(self, input_shape: Any) -> None:
        self.time_rnn.build(input_shape)
        self.band_rnn.build(input_shape)

    def call(self, x: tf.Tensor, valid_frames: tf.Tensor | None = None) -> tf.Tensor:
        x = self.time_rnn(x, valid_frames=valid_frames)  # (B, T, K, N)
        return self.band_rnn(x, valid_frames=valid_frames)  # (B, T, K, N)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "feature_dim": self.feature_dim,
            "hidden_dim": self.hidden_dim,
            "squeeze_excitation": self.squeeze_excitation,
            "se_reduction": self.se_reduction,
            "lstm_implementation": self.lstm_implementation,
            "se_placement": self.se_placement,
        }


@keras.saving.register_keras_serializable(package="mss_tf")
class ResidualRNN(keras.layers.Layer):
    """One residual BLSTM block of the band and sequence module, along time or along bands.

    x + [SE](Dense_N(BLSTM_2N(Norm(x)))), with the BLSTM run over time on the B*K band
    sequences for `axis="time"` (shared across bands) or over bands on the B*T frame sequences
    for `axis="band"` (shared across frames).

    Norm is GroupNorm(1, N) applied at each (frame, band) position, i.e. a LayerNorm over the
    N features with a per-feature gain and bias: it never pools over time, so the model is
    not tied to the training chunk length. (The PyTorch reference applies GroupNorm(1, N) to
    a (batch, N, steps) tensor, which also pools over the sequence; we deliberately do not.)

    Layout: the sequence is built time-major directly, (T, B*K, N) or (K, B*T, N), which is
    what the fused kernel wants (for B = 1 the time-path transpose only moves a size-1 axis).
    Dense_N(BLSTM(Norm(x))) is `BidirectionalLSTM.project`, which runs the Keras layers or the
    fused kernel (`lstm_implementation`) and returns the result as summands (the fused path's
    forward and backward parts), so that without SE the residual sum is one add.

    `call(x, valid_frames)` hands `valid_frames` (int (B,), frames holding signal) to the SE
    squeeze only; the BLSTM runs over every frame, so along time its backward direction starts
    in any padding at the end of the chunk.

    Args:
        feature_dim: N.
        hidden_dim: BLSTM hidden size per direction (paper: 2N).
        axis: "time" or "band".
        squeeze_excitation: add an SE block after the BLSTM's projection, before the residual sum.
        se_reduction: SE reduction r.
        lstm_implementation: see BidirectionalLSTM.
        epsilon: normalisation epsilon.
    """

    def __init__(
        self, feature_dim: int, hidden_dim: int, axis: str = "time", squeeze_excitation: bool = False,
        se_reduction: int = 16, lstm_implementation: str = "auto", epsilon: float = 1e-5, **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if axis not in ("time", "band"):
            raise ConfigError(f"ResidualRNN axis must be 'time' or 'band', got {axis!r}")
        self.feature_dim = int(feature_dim)
        self.hidden_dim = int(hidden_dim)
        self.axis = axis
        self.squeeze_excitation = bool(squeeze_excitation)
        self.se_reduction = int(se_reduction)
        self.lstm_implementation = lstm_implementation
        self.epsilon = float(epsilon)
        self.norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="norm")
        self.blstm = BidirectionalLSTM(self.hidden_dim, lstm_implementation, name="blstm")
        self.projection = keras.layers.Dense(self.feature_dim, name="projection")
        self.se = (
            SqueezeExcitation(self.feature_dim, self.se_reduction, name="se") if self.squeeze_excitation else None
        )
        # (B, T, K, N) <-> time-major sequence layout of this axis
        self._perm = [1, 0, 2, 3] if axis == "time" else [2, 0, 1, 3]
        self._inverse = [1, 0, 2, 3] if axis == "time" else [1, 2, 0, 3]

    def build(self, input_shape: Any) -> None:
        n = self.feature_dim
        self.norm.build((None, None, n))
        self.blstm.build((None, None, n))
        self.projection.build((None, None, 2 * self.hidden_dim))
        if self.se is not None:
            self.se.build((None, None, None, n))

    def call(self, x: tf.Tensor, valid_frames: tf.Tensor | None = None) -> tf.Tensor:
        """x: (B, T, K, N); valid_frames: int (B,) frames holding signal, for the SE squeeze."""
        n = self.feature_dim
        sequence = tf.transpose(x, self._perm)  # (T, B, K, N) or (K, B, T, N)
        seq_shape = tf.shape(sequence)
        seq = tf.reshape(sequence, [seq_shape[0], -1, n])  # (S, M, N): (T, B*K, N) or (K, B*T, N), time-major
        y = self.blstm.project(seq, self.projection, norm=self.norm)  # Dense_N(BLSTM(Norm(x))) as summands, (S, M, N)
        if self.se is None:
            return self._unsequence(tf.add_n([seq, *[tf.cast(part, x.dtype) for part in y]]), seq_shape, x)  # x + y
        y = self._unsequence(tf.add_n(y), seq_shape, x)  # (B, T, K, N)
        return x + tf.cast(self.se(y, valid_frames=valid_frames), x.dtype)  # x + SE(y)

    def _unsequence(self, seq: tf.Tensor, seq_shape: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
        """(S, M, N) in this axis' sequence layout -> (B, T, K, N), x's layout."""
        out = tf.transpose(tf.reshape(seq, seq_shape), self._inverse)  # (B, T, K, N)
        out.set_shape(x.shape)
        return out

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "feature_dim": self.feature_dim,
            "hidden_dim": self.hidden_dim,
            "axis": self.axis,
            "squeeze_excitation": self.squeeze_excitation,
            "se_reduction": self.se_reduction,
            "lstm_implementation": self.lstm_implementation,
            "epsilon": self.epsilon,
        }


@keras.saving.register_keras_serializable(package="mss_tf")
class SqueezeExcitation(keras.layers.Layer):
    """Squeeze-and-Excitation over the N feature channels of a (B, T, K, N) tensor.

    Squeeze: mean over time and bands; excitation: Dense(N/r) + ReLU, Dense(N) + sigmoid;
    the input channels are scaled by the excitation (at every frame, padded ones included).

    The squeeze is the one statistic of the model pooled over time, so it must not see
    padding: `call(x, valid_frames)` averages only over the first `valid_frames[b]` frames of
    batch item b (and all bands), which makes the excitation of a chunk zero-padded to the
    traced length equal that of the unpadded chunk. `valid_frames=None` means every frame.
    The mean is taken in float32 whatever the compute dtype.

    Args:
        channels: N.
        reduction: r; the bottleneck has max(1, N // r) units.
    """

    def __init__(self, channels: int, reduction: int = 16, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if reduction < 1:
            raise ConfigError(f"SE reduction must be >= 1, got {reduction}")
        self.channels = int(channels)
        self.reduction = int(reduction)
        self.squeeze_dense = keras.layers.Dense(max(1, self.channels // self.reduction), activation="relu", name="squeeze")
        self.excite_dense = keras.layers.Dense(self.channels, activation="sigmoid", name="excite")

    def build(self, input_shape: Any) -> None:
        self.squeeze_dense.build((None, self.channels))
        self.excite_dense.build((None, max(1, self.channels // self.reduction)))

    def squeeze(self, x: tf.Tensor, valid_frames: tf.Tensor | None = None) -> tf.Tensor:
        """x: (B, T, K, N) -> (B, N) float32, the mean over bands and the valid frames.

        valid_frames: int (B,) (or a scalar for the whole batch), frames of each item that
        hold signal, counted from the start; None -> all T frames.
        """
        x = tf.cast(x, tf.float32)
        if valid_frames is None:
            return tf.reduce_mean(x, axis=[1, 2])  # (B, N)
        shape = tf.shape(x)
        valid_frames = tf.broadcast_to(tf.cast(valid_frames, tf.int32), shape[:1])  # (B,)
        mask = tf.sequence_mask(valid_frames, shape[1], dtype=tf.float32)  # (B, T)
        total = tf.reduce_sum(x * mask[:, :, tf.newaxis, tf.newaxis], axis=[1, 2])  # (B, N)
        count = tf.reduce_sum(mask, axis=1, keepdims=True) * tf.cast(shape[2], tf.float32)  # (B, 1)
        return total / tf.maximum(count, 1.0)  # (B, N)

    def call(self, x: tf.Tensor, valid_frames: tf.Tensor | None = None) -> tf.Tensor:
        squeezed = self.squeeze(x, valid_frames)  # (B, N)
        scale = self.excite_dense(self.squeeze_dense(squeezed))  # (B, N/r) -> (B, N)
        return x * tf.cast(scale, x.dtype)[:, tf.newaxis, tf.newaxis, :]  # (B, T, K, N)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "channels": self.channels, "reduction": self.reduction}


@keras.saving.register_keras_serializable(package="mss_tf")
class BSRNN(keras.Model):
    """Band-Split RNN separator; with `squeeze_excitation=True`, BSRNN-SE.

    Band split: the bins are cut into K bands by `band_scheme`; each band's real and imaginary
    parts (of every channel) go through their own LayerNorm and Dense to N features. Band and
    sequence modelling: `num_modules` modules, each a residual time-axis BLSTM block then a
    residual band-axis BLSTM block (norm -> BLSTM with hidden size `lstm_hidden` per direction
    -> Dense back to N; SE after it when enabled). Mask estimation: per target, per band,
    LayerNorm -> Dense(`mask_hidden`) + tanh -> Dense + GLU, giving a complex mask; the
    estimate is mask x mixture (complex product).

    Choices where the paper is silent or ambiguous:
      * bins join the band [lo, hi) that holds their centre frequency; Nyquist is in the last band.
      * the time and band blocks normalise each (frame, band) position over N (GroupNorm(1, N)
        per position), never over time, so any input length works.
      * SE sits after the Dense projecting the BLSTM output back to N (so it scales N channels,
        Dense(N/r) -> Dense(N)), before the residual addition; the squeeze averages over time
        and bands of the current chunk, only over its first `valid_frames` frames when given
        (a chunk zero-padded to the traced length: padding must not dilute the mean). Every
        BLSTM has its own SE block (2 per module) with `se_placement="blstm"` (the default); with
        "module", one SE block per module, after its band BLSTM.
      * padding at the end of a chunk is otherwise left to the model: the time BLSTMs run
        over it, so the forward direction is untouched on the valid frames but the backward
        direction starts in the padding and carries it into the valid frames (padding is silent
        only at the input: after the first module it holds the forward states' residue).
        The separator never pads (inference.Separator); padded batches (exports) pass
        `valid_frames`.
      * the mask is unbounded (GLU output), as in the reference code.
      * with several targets the body is shared and each target has its own mask head.
      * `channels=2`: each bin contributes 4 values (2 channels x real/imag) to the band
        features, and each head outputs a mask per channel.

    Args:
        targets: names of the estimated sources (paper: one per model).
        band_scheme: a name in `mss_tf.models.bands.BAND_SCHEMES`, "auto" (the paper's scheme
            for a single target: v7 for vocals/other, bass, drums), or a list of
            [upper edge Hz, bandwidth Hz] rules.
        sample_rate: STFT sample rate (to turn the Hz rules into bins).
        n_fft: STFT size; the input must have n_fft/2 + 1 bins. (A preset's model takes both from
            its SpectrogramConfig: `mss_tf.models.registry.build_model`.)
        feature_dim: N (paper: 128).
        num_modules: band and sequence modules (paper: 12).
        lstm_hidden: BLSTM hidden size per direction; None -> 2N.
        mask_hidden: mask-estimation MLP hidden size; None -> 4N.
        channels: 1 (mono, default) or 2 (stereo fed jointly).
        squeeze_excitation: add SE blocks (BSRNN-SE).
        se_reduction: SE reduction ratio r (default 16).
        se_placement: "blstm" (the default: an SE block after every BLSTM, 2 per module) or
            "module" (one after each time/band pair, on the band BLSTM's output): the study's ablation.
        lstm_implementation: "auto" (default: "fused" without a GPU, else "keras"), "keras"
            (Keras LSTM: cuDNN on a GPU, XLA-compilable) or "fused" (TF's BlockLSTM kernel on
            the same weights); see BidirectionalLSTM. Checkpoints are interchangeable.
    """

    # the separation chunk unless told (mss_tf.inference): BLSTM activations grow fast with the chunk,
    # and the paper-size model peaks at 1.5 GB with 5 s chunks, 2.1 GB with 10 s, at the same speed
    # (benchmarks/RESULTS.md, "Inference")
    default_chunk_seconds = 5.0

    def __init__(
        self,
        targets: Sequence[str] = ("vocals",),
        band_scheme: Union[str, Sequence[Sequence[float]]] = "auto",
        sample_rate: int = 44100,
        n_fft: int = 2048,
        feature_dim: int = 128,
        num_modules: int = 12,
        lstm_hidden: int | None = None,
        mask_hidden: int | None = None,
        channels: int = 1,
        squeeze_excitation: bool = False,
        se_reduction: int = 16,
        lstm_implementation: str = "auto",
        se_placement: str = "blstm",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not targets:
            raise ConfigError("BSRNN needs at least one target")
        if channels not in (1, 2):
            raise ConfigError(f"BSRNN channels must be 1 or 2, got {channels}")
        if feature_dim < 1 or num_modules < 1:
            raise ConfigError(f"BSRNN feature_dim and num_modules must be positive, got {feature_dim}, {num_modules}")
        if lstm_implementation not in LSTM_IMPLEMENTATIONS:
            raise ConfigError(f"lstm_implementation must be one of {LSTM_IMPLEMENTATIONS}, got {lstm_implementation!r}")
        self.targets = list(targets)
        self.band_scheme = band_scheme if isinstance(band_scheme, str) else [list(r) for r in band_scheme]
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.feature_dim = int(feature_dim)
        self.num_modules = int(num_modules)
        self.lstm_hidden = int(lstm_hidden) if lstm_hidden else 2 * self.feature_dim
        self.mask_hidden = int(mask_hidden) if mask_hidden else 4 * self.feature_dim
        self.channels = int(channels)
        self.squeeze_excitation = bool(squeeze_excitation)
        self.se_reduction = int(se_reduction)
        self.lstm_implementation = lstm_implementation
        self.se_placement = se_placement
        self.band_widths = band_widths(resolve_scheme(self.band_scheme, self.targets), self.sample_rate, self.n_fft)
        self.n_bins = self.n_fft // 2 + 1
        values_per_bin = 2 * self.channels
        self.band_split = BandSplit(self.band_widths, self.feature_dim, values_per_bin, name="band_split")
        self.band_sequence = [
            BandSequenceModule(
                self.feature_dim, self.lstm_hidden, self.squeeze_excitation, self.se_reduction,
                self.lstm_implementation, se_placement, name=f"band_sequence_{i}",
            )
            for i in range(self.num_modules)
        ]
        self.mask_estimators = [
            MaskEstimator(self.band_widths, self.feature_dim, self.mask_hidden, values_per_bin, name=f"mask_{target}")
            for target in self.targets
        ]

    @property
    def se_blocks(self) -> list[SqueezeExcitation]:
        """The SE blocks in the order the signal meets them (time, band, time, band, ...)."""
        blocks = []
        for module in self.band_sequence:
            blocks += [rnn.se for rnn in (module.time_rnn, module.band_rnn) if rnn.se is not None]
        return blocks

    def build(self, input_shape: Any) -> None:
        k, n = len(self.band_widths), self.feature_dim
        self.band_split.build((None, None, self.n_bins * 2 * self.channels))
        for module in self.band_sequence:
            module.build((None, None, k, n))
        for head in self.mask_estimators:
            head.build((None, None, k, n))
        self.built = True

    def call(
        self, mixture: tf.Tensor, training: bool | None = None, valid_frames: tf.Tensor | None = None,
    ) -> tf.Tensor:
        """mixture: (B, T, F, 2) or (B, C, T, F, 2) float32 STFT -> estimates (B, S, [C,] T, F, 2).

        valid_frames: int (B,), frames of each item that hold signal (the rest is zero padding
        at the end); only the SE squeeze uses it. None -> all frames.
        """
        mixture = tf.cast(mixture, tf.float32)
        expected_rank = 4 if self.channels == 1 else 5
        if mixture.shape.rank != expected_rank or (mixture.shape[-2] is not None and mixture.shape[-2] != self.n_bins):
            layout = "(batch, frames, bins, 2)" if self.channels == 1 else "(batch, channels, frames, bins, 2)"
            raise ConfigError(f"BSRNN expects {layout} with bins={self.n_bins}, got shape {mixture.shape}")
        if self.channels == 1:
            spec = mixture[:, :, :, tf.newaxis, :]  # (B, T, F, 1, 2)
        else:
            spec = tf.transpose(mixture, [0, 2, 3, 1, 4])  # (B, T, F, C, 2)
        shape = tf.shape(spec)
        flat = tf.reshape(spec, [shape[0], shape[1], -1])  # (B, T, F*C*2)
        x = tf.cast(self.band_split(flat), self.compute_dtype)  # (B, T, K, N)
        for module in self.band_sequence:
            x = module(x, valid_frames=valid_frames)  # (B, T, K, N)
        estimates = []
        for head in self.mask_estimators:
            mask = tf.reshape(head(x), shape)  # (B, T, F*C*2) -> (B, T, F, C, 2), float32
            real = mask[..., 0] * spec[..., 0] - mask[..., 1] * spec[..., 1]  # (B, T, F, C)
            imag = mask[..., 0] * spec[..., 1] + mask[..., 1] * spec[..., 0]  # (B, T, F, C)
            estimates.append(tf.stack([real, imag], axis=-1))  # (B, T, F, C, 2)
        out = tf.stack(estimates, axis=1)  # (B, S, T, F, C, 2)
        if self.channels == 1:
            return tf.squeeze(out, axis=4)  # (B, S, T, F, 2); a squeeze, not a 6-D slice (LiteRT slices 5-D at most)
        return tf.transpose(out, [0, 1, 4, 2, 3, 5])  # (B, S, C, T, F, 2)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "targets": self.targets,
            "band_scheme": self.band_scheme,
            "sample_rate": self.sample_rate,
            "n_fft": self.n_fft,
            "feature_dim": self.feature_dim,
            "num_modules": self.num_modules,
            "lstm_hidden": self.lstm_hidden,
            "mask_hidden": self.mask_hidden,
            "channels": self.channels,
            "squeeze_excitation": self.squeeze_excitation,
            "se_reduction": self.se_reduction,
            "se_placement": self.se_placement,
            "lstm_implementation": self.lstm_implementation,
        }


def search_space(kwargs: dict[str, Any]) -> list[HyperParameter]:
    """What `train.py --tune` searches for a BSRNN(-SE) preset with these arguments (beside the
    training settings of `mss_tf.models.search.training_space`), sized around the preset."""
    n = int(kwargs.get("feature_dim", 128))
    modules = int(kwargs.get("num_modules", 12))
    scheme = kwargs.get("band_scheme", "auto")
    schemes = tuple(dict.fromkeys([scheme if isinstance(scheme, str) else "v7", "v7", "coarse"]))
    space = [
        HyperParameter("feature_dim", "choice", values=scaled_choices(n, (0.5, 1, 2), minimum=4),
                       help="N, the feature size of every band"),
        HyperParameter("num_modules", "int", max(1, modules // 2), modules + max(1, modules // 2),
                       help="band-sequence modules (each: a time BLSTM and a band BLSTM)"),
        HyperParameter("lstm_hidden", "choice", values=scaled_choices(n, (1, 2, 4), minimum=4),
                       help="hidden units of each LSTM direction (the paper: 2N)"),
        HyperParameter("band_scheme", "choice", values=schemes, help="band split (auto: the paper's scheme per target)"),
    ]
    if kwargs.get("squeeze_excitation"):
        space.append(HyperParameter("se_reduction", "choice", values=(4, 8, 16), help="SE reduction ratio r"))
    return space


def search_kwargs(values: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments for chosen search values: the names are BSRNN's own arguments."""
    return dict(values)

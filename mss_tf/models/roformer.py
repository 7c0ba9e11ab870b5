"""BS-RoFormer (Lu et al., "Music Source Separation with Band-Split RoPE Transformer", arXiv
2309.02612) and Mel-Band RoFormer (Wang et al., "Mel-Band RoFormer for Music Source Separation",
arXiv 2310.01809): band-split transformers with rotary position embeddings.

The semantics are those of the training code the public checkpoints come from
(ZFTurbo/Music-Source-Separation-Training, models/bs_roformer/, after lucidrains/BS-RoFormer), so
that converted weights give the same outputs; where that code differs from the papers (per-head
attention gates, where the RMSNorms sit, how the mask MLP's depth counts), the constructor names
the switch. In the reference's order: the transformer's blocks (norm, rotary embedding,
attention, feed-forward, transformer) are `mss_tf.models.transformer`, the band split and mask
estimator `mss_tf.models.per_band` (shared with BSRNN), the bands `mss_tf.models.bands`; this
file holds the models.

    mixture -> band split (per band RMSNorm + Dense) -> depth x [time transformer per band,
            freq transformer per frame] -> [final RMSNorm] -> per target, per band MLP + GLU
            -> complex mask x mixture

Tensor layout: as BSRNN (the suite's convention): the mixture STFT comes in as float32 (batch,
frames, bins, 2) [real, imag], or (batch, 2, frames, bins, 2) with `channels=2`, and the
estimates go out as (batch, targets, [2,] frames, bins, 2) float32. Inside, features are
(B, T, K, D): batch, frames, bands, feature dim. The STFT itself stays outside the model.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from mss_tf.errors import ConfigError
from mss_tf.models.bands import bs_roformer_bands, mel_band_bins
from mss_tf.models.per_band import BandSplit, MaskEstimator
from mss_tf.models.search import HyperParameter, scaled_choices
from mss_tf.models.transformer import (
    ATTENTION_IMPLEMENTATIONS, TRANSFORMER_IMPLEMENTATIONS, RMSNorm, RotaryEmbedding, Transformer,
    dot_product_attention_available,
)

MASK_DEPTH_COUNTS = ("linear_layers", "hidden_layers")


class _BandRoformer(keras.Model):
    """What BS-RoFormer and Mel-Band RoFormer share: band split, the axial transformers, the mask
    heads and the complex masking. Subclasses say which bins each band holds (`_bands`) and how
    the band-ordered values map to and from the spectrum (`split_values`, `merge_masks`)."""

    # separation chunk unless told (mss_tf.inference): the 8 s segments the paper-size models train
    # on and the public checkpoints' configs separate with; attention memory grows with its square
    default_chunk_seconds = 8.0

    def __init__(
        self, targets: Sequence[str], sample_rate: int, n_fft: int, channels: int, dim: int, depth: int,
        time_transformer_depth: int, freq_transformer_depth: int, heads: int, dim_head: int,
        attn_dropout: float, ff_dropout: float, mask_estimator_depth: int, mlp_expansion_factor: int,
        zero_dc: bool, gated_attention: bool, final_norm: bool, transformer_norm_output: bool,
        mask_estimator_depth_counts: str, attention_implementation: str, transformer_implementation: str,
        gradient_checkpointing: bool, **kwargs: Any,
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
        if transformer_implementation not in TRANSFORMER_IMPLEMENTATIONS:
            raise ConfigError(f"transformer_implementation must be one of {', '.join(TRANSFORMER_IMPLEMENTATIONS)}, "
                              f"got {transformer_implementation!r}")
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
        self.transformer_implementation = transformer_implementation
        self.gradient_checkpointing = bool(gradient_checkpointing)
        self.n_bins = self.n_fft // 2 + 1
        self.band_widths = self._bands()  # bins per band
        values_per_bin = 2 * self.channels

        self.band_split = BandSplit(self.band_widths, self.dim, values_per_bin, norm="rms", name="band_split")
        # one rotary embedding per axis, shared by all its attention layers (as the reference)
        self.time_rotary_embed = RotaryEmbedding(self.dim_head, name="time_rotary_embed")
        self.freq_rotary_embed = RotaryEmbedding(self.dim_head, name="freq_rotary_embed")
        common = dict(heads=self.heads, dim_head=self.dim_head, attn_dropout=self.attn_dropout,
                      ff_dropout=self.ff_dropout, norm_output=self.transformer_norm_output,
                      gated_attention=self.gated_attention, attention_implementation=attention_implementation,
                      implementation=transformer_implementation, gradient_checkpointing=self.gradient_checkpointing)
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
            # bin 0 of every estimate: 0 (a product with a 0/1 mask: LiteRT slices 5-D tensors at most)
            out = out * tf.constant([0.0] + [1.0] * (self.n_bins - 1), out.dtype)[:, tf.newaxis, tf.newaxis]
        if self.channels == 1:
            return tf.squeeze(out, axis=4)  # (B, S, T, F, 2); a squeeze, not a 6-D slice (LiteRT slices 5-D at most)
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
            "transformer_implementation": self.transformer_implementation,
            "gradient_checkpointing": self.gradient_checkpointing,
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
        attention_implementation: "auto", "blocked", "einsum" or "dot_product_attention" (see
            Attention; "auto" picks blocked, `resolve_attention_implementation`).
        transformer_implementation: "auto", "layers" or "fused": how the transformer blocks
            compute the same maths (see `mss_tf.models.transformer`; "auto" picks fused).
        gradient_checkpointing: recompute each transformer's activations in the backward pass
            instead of keeping them (the reference's `use_torch_checkpoint`): what makes a
            paper-size training step at batch 2 x 8 s fit in CPU memory.
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
        transformer_implementation: str = "auto",
        gradient_checkpointing: bool = False,
        **kwargs: Any,
    ) -> None:
        self.freqs_per_bands = None if freqs_per_bands is None else [int(w) for w in freqs_per_bands]
        super().__init__(
            targets, sample_rate, n_fft, channels, dim, depth, time_transformer_depth, freq_transformer_depth, heads,
            dim_head, attn_dropout, ff_dropout, mask_estimator_depth, mlp_expansion_factor, zero_dc, gated_attention,
            final_norm, transformer_norm_output, mask_estimator_depth_counts, attention_implementation,
            transformer_implementation, gradient_checkpointing, **kwargs,
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
        transformer_implementation: str = "auto",
        gradient_checkpointing: bool = False,
        **kwargs: Any,
    ) -> None:
        if num_bands < 2:
            raise ConfigError(f"MelBandRoformer needs at least 2 bands, got {num_bands}")
        self.num_bands = int(num_bands)
        super().__init__(
            targets, sample_rate, n_fft, channels, dim, depth, time_transformer_depth, freq_transformer_depth, heads,
            dim_head, attn_dropout, ff_dropout, mask_estimator_depth, mlp_expansion_factor, zero_dc, gated_attention,
            final_norm, transformer_norm_output, mask_estimator_depth_counts, attention_implementation,
            transformer_implementation, gradient_checkpointing, **kwargs,
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

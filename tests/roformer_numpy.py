"""A plain numpy forward pass of the reference RoFormers from a state dict (`parse_weights`: the
tensors as `RoformerWeights`, per block, transformer, layer, band and stem, in torch's layout),
written from the conventions in mss_tf/convert/__init__.py's docstring.

tests/test_convert.py runs it on the fixtures of the real PyTorch code (tests/data/roformer/) and
expects the reference's outputs: it is the executable statement of those conventions (RoPE
layout, gates, GLU halves, MLP depths, mel bands, mask averaging, zero DC, output length) against
which the Keras models' weight mapping can be debugged, layer by layer (`Trace`). `CHANGES` are
plausible misreadings of the reference, each switchable, for the tests to show that the fixtures
tell every one of them from the reference.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from scipy.special import erf

from mss_tf.audio.spectrogram import istft, stft
from mss_tf.convert import ReferenceConfig, check_state_dict, rotary_frequencies


@dataclasses.dataclass
class AttentionWeights:
    """One attention layer, torch layout (Linear weights are (out, in)).

    Attributes:
        norm: (dim,) RMSNorm gain.
        qkv: (3 * heads * dim_head, dim), output rows [q | k | v], each (heads, dim_head) head-major.
        gates: (heads, dim) and gates_bias (heads,): per-head sigmoid gates on the normed input.
        out: (dim, heads * dim_head), input columns (heads, dim_head) head-major; no bias.
    """

    norm: np.ndarray
    qkv: np.ndarray
    gates: np.ndarray
    gates_bias: np.ndarray
    out: np.ndarray


@dataclasses.dataclass
class FeedForwardWeights:
    """norm (dim,); inner (4 dim, dim) + inner_bias; outer (dim, 4 dim) + outer_bias; GELU between."""

    norm: np.ndarray
    inner: np.ndarray
    inner_bias: np.ndarray
    outer: np.ndarray
    outer_bias: np.ndarray


@dataclasses.dataclass
class TransformerWeights:
    """`layers` of (attention, feed-forward); `norm` the output RMSNorm gain (Mel only, else None)."""

    layers: list[tuple[AttentionWeights, FeedForwardWeights]]
    norm: np.ndarray | None


@dataclasses.dataclass
class BandWeights:
    """One band's input values (`bins`, each [channel][real, imag]) -> features: RMSNorm `norm`
    (values,), Linear `weight` (dim, values) + `bias` (dim,)."""

    bins: np.ndarray
    norm: np.ndarray
    weight: np.ndarray
    bias: np.ndarray


@dataclasses.dataclass
class RoformerWeights:
    """A reference state dict, structured.

    Attributes:
        config: the configuration it belongs to.
        bands: per band, its bins and band-split weights.
        blocks: per block, (time transformer, frequency transformer).
        final_norm: (dim,) RMSNorm gain after the last block (BS), None (Mel).
        masks: per target, per band, the MLP's Linear layers as (weight (out, in), bias (out,)).
    """

    config: ReferenceConfig
    bands: list[BandWeights]
    blocks: list[tuple[TransformerWeights, TransformerWeights]]
    final_norm: np.ndarray | None
    masks: list[list[list[tuple[np.ndarray, np.ndarray]]]]


def parse_weights(state: Mapping[str, np.ndarray], config: ReferenceConfig, where: str = "checkpoint") -> RoformerWeights:
    """`check_state_dict`, then the tensors as float32 `RoformerWeights` (read here by key, apart
    from the converter's own mapping `mss_tf.convert.mapping`, so that the two are independent
    readings of the reference's state dict)."""
    check_state_dict(state, config, where)
    get = {key: np.asarray(value, np.float32) for key, value in state.items()}.__getitem__
    a = config.arguments

    def transformer(prefix: str, depth: int) -> TransformerWeights:
        layers = []
        for j in range(depth):
            attn, ff = f"{prefix}.layers.{j}.0", f"{prefix}.layers.{j}.1"
            layers.append((
                AttentionWeights(get(f"{attn}.norm.gamma"), get(f"{attn}.to_qkv.weight"), get(f"{attn}.to_gates.weight"),
                                 get(f"{attn}.to_gates.bias"), get(f"{attn}.to_out.0.weight")),
                FeedForwardWeights(get(f"{ff}.net.0.gamma"), get(f"{ff}.net.1.weight"), get(f"{ff}.net.1.bias"),
                                   get(f"{ff}.net.4.weight"), get(f"{ff}.net.4.bias")),
            ))
        norm = get(f"{prefix}.norm.gamma") if config.model_type == "mel_band_roformer" else None
        return TransformerWeights(layers, norm)

    blocks = [(transformer(f"layers.{i}.0", a["time_transformer_depth"]),
               transformer(f"layers.{i}.1", a["freq_transformer_depth"])) for i in range(a["depth"])]
    bands = [BandWeights(bins, get(f"band_split.to_features.{k}.0.gamma"), get(f"band_split.to_features.{k}.1.weight"),
                         get(f"band_split.to_features.{k}.1.bias")) for k, bins in enumerate(config.band_bins())]
    masks = [[[(get(f"mask_estimators.{n}.to_freqs.{k}.0.{2 * layer}.weight"),
                get(f"mask_estimators.{n}.to_freqs.{k}.0.{2 * layer}.bias")) for layer in range(config.mask_linear_layers)]
              for k in range(len(bands))] for n in range(a["num_stems"])]
    final_norm = get("final_norm.gamma") if config.model_type == "bs_roformer" else None
    return RoformerWeights(config, bands, blocks, final_norm, masks)


# Misreadings of the reference that `forward(changes=...)` makes, one at a time.
CHANGES = {
    "rope_halves": "rotate the first half of the features against the second (GPT-NeoX's RoPE layout)",
    "no_rope": "no rotary embedding",
    "no_gates": "no per-head sigmoid gates",
    "gate_on_input": "gates computed from the un-normalised input",
    "glu_swapped": "GLU as sigmoid(first half) * second half",
    "tanh_gelu": "GELU by its tanh approximation",
    "channel_major": "band values ordered [channel][bin][real, imag]",
    "mel_mask_sum": "overlapping Mel masks summed, not averaged",
    "keep_dc": "the DC bin not zeroed",
    "zero_padding": "STFT frames centred with zero padding",
    "layernorm": "LayerNorm (mean removed, eps 1e-5) for RMSNorm",
}


def rms_norm(x: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """F.normalize(x, dim=-1) * sqrt(dim) * gamma (F.normalize's eps 1e-12 on the norm)."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True))
    return x / np.maximum(norm, 1e-12) * np.sqrt(x.shape[-1]) * gamma


def layer_norm(x: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=-1, keepdims=True)
    return centred / np.sqrt(np.mean(centred * centred, axis=-1, keepdims=True) + 1e-5) * gamma


def rotate(x: np.ndarray, changes: frozenset[str] = frozenset()) -> np.ndarray:
    """Rotary embedding over axis -2 (positions 0..n-1) of (..., n, d): features (2i, 2i+1) form
    the pair rotated by position * 10000^(-2i/d) (rotary_embedding_torch's interleaved layout)."""
    n, d = x.shape[-2:]
    if "no_rope" in changes:
        return x
    angles = np.arange(n)[:, None] * rotary_frequencies(d).astype(np.float64)[None, :]  # (n, d/2)
    if "rope_halves" in changes:
        angles = np.concatenate([angles, angles], axis=-1)  # (n, d): feature i paired with i + d/2
        rotated = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], axis=-1)
        return x * np.cos(angles) + rotated * np.sin(angles)
    angles = np.repeat(angles, 2, axis=-1)  # (n, d): each angle on both features of its pair
    pairs = x.reshape(*x.shape[:-1], d // 2, 2)
    rotated = np.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(x.shape)  # (-x_odd, x_even)
    return x * np.cos(angles) + rotated * np.sin(angles)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def attention(x: np.ndarray, w: AttentionWeights, heads: int, changes: frozenset[str]) -> np.ndarray:
    """(sequences, n, dim) -> (sequences, n, dim)."""
    b, n, _ = x.shape
    dim_head = w.qkv.shape[0] // (3 * heads)
    normed = norm(x, w.norm, changes)
    q, k, v = (normed @ w.qkv.T).reshape(b, n, 3, heads, dim_head).transpose(2, 0, 3, 1, 4)  # 3 x (b, h, n, d)
    q, k = rotate(q, changes), rotate(k, changes)
    out = softmax(q @ k.transpose(0, 1, 3, 2) / np.sqrt(dim_head)) @ v  # (b, h, n, d)
    gates = sigmoid((x if "gate_on_input" in changes else normed) @ w.gates.T + w.gates_bias)  # (b, n, h)
    if "no_gates" not in changes:
        out = out * gates.transpose(0, 2, 1)[..., None]
    return out.transpose(0, 2, 1, 3).reshape(b, n, heads * dim_head) @ w.out.T


def norm(x: np.ndarray, gamma: np.ndarray, changes: frozenset[str]) -> np.ndarray:
    return layer_norm(x, gamma) if "layernorm" in changes else rms_norm(x, gamma)


def feed_forward(x: np.ndarray, w: FeedForwardWeights, changes: frozenset[str]) -> np.ndarray:
    h = norm(x, w.norm, changes) @ w.inner.T + w.inner_bias
    if "tanh_gelu" in changes:
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    else:
        h = 0.5 * h * (1 + erf(h / np.sqrt(2)))  # exact GELU (nn.GELU())
    return h @ w.outer.T + w.outer_bias


def transformer(x: np.ndarray, w: TransformerWeights, heads: int, changes: frozenset[str]) -> np.ndarray:
    for attn, ff in w.layers:
        x = attention(x, attn, heads, changes) + x
        x = feed_forward(x, ff, changes) + x
    return norm(x, w.norm, changes) if w.norm is not None else x


@dataclasses.dataclass
class Trace:
    """The tensors of one forward pass, in the fixtures' layouts (batch axis dropped)."""

    band_split: np.ndarray  # (frames, bands, dim)
    features: np.ndarray  # (frames, bands, dim): the mask estimators' input
    masks: np.ndarray  # (stems, frames, values): per band [bin][channel][real, imag], bands in order
    output: np.ndarray  # (stems, channels, samples')


def forward(weights: RoformerWeights, wave: np.ndarray, changes: frozenset[str] = frozenset()) -> Trace:
    """The reference model's eval-mode forward pass on `wave` (channels, samples), in float64
    between the suite's STFT (reflect padding) and inverse STFT; `changes` (of CHANGES) misread it."""
    assert not set(changes) - set(CHANGES), changes
    config = weights.config
    a = config.arguments
    channels = wave.shape[0]
    spec_config = dataclasses.replace(config.stft, padding="zero") if "zero_padding" in changes else config.stft
    spec = stft(wave, spec_config).numpy().astype(np.complex128)  # (C, T, F)
    frames = spec.shape[1]
    values = np.stack([spec.real, spec.imag], axis=-1).transpose(1, 2, 0, 3)  # (T, F, C, 2)
    order = (0, 2, 1, 3) if "channel_major" in changes else (0, 1, 2, 3)  # (T, bins, C, 2) or (T, C, bins, 2)
    x = np.stack([norm(values[:, band.bins].transpose(order).reshape(frames, -1), band.norm, changes) @ band.weight.T
                  + band.bias for band in weights.bands], axis=1)  # (T, K, D)
    band_split = x
    for time, freq in weights.blocks:
        x = transformer(x.transpose(1, 0, 2), time, a["heads"], changes).transpose(1, 0, 2)  # over frames, per band
        x = transformer(x, freq, a["heads"], changes)  # over bands, per frame
    if weights.final_norm is not None:
        x = norm(x, weights.final_norm, changes)
    masks, estimates = [], []
    for stem in weights.masks:
        per_band = []
        for k, layers in enumerate(stem):
            h = x[:, k]
            for index, (weight, bias) in enumerate(layers):
                h = h @ weight.T + bias
                if index < len(layers) - 1:
                    h = np.tanh(h)
            value, gate = np.split(h, 2, axis=-1)
            if "glu_swapped" in changes:
                value, gate = gate, value
            per_band.append(value * sigmoid(gate))  # GLU: first half * sigmoid(second half)
        masks.append(np.concatenate(per_band, axis=-1))  # (T, values)
        summed = np.zeros((frames, spec.shape[2], channels), np.complex128)  # (T, F, C)
        count = np.zeros(spec.shape[2])
        for band, mask in zip(weights.bands, per_band):
            if "channel_major" in changes:
                mask = mask.reshape(frames, channels, len(band.bins), 2).transpose(0, 2, 1, 3)
            mask = mask.reshape(frames, len(band.bins), channels, 2)
            summed[:, band.bins] += mask[..., 0] + 1j * mask[..., 1]
            count[band.bins] += 1
        if "mel_mask_sum" in changes:
            count[:] = 1
        estimate = spec * (summed / count[None, :, None]).transpose(2, 0, 1)  # (C, T, F); BS: every count is 1
        if "keep_dc" not in changes:
            estimate[..., 0] = 0  # zero_dc
        estimates.append(estimate)
    samples = wave.shape[-1]
    if config.model_type == "mel_band_roformer" and not a["match_input_audio_length"]:
        samples = config.stft.hop * (frames - 1)  # torch.istft(length=None)
    output = istft(np.stack(estimates).astype(np.complex64), config.stft, samples).numpy()  # (S, C, samples')
    return Trace(band_split, x, np.stack(masks), output)

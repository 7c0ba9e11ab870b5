"""Public PyTorch RoFormer checkpoints -> mss-tf run directories (torch only as an optional extra).

    python -m mss_tf.convert CHECKPOINT --config CONFIG.yaml --out RUN_DIR [--model-type TYPE]

The checkpoints are those of ZFTurbo/Music-Source-Separation-Training, whose
`models/bs_roformer/` holds the BS-RoFormer (`BSRoformer`) and Mel-Band RoFormer
(`MelBandRoformer`) the public checkpoints were trained with; its YAML configs describe them.
The steps, each its own function:

1. `read_config`: the YAML as published (safe loading plus the `!!python/tuple` tag) ->
   `parse_config`: a `ReferenceConfig` (model type, the model's arguments with the reference's
   defaults, targets, STFT). An option the Keras models do not implement is a one-line
   ConfigError naming it, never a silently different model.
2. `read_checkpoint`: the state dict as numpy arrays (`.ckpt/.pth/.pt` through torch, imported
   here only; `.npz` without it).
3. `check_state_dict` against `expected_shapes(config)`, then `parse_weights`: the tensors as a
   `RoformerWeights` (per block, transformer, layer, band and stem), in torch's layout.
4. `keras_weights`: the mapping of `RoformerWeights` onto the Keras model's variables, one
   function per model type in `KERAS_MAPPINGS`; `write_run` writes config.json and the `best/`
   checkpoint atomically, so evaluate.py, separate.py and `python -m mss_tf.export` take it.

The reference's conventions, every one checked by tests/test_convert.py against the fixtures the
real PyTorch code wrote (tests/data/roformer/, benchmarks/roformer_reference.py):
- STFT: torch.stft(center=True, reflect padding, periodic Hann window of n_fft, not normalized):
  `SpectrogramConfig(padding="reflect")`.
- Band input: per band, its bins' values in the order [bin][channel][real, imag] (BS: bins
  [start, start + width); Mel: the bins where librosa's mel filter of the band is > 0, with the
  first bin forced into the first band and the last into the last).
- RMSNorm: x / max(||x||, 1e-12) * sqrt(dim) * gamma.
- Attention (per head h of `heads`, dim_head d): to_qkv's output rows are [q | k | v], each
  head-major (h, d); rotary embedding on q and k over the sequence axis (positions 0..n-1,
  frequencies 10000^(-2i/d), pairs of adjacent features (2i, 2i+1) rotated); softmax(q k^T / sqrt(d)) v;
  the output of head h times sigmoid(to_gates(x_normed))[h]; to_out (no bias) over (h, d).
- Feed-forward: RMSNorm, Linear(dim, 4 dim), exact (erf) GELU, Linear(4 dim, dim).
- Transformer: x = attn(x) + x; x = ff(x) + x per layer; Mel ends each transformer with an
  RMSNorm, BS has none but one `final_norm` after the last block.
- Block i: a time transformer over frames (per band), then a frequency transformer over bands
  (per frame).
- Mask estimator, per target and band: Linear, Tanh, ..., Linear (BS: `mask_estimator_depth`
  Linear layers, Mel: one more; hidden width dim * mlp_expansion_factor) then GLU (first half *
  sigmoid(second half)), giving the band's [bin][channel][real, imag] complex mask.
- Mel: each bin's mask is the average of the masks of the bands holding it.
- The DC bin of every estimate is zeroed (zero_dc); the inverse STFT is torch.istft, cut to the
  input's length (BS; Mel with match_input_audio_length) or hop * (frames - 1) samples (Mel).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

if __name__ == "__main__":  # `python -m mss_tf.convert`: the CLI plumbing first, so TensorFlow starts quietly
    from mss_tf import cli

import numpy as np

from mss_tf.audio.spectrogram import SpectrogramConfig
from mss_tf.errors import CheckpointError, ConfigError
from mss_tf.utils import one_line

MODEL_TYPES = ("bs_roformer", "mel_band_roformer")
PRESETS = {"bs_roformer": "bs-roformer", "mel_band_roformer": "mel-roformer"}  # the Keras presets they become
TORCH_HINT = "reading a PyTorch checkpoint needs torch: make convert-deps (or pip install -r requirements-convert.txt)"
ROPE_THETA = 10000.0  # rotary_embedding_torch's default, which the reference uses

# The reference's constructor arguments and defaults (models/bs_roformer/bs_roformer.py and
# mel_band_roformer.py at ccc011abf7f89dd7922bb2888d48493b575c0289); `None` for the required ones.
_COMMON_ARGUMENTS: dict[str, Any] = {
    "dim": None, "depth": None, "stereo": False, "num_stems": 1, "time_transformer_depth": 2,
    "freq_transformer_depth": 2, "linear_transformer_depth": 0, "dim_head": 64, "heads": 8,
    "attn_dropout": 0.0, "ff_dropout": 0.0, "flash_attn": True, "dim_freqs_in": 1025, "stft_n_fft": 2048,
    "stft_hop_length": 512, "stft_win_length": 2048, "stft_normalized": False, "stft_window_fn": None,
    "zero_dc": True, "mask_estimator_depth": 2, "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256), "multi_stft_hop_size": 147,
    "multi_stft_normalized": False, "multi_stft_window_fn": None, "mlp_expansion_factor": 4,
    "use_torch_checkpoint": False, "skip_connection": False, "use_pope": False,
}
DEFAULT_FREQS_PER_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
REFERENCE_ARGUMENTS: dict[str, dict[str, Any]] = {
    "bs_roformer": {**_COMMON_ARGUMENTS, "freqs_per_bands": DEFAULT_FREQS_PER_BANDS},
    "mel_band_roformer": {**_COMMON_ARGUMENTS, "num_bands": 60, "sample_rate": 44100, "attn_dropout": 0.1,
                          "ff_dropout": 0.1, "mask_estimator_depth": 1, "match_input_audio_length": False},
}
# Options that do not change what a trained model computes in eval mode: kernels, memory
# savers, training-only dropout and loss settings. `sage_attention` (the repository's configs/sage/)
# picks a quantised kernel for the same attention in versions of the code that took it.
INFERENCE_NEUTRAL = frozenset({
    "flash_attn", "use_torch_checkpoint", "attn_dropout", "ff_dropout", "multi_stft_resolution_loss_weight",
    "multi_stft_resolutions_window_sizes", "multi_stft_hop_size", "multi_stft_normalized", "multi_stft_window_fn",
    "sage_attention",
})
# Options with another value than this one change the model in ways the Keras models do not
# implement: refused, naming the option.
REQUIRED_VALUES: dict[str, Any] = {
    "linear_transformer_depth": 0, "skip_connection": False, "use_pope": False, "stft_normalized": False,
    "stft_window_fn": None, "zero_dc": True,
}


# ------------------------------------------------------------------------------------------ config


def _yaml_loader() -> type:
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        """Safe loading plus `!!python/tuple` (a sequence), as the published configs tag tuples."""

    ConfigLoader.add_constructor("tag:yaml.org,2002:python/tuple",
                                 lambda loader, node: tuple(loader.construct_sequence(node)))
    return ConfigLoader


def load_yaml(text: str, where: str) -> dict[str, Any]:
    """A ZFTurbo YAML config from its text: safe loading, `!!python/tuple` sequences read as
    tuples, no other Python tag (ConfigError naming `where` for those and for bad YAML)."""
    import yaml

    try:
        data = yaml.load(text, Loader=_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not a YAML config ({one_line(exc, 200)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ConfigError(f"{where}: no `model:` section (not a Music-Source-Separation-Training config)")
    return data


def read_config(path: str | Path) -> dict[str, Any]:
    """`load_yaml` of a file; ConfigError naming the path if it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable config ({one_line(exc, 200)})") from None
    return load_yaml(text, str(path))


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """A checked reference configuration.

    Attributes:
        model_type: "bs_roformer" or "mel_band_roformer".
        arguments: the reference constructor's arguments, the config's values over its defaults.
        targets: the stem names, one per mask estimator, in its order.
        stft: the STFT the model runs at (reflect padding, as torch.stft).
    """

    model_type: str
    arguments: dict[str, Any]
    targets: tuple[str, ...]
    stft: SpectrogramConfig

    @property
    def channels(self) -> int:
        return 2 if self.arguments["stereo"] else 1

    @property
    def mask_linear_layers(self) -> int:
        """Linear layers of each band's mask MLP: BS builds `mask_estimator_depth` of them, Mel
        one more (its MLP's hidden layers are `(dim_hidden,) * depth` where BS has `depth - 1`)."""
        depth = int(self.arguments["mask_estimator_depth"])
        return depth if self.model_type == "bs_roformer" else depth + 1

    def band_bins(self) -> list[np.ndarray]:
        """The STFT bins of each band, in band order (BS: consecutive; Mel: overlapping)."""
        if self.model_type == "bs_roformer":
            edges = np.cumsum([0, *self.arguments["freqs_per_bands"]])
            return [np.arange(a, b) for a, b in zip(edges[:-1], edges[1:])]
        return list(mel_band_bins(self.stft.sample_rate, self.stft.n_fft, int(self.arguments["num_bands"])))

    def band_sizes(self) -> list[int]:
        """Input values of each band: 2 (real, imaginary) x channels x bins."""
        return [2 * self.channels * len(bins) for bins in self.band_bins()]


@functools.lru_cache(maxsize=8)
def mel_band_bins(sample_rate: int, n_fft: int, num_bands: int) -> tuple[np.ndarray, ...]:
    """The bins of each Mel band as the reference builds them: where librosa's Slaney mel filter
    (librosa.filters.mel(sr, n_fft, n_mels), float32) is > 0, with bin 0 forced into the first
    band and the last bin into the last. Every bin must be in some band (the reference asserts it)
    and every band hold a bin (too many bands for the FFT leave some empty)."""
    import librosa

    with warnings.catch_warnings():  # librosa warns of empty filters: refused below, in one line
        warnings.simplefilter("ignore", UserWarning)
        filters = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=num_bands)  # (bands, bins) float32
    filters[0, 0] = 1.0
    filters[-1, -1] = 1.0
    covered = filters > 0
    if not covered.any(axis=0).all():
        missing = np.flatnonzero(~covered.any(axis=0))
        raise ConfigError(f"num_bands={num_bands} at sample_rate={sample_rate}, n_fft={n_fft} leaves bins "
                          f"{missing[:5].tolist()} in no mel band (the reference refuses this too)")
    empty = np.flatnonzero(~covered.any(axis=1))
    if empty.size:
        raise ConfigError(f"num_bands={num_bands} at sample_rate={sample_rate}, n_fft={n_fft} leaves {empty.size} mel "
                          f"bands without a bin (first: band {empty[0]}); use fewer bands")
    return tuple(np.flatnonzero(row) for row in covered)


def detect_model_type(model: Mapping[str, Any], where: str) -> str:
    """Mel configs name `num_bands` (and `sample_rate`), BS configs `freqs_per_bands`."""
    mel, bs = "num_bands" in model, "freqs_per_bands" in model
    if mel and not bs:
        return "mel_band_roformer"
    if bs and not mel:
        return "bs_roformer"
    raise ConfigError(f"{where}: cannot tell BS from Mel RoFormer (model: has "
                      f"{'both' if mel else 'neither'} freqs_per_bands and num_bands); pass --model-type")


def _integer(value: Any, name: str, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: model.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_config(data: Mapping[str, Any], model_type: str | None = None, where: str = "config") -> ReferenceConfig:
    """Check a loaded config (`load_yaml`) and resolve it into a `ReferenceConfig`.

    `model_type` overrides the config's `training.model_type` and the detection from the model
    section's keys (`detect_model_type`), as ZFTurbo's `--model_type` does.
    """
    model = dict(data["model"])
    training = data.get("training") or {}
    audio = data.get("audio") or {}
    model_type = model_type or training.get("model_type") or detect_model_type(model, where)
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{where}: model type {model_type!r} is not convertible (choose from {', '.join(MODEL_TYPES)})")
    signature = REFERENCE_ARGUMENTS[model_type]
    unknown = [key for key in model if key not in signature and key not in INFERENCE_NEUTRAL]
    if unknown:
        raise ConfigError(f"{where}: model.{unknown[0]} is not an argument of the reference {model_type} "
                          f"(unknown: {', '.join(unknown)})")
    arguments = {**signature, **model}
    for name in ("dim", "depth"):
        if model.get(name) is None:
            raise ConfigError(f"{where}: model.{name} is missing (the reference requires it)")
    for name, required in REQUIRED_VALUES.items():
        if arguments[name] != required:
            raise ConfigError(f"{where}: model.{name}={arguments[name]!r} is not supported "
                              f"(the Keras {PRESETS[model_type]} implements {name}={required!r} only)")
    for name in ("dim", "depth", "num_stems", "time_transformer_depth", "freq_transformer_depth", "dim_head", "heads",
                 "mask_estimator_depth", "mlp_expansion_factor", "stft_n_fft", "stft_hop_length", "stft_win_length"):
        _integer(arguments[name], name, where)
    if not isinstance(arguments["stereo"], bool):
        raise ConfigError(f"{where}: model.stereo must be true or false, got {arguments['stereo']!r}")

    n_fft, hop = arguments["stft_n_fft"], arguments["stft_hop_length"]
    if arguments["stft_win_length"] != n_fft:
        raise ConfigError(f"{where}: model.stft_win_length={arguments['stft_win_length']} is not supported "
                          f"(the window must be n_fft={n_fft} long)")
    bins = n_fft // 2 + 1
    if arguments["dim_freqs_in"] != bins:
        raise ConfigError(f"{where}: model.dim_freqs_in={arguments['dim_freqs_in']!r}, but n_fft={n_fft} gives {bins} bins")
    if model_type == "bs_roformer":
        widths = arguments["freqs_per_bands"]
        if (not isinstance(widths, (list, tuple)) or len(widths) < 2
                or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)):
            raise ConfigError(f"{where}: model.freqs_per_bands must be two or more positive integers, got {widths!r}")
        if sum(widths) != bins:
            raise ConfigError(f"{where}: model.freqs_per_bands sum to {sum(widths)}, n_fft={n_fft} gives {bins} bins")
        arguments["freqs_per_bands"] = tuple(widths)
        sample_rate = audio.get("sample_rate")
        if sample_rate is None:
            raise ConfigError(f"{where}: audio.sample_rate is missing (the STFT's sample rate)")
    else:
        _integer(arguments["num_bands"], "num_bands", where, minimum=2)
        sample_rate = _integer(arguments["sample_rate"], "sample_rate", where)
        if audio.get("sample_rate", sample_rate) != sample_rate:
            raise ConfigError(f"{where}: model.sample_rate={sample_rate} (its mel bands) differs from "
                              f"audio.sample_rate={audio['sample_rate']} (its input)")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"{where}: audio.sample_rate must be a positive integer, got {sample_rate!r}")
    if hop > n_fft // 2:
        raise ConfigError(f"{where}: model.stft_hop_length={hop} is not supported (at most n_fft/2={n_fft // 2})")
    stft = SpectrogramConfig(sample_rate=sample_rate, n_fft=n_fft, hop=hop, padding="reflect")
    targets = _targets(training, arguments["num_stems"], where)
    config = ReferenceConfig(model_type, arguments, targets, stft)
    try:
        config.band_bins()  # Mel: bands the reference can build
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config


def _targets(training: Mapping[str, Any], num_stems: int, where: str) -> tuple[str, ...]:
    """`training.target_instrument` for a one-stem model that names it, else `training.instruments`,
    which must then name one stem per mask estimator (num_stems)."""
    target = training.get("target_instrument")
    instruments = training.get("instruments")
    if num_stems == 1 and target:
        names = [target]
    elif target:
        raise ConfigError(f"{where}: training.target_instrument={target!r} names one stem, the model has "
                          f"num_stems={num_stems}")
    elif isinstance(instruments, (list, tuple)) and len(instruments) == num_stems:
        names = list(instruments)
    else:
        raise ConfigError(f"{where}: training.instruments={instruments!r} must name num_stems={num_stems} stems "
                          "(or training.target_instrument the one stem of a one-stem model)")
    if any(not isinstance(name, str) or not name for name in names) or len(set(names)) != len(names):
        raise ConfigError(f"{where}: stem names must be distinct non-empty strings, got {names!r}")
    return tuple(names)


def keras_model_kwargs(config: ReferenceConfig) -> tuple[str, dict[str, Any]]:
    """The Keras preset and its model arguments that build the reference's architecture (the STFT
    goes with the run config, `config.stft`).

    `mask_estimator_depth` is the number of Linear layers of each band's mask MLP (BS's meaning,
    `ReferenceConfig.mask_linear_layers`: a Mel config's value is one less).
    """
    a = config.arguments
    kwargs: dict[str, Any] = {
        "targets": list(config.targets), "channels": config.channels, "dim": a["dim"], "depth": a["depth"],
        "heads": a["heads"], "dim_head": a["dim_head"], "time_transformer_depth": a["time_transformer_depth"],
        "freq_transformer_depth": a["freq_transformer_depth"], "mask_estimator_depth": config.mask_linear_layers,
        "mlp_expansion_factor": a["mlp_expansion_factor"],
    }
    if config.model_type == "bs_roformer":
        kwargs["band_widths"] = list(a["freqs_per_bands"])
    else:
        kwargs["num_bands"] = a["num_bands"]
    return PRESETS[config.model_type], kwargs


# ------------------------------------------------------------------------------------- state dict


def rotary_frequencies(dim_head: int) -> np.ndarray:
    """rotary_embedding_torch's frequencies for `dim = dim_head`: 1 / 10000^(2i / dim_head), float32."""
    return (1.0 / ROPE_THETA ** (np.arange(0, dim_head, 2, dtype=np.float32)[: dim_head // 2] / dim_head)).astype(np.float32)


def _transformer_keys(prefix: str, depth: int, config: ReferenceConfig) -> dict[str, tuple[int, ...]]:
    a = config.arguments
    dim, heads, inner = a["dim"], a["heads"], a["heads"] * a["dim_head"]
    shapes: dict[str, tuple[int, ...]] = {}
    for j in range(depth):
        attn, ff = f"{prefix}.layers.{j}.0", f"{prefix}.layers.{j}.1"
        shapes.update({
            f"{attn}.rotary_embed.freqs": (a["dim_head"] // 2,),
            f"{attn}.norm.gamma": (dim,),
            f"{attn}.to_qkv.weight": (3 * inner, dim),
            f"{attn}.to_gates.weight": (heads, dim),
            f"{attn}.to_gates.bias": (heads,),
            f"{attn}.to_out.0.weight": (dim, inner),
            f"{ff}.net.0.gamma": (dim,),
            f"{ff}.net.1.weight": (4 * dim, dim),
            f"{ff}.net.1.bias": (4 * dim,),
            f"{ff}.net.4.weight": (dim, 4 * dim),
            f"{ff}.net.4.bias": (dim,),
        })
    if config.model_type == "mel_band_roformer":  # the reference's Transformer(norm_output=True)
        shapes[f"{prefix}.norm.gamma"] = (dim,)
    return shapes


def mask_mlp_dims(config: ReferenceConfig, band_size: int) -> list[int]:
    """Widths through one band's mask MLP: dim, the hidden layers, then 2 x the band's values (GLU)."""
    a = config.arguments
    hidden = a["dim"] * a["mlp_expansion_factor"]
    return [a["dim"], *[hidden] * (config.mask_linear_layers - 1), 2 * band_size]


def expected_shapes(config: ReferenceConfig) -> dict[str, tuple[int, ...]]:
    """Every key of the reference's `state_dict()` for `config`, with its shape, in its order."""
    a = config.arguments
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(a["depth"]):
        shapes.update(_transformer_keys(f"layers.{i}.0", a["time_transformer_depth"], config))
        shapes.update(_transformer_keys(f"layers.{i}.1", a["freq_transformer_depth"], config))
    if config.model_type == "bs_roformer":
        shapes["final_norm.gamma"] = (a["dim"],)
    sizes = config.band_sizes()
    for k, size in enumerate(sizes):
        shapes[f"band_split.to_features.{k}.0.gamma"] = (size,)
        shapes[f"band_split.to_features.{k}.1.weight"] = (a["dim"], size)
        shapes[f"band_split.to_features.{k}.1.bias"] = (a["dim"],)
    for n in range(a["num_stems"]):
        for k, size in enumerate(sizes):
            dims = mask_mlp_dims(config, size)
            for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
                key = f"mask_estimators.{n}.to_freqs.{k}.0.{2 * layer}"  # Linear, Tanh, Linear, ...
                shapes[f"{key}.weight"] = (fan_out, fan_in)
                shapes[f"{key}.bias"] = (fan_out,)
    return shapes


def check_state_dict(state: Mapping[str, np.ndarray], config: ReferenceConfig, where: str = "checkpoint") -> None:
    """One-line CheckpointError unless `state` holds exactly the reference's keys for `config`,
    each with its shape, and rotary frequencies equal to the reference's fixed ones."""
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    wrong = [f"{key} {tuple(np.shape(state[key]))} (expected {shape})" for key, shape in expected.items()
             if key in state and tuple(np.shape(state[key])) != shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(expected)} keys missing ({', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                        f"{', ...' if len(unexpected) > 3 else ''})")
    if wrong:
        problems.append(f"{len(wrong)} of another shape ({'; '.join(wrong[:2])}{'; ...' if len(wrong) > 2 else ''})")
    if problems:
        raise CheckpointError(f"{where}: not the state dict of this {config.model_type} config: {'; '.join(problems)}")
    # the reference computes them (they are not trained); a half-precision checkpoint rounds them to
    # about 3 digits, rescaled rotary embeddings (theta, NTK factors) differ by far more
    freqs = rotary_frequencies(config.arguments["dim_head"])
    for key in expected:
        if key.endswith("rotary_embed.freqs") and not np.allclose(state[key], freqs, rtol=1e-2, atol=0):
            raise CheckpointError(f"{where}: {key} holds other rotary frequencies than 1/10000^(2i/dim_head) "
                                  "(learned or rescaled rotary embeddings are not supported)")
    for key, value in state.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"{where}: {key} holds non-finite values")


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
    """`check_state_dict`, then the tensors as float32 `RoformerWeights`."""
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


# ------------------------------------------------------------------------------------- checkpoint

_WRAPPERS = ("state_dict", "model_state_dict", "state", "model")  # {'state_dict': {...}}, ZFTurbo's full checkpoints
_PREFIXES = ("module.", "model.")  # DistributedDataParallel, Lightning


def unwrap_state_dict(data: Any, where: str) -> dict[str, Any]:
    """The state dict inside the usual wrappers, without a prefix every key carries."""
    for _ in range(3):
        if isinstance(data, Mapping) and not any(_is_tensor_like(v) for v in data.values()):
            inner = next((data[k] for k in _WRAPPERS if isinstance(data.get(k), Mapping)), None)
            if inner is None:
                break
            data = inner
    if not isinstance(data, Mapping) or not data or not all(isinstance(k, str) for k in data):
        raise CheckpointError(f"{where}: holds no state dict (a mapping of names to tensors, possibly under "
                              f"{', '.join(repr(k) for k in _WRAPPERS)})")
    state = {k: v for k, v in data.items() if _is_tensor_like(v)}
    if not state:
        raise CheckpointError(f"{where}: holds no state dict (no tensors, under none of "
                              f"{', '.join(repr(k) for k in _WRAPPERS)})")
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_tensor_like(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def read_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """A checkpoint's state dict as float32 numpy arrays: `.npz` (keys the state-dict keys) with
    numpy alone, `.ckpt`/`.pth`/`.pt`/`.bin` through torch.load(weights_only=True) on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                data = {key: archive[key] for key in archive.files}
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable .npz ({one_line(exc, 200)})") from None
    elif path.suffix in (".ckpt", ".pth", ".pt", ".bin"):
        data = _torch_load(path)
    else:
        raise CheckpointError(f"{path}: unknown checkpoint type {path.suffix!r} (.ckpt, .pth, .pt, .bin or .npz)")
    return {key: _to_numpy(value) for key, value in unwrap_state_dict(data, str(path)).items()}


def _torch_load(path: Path) -> Any:
    try:
        import torch
    except ImportError:
        raise CheckpointError(TORCH_HINT) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (UnpicklingError, RuntimeError, ...) on a bad file
        reason = one_line(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)), 200)  # torch's message has terminal colours
        raise CheckpointError(f"{path}: torch.load(weights_only=True) cannot read it ({reason}); "
                              "only checkpoints that hold tensors and plain containers are read") from None


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, perhaps float16 or bfloat16
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, np.float32)


# ------------------------------------------------------------------------------------------ Keras

# Per model type: (RoformerWeights, {Keras weight path: variable}) -> {path: array of the
# variable's shape}, for every path. The paths are those of `mss_tf.checkpoints.model_variables`.
# Filled in when the Keras RoFormers exist.
KerasMapping = Callable[[RoformerWeights, Mapping[str, Any]], dict[str, np.ndarray]]
KERAS_MAPPINGS: dict[str, KerasMapping] = {}


def keras_weights(weights: RoformerWeights, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The Keras model's variables' values from the reference's weights (`KERAS_MAPPINGS`),
    checked: every variable gets one array of its shape, and nothing else is given."""
    model_type = weights.config.model_type
    if model_type not in KERAS_MAPPINGS:
        raise ConfigError(f"no mapping of {model_type} weights onto the Keras {PRESETS[model_type]} yet")
    arrays = KERAS_MAPPINGS[model_type](weights, variables)
    missing = [path for path in variables if path not in arrays]
    extra = [path for path in arrays if path not in variables]
    wrong = [f"{path} {np.shape(arrays[path])} for {tuple(variables[path].shape)}" for path in variables
             if path in arrays and tuple(np.shape(arrays[path])) != tuple(variables[path].shape)]
    if missing or extra or wrong:
        raise ConfigError(f"the {model_type} mapping is incomplete: missing {missing[:3]}, unknown {extra[:3]}, "
                          f"wrong shapes {wrong[:3]}")
    return {path: np.asarray(arrays[path], np.float32) for path in variables}


def write_run(out: str | Path, config: Any, assign: Callable[[Mapping[str, Any]], dict[str, np.ndarray]],
              provenance: Mapping[str, Any] | None = None) -> Path:
    """Write a run directory at `out` that evaluate.py, separate.py and the export accept: the
    resolved `config` (a `TrainConfig`) as config.json and the model's weights, `assign(variables)`
    ({weight path: array}), as the `best/` checkpoint; `provenance` as converted_from.json.

    Atomic: everything is written into a hidden folder beside `out`, renamed to `out` at the end;
    an existing `out` is refused.
    """
    import tensorflow as tf

    from mss_tf.checkpoints import BEST, model_variables
    from mss_tf.models.registry import build_model

    out = Path(out)
    if out.exists():
        raise CheckpointError(f"{out}: already exists (choose a new run directory)")
    out.parent.mkdir(parents=True, exist_ok=True)
    config.resolve()
    model = build_model(config.model, config.spectrogram, **config.model_kwargs)
    model(tf.zeros(_example_input_shape(config)), training=False)
    variables = model_variables(model)
    arrays = assign(variables)
    for path, variable in variables.items():
        variable.assign(arrays[path])
    temporary = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        temporary.mkdir()
        config.save(temporary)
        if provenance is not None:
            (temporary / "converted_from.json").write_text(json.dumps(dict(provenance), indent=2) + "\n")
        tf.train.Checkpoint(model=variables).save(str(temporary / BEST / "ckpt"))
        os.rename(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return out


def _example_input_shape(config: Any) -> list[int]:
    """A model input that builds every weight: (batch, frames, bins, 2 * channels) values."""
    channels = int(config.model_kwargs.get("channels", 1))
    return [1, 16, config.spectrogram.n_bins, 2 * channels]


def convert(checkpoint: str | Path, config_path: str | Path, out: str | Path, model_type: str | None = None) -> Path:
    """`python -m mss_tf.convert`: a reference checkpoint and its YAML config -> a run directory."""
    from mss_tf.config import TrainConfig

    reference = parse_config(read_config(config_path), model_type, str(config_path))
    weights = parse_weights(read_checkpoint(checkpoint), reference, str(checkpoint))
    preset, kwargs = keras_model_kwargs(reference)
    targets = kwargs.pop("targets")
    config = TrainConfig(model=preset, model_kwargs=kwargs, stft=reference.stft.to_dict(), targets=list(targets))
    provenance = {"checkpoint": str(Path(checkpoint).resolve()), "config": str(Path(config_path).resolve()),
                  "model_type": reference.model_type, "reference_arguments": _plain(reference.arguments)}
    return write_run(out, config, lambda variables: keras_weights(weights, variables), provenance)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def build_parser(parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags of `python -m mss_tf.convert` (which passes `mss_tf.cli.ArgumentParser`)."""
    parser = parser_class(
        prog="python -m mss_tf.convert",
        description="Convert a public PyTorch BS-RoFormer / Mel-Band RoFormer checkpoint (the models of "
                    "ZFTurbo/Music-Source-Separation-Training) and its YAML config into an mss-tf run directory "
                    "that evaluate.py, separate.py and python -m mss_tf.export take. Options the Keras models do not "
                    "implement are refused by name. Reading .ckpt/.pth/.pt needs torch (make convert-deps).",
    )
    parser.add_argument("checkpoint", help="the state dict: .ckpt, .pth, .pt (through torch) or .npz (keys the state-dict keys)")
    parser.add_argument("--config", required=True, help="the checkpoint's YAML config, as published (model:, training:, audio:)")
    parser.add_argument("--out", required=True, help="the run directory to write (must not exist)")
    parser.add_argument("--model-type", choices=MODEL_TYPES,
                        help="the reference model class (default: training.model_type, else read from the model section: "
                             "num_bands -> mel_band_roformer, freqs_per_bands -> bs_roformer)")
    return parser


def main(argv: Sequence[str] | None = None,
         parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    args = build_parser(parser_class).parse_args(argv)
    out = convert(args.checkpoint, args.config, args.out, args.model_type)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    cli.run(lambda: main(parser_class=cli.ArgumentParser))

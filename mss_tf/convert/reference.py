"""The reference's configuration: ZFTurbo/Music-Source-Separation-Training's YAML configs (as
published: safe loading plus `!!python/tuple`) read into a checked `ReferenceConfig`, the
constructor arguments of its `BSRoformer` / `MelBandRoformer` with their defaults. An option the
Keras models do not implement is a one-line ConfigError naming it, never a silently different model.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from mss_tf.errors import ConfigError
from mss_tf.utils import one_line

if TYPE_CHECKING:  # imported where used: `python -m mss_tf.convert` starts TensorFlow after the CLI quiets it
    from mss_tf.audio.spectrogram import SpectrogramConfig

MODEL_TYPES = ("bs_roformer", "mel_band_roformer")
PRESETS = {"bs_roformer": "bs-roformer", "mel_band_roformer": "mel-roformer"}  # the Keras presets they become
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
        chunk_samples: `audio.chunk_size`, the length of the training chunks (None if absent).
    """

    model_type: str
    arguments: dict[str, Any]
    targets: tuple[str, ...]
    stft: SpectrogramConfig
    chunk_samples: int | None = None

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
    from mss_tf.audio.spectrogram import SpectrogramConfig

    stft = SpectrogramConfig(sample_rate=sample_rate, n_fft=n_fft, hop=hop, padding="reflect")
    targets = _targets(training, arguments["num_stems"], where)
    chunk = audio.get("chunk_size")
    chunk_samples = chunk if isinstance(chunk, int) and not isinstance(chunk, bool) and chunk > 0 else None
    config = ReferenceConfig(model_type, arguments, targets, stft, chunk_samples)
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



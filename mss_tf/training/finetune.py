"""Fine-tuning: a run that starts from a trained model's weights (`train.py --init-from PATH`).

The source is a train.py run directory (its best checkpoint) or an mss-tf SavedModel export (its
variables, under the weight paths its metadata records). The new model is the same architecture
(same preset family, model arguments and STFT) with its own targets:

* the body, every weight but the per-target heads, is copied as it is;
* the head of each target the source separates too is copied (the target may move in the order);
* a new target gets a new head: a freshly initialised mask estimator (BSRNN, BSRNN-SE, the
  RoFormers: per-target layers `mask_estimators/<i>/...`), or, in the U-Net's 1x1 `head`
  convolution (one output channel per target), a channel that starts as the mean of the source's
  channels: the mean of its masks. A random channel on trained features would start deep in the
  sigmoid's flat tail, a silent target that hardly learns.

`--freeze body` trains only the heads (every other layer is set non-trainable, so Keras
normalisation layers also keep their statistics); `--freeze none` (default) trains everything. The run's learning rate is its own
(`--lr`, default the preset's), not the source's. `TrainConfig.init_from` records where the run
started; a resumed run continues from its own checkpoints and never reads the source again.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mss_tf.errors import CheckpointError, ConfigError

FREEZE = ("none", "body")
HEAD_LIST = "mask_estimators/"  # one layer per target: mask_estimators/<i>/<weight>
HEAD_CHANNELS = ("head/kernel", "head/bias")  # one output channel per target (last axis)


@dataclasses.dataclass
class InitSource:
    """A trained model's weights and what they were trained as.

    Attributes:
        path: the run directory or export.
        kind: "run" or "export".
        model: preset name.
        model_kwargs: the model arguments it was built with (targets included).
        stft: its STFT settings (`SpectrogramConfig.to_dict`).
        targets: its targets in head order.
        weights: weight path -> value.
    """

    path: Path
    kind: str
    model: str
    model_kwargs: dict[str, Any]
    stft: dict[str, Any]
    targets: list[str]
    weights: dict[str, np.ndarray]


def read_source(path: str | Path) -> InitSource:
    """The weights of a run directory (best checkpoint) or an mss-tf export; CheckpointError or
    ConfigError in one line naming `path` for anything else."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return _read_export(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"--init-from {path}: neither a train.py run directory (config.json) nor an mss-tf "
                              "SavedModel export (saved_model.pb)")
    import tensorflow as tf

    from mss_tf.checkpoints import model_variables, restore_weights
    from mss_tf.config import TrainConfig
    from mss_tf.models.registry import build_model, example_mixture, is_neural

    config = TrainConfig.load(path)
    if not is_neural(config.model):
        raise ConfigError(f"--init-from {path}: {config.model} is fitted, not trained; fine-tuning starts from a "
                          "neural model")
    spec = config.spectrogram
    model = build_model(config.model, stft=spec, **config.model_kwargs)
    model(example_mixture(model, spec.n_frames(spec.hop * 8), spec.n_bins), training=False)
    restore_weights(model, path, "best")
    weights = {key: np.asarray(tf.convert_to_tensor(v)) for key, v in model_variables(model).items()}
    return InitSource(path, "run", config.model, dict(config.model_kwargs), dict(config.stft or {}),
                      list(model.targets), weights)


def _read_export(path: Path) -> InitSource:
    from mss_tf.checkpoints import EXPORT_METADATA_DIR, EXPORT_METADATA_FILE

    meta_path = path / EXPORT_METADATA_DIR / EXPORT_METADATA_FILE
    try:
        metadata = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"--init-from {path}: no readable mss-tf metadata ({meta_path}: {exc})") from None
    if "weight_paths" not in metadata or "model_kwargs" not in metadata:
        raise CheckpointError(f"--init-from {path}: this export does not record its weight paths (an earlier "
                              "mss-tf, or a LiteRT/ONNX export); start from its run directory instead")
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    values = list(loaded.model_variables)
    paths = metadata["weight_paths"]
    if len(values) != len(paths):
        raise CheckpointError(f"--init-from {path}: {len(values)} variables but {len(paths)} weight paths in "
                              f"{meta_path}")
    weights = {key: v.numpy() for key, v in zip(paths, values) if key}
    return InitSource(path, "export", str(metadata["model"]), dict(metadata["model_kwargs"]),
                      dict(metadata["stft"]), [str(t) for t in metadata["targets"]], weights)


def configure(config: Any, source: InitSource, freeze: str, model_given: bool) -> None:
    """Make `config` (a TrainConfig before `resolve`) a fine-tuning of `source`: its preset and model
    arguments unless `--model` chose a preset (then it must be of the same family), its STFT, and
    `init_from`, the record of where it starts. ConfigError for what cannot start from the source."""
    from mss_tf.models.bands import resolve_scheme
    from mss_tf.models.registry import get_preset

    if freeze not in FREEZE:
        raise ConfigError(f"--freeze {freeze}: choose from {', '.join(FREEZE)}")
    family = get_preset(source.model).model
    if model_given and get_preset(config.model).model != family:
        raise ConfigError(f"--init-from {source.path}: a {source.model} ({family}) cannot start a {config.model} "
                          f"({get_preset(config.model).model}); choose a {family} preset or leave out --model")
    if not model_given:
        config.model = source.model
    inherited = {k: v for k, v in source.model_kwargs.items() if k not in ("targets",)}
    config.model_kwargs = {**inherited, **config.model_kwargs}
    if config.targets is None:
        config.targets = list(source.targets)  # unless --targets or --data chose others
    scheme = source.model_kwargs.get("band_scheme", get_preset(source.model).kwargs.get("band_scheme"))
    if scheme == "auto" and config.model_kwargs.get("band_scheme", "auto") == "auto":
        # "auto" picks bands by the targets: keep the source's, which its band split was trained on
        config.model_kwargs["band_scheme"] = resolve_scheme("auto", source.targets)
    if config.stft is not None and dict(config.stft) != source.stft:
        raise ConfigError(f"--init-from {source.path}: its STFT {source.stft} differs from this run's {config.stft}; "
                          "the weights are for its spectrum")
    config.stft = dict(source.stft)
    config.init_from = {"path": str(source.path.resolve()), "kind": source.kind, "model": source.model,
                        "targets": list(source.targets), "freeze": freeze}


def _head_index(key: str) -> tuple[int, str] | None:
    if not key.startswith(HEAD_LIST):
        return None
    index, _, rest = key[len(HEAD_LIST):].partition("/")
    return int(index), rest


def load_weights(model: Any, targets: Sequence[str], source: InitSource) -> dict[str, list[str]]:
    """Copy the source's body and the heads of shared targets into the built `model` (targets in
    `targets` order); returns {"reused": [...], "new": [...]} targets. ConfigError naming the first
    weight whose shape or presence differs (a different architecture)."""
    import keras

    from mss_tf.checkpoints import model_variables

    targets = list(targets)
    where = {t: source.targets.index(t) for t in targets if t in source.targets}
    copied: set[str] = set()

    def mismatch(key: str, here: Any, there: Any) -> ConfigError:
        return ConfigError(f"--init-from {source.path}: weight {key} is {there} there and {here} here; the body must "
                           "be the same architecture (preset, model arguments, STFT, channels)")

    for key, variable in model_variables(model).items():
        head = _head_index(key)
        value = source.weights.get(key)
        if head is not None:
            index, rest = head
            if targets[index] not in where:
                continue
            key_there = f"{HEAD_LIST}{where[targets[index]]}/{rest}"
            value = source.weights.get(key_there)
            copied.add(key_there)
        elif key in HEAD_CHANNELS and value is not None:
            # a new target's channel starts as the mean of the source's: its mask the mean mask,
            # not a random projection of trained features that saturates the sigmoid (no gradient)
            merged = np.array(variable.numpy())
            for j, target in enumerate(targets):
                merged[..., j] = value[..., where[target]] if target in where else value.mean(axis=-1)
            value = merged
            copied.add(key)
        else:
            copied.add(key)
        if value is None:
            raise mismatch(key, tuple(variable.shape), "absent")
        if tuple(value.shape) != tuple(variable.shape):
            raise mismatch(key, tuple(variable.shape), tuple(value.shape))
        variable.assign(np.asarray(value, dtype=keras.backend.standardize_dtype(variable.dtype)))
    extra = sorted(k for k in source.weights if k not in copied and _head_index(k) is None)
    if extra:
        raise mismatch(extra[0], "absent", tuple(source.weights[extra[0]].shape))
    return {"reused": [t for t in targets if t in where], "new": [t for t in targets if t not in where]}


def head_layers(model: Any) -> list[Any]:
    """The per-target output layers of a separator."""
    if hasattr(model, "mask_estimators"):
        return list(model.mask_estimators)
    if hasattr(model, "head"):
        return [model.head]
    raise ConfigError(f"{type(model).__name__} has no per-target heads to fine-tune")


def freeze_body(model: Any) -> None:
    """Every layer but the heads non-trainable (call before the optimizer is built)."""
    heads = {id(layer) for layer in head_layers(model)}
    for layer in model.layers:
        if id(layer) not in heads:
            layer.trainable = False
